/** The types of scripts/bundle-core.mjs, for the tests that import it. */
export const ENTRY: string;
export const CORE: string;
export function closure(read: (name: string) => string, entry?: string): string[];
export function bundle(modules: ReadonlyArray<{ name: string; source: string }>): string;
export function stub(name: string): string;
