/**
 * The agent on the newest LUO kernel (scenario test/kernel/scenarios/agent.ts):
 * an agent process and clients of two uids, an agent restart through the
 * fd store, a killed client re-attaching, an update refused for a client
 * not ready, then `liveupdate update` making the real kexec, and every
 * client getting its own sessions back in the new kernel; then a manifest
 * of a newer major version, refused with nothing finished (a third kernel).
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeOneKernel, itEveryCheckPasses, newest, scenario, type ExpectedChecks } from './support.js';

const EXPECTED: ExpectedChecks = {
  'agent/restart-keeps-sessions': {
    1: [
      'the agent said READY=1',
      'SIGTERM: the agent stopped cleanly',
      'it parked its state and the session in the fd store',
      'the restarted agent still holds the session',
    ],
    2: [
      'sessions --json lists every session from the manifest, waiting',
      'kexec count 1',
      'frozen before the device was opened again',
      'the session kept through the agent restart is intact',
    ],
  },
  'agent/two-users-vm1': {
    1: ['the agent saw each uid (SO_PEERCRED)', "each user's vm1 is its own kernel session", 'bob sees only his sessions', "bob cannot attach to alice's vm1"],
    2: ["bob cannot retrieve alice's vm1", "alice's vm1: her metadata and bytes", "bob's vm1: his metadata and bytes"],
  },
  'agent/killed-client-reattaches': {
    1: ['re-attached: the same outgoing session and its metadata'],
    2: ['both files of the re-attached session arrive'],
  },
  'agent/update-refused-not-ready': {
    1: ['update exits 3 (a client not ready)', 'the report names the client: id, pid, uid', 'the kernel was unloaded'],
    2: ['the late client’s session arrives'],
  },
  'agent/update-kexecs': {
    1: ['liveupdate update will make the kexec'],
    2: ['every session was claimed and released', 'the agent stops on SIGTERM'],
  },
  'agent/newer-manifest-refused': {
    2: ['planted'],
    3: [
      'sessions says why the manifest is refused',
      'a claim is refused with ManifestVersionError',
      'the agent logged it',
      'the refusing agent stops cleanly',
      "the user's session was left untouched",
    ],
  },
};

// One kernel: what the agent adds is userspace (its protocol, policy and
// manifest); the ioctls it makes are proven on every kernel by the other files.
describeOneKernel('the agent', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    // Its own boot: the agent owns /dev/liveupdate, which the shared scenarios open themselves.
    run = await boot({ name: `agent-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('agent')], timeoutMs: 600_000 });
  });

  it('boots, kexecs through liveupdate update, and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  itEveryCheckPasses(() => run, EXPECTED);
}, newest);
