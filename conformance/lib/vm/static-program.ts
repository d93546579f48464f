/**
 * C programs the guest runs: compiled static on the host (the guest has no C
 * library of its own). Needs gcc and a static libc (Debian: libc6-dev).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cacheDir, libraryRoot, packageRoot } from './initramfs.js';

/** Compiles `sources` static into one program `out`, with `flags` after the defaults; returns `out`. */
export function compileStatic(sources: readonly string[], out: string, flags: readonly string[] = []): string {
  const missing = sources.find((source) => !fs.existsSync(source));
  if (missing !== undefined) throw new Error(`${missing} is missing`);
  const libc = run('gcc', ['-print-file-name=libc.a']).trim();
  if (!path.isAbsolute(libc)) throw new Error('gcc finds no static C library (libc.a): install libc6-dev');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  // Into a temporary name first: a half-written program must never look built.
  const tmp = `${out}.tmp${process.pid}`;
  run('gcc', ['-O2', '-static', '-Wall', '-Wextra', ...flags, '-o', tmp, ...sources]);
  fs.renameSync(tmp, out);
  return out;
}

/** The C programs of vm/ the guest runs, by name. */
export type GuestTool = 'luo-test-ctl' | 'luo-raw-ioctl';

/** Where the guest finds a tool. */
export function guestToolPath(tool: GuestTool): string {
  return `/usr/libexec/${tool}`;
}

/**
 * Builds `vm/<tool>.c` (it may include vm/luo-test-handler/luo_test.h and
 * the library's include/liveupdate/abi.h) once per source into
 * `<cache>/tools/`; returns its host path.
 */
export function buildGuestTool(tool: GuestTool, root = packageRoot()): string {
  const source = path.join(root, 'vm', `${tool}.c`);
  const include = path.join(libraryRoot(), 'include');
  const headers = [path.join(root, 'vm', 'luo-test-handler', 'luo_test.h'), path.join(include, 'liveupdate', 'abi.h')];
  const hash = createHash('sha256');
  for (const file of [source, ...headers]) hash.update(fs.readFileSync(file));
  const out = path.join(cacheDir(), 'tools', `${tool}-${hash.digest('hex').slice(0, 12)}`);
  return fs.existsSync(out) ? out : compileStatic([source], out, ['-Werror', '-I', path.join(root, 'vm'), '-I', include]);
}

/** Every guest tool, built, by guest path: the `files` of a run that needs them. */
export function guestTools(root = packageRoot()): Record<string, string> {
  const tools: GuestTool[] = ['luo-test-ctl', 'luo-raw-ioctl'];
  return Object.fromEntries(tools.map((tool) => [guestToolPath(tool), buildGuestTool(tool, root)]));
}

function run(command: string, args: readonly string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`${command} not found: install gcc (apt-get install gcc libc6-dev)`);
    throw new Error(`${command} ${args.join(' ')} failed:\n${e.stderr ?? e.message}`);
  }
}
