// Rewrites every relative require of the built JavaScript (dist/**/*.js) into
// an absolute one: `require("./errors.js")` becomes
// `require(__dirname + "/errors.js")`, the same file.
//
// Why: node's CommonJS loader resolves a relative request by trying it as a
// package name first, which runs a regular expression of its own (the
// "exports" pattern) on the request. Its first run compiles it and its second
// compiles it again to machine code. An absolute request skips that step. In a
// fresh node under emulation, where machine code met for the first time is
// what costs (it is translated before it runs), the loader's regular
// expression was a third of the new code that reading `LiveUpdate` ran, and
// opening the device in the new kernel of a live update is on the blackout's
// path. What a bundler loses: it sees an expression, not a module name.
//
// Usage: node scripts/absolute-requires.mjs DIR (rewrites DIR's *.js in place).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

/** `require("./x")` or `require('../x')`, a string literal and nothing else between the parentheses. */
const RELATIVE_REQUIRE = /\brequire\((["'])(\.{1,2}\/[^"'\\\n]*)\1\)/g;

/** `source` with each relative require made absolute through `__dirname`. */
export function absoluteRequires(source) {
  return source.replace(RELATIVE_REQUIRE, (_, _quote, request) => {
    const fromDir = request.startsWith('./') ? request.slice(1) : `/${request}`;
    return `require(__dirname + ${JSON.stringify(fromDir)})`;
  });
}

/** The relative requires left in `source` (none once rewritten). */
export function relativeRequires(source) {
  return [...source.matchAll(RELATIVE_REQUIRE)].map((m) => m[0]);
}

/** Every `*.js` file under `dir`, recursively. */
export function javascriptFiles(dir) {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.js'))
    .map((entry) => path.join(entry.parentPath, entry.name));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const dir = process.argv[2];
  if (dir === undefined) {
    console.error('usage: node scripts/absolute-requires.mjs DIR');
    process.exit(2);
  }
  for (const file of javascriptFiles(dir)) {
    const source = fs.readFileSync(file, 'utf8');
    const rewritten = absoluteRequires(source);
    if (rewritten !== source) fs.writeFileSync(file, rewritten);
  }
}
