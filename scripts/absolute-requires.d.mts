/** The types of scripts/absolute-requires.mjs, for the tests that import it. */
export function absoluteRequires(source: string): string;
export function relativeRequires(source: string): string[];
export function javascriptFiles(dir: string): string[];
