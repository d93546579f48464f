import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * The built packages (dist/, conformance/dist/) load in Node as they are,
 * not through Vite: `liveupdate` resolves through a workspace link to this
 * repository's dist/, which Vite would otherwise transform as source, and
 * its CommonJS then imports as an empty object (every export undefined).
 */
const server = { deps: { external: [/\/dist\//] } };

/** lib/ run as source has no `require` that finds TypeScript: the modules it loads on first use are handed over ahead. */
const setupFiles = ['test/helpers/source-modules.ts'];

/**
 * Whether the kernel lets this user's fds in flight exceed RLIMIT_NOFILE:
 * only for root of the initial user namespace (CAP_SYS_RESOURCE there).
 * For anyone else (a developer's own uid, the arm64 and newest-Node runs'
 * `unshare --map-root-user`) it counts every fd in flight of the uid, in
 * every process, against the sender's limit (ETOOMANYREFS): a test that
 * sends with no fd to spare fails while another file passes 200 memfds.
 */
function fdsInFlightUnbounded(): boolean {
  try {
    return process.getuid?.() === 0 && readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/).join(' ') === '0 0 4294967295';
  } catch {
    return false;
  }
}

/**
 * The kernel tests that boot the systemd guest image (systemd 262 as PID 1, a
 * fleet of three of them): the second lane of the kernel tests. One after
 * the other, no two of them share the cores (the systemd demo beside the
 * fleet once ran past its bound).
 */
const SYSTEMD_KERNEL_TESTS = [
  'test/kernel/fleet.test.ts',
  'conformance/test/kernel/demo-systemd.test.ts',
  'test/kernel/agent-systemd.test.ts',
  'test/kernel/systemd.test.ts',
  'conformance/test/kernel/systemd-testbed.test.ts',
];

/**
 * A kernel test of the test bed's own guests in the second lane, to keep the
 * lanes about equal: since each copy of the systemd image boots in a third
 * of the CPU it took, the systemd tests alone came to about 800 s against
 * about 1300 s for the first lane. The conformance command's test packs,
 * installs and boots on its own (it shares no boot with another file).
 */
const BALANCING_KERNEL_TESTS = ['conformance/test/kernel/conformance.test.ts'];

/** A lane of kernel tests: one file at a time in one worker, without isolation (test/kernel/support.ts shares boots between files). */
function kernelLane(name: string, groupOrder: number, include: string[], exclude: string[]) {
  return {
    test: {
      name,
      server,
      setupFiles,
      include,
      exclude: [...exclude, '**/node_modules/**'],
      fileParallelism: false,
      isolate: false,
      // A boot with two or three kexecs takes tens of seconds under emulation; a fleet rollout, minutes.
      testTimeout: 600_000,
      hookTimeout: 600_000,
      sequence: { groupOrder },
    },
  };
}

/**
 * The tests of both packages (test/ for liveupdate, conformance/test/ for
 * liveupdate-conformance), in three projects: host tests first; then the
 * kernel tests (each boots QEMU with software emulation) in two lanes,
 * `kernel` and `kernel-systemd`, each one file at a time. `vitest run` runs
 * the lanes one after the other; `npm test` (scripts/test.mjs) runs them at
 * the same time: on two cores that took npm test from 1540 s to 1409 s (the
 * lanes are mostly CPU-bound; the fleet stretches from about 520 to 830 s). Kernel tests never skip
 * themselves: without a kernel they fail and say how to build one, unless
 * LIVEUPDATE_SKIP_KERNEL_TESTS=1 (npm run test:host).
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'host',
          server,
          setupFiles,
          include: ['test/**/*.test.ts', 'conformance/test/**/*.test.ts'],
          exclude: ['test/kernel/**', 'conformance/test/kernel/**', '**/node_modules/**'],
          // vitest's default leaves one core to itself: one file at a time on two cores. The host files
          // spend much of their time waiting on children (pack.test's npm and node-gyp alone are about
          // half of the whole), so two at once keep both cores busy (175 s → 153 to 160 s in CI); every
          // timing bound in them held with two at once beside three kernel-test runs. Files at once
          // share the kernel's count of fds in flight where it is bounded: one at a time there.
          maxWorkers: fdsInFlightUnbounded() ? Math.max(2, availableParallelism() - 1) : 1,
          sequence: { groupOrder: 0 },
        },
      },
      kernelLane('kernel', 1, ['test/kernel/**/*.test.ts', 'conformance/test/kernel/**/*.test.ts'], [...SYSTEMD_KERNEL_TESTS, ...BALANCING_KERNEL_TESTS]),
      kernelLane('kernel-systemd', 2, [...SYSTEMD_KERNEL_TESTS, ...BALANCING_KERNEL_TESTS], []),
    ],
  },
});
