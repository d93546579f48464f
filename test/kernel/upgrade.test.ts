/**
 * A live update from one kernel series to the next (7.2 → 7.3 with the
 * cached kernels): what a real kernel upgrade does.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { findKernels, type KernelImage } from '../../conformance/lib/vm/kernels.js';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeKernels, scenario, skipKernelTests } from './support.js';

const series = skipKernelTests ? [] : findKernels();

if (series.length < 2) {
  // describeKernels fails (no kernel) or skips (opt-out) loudly; with a single
  // kernel there is no upgrade to test, and the test says so.
  describeKernels('upgrade', () => {
    it.skip('needs two kernel series (set LIVEUPDATE_KERNEL=/old/bzImage:/new/bzImage, or build both with npm run vm:kernel)', () => {});
  });
} else {
  const from = series[0] as KernelImage;
  const to = series[series.length - 1] as KernelImage;
  describe(`upgrade ${from.release} → ${to.release}`, () => {
    let run: VmRun;

    beforeAll(async () => {
      run = await boot({ name: `upgrade-${from.release}-${to.release}`, kernels: [from.path, to.path], scenarios: [scenario('memfd')] });
    });

    it('keeps a 64 MiB memfd and drops a closed session across the upgrade', () => {
      expect(run.ok, run.report()).toBe(true);
      expect(run.stages.map((s) => s.release)).toEqual([from.release, to.release]);
      const before = run.result('memfd/preserve-64MiB', 1)?.value as Record<string, unknown> | undefined;
      expect(before?.['size']).toBe(64 * 1024 * 1024);
      expect(run.result('memfd/preserve-64MiB', 2)?.value).toEqual({ ...before, state: 'finished' });
      expect(run.result('memfd/abort-closed-session', 2)?.value).toEqual({ error: 'SessionNotFoundError', code: 'ENOENT' });
    });
  });
}
