/**
 * A live-update rollout across a fleet, driven by Debian's ansible-playbook
 * (examples/ansible/rollout.yml): three guests of the systemd image boot the
 * oldest kernel under test, each with sshd on a loopback port, the agent as
 * a unit and one VMM-like client holding a memory pattern through it
 * (conformance/lib/vm/fleet.ts; the agent in systemd mode from the shipped
 * units), and the playbook rolls the newest kernel
 * over them (max_fail_percentage 0).
 *
 * One boot of the fleet, three runs of the playbook. In the first (one host
 * per batch), host-2's client never says ready: host-1 is updated, host-2
 * fails its batch with that client named, and host-3 is never touched. Then
 * host-2's client says ready and the same playbook runs again in batches of
 * one host and then two: host-1 is only health-checked, then host-2 and
 * host-3 are updated together, every client claims its memory intact, and
 * the hosts' own clocks show each batch beginning after the previous one
 * was healthy, and the two hosts of one batch jumping at the same time. A
 * third run asks for Debian's own kernel, which has no LUO: the agent
 * refuses it at preflight, and nothing jumps.
 */
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { blackoutOnHostMs, phaseLines, startFleet, type Fleet, type FleetHost, type PlaybookResult, type RolloutSummary } from '../../conformance/lib/vm/fleet.js';
import type { HostReport } from '../../conformance/lib/vm/fleet-host.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP } from '../../conformance/lib/vm/systemd-image.js';
import { debianKernel, findKernels, type DebianKernel } from '../../conformance/lib/vm/kernels.js';
import { describeOneKernel, newest } from './support.js';

/** How long the agent waits for the clients in the test (the role's default is 60 s). */
const READY_TIMEOUT_S = 10;
const CLIENT_MIB = 16;
/** The second run's batches (ansible's `serial` as a list): host-1, then host-2 and host-3 together. */
const RESUMED_BATCHES = [1, 2];

/** One JSON line of the agent's log, as the journal keeps it. */
interface AgentEvent {
  time: string;
  event: string;
  clientName?: string | null;
}

/** What the test gathers from a host between and after the runs. */
interface HostView {
  release: string;
  agent: { kexecCount: number; updateStartedAt: number | null; sessions: Array<{ name: string; state: string; owner: number }> };
  events: AgentEvent[];
}

/** Separates the three answers of {@link look}'s one ssh command (none of them prints it). */
const LOOK_SEPARATOR = '--- liveupdate fleet test ---';

/** A host's release, the agent's sessions and its log, over one ssh connection (each costs seconds under emulation). */
async function look(fleet: Fleet, host: FleetHost): Promise<HostView> {
  const command = ['journalctl -q -b -u liveupdate-agent.service -o cat', 'cat /proc/sys/kernel/osrelease', 'liveupdate sessions --json'].join(
    ` && echo '${LOOK_SEPARATOR}' && `,
  );
  const result = await fleet.ssh(host, command);
  const parts = result.stdout.split(`${LOOK_SEPARATOR}\n`);
  if (result.status !== 0 || parts.length !== 3) throw new Error(`${host.name}: ${command} exited ${String(result.status)}: ${result.stderr}`);
  const [journal, release, sessions] = parts as [string, string, string];
  const events = journal
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as AgentEvent);
  return { release: release.trim(), agent: JSON.parse(sessions), events };
}

/** {@link look} at every host at once, by name. */
async function lookAtAll(fleet: Fleet): Promise<Record<string, HostView>> {
  const views = await Promise.all(fleet.hosts.map((h) => look(fleet, h)));
  return Object.fromEntries(fleet.hosts.map((h, i) => [h.name, views[i]!]));
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

describeOneKernel('a rollout across a fleet with ansible-playbook', (kernel) => {
  // On the newest kernel: the fleet boots the oldest and rolls the newest over it.
  const image = findSystemdImage();
  const oldest = findKernels()[0];
  if (image === undefined || oldest === undefined || oldest.release === kernel.release) {
    it('needs the systemd guest image and two kernels of different releases', () => {
      const error = new Error(image === undefined ? NO_SYSTEMD_IMAGE_HELP : `the fleet rolls one release over another: build both test kernels (npm run vm:kernel); found only ${kernel.release}`);
      error.stack = error.message;
      throw error;
    });
    return;
  }
  let fleet: Fleet | undefined;
  let stopped: PlaybookResult;
  let resumed: PlaybookResult;
  let withoutLuo: PlaybookResult;
  let debian: DebianKernel;
  let between: Record<string, HostView> = {};
  let after: Record<string, HostView> = {};
  const secondBoots: Record<string, HostReport> = {};
  const started = Date.now();

  beforeAll(async () => {
    // Debian's own kernel of the newest series, downloaded once (about 15 MB) and cached beside the test kernels.
    debian = debianKernel(kernel.release.split('.').slice(0, 2).join('.'));
    fleet = await startFleet({
      files: debian.guestFiles,
      name: 'fleet',
      systemdImage: image.path,
      kernels: { boot: oldest.path, target: kernel.path },
      hosts: [{}, { clientReady: false }, {}],
      clientMib: CLIENT_MIB,
      logDir: path.resolve(__dirname, '..', '..', '.vm-out'),
    });
    const up = Date.now();
    const vars = { liveupdate_ready_timeout: READY_TIMEOUT_S };
    const say = (line: string): void => void process.stderr.write(`[fleet ${seconds(Date.now() - started)}] ${line}\n`);
    stopped = await fleet.playbook({ vars, onEvent: phaseLines(say) });
    between = await lookAtAll(fleet);
    await fleet.sayReady(fleet.hosts[1]!);
    // Batches of one host, then two: the second batch's two jumps overlap, which also halves their cost in the test.
    resumed = await fleet.playbook({ vars: { ...vars, liveupdate_serial: RESUMED_BATCHES }, onEvent: phaseLines(say) });
    for (const h of fleet.hosts) {
      // A host the second run did not update never boots again: the assertions below say why, with the playbook's output.
      const second = await fleet.boot(h, 2, 60_000).catch(() => undefined);
      if (second !== undefined) secondBoots[h.name] = second;
    }
    after = await lookAtAll(fleet);
    withoutLuo = await fleet.playbook({ vars: { ...vars, liveupdate_kernel: Object.keys(debian.guestFiles).find((f) => f.endsWith('/vmlinuz')), liveupdate_release: debian.release }, onEvent: phaseLines(say) });
    const perHost = Object.values(resumed.summaries)
      .concat(stopped.summaries['host-1'] ?? [])
      .filter((s) => s.result === 'updated')
      .map((s) => {
        const host = fleet!.hosts.find((h) => h.name === s.host)!;
        return `${s.host} ${seconds((s.controllerFinishedAt ?? 0) - (s.controllerStartedAt ?? 0))} (blackout ${String(blackoutOnHostMs(s, host.clocks))} ms on the host's clock, ${s.blackoutMs} ms by the guests' wall clocks)`;
      });
    console.log(
      `fleet of 3 on ${oldest.release} -> ${kernel.release}: booted in ${seconds(up - started)}; ` +
        `first run (stops at host-2) ${seconds(stopped.elapsedMs)}, second run (resumes, batches ${RESUMED_BATCHES.join('+')}) ${seconds(resumed.elapsedMs)}, third run (refused at preflight) ${seconds(withoutLuo.elapsedMs)}; per updated host: ${perHost.join(', ')}`,
    );
  }, 3_600_000);

  afterAll(async () => {
    await fleet?.stop();
  }, 120_000);

  const summary = (run: () => PlaybookResult, host: string): RolloutSummary => {
    const s = run().summaries[host];
    expect(s, `no summary for ${host}\n${run().stdout.slice(-4000)}`).toBeDefined();
    return s as RolloutSummary;
  };

  it("stops at the host whose client never says ready: that host fails in phase update naming the client, and the hosts after it are not touched", () => {
    expect(stopped.status, stopped.stdout.slice(-4000)).toBe(2);
    expect(summary(() => stopped, 'host-1')).toMatchObject({ result: 'updated', releaseBefore: oldest.release, releaseAfter: kernel.release });
    const failed = summary(() => stopped, 'host-2');
    expect(failed).toMatchObject({ result: 'failed', phase: 'update', releaseBefore: oldest.release });
    expect(failed.reason).toMatch(/ERR_LIVEUPDATE_UPDATE_REFUSED/);
    expect(failed.reason).toMatch(/not ready: client \d+ \(pid \d+, uid 1001, unit lu-vmm\.service\)/);
    // host-2 did not jump: same kernel, no kexec, its client's memory still preserved in the old kernel.
    expect(between['host-2']).toMatchObject({ release: oldest.release, agent: { kexecCount: 0, sessions: [{ name: 'guest-ram', state: 'outgoing', owner: 1001 }] } });
    // host-3 was never reached: no summary, its agent never asked (not even a dry run).
    expect(stopped.summaries['host-3']).toBeUndefined();
    expect(between['host-3']).toMatchObject({ release: oldest.release, agent: { kexecCount: 0, updateStartedAt: null } });
    expect(between['host-3']?.events.filter((e) => e.clientName === 'liveupdate update' || e.event.startsWith('update') || e.event.startsWith('kexec'))).toEqual([]);
  });

  it('the refusal on host-2 came after host-1 was healthy (the hosts\' own clocks)', () => {
    const refused = between['host-2']?.events.find((e) => e.event === 'update-refused');
    expect(refused, JSON.stringify(between['host-2']?.events)).toBeDefined();
    expect(Date.parse(refused!.time)).toBeGreaterThan(summary(() => stopped, 'host-1').healthyAt ?? Infinity);
  });

  it('the same playbook again resumes: host-1 is only health-checked, host-2 and host-3 are updated', () => {
    expect(resumed.status, resumed.stdout.slice(-4000)).toBe(0);
    expect(summary(() => resumed, 'host-1')).toMatchObject({ result: 'already-on-target', releaseAfter: kernel.release, kexecCount: 1 });
    for (const host of ['host-2', 'host-3']) {
      expect(summary(() => resumed, host)).toMatchObject({ result: 'updated', releaseBefore: oldest.release, releaseAfter: kernel.release, kexecCount: 1, sessionsClaimed: 1 });
    }
    for (const h of Object.values(after)) expect(h.release).toBe(kernel.release);
  });

  it("every client claims its memory back after its host's jump, every byte and its counter intact", () => {
    expect(Object.keys(secondBoots).sort(), resumed.stdout.slice(-4000)).toEqual(['host-1', 'host-2', 'host-3']);
    for (const [host, boot] of Object.entries(secondBoots)) {
      expect(boot.release, host).toBe(kernel.release);
      expect(boot.vmm, host).toMatchObject({
        vm: host,
        phase: 'claimed',
        // host-2's client holds updates back on every boot; the others say ready again for the next one.
        ready: host !== 'host-2',
        claimed: { bytes: CLIENT_MIB * 2 ** 20, metadata: { vm: host, mib: CLIENT_MIB } },
        comparison: { firstMismatch: -1, badChunks: 0 },
        counter: { intact: true },
      });
      // The claimed session is finished; the client's memory is preserved again for the next update.
      expect(after[host]?.agent.sessions).toContainEqual(expect.objectContaining({ name: 'guest-ram', state: 'outgoing', owner: 1001 }));
    }
  });

  it("the summaries' boot ids are the hosts' own (as each boot reported it): a new one after each jump, the same on the host only checked", () => {
    const bootIds = (name: string): string[] => fleet!.hosts.find((h) => h.name === name)!.boots.map((b) => b.bootId);
    const [first1, second1] = bootIds('host-1');
    expect(first1).not.toBe(second1);
    expect(summary(() => stopped, 'host-1')).toMatchObject({ bootBefore: first1, bootAfter: second1 });
    expect(summary(() => resumed, 'host-1')).toMatchObject({ bootBefore: second1, bootAfter: second1 });
    for (const host of ['host-2', 'host-3']) {
      const [first, second] = bootIds(host);
      expect(summary(() => resumed, host)).toMatchObject({ bootBefore: first, bootAfter: second });
    }
  });

  it("each jump's blackout, placed on the host's clock by both kernels' clock samples, lies within the role's time on that host", () => {
    const updated: Array<[FleetHost, RolloutSummary]> = [
      [fleet!.hosts[0]!, summary(() => stopped, 'host-1')],
      [fleet!.hosts[1]!, summary(() => resumed, 'host-2')],
      [fleet!.hosts[2]!, summary(() => resumed, 'host-3')],
    ];
    for (const [host, s] of updated) {
      expect(host.clocks.map((c) => c?.samples), host.name).toEqual([5, 5]);
      const blackout = blackoutOnHostMs(s, host.clocks);
      expect(blackout, host.name).toBeGreaterThan(0);
      expect(blackout, host.name).toBeLessThan((s.controllerFinishedAt ?? 0) - (s.controllerStartedAt ?? 0));
    }
  });

  /** A host's update as its own clock saw it: the agent's manifest (from, frozen) to the end of the health gate (to). */
  const updateWindow = (s: RolloutSummary): { host: string; from: number; frozen: number; to: number } => ({
    host: s.host,
    from: s.updateStartedAt ?? NaN,
    frozen: s.frozenAt ?? NaN,
    to: s.healthyAt ?? NaN,
  });

  it("batches follow each other: each batch's updates began after the previous batch was healthy, and the two hosts of one batch jumped together (the hosts' own clocks)", () => {
    const first = updateWindow(summary(() => stopped, 'host-1'));
    const batch = [updateWindow(summary(() => resumed, 'host-2')), updateWindow(summary(() => resumed, 'host-3'))];
    const previousHealthy = summary(() => resumed, 'host-1').healthyAt ?? NaN;
    const all = JSON.stringify({ first, previousHealthy, batch });
    for (const w of [first, ...batch]) expect(w.from <= w.frozen && w.frozen < w.to, all).toBe(true);
    for (const w of batch) expect(w.from, all).toBeGreaterThan(Math.max(first.to, previousHealthy));
    // One batch: each host froze before the other was healthy again.
    expect(Math.max(batch[0]!.frozen, batch[1]!.frozen), all).toBeLessThan(Math.min(batch[0]!.to, batch[1]!.to));
  });

  it("a host whose next kernel lacks LUO is refused at preflight with the agent's reason, and nothing jumps", async () => {
    expect(withoutLuo.status, withoutLuo.stdout.slice(-4000)).toBe(2);
    const refused = summary(() => withoutLuo, 'host-1');
    expect(refused).toMatchObject({ result: 'failed', phase: 'preflight', releaseBefore: kernel.release });
    expect(refused.reason).toMatch(/the agent refuses the update .*kernel-luo/);
    expect(Object.keys(withoutLuo.summaries)).toEqual(['host-1']);
    // host-1 is still in its second boot, on the newest kernel, its agent's count unchanged.
    expect(fleet!.hosts[0]!.boots).toHaveLength(2);
    expect((await look(fleet!, fleet!.hosts[0]!)).agent.kexecCount).toBe(1);
  });
}, newest);
