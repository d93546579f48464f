/**
 * The benchmark's opt-in groups as command-line flags and as BENCHMARKS.md
 * sections, on results made up here (no kernel, no timing).
 */
import { describe, expect, it } from 'vitest';
import { spanEstimates, type GroupRun } from '../lib/bench/intervals.js';
import { fleetSection, GROUPS_BEGIN, GROUPS_END, groupSections, groupsInMarkdown, spliceGroups, systemdSection, vmmSection, whereSection } from '../lib/bench/groups-report.js';
import type { WithRun } from '../lib/bench/groups.js';
import { combineBlackoutHost, type BlackoutBoot } from '../lib/bench/systemd-blackout.js';
import type { SystemdBlackoutResult } from '../lib/bench/systemd-blackout.js';
import { COLD_SPANS, RESUMED_SPANS, type VmmDowntimeResult } from '../lib/bench/vmm-downtime.js';
import { combineFleet } from '../lib/bench/fleet-rollout.js';
import { withGroups } from '../lib/bench/markdown.js';
import { mergeGroups } from '../lib/bench/groups-merge.js';
import { parseArgs } from '../lib/bench/run.js';
import type { BenchResult } from '../lib/bench/report.js';

const run = (load: number): GroupRun => ({ date: '2026-12-05T04:00:00.000Z', commit: 'abc123', kernel: '7.3.4', elapsed_s: 600, loadavg: { start: load, end: load, nproc: 2 } });

const boot = (host: BlackoutBoot['host'], total: number): BlackoutBoot => ({ host, marks: { frozen: 0, jump: 500, kernel_up: 510, init: 2500, agent_back: total - 300, last_claim: total }, node_floor_ms: 600, elapsed_s: 90 });

const systemd: WithRun<SystemdBlackoutResult> = {
  client_mib: 16,
  clients: 2,
  failures: [{ what: 'systemd', boot: 3, reason: "stage 2 (7.3.4) case demo/guest-memory: Error: bob's VMM failed: EPIPE" }],
  hosts: [combineBlackoutHost('standalone', [boot('standalone', 6000), boot('standalone', 7000), boot('standalone', 6500)]), combineBlackoutHost('systemd', [boot('systemd', 16000), boot('systemd', 18000), boot('systemd', 17000)])],
  run: run(3.5),
};

const resumedMarks = (cont: number) => ({ stopped: 0, stateSaved: 200, statePreserved: 400, frozen: 500, newKernel: 1500, init: 4000, agentBack: 9000, qemuStarted: 11_000, stateLoaded: 11_500, cont });

const cold = { stopped: 0, newKernel: 1000, init: 3000, qemuStarted: 6000, guestRunning: 6500 };

const vmm: WithRun<VmmDowntimeResult> = {
  qemu: '11.1.0',
  method: 'x-ignore-shared',
  paths: [
    { path: 'resumed', mib: 64, boots: 2, spans: spanEstimates([resumedMarks(12_000), resumedMarks(13_000)], RESUMED_SPANS), state_bytes: [20_480, 20_480], samples: [resumedMarks(12_000), resumedMarks(13_000)].map((marks) => ({ marks, elapsed_s: 300 })) },
    { path: 'resumed', mib: 1024, boots: 2, spans: spanEstimates([resumedMarks(12_500), resumedMarks(13_500)], RESUMED_SPANS), state_bytes: [20_480, 20_480], samples: [resumedMarks(12_500), resumedMarks(13_500)].map((marks) => ({ marks, elapsed_s: 300 })) },
    { path: 'cold', mib: 64, boots: 1, spans: spanEstimates([cold], COLD_SPANS), state_bytes: [], samples: [{ marks: cold, elapsed_s: 200 }] },
  ],
  failures: [],
  run: run(0.5),
};

/** A kernel's clocks on the host's: host ms = guest wall ms + wallOffsetMs. */
const fit = (wallOffsetMs: number) => ({ stage: 1, samples: 5, monoOffsetMs: 0, wallOffsetMs, jitterMs: 0.2 });
const fleet = {
  ...combineFleet(
    ['host-1'],
    { status: 0, elapsedMs: 200_000, summaries: { 'host-1': { host: 'host-1', result: 'updated', releaseBefore: '7.2.13', releaseAfter: '7.3.4', frozenAt: 10_000, firstOpenAt: 19_000, blackoutMs: 9000, sessionsClaimed: 1, controllerStartedAt: 0, controllerFinishedAt: 180_000 } } },
    60_000,
    { 'host-1': [fit(500), fit(1234.5)] },
  ),
  run: run(1),
};

describe('the groups in BENCHMARKS.md', () => {
  it('shows the systemd path beside the standalone one, each figure a median with its interval and its boots', () => {
    const text = systemdSection(systemd);
    expect(text).toMatch(/^## Blackout on a systemd host/);
    expect(text).toContain('| ms, median [95% interval] (boots) | standalone | systemd |');
    expect(text).toMatch(/\*\*total: manifest sealed to the last claim\*\* \| \*\*6500 \[\d+, \d+\] ms \(n = 3\)\*\* \| \*\*17000 \[\d+, \d+\] ms \(n = 3\)\*\*/);
  });

  it('names each boot that broke and was left out, and says nothing of failures when none broke', () => {
    expect(systemdSection(systemd)).toContain("1 boot(s) broke and are left out of the figures (the counts say how many remain): systemd, boot 3: stage 2 (7.3.4) case demo/guest-memory: Error: bob's VMM failed: EPIPE.");
    expect(vmmSection(vmm)).not.toContain('broke');
  });

  it('says the machine\'s load during the run, and that a busy machine stretches the figures', () => {
    expect(systemdSection(systemd)).toContain('Run of 2026-12-05T04:00:00.000Z (commit abc123, load average (1 min) 3.50 at its start and 3.50 at its end), on 2 cores, kernel 7.3.4, 3 standalone and 3 systemd boots');
    expect(systemdSection(systemd)).toContain('The machine was shared with other work, which stretches every figure.');
    expect(vmmSection(vmm)).not.toContain('shared with other work');
  });

  it('takes the blackout apart into the kernel\'s part, user space with node\'s start, and the clients\' part', () => {
    const text = whereSection(systemd);
    expect(text).toMatch(/^## Where the time goes/);
    expect(text).toMatch(/the kernel's part .*\| 2000 \[2000, 2000\] ms \(n = 3\) \| 2000 \[2000, 2000\] ms \(n = 3\) \|/);
    expect(text).toMatch(/the clients' part .*\| 300 \[300, 300\] ms \(n = 3\) \|/);
    expect(text).toMatch(/node's start alone .*\| 600 \[600, 600\] ms \(n = 3\) \|/);
  });

  it('shows the VMM\'s downtime at both RAM sizes, the state\'s size, and the cold restart against it', () => {
    const text = vmmSection(vmm);
    expect(text).toMatch(/^## A real VMM's downtime/);
    expect(text).toContain('| resumed: ms, median [95% interval] (boots) | 64 MiB | 1 GiB |');
    expect(text).toContain('64 MiB: 20480 bytes; 1 GiB: 20480 bytes');
    expect(text).toMatch(/\*\*total downtime: stop to cont\*\* \| \*\*12500 \[\d+, \d+\] ms \(n = 2\)\*\* \| \*\*13000/);
    expect(text).toMatch(/total downtime: stop to the guest running again, from its boot\*\* \| \*\*6500 \[6500, 6500\] ms \(n = 1\)/);
    expect(text).toContain('Cloud Hypervisor');
  });

  it('shows each host of the fleet, the time per host and the blackout per host with their intervals, and the whole rollout', () => {
    const text = fleetSection(fleet);
    expect(text).toMatch(/^## A fleet rollout/);
    expect(text).toContain('| host-1 | updated | 7.2.13 → 7.3.4 | 180.0 s | 9.735 s | 9.0 s | 1 |');
    expect(text).toContain('| blackout per host (host clock) | 9.73 [9.73, 9.73] s (n = 1) |');
    expect(text).toContain('| time per host | 180.00 [180.00, 180.00] s (n = 1) |');
    expect(text).toContain('| the whole rollout (ansible-playbook, one host at a time) | 200.0 s (exit 0) |');
  });

  it('words a span as the code does today, whatever words the run recorded for the same marks', () => {
    const old = { ...systemd, hosts: systemd.hosts.map((h) => ({ ...h, spans: h.spans.map((s) => ({ ...s, name: `old words ${s.from}` })) })) };
    const text = systemdSection(old);
    expect(text).not.toContain('old words');
    expect(text).toContain("the kexec and the new kernel's early boot: the old kernel's last line to the new one's first");
  });

  it('writes only the groups that ran, in the order of the issue', () => {
    expect(groupSections({}).length).toBe(0);
    expect(groupSections({ fleet, systemd }).map((s) => s.split('\n')[0])).toEqual(['## Blackout on a systemd host', '## The systemd path taken apart', '## Where the time goes', '## A fleet rollout']);
  });

  it('puts the groups of a groups-only run in place of a full run\'s, keeping the full run\'s others', () => {
    const full = { groups: { systemd, vmm } } as unknown as BenchResult;
    const merged = withGroups(full, { mode: 'groups', date: '', commit: '', machine: { nproc: 2, cpu: '', qemu: '' }, groups: { vmm: { ...vmm, qemu: '11.2' }, fleet } });
    expect(merged.groups?.systemd).toBe(systemd);
    expect(merged.groups?.vmm?.qemu).toBe('11.2');
    expect(merged.groups?.fleet).toBe(fleet);
    expect(withGroups(full, undefined)).toBe(full);
  });
});

describe('the groups spliced into an existing BENCHMARKS.md', () => {
  const page = '# Benchmarks\n\n## The agent path\n\nrows\n\n## Targets\n\n| target |\n';

  it('puts the groups\' block before the targets and leaves the rest of the file as it was', () => {
    const out = spliceGroups(page, { systemd });
    expect(out.startsWith('# Benchmarks\n\n## The agent path\n\nrows\n\n' + GROUPS_BEGIN)).toBe(true);
    expect(out.endsWith(`${GROUPS_END}\n\n## Targets\n\n| target |\n`)).toBe(true);
    expect(out).toContain('## Blackout on a systemd host');
    expect(groupsInMarkdown(out)).toEqual(JSON.parse(JSON.stringify({ systemd })));
  });

  it('replaces a group that ran again and keeps the others, once, in place', () => {
    const once = spliceGroups(page, { systemd, fleet });
    const twice = spliceGroups(once, { fleet: { ...fleet, fleet_rollout_s: 999 } });
    expect(twice.split(GROUPS_BEGIN)).toHaveLength(2);
    expect(twice).toContain('## Blackout on a systemd host');
    expect(twice).toContain('999.0 s (exit 0)');
    expect(twice).not.toContain('200.0 s (exit 0)');
    expect(twice.endsWith('## Targets\n\n| target |\n')).toBe(true);
  });

  it('refuses a file it cannot place the groups in, or whose block was edited out of shape', () => {
    expect(() => spliceGroups('# Benchmarks\n', { systemd })).toThrow(/no "## Targets"/);
    expect(() => groupsInMarkdown(`${GROUPS_BEGIN}\nsome text\n${GROUPS_END}\n`)).toThrow(/groups block is broken/);
  });
});

describe('runs of the same groups pooled', () => {
  const later = (g: typeof systemd): typeof systemd => ({ ...g, run: { ...run(9), date: '2026-12-05T05:00:00.000Z', commit: 'def456' }, failures: [{ what: 'standalone', boot: 1, reason: 'r' }] });

  it('pools the boots of two systemd runs and takes the figures again over all of them', () => {
    const merged = mergeGroups({ systemd }, { systemd: later(systemd) }).systemd!;
    const total = (h: number) => merged.hosts[h]!.spans.find((s) => s.to === 'last_claim' && s.from === 'frozen')!;
    expect(merged.hosts.map((h) => h.boots)).toEqual([6, 6]);
    expect(total(0)).toMatchObject({ median_ms: 6500, n: 6 });
    expect(total(1)).toMatchObject({ median_ms: 17000, n: 6 });
  });

  it('names both runs with their own load, and numbers the later run\'s broken boots after the earlier run\'s', () => {
    const merged = mergeGroups({ systemd }, { systemd: later(systemd) }).systemd!;
    expect(merged.run.runs?.map((r) => r.commit)).toEqual(['abc123', 'def456']);
    expect(merged.run.loadavg.end).toBe(9);
    // The first run made 4 boots (3 systemd samples and one broken), so the later run's boot 1 is boot 5.
    expect(merged.failures.map((f) => [f.what, f.boot])).toEqual([['systemd', 3], ['standalone', 5]]);
    expect(systemdSection(merged)).toContain('2 runs, their boots pooled: of 2026-12-05T04:00:00.000Z (commit abc123, load average (1 min) 3.50 at its start and 3.50 at its end) and 2026-12-05T05:00:00.000Z (commit def456, load average (1 min) 9.00 at its start and 9.00 at its end)');
  });

  it('pools the VMM boots per path and RAM size, and keeps the later fleet run', () => {
    const merged = mergeGroups({ vmm, fleet }, { vmm, fleet: { ...fleet, fleet_rollout_s: 999 } });
    expect(merged.vmm!.paths.map((p) => [p.path, p.mib, p.boots, p.spans.at(-1)!.n, p.spans.at(-1)!.median_ms])).toEqual([
      ['resumed', 64, 4, 4, 12_500],
      ['resumed', 1024, 4, 4, 13_000],
      ['cold', 64, 2, 2, 6500],
    ]);
    expect(merged.vmm!.paths[0]!.state_bytes).toHaveLength(4);
    expect(merged.fleet!.fleet_rollout_s).toBe(999);
  });
});

describe('the group flags of npm run bench', () => {
  it('runs no group unless asked: --quick, what CI runs, stays as it was', () => {
    expect(parseArgs(['--quick', '--boots', '1', '--json']).groups).toEqual({ systemd: 0, vmm: 0, fleet: 0 });
  });

  it('runs each group asked for with its boots, and every group with --all', () => {
    expect(parseArgs(['--systemd', '--group-boots', '5']).groups).toEqual({ systemd: 5, vmm: 0, fleet: 0 });
    expect(parseArgs(['--vmm', '--fleet', '2']).groups).toEqual({ systemd: 0, vmm: 3, fleet: 2 });
    expect(parseArgs(['--all']).groups).toEqual({ systemd: 3, vmm: 3, fleet: 3 });
  });

  it('refuses a run that could not do what it says', () => {
    expect(() => parseArgs(['--groups-only'])).toThrow(/needs a group/);
    expect(() => parseArgs(['--host-only', '--vmm'])).toThrow(/takes no group/);
    expect(() => parseArgs(['--fleet', '0'])).toThrow(/--fleet needs a positive integer/);
    expect(() => parseArgs(['--fleet'])).toThrow(/--fleet needs a positive integer/);
  });
});
