/** The types of scripts/bundle-modules.mjs, for the tests that import it. */
export const BUNDLES: ReadonlyArray<{ file: string; entries: readonly string[]; leave: readonly string[] }>;
export function closure(read: (name: string) => string, entries: readonly string[], taken?: readonly string[]): string[];
export function bundle(modules: ReadonlyArray<{ name: string; source: string }>): string;
export function stub(name: string, bundleFile: string): string;
export function bundledNames(text: string): string[];
