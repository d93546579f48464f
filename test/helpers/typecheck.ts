/**
 * Type-checking code as a user of the built packages would: in a project
 * of its own whose node_modules links `liveupdate` and
 * `liveupdate-conformance` to this repository (their declarations, as a
 * user's type checker sees them, not the sources) and Node's types, with
 * `tsc --strict`. `npm run compile` first, as npm test does.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CONFORMANCE_DIR, LIBRARY_DIR } from './pack.js';

/** The compiler options README.md promises its examples compile with. */
export const USER_TSC_OPTIONS = ['--strict', '--target', 'es2022', '--module', 'node16', '--moduleResolution', 'node16', '--types', 'node'];

/** A new directory with a node_modules a user's project would have; the caller removes it. */
export function userProject(prefix: string): string {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const modules = path.join(project, 'node_modules');
  fs.mkdirSync(path.join(modules, '@types'), { recursive: true });
  fs.symlinkSync(LIBRARY_DIR, path.join(modules, 'liveupdate'));
  fs.symlinkSync(CONFORMANCE_DIR, path.join(modules, 'liveupdate-conformance'));
  fs.symlinkSync(path.join(LIBRARY_DIR, 'node_modules', '@types', 'node'), path.join(modules, '@types', 'node'));
  return project;
}

/** Runs tsc in `project` with {@link USER_TSC_OPTIONS} and `args`; returns its output and status. */
export function userTsc(project: string, args: readonly string[]): { output: string; status: number | null } {
  const tsc = path.join(LIBRARY_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
  const out = spawnSync(process.execPath, [tsc, ...USER_TSC_OPTIONS, ...args], { cwd: project, encoding: 'utf8' });
  return { output: out.stdout + out.stderr, status: out.status };
}
