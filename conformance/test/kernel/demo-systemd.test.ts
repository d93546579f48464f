/**
 * `npm run demo -- --host systemd` on the newest kernel: the demo with
 * systemd 262 as PID 1 on the systemd guest image, the agent and the VMMs
 * as units, the jump through `systemctl kexec`, and its blackout taken
 * apart span by span. It runs in the systemd lane of the kernel tests,
 * after the fleet: in the other lane it ran beside the fleet's three guests
 * (four guests on two cores), and once took longer than its bound.
 */
import { beforeAll, expect, it } from 'vitest';
import { describeOneKernel, newest, systemdImageOrExplain } from '../../../test/kernel/support.js';
import type { ProcessResult } from '../../lib/harness/process.js';
import { expectInOrder, npmRunDemo } from './demo-support.js';

/** Two boots of the systemd image under emulation: about 3 minutes on a loaded machine, more on a slower one. */
const DEMO_TIMEOUT_MS = 840_000;

describeOneKernel(
  'npm run demo -- --host systemd',
  (kernel) => {
    if (systemdImageOrExplain() === undefined) return;
    let run: ProcessResult;
    beforeAll(async () => {
      run = await npmRunDemo(['--host', 'systemd', '--memory', '16'], { LIVEUPDATE_KERNEL: kernel.path }, DEMO_TIMEOUT_MS);
    }, DEMO_TIMEOUT_MS + 60_000);

    it('exits 0 with the agent in systemd mode from its units, both VMs claimed, and the summary', () => {
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
      expectInOrder(run.stdout, [
        /boot: QEMU .* on the systemd guest image \(systemd 26\d/,
        /agent: liveupdate-agent\.service started from the shipped units \(systemd mode/,
        /bob: preserved as session u1002\.guest-ram/,
        /jump: `liveupdate update`/,
        /stage 2: \S+ up/,
        /agent: manifest read \(kexec #1\): u1001\.guest-ram, u1002\.guest-ram carried over/,
        /PASSED in \d+ s: 2 VMs x 16 MiB of guest memory survived a kexec byte for byte/,
        // The systemd path taken apart: each instant was seen (the marker unit, systemd-shutdown, PID 1, the units).
        /the systemd path, span by span:/,
        /the orderly shutdown: every unit stopped .*: \d+ ms$/,
        /systemd-shutdown: .*preserved in LUO session 'systemd': \d+ ms$/,
        /PID 1 retrieving the fd stores it preserved in LUO .*: -?\d+ ms$/,
        /the agent's unit started to the agent back .*: \d+ ms$/,
        /bob's client unit started to its claim .*: \d+ ms$/,
      ]);
    });
  },
  newest,
);
