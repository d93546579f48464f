/**
 * The READMEs are the npm pages of the packages. Their TypeScript examples
 * cannot rot: every ```ts block is compiled, as its own ES module, with
 * `--strict` against the built packages (their declarations, as a user's
 * type checker sees them, not the sources; `npm run compile` first, as
 * npm test does). And their links work from npm: absolute, and those into
 * this repository name files that exist.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { KERNEL_ERRORS, PACKAGE_ERRORS } from '../lib/errors.js';
import { renderErrorTables, replaceErrorTables } from '../scripts/error-tables.mjs';
import { CONFORMANCE_DIR, LIBRARY_DIR } from './helpers/pack.js';

const READMES = [path.join(LIBRARY_DIR, 'README.md'), path.join(CONFORMANCE_DIR, 'README.md')].filter((f) => fs.existsSync(f));
const project = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-readme-'));
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
  const modules = path.join(project, 'node_modules');
  fs.mkdirSync(path.join(modules, '@types'), { recursive: true });
  fs.symlinkSync(LIBRARY_DIR, path.join(modules, 'liveupdate'));
  fs.symlinkSync(CONFORMANCE_DIR, path.join(modules, 'liveupdate-conformance'));
  fs.symlinkSync(path.join(LIBRARY_DIR, 'node_modules', '@types', 'node'), path.join(modules, '@types', 'node'));
  const files: string[] = [];
  for (const readme of READMES) {
    for (const block of typeScriptBlocks(fs.readFileSync(readme, 'utf8'))) {
      const file = path.join(project, `${path.relative(LIBRARY_DIR, readme).replace(/\W/g, '-')}-line-${block.line}.mts`);
      fs.writeFileSync(file, block.code);
      files.push(file);
    }
  }
  expect(files.length).toBeGreaterThan(0);
  const tsc = path.join(LIBRARY_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
  const args = ['--strict', '--noEmit', '--target', 'es2022', '--module', 'node16', '--moduleResolution', 'node16', '--types', 'node', ...files];
  const out = spawnSync(process.execPath, [tsc, ...args], { cwd: project, encoding: 'utf8' });
  expect(out.stdout + out.stderr, 'type errors in README examples (file names carry the README line)').toBe('');
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
  expect(replaceErrorTables(readme, renderErrorTables({ KERNEL_ERRORS, PACKAGE_ERRORS }))).toBe(readme);
  for (const rule of KERNEL_ERRORS) expect(readme).toContain(`| \`${rule.type.name}\` |`);
  expect(() => replaceErrorTables('no markers', { kernel: '', package: '' })).toThrow(/lacks the markers/);
});

it('the shipped runtime does not carry the README renderer', () => {
  const shipped = fs.readFileSync(path.join(LIBRARY_DIR, 'lib', 'errors.ts'), 'utf8');
  expect(shipped).not.toMatch(/renderErrorTables|replaceErrorTables/);
});
