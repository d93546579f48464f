/**
 * The agent's announcements on the newest LUO kernel (scenario
 * test/kernel/scenarios/agent-announce.ts), in one boot with one kexec:
 * subscribed clients are told `prepare` before an update and `resume` when
 * it is refused; a client that never answers, and one that disconnects
 * mid-prepare, each make the update refuse, naming it, with nothing loaded
 * and nothing lost; a slow client that saves its state and says ready
 * within the deadline lets the update kexec, and claims that state after it.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeOneKernel, itEveryCheckPasses, newest, scenario, type ExpectedChecks } from './support.js';

const EXPECTED: ExpectedChecks = {
  'agent-announce/never-answers': {
    1: [
      'both clients subscribed on protocol version 2',
      'update exits 3 naming only the client that never answered',
      'the prompt client was told prepare with the next kernel, said ready, then was told resume',
      'the silent client was told prepare and resume',
      'the prepare carried the deadline',
      'nothing stays loaded',
      'the agent still holds both sessions',
    ],
    2: ["the silent client's session arrives intact", "the prompt client's session arrives intact"],
  },
  'agent-announce/disconnects-mid-prepare': {
    1: [
      'update exits 3 naming the client that left, as disconnected',
      'refused when it left, long before the deadline',
      'it was told prepare and closed',
      'the prompt client was told resume again',
      'nothing stays loaded',
      'the agent kept the session of the client that left',
    ],
    2: ['the session of the client that left arrives intact'],
  },
  'agent-announce/slow-client-kexecs': {
    1: ['liveupdate update will make the kexec'],
    2: [
      "the slow client's memory arrives intact",
      'the state it saved while preparing came across',
      'it had been told the kernel that was then loaded',
      'it said ready after its 3 s, within the deadline',
      'the agent stops on SIGTERM',
    ],
  },
};

// One kernel: announcements are the agent's userspace protocol; the ioctls behind them are proven on every kernel elsewhere.
describeOneKernel('the agent announces updates', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    // Its own boot: the agent owns /dev/liveupdate.
    run = await boot({ name: `agent-announce-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('agent-announce')], timeoutMs: 600_000 });
  });

  it('boots, is refused twice, kexecs through liveupdate update, and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  itEveryCheckPasses(() => run, EXPECTED);
}, newest);
