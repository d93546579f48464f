/** The types of scripts/error-tables.mjs, for the tests that import it. */
export interface ErrorTables {
  kernel: string;
  package: string;
}
export function renderErrorTables(tables: {
  KERNEL_ERRORS: ReadonlyArray<{ type: { name: string }; operations: readonly string[] | '*'; codes: readonly string[] | '*'; meaning: string }>;
  PACKAGE_ERRORS: ReadonlyArray<{ type: { name: string }; code: string; meaning: string }>;
}): ErrorTables;
export function replaceErrorTables(readme: string, tables: ErrorTables): string;
