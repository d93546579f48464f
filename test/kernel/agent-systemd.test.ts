/**
 * The agent in systemd mode on the systemd guest image (Debian sid, systemd
 * 262 as PID 1), newest LUO kernel, one boot and one kexec made by
 * `liveupdate update` through systemd's orderly shutdown
 * (conformance/lib/conformance/scenarios/agent-systemd.ts, which
 * `liveupdate-conformance --systemd` runs too). The agent and its socket run
 * from units/ as the package ships them, its executable linked as
 * `npm install -g` does.
 */
import * as path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { agentPackageFiles } from '../../conformance/lib/harness/systemd.js';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeOneKernel, itEveryCheckPasses, newest, conformanceScenario, systemdImageOrExplain, type ExpectedChecks } from './support.js';

const root = path.resolve(__dirname, '..', '..');

const EXPECTED: ExpectedChecks = {
  'agent-systemd/standalone-refused': {
    1: [
      'KExecCount before any kexec',
      'liveupdate agent --mode standalone exits 1',
      'and says why, and how to force it',
      'forced, the standalone unit starts',
      'its first log line: standalone, forced',
      'status exits 0: LUO is available through the agent holding the device',
    ],
  },
  'agent-systemd/update-through-systemd': {
    1: [
      'the agent unit starts',
      'its first log line: systemd mode, and why',
      'status: available, the agent in systemd mode, nobody holding the device',
      'client 1001: unit started',
      'client 1001: created its session and said ready',
      'client 1002: unit started',
      'client 1002: created its session and said ready',
      'the stand-in database starts',
      'luo-session: unit started beside the agent',
      'luo-session: preserved before the kexec',
      'memfd: unit started beside the agent',
      'memfd: preserved before the kexec',
    ],
    2: [
      'KExecCount after one update',
      'the database was stopped cleanly before the kexec (its ExecStop ran once)',
      'client 1001: claimed its session, metadata and bytes intact',
      'client 1002: claimed its session, metadata and bytes intact',
      'luo-session: got its own back',
      'memfd: got its own back',
      'the agent read its manifest and took both sessions PID 1 handed back',
      'sessions: both claimed and finished, one live update',
    ],
  },
  'agent-systemd/restart-keeps-sessions': {
    1: ['after systemctl restart the agent lists both sessions, outgoing, with their metadata', 'it took them back from its fd store'],
  },
  'agent-systemd/device-busy': {
    1: ['a create while another process holds the device for a second goes through (the agent retried)', 'held past the retries: AgentUnavailableError naming the holder'],
  },
  'agent-systemd/refused-jump': {
    1: ['update exits 1 and says systemd did not start the kexec', 'nothing stays loaded', 'the agent still holds both sessions'],
  },
  'agent-systemd/update-kexecs': {
    1: ['liveupdate update will make the kexec'],
  },
};

describeOneKernel(
  'the agent in systemd mode',
  (kernel) => {
    const image = systemdImageOrExplain();
    if (image === undefined) return;
    let run: VmRun;

    beforeAll(async () => {
      run = await boot({
        name: `agent-systemd-${kernel.release}`,
        kernels: [kernel.path],
        scenarios: [conformanceScenario('agent-systemd')],
        systemdImage: image.path,
        // The package's executable and units (the test bed's guest carries only dist/), where npm installs them.
        files: agentPackageFiles(root),
        timeoutMs: 600_000,
      });
      console.log(`agent in systemd mode (${image.versions}) on ${kernel.release}: run ${(run.elapsedMs / 1000).toFixed(1)} s, one boot, one kexec`);
    }, 660_000);

    it('boots systemd 262, runs both stages, and kexecs once through liveupdate update and systemctl kexec', () => {
      expect(run.ok, run.report()).toBe(true);
      expect(run.stages.map((s) => s.stage)).toEqual([1, 2]);
    });

    itEveryCheckPasses(() => run, EXPECTED);
  },
  newest,
);
