/**
 * Packing the packages as npm publishes them and installing the tarballs
 * into a fresh project, as a user would: for the tests that check what a
 * user gets, not what the repository has.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The repository root: the liveupdate package. */
export const LIBRARY_DIR = path.resolve(__dirname, '..', '..');
/** The liveupdate-conformance package. */
export const CONFORMANCE_DIR = path.join(LIBRARY_DIR, 'conformance');

/** What a command printed and how it ended. */
export interface Outcome {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs a command to completion; throws with its output if it fails. */
export function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Outcome {
  const started = Date.now();
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 600_000, env: { ...env, npm_config_loglevel: 'error' } });
  const outcome = { status: result.status, stdout: result.stdout, stderr: result.stderr, ms: Date.now() - started };
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${String(result.status)}):\n${result.stdout}\n${result.stderr}\n${result.error?.message ?? ''}`);
  return outcome;
}

/**
 * `npm pack` of the package in `packageDir` into `dest`; returns the
 * tarball's path. Without `prepack`, it packs what is built already.
 */
export function pack(packageDir: string, dest: string, options: { prepack?: boolean; env?: NodeJS.ProcessEnv } = {}): string {
  const args = ['pack', '--pack-destination', dest, '--json', ...(options.prepack === true ? [] : ['--ignore-scripts'])];
  const out = run('npm', args, packageDir, options.env);
  const [packed] = JSON.parse(out.stdout) as [{ filename: string }];
  return path.join(dest, packed.filename);
}

/**
 * Installs `tarballs` into a new project at `project` with `npm install
 * --omit=dev --prefer-offline` (the cache first, the registry for what it
 * lacks), letting their install scripts run; returns how the
 * install went.
 */
export function installTarballs(project: string, tarballs: readonly string[], env?: NodeJS.ProcessEnv): Outcome {
  fs.mkdirSync(project, { recursive: true });
  // npm 11.19 still runs a dependency's install script without approval
  // (and warns); the approval, by the dependency's resolved identity (here,
  // the tarball), keeps it running once npm blocks unreviewed scripts.
  const allowScripts = Object.fromEntries(tarballs.map((t) => [`file:${t}`, true]));
  const manifest = { name: 'liveupdate-user', version: '1.0.0', private: true, allowScripts };
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify(manifest));
  return run('npm', ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs], project, env);
}

/**
 * A copy of the repository as a clone of its current state would be: the
 * files git tracks plus new ones it does not ignore (no build output, no
 * node_modules). Returns the copy's directory.
 */
export function cleanCopy(dest: string): string {
  const listed = run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], LIBRARY_DIR).stdout;
  for (const file of listed.split('\0').filter(Boolean)) {
    const from = path.join(LIBRARY_DIR, file);
    if (!fs.existsSync(from)) continue; // deleted in the working tree, not yet in the index
    fs.mkdirSync(path.dirname(path.join(dest, file)), { recursive: true });
    fs.copyFileSync(from, path.join(dest, file));
    fs.chmodSync(path.join(dest, file), fs.statSync(from).mode);
  }
  return dest;
}

/** Compilers and build tools a source build of an addon needs. */
const BUILD_TOOLS = /^(cc|c\+\+|g\+\+|gcc|clang(\+\+)?|make|gmake|python3?(\.[0-9]+)?|.*-(gcc|g\+\+)(-[0-9]+)?)$/;

/**
 * A PATH without any compiler, make or python: a directory of links to
 * every other program on the current PATH. A source build fails there.
 */
export function pathWithoutBuildTools(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const from of (process.env['PATH'] ?? '').split(':').filter(Boolean)) {
    if (!fs.existsSync(from)) continue;
    for (const name of fs.readdirSync(from)) {
      if (BUILD_TOOLS.test(name) || fs.existsSync(path.join(dir, name))) continue;
      fs.symlinkSync(path.join(from, name), path.join(dir, name));
    }
  }
  return dir;
}
