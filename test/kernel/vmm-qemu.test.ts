/**
 * A real VMM across a live update: QEMU (sid's, in the systemd guest image)
 * runs the counter guest on a RAM memfd; `liveupdate update` announces the
 * update, the orchestrator of examples/qemu-vmm/ (subscribed) stops the
 * guest, saves only its device state into a second memfd, preserves both
 * through the agent and says ready, and the agent kexecs
 * into the newest kernel; there the orchestrator claims the session,
 * restores the guest into a new QEMU and checks it continues. One boot, one
 * kexec (conformance/lib/demo/vmm-qemu-scenario.ts, shared with
 * `npm run demo -- --vmm qemu`).
 */
import { beforeAll, expect, it } from 'vitest';
import { downtimeLines, runVmmQemu, type VmmQemuRun } from '../../conformance/lib/demo/vmm-qemu.js';
import { VMM_CASE } from '../../conformance/lib/demo/vmm-qemu-scenario.js';
import { describeOneKernel, itEveryCheckPasses, newest, systemdImageOrExplain } from './support.js';

const MIB = 32;

describeOneKernel(
  'a QEMU guest resumed across a kexec by a Node orchestrator',
  (kernel) => {
    const image = systemdImageOrExplain();
    if (image === undefined) return;
    let result: VmmQemuRun;

    beforeAll(async () => {
      result = await runVmmQemu({ kernel, image, mib: MIB, timeoutMs: 900_000 });
      console.log(
        `vmm-qemu on ${kernel.release} (${image.versions}): run ${(result.run.elapsedMs / 1000).toFixed(1)} s; ` +
          `QEMU ${result.before?.qemu ?? '?'} (${result.before?.method ?? '?'}), state ${result.before?.stateBytes ?? '?'} bytes for ${MIB} MiB\n` +
          downtimeLines(result.downtime).join('\n'),
      );
    }, 960_000);

    it('boots, makes one kexec through the agent, and the guest resumes in the new kernel', () => {
      expect(result.run.ok, result.run.report()).toBe(true);
      expect(result.run.stages.map((s) => s.stage)).toEqual([1, 2]);
    });

    itEveryCheckPasses(() => result.run, {
      [VMM_CASE]: {
        1: ['QEMU is installed'],
        2: [
          "the orchestrator quiesced on the agent's prepare, in order",
          'the device state holds no RAM (under 1 MiB)',
          'the orchestrator ends on SIGTERM',
          'the guest resumed in the boot it stopped in (not started again)',
          'RAM after the load holds the counter where it stopped',
          'the counter continues past where it stopped',
          'what the guest prints continues from the stop (no boot line)',
          'the RAM the guest never touches is byte-identical',
          'no QEMU left running',
          "the VM's session was finished and released",
          'the agent stops on SIGTERM',
        ],
      },
    });

    it('sid’s QEMU keeps RAM out of the state with cpr-reboot, and the state is a few hundred KiB', () => {
      expect(result.before?.method).toBe('cpr-reboot');
      expect(result.before?.stateBytes).toBeGreaterThan(10_000);
      expect(result.before?.stateBytes).toBeLessThan(1 << 20);
    });

    it('the counter continues from the stop, not from 0: the same counter after the load, higher once running', () => {
      const after = result.after!;
      expect(after.counterAfterLoad).toBe(after.counterAtStop);
      expect(after.counterAtStop).toBeGreaterThan(0);
      expect(after.counterResumed).toBeGreaterThan(after.counterAtStop);
      expect(after.boots).toBe(1);
    });

    it('every mark of the downtime was seen, in order (but the steps the kexec may overtake: state saved, state preserved)', () => {
      const { stateSaved: _saved, statePreserved: _preserved, ...always } = result.downtime;
      const marks = Object.values(always);
      expect(marks.every((t) => t !== null)).toBe(true);
      expect([...marks].sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual(marks);
    });
  },
  newest,
);
