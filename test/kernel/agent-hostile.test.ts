/**
 * The agent against hostile users and its own failures, on the newest LUO
 * kernel (scenario test/kernel/scenarios/agent-hostile.ts), in one boot with
 * one kexec: concurrency across connections, `sessions` paging, release
 * semantics, every update failure path leaving nothing loaded, the release
 * policy across an agent restart, a corrupt state memfd, the fd store's
 * limit, and an update that goes on without a client the policy does not
 * wait for.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeOneKernel, itEveryCheckPasses, newest, scenario, type ExpectedChecks } from './support.js';

const EXPECTED: ExpectedChecks = {
  'agent-hostile/concurrent-creates': {
    1: [
      'four concurrent creates of one name: one wins, the others SessionExistsError',
      'twelve concurrent creates on twelve connections stay within the quota of 4',
      'the agent holds exactly 4 of her sessions',
    ],
  },
  'agent-hostile/sessions-paging': {
    1: [
      'bob fills his quota with 16 KB of metadata per session',
      'metadata nested 100 deep is refused with a TypeError at the codec',
      "root's liveupdate sessions still answers",
      'every sessions reply fits in 64 KiB',
      'the pages list every session once',
      'more than one page was needed',
      'limit 1 gives one session per page',
    ],
  },
  'agent-hostile/release-keeps-quota': {
    1: ['a session released while its client keeps the fd is listed as released', 'it still counts against the quota', 'once the client closes it, the quota is free again'],
  },
  'agent-hostile/update-failures-unload': {
    1: [
      'an update whose manifest cannot be sealed fails there (EEXIST)',
      'a failure while sealing the manifest leaves nothing loaded',
      'the update loaded the kernel and waits',
      'SIGTERM during an update: the agent stops cleanly',
      'the update ends with the agent, refused',
      'SIGTERM during an update leaves nothing loaded',
    ],
  },
  'agent-hostile/release-on-exit': {
    1: [
      'onClientExit release: SIGTERM under the manager stops cleanly',
      'onClientExit release + a restart: every session is parked and back',
      'the update is refused for the client still not ready',
      'with release, a client lost during an update loses its sessions when the update ends',
      'nothing stays loaded',
    ],
  },
  'agent-hostile/fd-store': {
    1: ['a corrupt state memfd: every parked session is still taken back', 'the corrupt state is reported', 'fdStoreMax: one more session fits, the next is refused'],
  },
  'agent-hostile/update-without-bob': {
    1: ['liveupdate update will make the kexec without bob'],
    2: [
      'the update went on without bob, who was not ready: his sessions were kept',
      'a second update is refused while handed-over sessions wait',
      'a session released with its fd kept crossed the kexec, and its owner claims it',
      'two concurrent claims of one session are both served',
      'sessions nobody claimed are finished after unclaimed.afterSeconds, not before',
      'the agent stops cleanly',
    ],
  },
};

// One kernel: what this adds is the agent's own behaviour; its ioctls are proven on every kernel by the other files.
describeOneKernel('the agent against hostile users', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({ name: `agent-hostile-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('agent-hostile')], timeoutMs: 900_000 });
  }, 900_000);

  it('boots, runs every failure path, kexecs once, and finishes both stages', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  itEveryCheckPasses(() => run, EXPECTED);
}, newest);
