/**
 * Several runs of the same groups as one: the boots of the systemd and the
 * VMM groups are independent samples whichever run made them, so two runs
 * pool their samples and the figures are taken again over all of them
 * (each run still named, with its own date, commit and load). A fleet run
 * is one rollout: a later one replaces an earlier one. Pure.
 * @internal
 */
import type { GroupResults, WithRun } from './groups.js';
import { spanEstimates, type FailedSample, type GroupRun } from './intervals.js';
import { combineBlackoutHost, type SystemdBlackoutResult } from './systemd-blackout.js';
import { COLD_SPANS, RESUMED_SPANS, type VmmDowntimeResult, type VmmPathResult } from './vmm-downtime.js';

/** The runs behind a group's figures, in order. */
export function runsOf(run: GroupRun): readonly GroupRun[] {
  return run.runs ?? [run];
}

/** Two runs as one: each kept in `runs`, the load the highest either saw. */
export function mergeRuns(a: GroupRun, b: GroupRun): GroupRun {
  const runs = [...runsOf(a), ...runsOf(b)];
  return {
    date: runs[0]!.date,
    commit: [...new Set(runs.map((r) => r.commit))].join(', '),
    kernel: [...new Set(runs.map((r) => r.kernel))].join(', '),
    elapsed_s: runs.reduce((sum, r) => sum + r.elapsed_s, 0),
    loadavg: { start: Math.max(...runs.map((r) => r.loadavg.start)), end: Math.max(...runs.map((r) => r.loadavg.end)), nproc: a.loadavg.nproc },
    runs,
  };
}

/** `b`'s failures numbered after `a`'s boots. */
function renumbered(failures: readonly FailedSample[], after: number): FailedSample[] {
  return failures.map((f) => ({ ...f, boot: f.boot + after }));
}

/** How many boots a run made: the most any path had, samples and failures together. */
function bootsRun(perPath: ReadonlyArray<{ what: string; samples: number }>, failures: readonly FailedSample[]): number {
  return Math.max(0, ...perPath.map((p) => p.samples + failures.filter((f) => f.what === p.what).length));
}

function mergeSystemd(a: WithRun<SystemdBlackoutResult>, b: WithRun<SystemdBlackoutResult>): WithRun<SystemdBlackoutResult> {
  const after = bootsRun(a.hosts.map((h) => ({ what: h.host, samples: h.samples.length })), a.failures);
  return {
    ...a,
    hosts: a.hosts.map((h) => combineBlackoutHost(h.host, [...h.samples, ...(b.hosts.find((x) => x.host === h.host)?.samples ?? [])])),
    failures: [...a.failures, ...renumbered(b.failures, after)],
    run: mergeRuns(a.run, b.run),
  };
}

function pathName(p: VmmPathResult): string {
  return `${p.path} ${p.mib} MiB`;
}

function mergeVmm(a: WithRun<VmmDowntimeResult>, b: WithRun<VmmDowntimeResult>): WithRun<VmmDowntimeResult> {
  const after = bootsRun(a.paths.map((p) => ({ what: pathName(p), samples: p.samples.length })), a.failures);
  const paths = a.paths.map((p): VmmPathResult => {
    const other = b.paths.find((x) => x.path === p.path && x.mib === p.mib);
    const samples = [...p.samples, ...(other?.samples ?? [])];
    return { ...p, boots: samples.length, samples, state_bytes: [...p.state_bytes, ...(other?.state_bytes ?? [])], spans: spanEstimates(samples.map((s) => s.marks), p.path === 'cold' ? COLD_SPANS : RESUMED_SPANS) };
  });
  return { ...a, paths, failures: [...a.failures, ...renumbered(b.failures, after)], run: mergeRuns(a.run, b.run) };
}

/** `b`'s groups with `a`'s: boots pooled for the systemd and VMM groups, the fleet's replaced. */
export function mergeGroups(a: GroupResults, b: GroupResults): GroupResults {
  const systemd = a.systemd !== undefined && b.systemd !== undefined ? mergeSystemd(a.systemd, b.systemd) : (b.systemd ?? a.systemd);
  const vmm = a.vmm !== undefined && b.vmm !== undefined ? mergeVmm(a.vmm, b.vmm) : (b.vmm ?? a.vmm);
  const fleet = b.fleet ?? a.fleet;
  return { ...(systemd === undefined ? {} : { systemd }), ...(vmm === undefined ? {} : { vmm }), ...(fleet === undefined ? {} : { fleet }) };
}
