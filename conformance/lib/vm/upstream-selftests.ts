/**
 * Linux's own LUO selftests (tools/testing/selftests/liveupdate), built from
 * the same source tree as a test kernel, to run in the guest beside our
 * cases: the device tests (one kselftest harness program) and the kexec
 * tests, each run as `--stage 1` before the kexec and `--stage 2` after it.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cacheDir } from './initramfs.js';
import { compileC } from '../harness/compile.js';

/** The harness program of the device tests. */
export const UPSTREAM_DEVICE_TESTS = 'liveupdate';
/** The kexec tests, each a program run once per stage. */
export const UPSTREAM_KEXEC_TESTS = ['luo_kexec_simple', 'luo_multi_session', 'luo_stress_sessions', 'luo_stress_files'] as const;

/** Guest path of an upstream test program. */
export function upstreamPath(program: string): string {
  return `/usr/libexec/upstream-selftests/${program}`;
}

/** Where the selftests of a series' cached source tree are (vm/build-kernel.sh extracts it). */
export function selftestsDir(series: string, cache = cacheDir()): string {
  return path.join(cache, 'src', series, 'linux', 'tools', 'testing', 'selftests', 'liveupdate');
}

/**
 * Builds every upstream program of `dir` static, once per source, into
 * `<cache>/tools/`; returns them by guest path (the `files` of a run). The
 * uAPI header comes from the same tree; nothing is written into it.
 */
export function buildUpstreamSelftests(dir: string): Record<string, string> {
  const tree = path.resolve(dir, '..', '..', '..', '..');
  const header = path.join(tree, 'include', 'uapi', 'linux', 'liveupdate.h');
  const programs = [UPSTREAM_DEVICE_TESTS, ...UPSTREAM_KEXEC_TESTS];
  // 7.2 keeps the helpers beside the tests; 7.3 moved them into lib/ (lib/libliveupdate.mk).
  const oldUtils = path.join(dir, 'luo_test_utils.c');
  const utils = fs.existsSync(oldUtils) ? oldUtils : path.join(dir, 'lib', 'lu_utils.c');
  const hash = createHash('sha256');
  for (const file of [header, utils, ...programs.map((p) => path.join(dir, `${p}.c`))]) hash.update(fs.readFileSync(file));
  const out = path.join(cacheDir(), 'tools', `upstream-selftests-${hash.digest('hex').slice(0, 12)}`);
  // The host's own <linux/liveupdate.h> may be missing or older: use the tree's, alone.
  const include = fs.mkdtempSync(path.join(os.tmpdir(), 'luo-selftests-'));
  try {
    fs.mkdirSync(path.join(include, 'linux'));
    fs.copyFileSync(header, path.join(include, 'linux', 'liveupdate.h'));
    const flags = ['-Wno-unused-function', '-I', include, '-I', path.resolve(dir, '..'), '-I', path.join(dir, 'lib', 'include')];
    const built: Record<string, string> = {};
    for (const program of programs) {
      const target = path.join(out, program);
      // The device tests call memfd_create without defining _GNU_SOURCE themselves.
      const extra = program === UPSTREAM_DEVICE_TESTS ? ['-D_GNU_SOURCE'] : [];
      if (!fs.existsSync(target)) compileC({ sources: [path.join(dir, `${program}.c`), utils], out: target, static: true, flags: [...flags, ...extra] });
      built[upstreamPath(program)] = target;
    }
    return built;
  } finally {
    fs.rmSync(include, { recursive: true, force: true });
  }
}
