import { defineConfig } from 'vitest/config';

/**
 * The built packages (dist/, conformance/dist/) load in Node as they are,
 * not through Vite: `liveupdate` resolves through a workspace link to this
 * repository's dist/, which Vite would otherwise transform as source, and
 * its CommonJS then imports as an empty object (every export undefined).
 */
const server = { deps: { external: [/\/dist\//] } };

/**
 * The tests of both packages (test/ for liveupdate, conformance/test/ for
 * liveupdate-conformance), in two projects: host tests run in parallel first; kernel tests (each boots
 * QEMU with software emulation, which wants both cores) then run one file at
 * a time. Kernel tests never skip themselves: without a kernel they fail and
 * say how to build one, unless LIVEUPDATE_SKIP_KERNEL_TESTS=1 (npm run test:host).
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'host',
          server,
          include: ['test/**/*.test.ts', 'conformance/test/**/*.test.ts'],
          exclude: ['test/kernel/**', 'conformance/test/kernel/**', '**/node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'kernel',
          server,
          include: ['test/kernel/**/*.test.ts', 'conformance/test/kernel/**/*.test.ts'],
          fileParallelism: false,
          // One worker, no isolation: test/kernel/support.ts shares boots between files.
          isolate: false,
          // A boot with two or three kexecs takes tens of seconds under emulation.
          testTimeout: 600_000,
          hookTimeout: 600_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
