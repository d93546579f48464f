/**
 * The test bed's own failure paths, on the first kernel found: a case that
 * throws or fails a check is reported and the rest still runs (through the
 * kexec); a pid 1 that dies ends the run as a failure with the kernel's
 * panic in the report; a guest that hangs is killed at the hard timeout.
 */
import * as path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../lib/vm/qemu.js';
import { boot, describeOneKernel } from '../../../test/kernel/support.js';

const fixture = (name: string): string => path.join(__dirname, 'fixtures', `${name}.js`);
// One kernel is enough to check the harness; the other tests run the real scenarios on all.
describeOneKernel('test bed', (kernel) => {
  let failing: VmRun;
  beforeAll(async () => {
    failing = await boot({ name: `testbed-failing-${kernel.release}`, kernels: [kernel.path], scenarios: [fixture('failing')] });
  });

  it('reports a thrown error with its name, code, message and stack, and skips the case later', () => {
    expect(failing.ok).toBe(false);
    const thrown = failing.result('failing/throws', 1);
    expect(thrown?.ok).toBe(false);
    expect(thrown?.error).toMatchObject({ name: 'Error', code: 'EDELIBERATE', message: 'deliberate failure' });
    expect(thrown?.error?.stack).toContain('failing.js');
    expect(failing.result('failing/throws', 2)?.skipped).toBe('failed in stage 1');
    expect(failing.report()).toContain('deliberate failure');
    expect(failing.report()).toContain('--- kernel log');
  });

  it('fails a case whose check fails, with the check in the report', () => {
    const checked = failing.result('failing/check-fails', 1);
    expect(checked?.ok).toBe(false);
    expect(checked?.value).toBe('returned anyway');
    expect(checked?.checks).toEqual([expect.objectContaining({ name: 'one is two', ok: false, detail: { actual: 1, expected: 2 } })]);
    expect(failing.report()).toContain('check one is two failed');
  });

  it('still runs the other cases in both kernels, and a scenario from outside the package finds the package', () => {
    expect(failing.stages.map((s) => s.stage)).toEqual([1, 2]);
    expect(failing.result('failing/passes', 2)?.value).toEqual({ stage: 2, previous: { stage: 1 } });
    expect(failing.result('failing/finds-the-package', 1)?.value).toBe('function');
    expect(failing.reason).toMatch(/case result\(s\) failed/);
  });

  it('reports a dead pid 1 as a failure, with the panic and the guest output', async () => {
    const run = await boot({ name: `testbed-crash-${kernel.release}`, kernels: [kernel.path], scenarios: [fixture('crash')] });
    expect(run.ok).toBe(false);
    expect(run.timedOut).toBe(false);
    expect(run.reason).toMatch(/stopped in stage 1 of 2 without finishing \(while running case crash\/init-exits\)/);
    expect(run.report()).toContain('crash fixture: exiting pid 1');
    expect(run.report()).toMatch(/Kernel panic - not syncing: Attempted to kill init/);
  });

  it('kills QEMU at the hard timeout and says where the guest was', async () => {
    const run = await boot({ name: `testbed-hang-${kernel.release}`, kernels: [kernel.path], scenarios: [fixture('hang')], timeoutMs: 20_000 });
    expect(run.ok).toBe(false);
    expect(run.timedOut).toBe(true);
    expect(run.elapsedMs).toBeLessThan(35_000);
    expect(run.reason).toMatch(/^timed out/);
  });
});
