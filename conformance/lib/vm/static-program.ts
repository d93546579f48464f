/**
 * C programs the guest runs: compiled static on the host (the guest has no C
 * library of its own), cached by the content of their sources.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compileC } from '../harness/compile.js';
import { cacheDir, libraryRoot, packageRoot } from './initramfs.js';

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
  return fs.existsSync(out) ? out : compileC({ sources: [source], out, static: true, flags: ['-Werror', '-I', path.join(root, 'vm'), '-I', include] });
}

/** Every guest tool, built, by guest path: the `files` of a run that needs them. */
export function guestTools(root = packageRoot()): Record<string, string> {
  const tools: GuestTool[] = ['luo-test-ctl', 'luo-raw-ioctl'];
  return Object.fromEntries(tools.map((tool) => [guestToolPath(tool), buildGuestTool(tool, root)]));
}
