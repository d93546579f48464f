/**
 * The READMEs are the npm pages of the packages. Their TypeScript examples
 * cannot rot: every ```ts block is compiled, as its own ES module, with
 * `--strict` against the built packages (their declarations, as a user's
 * type checker sees them, not the sources; `npm run compile` first, as
 * npm test does). And their links work from npm: absolute, and those into
 * this repository name files that exist.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { kernelErrors, packageErrors } from '../lib/errors.js';
import { renderErrorTables, replaceErrorTables } from '../scripts/error-tables.mjs';
import { CONFORMANCE_DIR, LIBRARY_DIR } from './helpers/pack.js';
import { userProject, userTsc } from './helpers/typecheck.js';

const READMES = [path.join(LIBRARY_DIR, 'README.md'), path.join(CONFORMANCE_DIR, 'README.md')].filter((f) => fs.existsSync(f));
const project = userProject('liveupdate-readme-');
afterAll(() => fs.rmSync(project, { recursive: true, force: true }));

/** The ```ts blocks of a Markdown file, with the line each starts on. */
export function typeScriptBlocks(markdown: string): { line: number; code: string }[] {
  const blocks: { line: number; code: string }[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i] ?? '')) continue;
    const start = i + 1;
    while (i + 1 < lines.length && !/^```\s*$/.test(lines[i + 1] ?? '')) i++;
    blocks.push({ line: start + 1, code: lines.slice(start, i + 1).join('\n') });
    i++;
  }
  return blocks;
}

it('finds the examples', () => {
  expect(typeScriptBlocks('text\n```ts\nconst a = 1;\n```\n```sh\nls\n```\n```ts\nlet b;\n```\n')).toEqual([
    { line: 3, code: 'const a = 1;' },
    { line: 9, code: 'let b;' },
  ]);
});

it('every TypeScript block of the READMEs compiles with --strict against the built packages', () => {
  const files: string[] = [];
  for (const readme of READMES) {
    for (const block of typeScriptBlocks(fs.readFileSync(readme, 'utf8'))) {
      const file = path.join(project, `${path.relative(LIBRARY_DIR, readme).replace(/\W/g, '-')}-line-${block.line}.mts`);
      fs.writeFileSync(file, block.code);
      files.push(file);
    }
  }
  expect(files.length).toBeGreaterThan(0);
  const out = userTsc(project, ['--noEmit', ...files]);
  expect(out.output, 'type errors in README examples (file names carry the README line)').toBe('');
  expect(out.status).toBe(0);
}, 120_000);

it('links only to absolute URLs or anchors, and its links into the repository name files that exist', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(LIBRARY_DIR, 'package.json'), 'utf8')) as { repository: { url: string } };
  const repository = pkg.repository.url.replace(/^git\+/, '').replace(/\.git$/, '');
  const problems: string[] = [];
  for (const readme of READMES) {
    const text = fs.readFileSync(readme, 'utf8').replace(/```[\s\S]*?```/g, '');
    for (const [, target = ''] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const where = `${path.relative(LIBRARY_DIR, readme)}: ${target}`;
      if (target.startsWith('#')) continue;
      if (!/^https:\/\//.test(target)) problems.push(`${where} is relative: npm's page cannot follow it`);
      const inRepo = new RegExp(`^${repository.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(?:blob|tree)/main/([^#]+)`).exec(target);
      if (inRepo?.[1] !== undefined && !fs.existsSync(path.join(LIBRARY_DIR, inRepo[1]))) problems.push(`${where} names a missing file`);
    }
  }
  expect(problems).toEqual([]);
});

it("README.md's error tables are the code's (npm run docs:errors rewrites them)", () => {
  const readme = fs.readFileSync(path.join(LIBRARY_DIR, 'README.md'), 'utf8');
  expect(replaceErrorTables(readme, renderErrorTables({ KERNEL_ERRORS: kernelErrors(), PACKAGE_ERRORS: packageErrors() }))).toBe(readme);
  for (const rule of kernelErrors()) expect(readme).toContain(`| \`${rule.type.name}\` |`);
  expect(() => replaceErrorTables('no markers', { kernel: '', package: '' })).toThrow(/lacks the markers/);
});

it('the shipped runtime does not carry the README renderer', () => {
  const shipped = fs.readFileSync(path.join(LIBRARY_DIR, 'lib', 'errors.ts'), 'utf8');
  expect(shipped).not.toMatch(/renderErrorTables|replaceErrorTables/);
});

/** A signature README.md writes: `[Owner.|.]name(params)` with what its params and result look like. */
export interface ReadmeSignature {
  /** README.md line. */
  line: number;
  /** The class the row's table is about, for a `.member` row. */
  owner: string | null;
  /** `LiveUpdate.open`, `.preserve`, `sendFds`. */
  name: string;
  /** The parameter list as written, `null` when it is `...`. */
  params: string | null;
  /** The properties of the object it says it returns (`: Promise<{ fds, data, eof }>`), if it says. */
  returns: string | null;
}

/** Splits at the commas outside brackets, braces and quotes. */
function topLevelSplit(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] ?? '';
    if (quote !== null) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"') quote = c;
    else if ('({[<'.includes(c)) depth++;
    else if (')}]>'.includes(c)) depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  const last = text.slice(start).trim();
  if (last !== '') parts.push(last);
  return parts;
}

/** A call written as a signature: every argument a name, `name?`, `name = default`, or an object of those. */
const SIGNATURE = /^((?:[A-Z]\w*\.|[a-z]\w*\.|\.)?[a-zA-Z]\w*)\((.*?)\)(?:: (?:Promise<)?(\{.*\})?.*)?$/;

/** Every signature in README.md's API: ```text blocks, the first cell of API tables, and `sig` / `nameSync` in prose. */
export function readmeSignatures(markdown: string): ReadmeSignature[] {
  const found: ReadmeSignature[] = [];
  const lines = markdown.split('\n');
  let heading: string | null = null;
  let tableOwner: string | null = null;
  let inText = false;
  const add = (text: string, line: number, member = false) => {
    const match = SIGNATURE.exec(text.trim());
    if (match === null) return;
    const params = match[2] ?? '';
    // In a table of members, `.close()` / `closeSync()`: the second is a member too.
    const name = member && /^[a-z]\w*$/.test(match[1] ?? '') ? `.${match[1] ?? ''}` : match[1] ?? '';
    found.push({ line, owner: name.startsWith('.') ? tableOwner ?? heading : null, name, params: params === '...' ? null : params, returns: match[3] ?? null });
  };
  for (const [i, text] of lines.entries()) {
    if (/^```text/.test(text)) inText = true;
    else if (inText && /^```/.test(text)) inText = false;
    else if (inText) for (const part of text.replace(/\s*\/\/.*$/, '').split(/\s{3,}|\), (?=\w)/)) add(part.endsWith(')') || part.includes('): ') ? part : `${part})`, i + 1);
    else if (/^#+ /.test(text)) {
      heading = /^###? `([A-Z]\w*)`/.exec(text)?.[1] ?? null;
      tableOwner = null;
    } else if (/^\| `[A-Z]\w*` \|/.test(text)) tableOwner = /^\| `(\w+)`/.exec(text)?.[1] ?? null;
    else if (/^\| `/.test(text)) {
      const cell = text.split(/(?<!\\)\|/)[1] ?? '';
      const before = found.length;
      for (const [, code = ''] of cell.matchAll(/`([^`]+\(.*?\))`/g)) add(code, i + 1, tableOwner !== null || heading !== null);
      // `LiveUpdate.open(...)` / `openSync`: the Sync form is a member of the same owner.
      const owner = /^(.*\.)?/.exec(found[before]?.name ?? '')?.[1] ?? '';
      for (const [, sync = ''] of cell.matchAll(/ \/ `(\w+)`/g)) add(`${owner}${sync}(...)`, i + 1);
    } else for (const [, code = ''] of text.matchAll(/`([^`]+\))` \/ `\w+Sync`/g)) add(code, i + 1);
  }
  return found;
}

it('finds the signatures README.md writes', () => {
  const sample = ['### `Session`', '', '| member | what |', '|---|---|', '| `.preserve(fd, token)` / `preserveSync` | x |', '', '```text', 'recvFds(socket, { maxFds? }): Promise<{ fds, data }>', 'sendFdsSync(...)   // blocking', '```', '`status({ path? })` / `statusSync` says'].join('\n');
  expect(readmeSignatures(sample)).toEqual([
    { line: 5, owner: 'Session', name: '.preserve', params: 'fd, token', returns: null },
    { line: 5, owner: 'Session', name: '.preserveSync', params: null, returns: null },
    { line: 8, owner: null, name: 'recvFds', params: 'socket, { maxFds? }', returns: '{ fds, data }' },
    { line: 9, owner: null, name: 'sendFdsSync', params: null, returns: null },
    { line: 11, owner: null, name: 'status', params: '{ path? }', returns: null },
  ]);
});

it("every signature in README.md's API is the exported declaration's: parameters, options and their optionality, result fields", async () => {
  const ts = await import('typescript');
  const entry = path.join(LIBRARY_DIR, 'dist', 'index.d.ts');
  const program = ts.createProgram([entry], { strict: true, types: [], typeRoots: [path.join(LIBRARY_DIR, 'node_modules', '@types')] });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const moduleSymbol = source === undefined ? undefined : checker.getSymbolAtLocation(source);
  if (moduleSymbol === undefined) throw new Error('dist/index.d.ts not built: npm run build:ts');
  const exported = new Map(checker.getExportsOfModule(moduleSymbol).map((s) => [s.name, s]));
  const resolve = (symbol: import('typescript').Symbol) => ((symbol.flags & ts.SymbolFlags.Alias) !== 0 ? checker.getAliasedSymbol(symbol) : symbol);
  const typeOf = (symbol: import('typescript').Symbol) => checker.getTypeOfSymbolAtLocation(symbol, source as import('typescript').Node);
  const optional = (symbol: import('typescript').Symbol) => (symbol.flags & ts.SymbolFlags.Optional) !== 0 || symbol.valueDeclaration !== undefined && ts.isParameter(symbol.valueDeclaration) && checker.isOptionalParameter(symbol.valueDeclaration);

  /** The callable README names: an export, a namespace's or class's static member, or an instance member of the table's class. */
  function member(sig: ReadmeSignature): import('typescript').Symbol | undefined {
    const [head = '', tail] = sig.name.split('.');
    if (head === '') {
      const owner = exported.get(sig.owner ?? '');
      return owner === undefined ? undefined : checker.getDeclaredTypeOfSymbol(resolve(owner)).getProperty(tail ?? '');
    }
    const top = exported.get(head);
    if (top === undefined || tail === undefined) return top;
    return typeOf(resolve(top)).getProperty(tail);
  }

  /** `{ a?, b = 1, c }` → name → optional. */
  const objectMembers = (text: string) =>
    new Map(topLevelSplit(text.slice(1, -1)).map((p) => [p.replace(/[?]?\s*(=.*)?$/, '').trim(), /\?$|=/.test(p)] as const));

  const problems: string[] = [];
  const signatures = readmeSignatures(fs.readFileSync(path.join(LIBRARY_DIR, 'README.md'), 'utf8'));
  expect(signatures.length).toBeGreaterThan(55);
  for (const sig of signatures) {
    const where = `README.md:${sig.line} ${sig.owner !== null && sig.name.startsWith('.') ? sig.owner : ''}${sig.name}`;
    const symbol = member(sig);
    if (symbol === undefined) {
      problems.push(`${where}: no such export or member`);
      continue;
    }
    if (sig.params === null) continue;
    const written = topLevelSplit(sig.params);
    const mismatch: string[] = [];
    const fits = typeOf(resolve(symbol)).getCallSignatures().some((declared) => {
      mismatch.length = 0;
      const params = declared.getParameters();
      if (params.length !== written.length) mismatch.push(`${written.length} parameters written, ${params.length} declared`);
      for (const [i, text] of written.entries()) {
        const param = params[i];
        if (param === undefined) continue;
        const isObject = /^\{.*\}\??$/.test(text);
        const props = isObject ? objectMembers(text.replace(/\?$/, '')) : null;
        const saysOptional = /\?$|=/.test(text) || (props !== null && [...props.values()].every(Boolean));
        if (saysOptional !== optional(param)) mismatch.push(`parameter ${i + 1} (${text}) is ${optional(param) ? 'optional' : 'required'}`);
        if (props === null) continue;
        const type = checker.getNonNullableType(typeOf(param));
        const declaredProps = new Map(type.getProperties().map((p) => [p.name, optional(p)]));
        for (const [name, opt] of props) {
          if (!declaredProps.has(name)) mismatch.push(`option ${name} is not declared`);
          else if (declaredProps.get(name) !== opt) mismatch.push(`option ${name} is ${declaredProps.get(name) === true ? 'optional' : 'required'}`);
        }
        for (const name of declaredProps.keys()) if (!props.has(name)) mismatch.push(`option ${name} is declared but not written`);
      }
      if (sig.returns !== null) {
        const result = checker.getAwaitedType(declared.getReturnType()) ?? declared.getReturnType();
        const names = new Set(result.getProperties().map((p) => p.name));
        const written = objectMembers(sig.returns);
        for (const name of written.keys()) if (!names.has(name)) mismatch.push(`result field ${name} is not declared`);
        for (const name of names) if (!written.has(name)) mismatch.push(`result field ${name} is declared but not written`);
      }
      return mismatch.length === 0;
    });
    if (!fits) problems.push(`${where}(${sig.params}): ${mismatch.join('; ')}`);
  }
  expect(problems).toEqual([]);
}, 60_000);
