/**
 * What the kernel tests share: which kernels to run on (failing loudly when
 * there are none), where the compiled scenarios are, and how to boot them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { findKernels, type KernelImage } from '../../conformance/lib/vm/kernels.js';
import { missingPrerequisites } from '../../conformance/lib/vm/prerequisites.js';
import { runVm, type RunOptions, type VmRun } from '../../conformance/lib/vm/qemu.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP, type SystemdImage } from '../../conformance/lib/vm/systemd-image.js';

const root = path.resolve(__dirname, '..', '..');
/** Where `npm run build:test` puts the compiled test/kernel/scenarios (they run as JavaScript in the guest). */
const SCENARIO_DIR = path.join(root, 'dist-test', 'kernel', 'scenarios');

/** True when the kernel tests were explicitly opted out of (a local quick loop). */
export const skipKernelTests = process.env['LIVEUPDATE_SKIP_KERNEL_TESTS'] === '1';

/**
 * Declares `body` once per kernel under test. With no kernel, declares one
 * failing test that says how to get one; with LIVEUPDATE_SKIP_KERNEL_TESTS=1,
 * one skipped test that names the opt-out.
 */
export function describeKernels(title: string, body: (kernel: KernelImage, all: readonly KernelImage[]) => void): void {
  const kernels = kernelsOrExplain(title);
  if (kernels === undefined) return;
  describe.each(kernels.map((k) => ({ ...k, label: k.release })))(`${title} on $label`, (kernel) => body(kernel, kernels));
}

/**
 * Like {@link describeKernels}, on one kernel only (the first, or the one
 * `pick` chooses): for checks that need a real kernel but not every one.
 */
export function describeOneKernel(title: string, body: (kernel: KernelImage) => void, pick = (all: readonly KernelImage[]) => all[0]): void {
  const kernels = kernelsOrExplain(title);
  const kernel = kernels === undefined ? undefined : pick(kernels);
  if (kernel === undefined) return;
  describe(`${title} on ${kernel.release}`, () => body(kernel));
}

/** The newest of the kernels under test (findKernels lists them oldest first). */
export function newest(all: readonly KernelImage[]): KernelImage | undefined {
  return all[all.length - 1];
}

/** Set once a file has declared the failing test that names a missing prerequisite. */
let explained = false;

/**
 * The kernels to test on, or undefined after declaring the test that
 * explains why not: with a prerequisite missing (QEMU, a kernel), the first
 * kernel test file fails once with one line per missing piece naming the
 * command that fixes it; the other files only point at that failure.
 */
function kernelsOrExplain(title: string): KernelImage[] | undefined {
  if (skipKernelTests) {
    describe(title, () => it.skip('kernel tests skipped: LIVEUPDATE_SKIP_KERNEL_TESTS=1', () => {}));
    return undefined;
  }
  const missing = missingPrerequisites();
  if (missing.length === 0) return findKernels();
  if (explained) {
    describe(title, () => it.skip('not run: a prerequisite is missing (see the failed kernel test)', () => {}));
    return undefined;
  }
  explained = true;
  describe(title, () =>
    it('kernel tests need QEMU and a LUO kernel', () => {
      const error = new Error(missing.join('\n'));
      error.stack = error.message; // the fix is the whole message: no stack under it
      throw error;
    }),
  );
  return undefined;
}

/** Host path of a compiled test scenario (test/kernel/scenarios/<name>.ts); fails if it is not built. */
export function scenario(name: string): string {
  return built(path.join(SCENARIO_DIR, `${name}.js`));
}

/** Host path of a compiled scenario the conformance package ships (conformance/lib/conformance/scenarios/<name>.ts). */
export function conformanceScenario(name: string): string {
  return built(path.join(root, 'conformance', 'dist', 'conformance', 'scenarios', `${name}.js`));
}

function built(file: string): string {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`npm run compile\` first (npm test does)`);
  return file;
}

/**
 * Scenarios that share one boot per kernel: every test file that boots only
 * some of these, on one kernel, gets a view of a single boot that runs them
 * all (boots are slow under emulation: one instead of four per kernel). The
 * kernel project runs its files in one worker without isolation
 * (vitest.config.ts), so this module, and the boots it remembers, are shared.
 */
export const SHARED_SCENARIOS: readonly string[] = ['memfd', 'chain', 'api', 'handoff'];
const sharedBoots = new Map<string, Promise<VmRun>>();

/**
 * Boots a run with the test defaults (console logs in .vm-out/). A run of
 * shared scenarios on one kernel, with no other options, is served from that
 * kernel's shared boot, seen through its own scenarios ({@link VmRun.only}).
 */
export async function boot(options: RunOptions): Promise<VmRun> {
  const names = sharedNames(options);
  const kernel = options.kernels[0];
  if (names === undefined || kernel === undefined) return runVm({ logDir: path.join(root, '.vm-out'), ...options });
  let shared = sharedBoots.get(kernel);
  if (shared === undefined) {
    shared = runVm({
      name: `shared-${path.basename(path.dirname(kernel))}`,
      kernels: [kernel],
      scenarios: SHARED_SCENARIOS.map(scenario),
      logDir: path.join(root, '.vm-out'),
      timeoutMs: 600_000,
    });
    sharedBoots.set(kernel, shared);
  }
  return (await shared).only(names);
}

/** The scenario names of a run the shared boot can serve, or undefined. */
function sharedNames(options: RunOptions): string[] | undefined {
  const { name: _name, kernels, scenarios, ...rest } = options;
  if (kernels.length !== 1 || Object.keys(rest).length > 0) return undefined;
  const names = scenarios.map((file) => path.basename(file, '.js'));
  const ours = scenarios.every((file) => path.dirname(file) === SCENARIO_DIR);
  return ours && names.every((n) => SHARED_SCENARIOS.includes(n)) ? names : undefined;
}

/** For each case: the names of the checks each stage must record, in order. */
export type ExpectedChecks = Record<string, Record<number, string[]>>;

/**
 * Declares one test per case of `expected`: in every stage listed, the case
 * has a result, threw nothing, recorded exactly those checks in that order,
 * and every one of them passed. `run` is read when the tests run (after beforeAll).
 */
export function itEveryCheckPasses(run: () => VmRun, expected: ExpectedChecks): void {
  for (const [name, stages] of Object.entries(expected)) {
    it(`${name}: every check passes`, () => {
      for (const [stage, checks] of Object.entries(stages)) {
        const result = run().result(name, Number(stage));
        expect(result, `no result for ${name} in stage ${stage}\n${run().report()}`).toBeDefined();
        expect(result?.error, run().report()).toBeUndefined();
        expect(result?.checks.filter((c) => !c.ok), run().report()).toEqual([]);
        expect(result?.checks.map((c) => c.name)).toEqual(checks);
      }
    });
  }
}

/**
 * The systemd guest image, or undefined after declaring the failing test
 * that says how to build it (inside a describe of a systemd test file).
 */
export function systemdImageOrExplain(): SystemdImage | undefined {
  const image = findSystemdImage();
  if (image === undefined) {
    it('needs the systemd guest image', () => {
      const error = new Error(NO_SYSTEMD_IMAGE_HELP);
      error.stack = error.message; // the fix is the whole message
      throw error;
    });
  }
  return image;
}
