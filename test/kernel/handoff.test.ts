/**
 * Issue 5 on each LUO kernel: a session fd handed from one process to
 * another survives the kexec in the receiver after the creator exited; a
 * receiver that closes it loses it; and the sd_notify fd store round trip
 * with LISTEN_FDS after the update.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeKernels, scenario } from './support.js';

const EXPECTED: Record<string, Record<number, string[]>> = {
  'handoff/session-fd-to-another-process': {
    1: ['process A exited cleanly', 'one fd arrived with its bytes', 'describeFd sees a LUO session', 'Session.fromFd'],
    2: ['memfd intact after the kexec'],
  },
  'handoff/closed-by-receiver-before-kexec': {
    1: ['process A exited cleanly', 'one fd arrived with its bytes', 'describeFd sees a LUO session', 'Session.fromFd'],
    2: ['closed before the kexec: gone'],
  },
  'handoff/systemd-fd-store': {
    1: ['process A exited cleanly', 'the notify message', 'one fd in the fd store', 'it is the session'],
    2: ['service exited cleanly', 'service found its session at fd 3 by name', 'service retrieved the memfd intact and finished'],
  },
};

describeKernels('fd hand-off', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({ name: `handoff-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('handoff')] });
  });

  it('boots, kexecs, and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  for (const [name, stages] of Object.entries(EXPECTED)) {
    it(`${name}: every check passes`, () => {
      for (const [stage, checks] of Object.entries(stages)) {
        const result = run.result(name, Number(stage));
        expect(result, `no result for ${name} in stage ${stage}\n${run.report()}`).toBeDefined();
        expect(result?.error, run.report()).toBeUndefined();
        expect(result?.checks.filter((c) => !c.ok), run.report()).toEqual([]);
        expect(result?.checks.map((c) => c.name)).toEqual(checks);
      }
    });
  }
});
