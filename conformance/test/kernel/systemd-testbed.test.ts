/**
 * The test bed's failure path on the systemd guest image, on the newest
 * kernel: a runner that dies there does not panic anything (systemd is pid 1),
 * so its unit's FailureAction= powers the guest off, and the run ends at once
 * as a failure that says where, instead of waiting for its timeout.
 */
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP } from '../../lib/vm/systemd-image.js';
import { boot, describeOneKernel, newest } from '../../../test/kernel/support.js';

const TIMEOUT_MS = 400_000;

describeOneKernel(
  'test bed on the systemd image',
  (kernel) => {
    const image = findSystemdImage();
    it('ends the run at once when the runner dies, with its output and where it was', async () => {
      if (image === undefined) {
        const error = new Error(NO_SYSTEMD_IMAGE_HELP);
        error.stack = error.message;
        throw error;
      }
      const run = await boot({
        name: `testbed-systemd-crash-${kernel.release}`,
        kernels: [kernel.path],
        scenarios: [path.join(__dirname, 'fixtures', 'crash.js')],
        systemdImage: image.path,
        timeoutMs: TIMEOUT_MS,
      });
      expect(run.ok).toBe(false);
      expect(run.timedOut, run.report()).toBe(false);
      expect(run.reason).toMatch(/stopped in stage 1 of 2 without finishing \(while running case crash\/init-exits\)/);
      expect(run.report()).toContain('crash fixture: exiting pid 1');
      // The unit's FailureAction=poweroff-force: systemd-shutdown powers off right after the runner died.
      expect(run.console).toMatch(/crash fixture: exiting pid 1[\s\S]*systemd-shutdown\[1\]: Powering off\./);
      expect(run.elapsedMs).toBeLessThan(TIMEOUT_MS / 2);
    });
  },
  newest,
);
