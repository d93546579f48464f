/**
 * Turns the host cases' rounds (host.ts) into the `host` and `fdpass`
 * sections of the benchmark's result: medians, intervals, and the targets.
 * Pure.
 * @internal
 */
import type { AgentHostResult } from './agent-report.js';
import type { FormRounds, HostRounds } from './host.js';
import { medianEstimate, ratioOverBoots, verdict, type Interval } from './stats.js';

/** One syscall in node's two forms against C: nanoseconds per call (medians over rounds). */
export interface CallCost {
  readonly sync_ns_per_call: number;
  readonly async_ns_per_call: number;
  readonly c_ns_per_call: number;
  /** Median over rounds of (sync − C) in the same round, and its 95% interval. */
  readonly sync_overhead_ns: number;
  readonly sync_overhead_ns_ci95: Interval;
  /** Median over rounds of (Promise − C) in the same round, and its 95% interval. */
  readonly async_overhead_ns: number;
  readonly async_overhead_ns_ci95: Interval;
  readonly rounds_ns_per_call: { readonly sync: readonly number[]; readonly async: readonly number[]; readonly c: readonly number[] };
}

/** The `host` section: the binding's own cost at native speed. */
export interface HostResult extends CallCost {
  /** What was called (the main figures). */
  readonly call: string;
  readonly rounds: number;
  readonly warmup: number;
  /** A LUO ioctl the kernel refuses with ENOTTY, through the addon's LUO glue (node's figures include building the error). */
  readonly luo_enotty: CallCost & { readonly call: string };
  /** Fresh node processes timed around the require. */
  readonly requires: number;
  /** `require('liveupdate')` in a fresh node (ms, median over processes) and its interval. */
  readonly require_ms: number;
  readonly require_ms_ci95: Interval;
  /** The module files it loaded, relative to the package, and those that belong to the test bed (none, if all is well). */
  readonly require_modules: readonly string[];
  readonly require_test_bed_modules: readonly string[];
  /** A fresh `node -e 0`, start to exit (ms): the floor under any node program. */
  readonly node_start_ms: number;
  readonly node_start_ms_ci95: Interval;
}

/** The `fdpass` section: one memfd over a seqpacket pair, send + receive + close. */
export interface FdPassResult {
  readonly c_ns_per_roundtrip: number;
  readonly sync_ns_per_roundtrip: number;
  readonly async_ns_per_roundtrip: number;
  /** node / C: median of node's rounds over the median of C's, and the paired-bootstrap interval. */
  readonly sync_ratio: number;
  readonly sync_ratio_ci95: Interval;
  readonly async_ratio: number;
  readonly async_ratio_ci95: Interval;
  readonly rounds_ns_per_roundtrip: { readonly sync: readonly number[]; readonly async: readonly number[]; readonly c: readonly number[] };
}

/** The host cases alone: what `npm run bench -- --host-only` prints. */
export interface HostOnlyResult {
  readonly mode: 'full' | 'quick';
  readonly machine: { readonly nproc: number; readonly cpu: string; readonly host_clock_tick: number };
  readonly date: string;
  readonly commit: string;
  readonly host: HostResult;
  readonly fdpass: FdPassResult;
  /** The agent's requests per second on the host (the guest half of the agent path needs a kernel). */
  readonly agent: { readonly host: AgentHostResult };
  readonly targets: readonly Target[];
}

/** A target "at most `limit`", judged on the interval. */
export interface Target {
  readonly name: string;
  readonly value: number;
  readonly ci95: Interval;
  readonly limit: number;
  readonly verdict: 'met' | 'missed' | 'undecided';
  /** `verdict === 'met'`. */
  readonly met: boolean;
}

/** A target from an estimate resting on `observations` (fewer than two: undecided). */
export function target(name: string, value: number, ci95: Interval, limit: number, observations: number): Target {
  const v = verdict(ci95, limit, observations);
  return { name, value: round3(value), ci95: roundPair(ci95), limit, verdict: v, met: v === 'met' };
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function roundPair(interval: Interval): Interval {
  return [round3(interval[0]), round3(interval[1])];
}

/** Module paths of the test bed: the guest runner, the conformance suite, the benchmark. */
const TEST_BED = /(^|\/)(vm|bench|conformance)\//;

function callCost(rounds: FormRounds): CallCost {
  const overhead = (form: readonly number[]): readonly number[] => form.map((x, i) => x - (rounds.c[i] as number));
  const sync = medianEstimate(overhead(rounds.sync));
  const async = medianEstimate(overhead(rounds.async));
  return {
    sync_ns_per_call: round3(medianEstimate(rounds.sync).median),
    async_ns_per_call: round3(medianEstimate(rounds.async).median),
    c_ns_per_call: round3(medianEstimate(rounds.c).median),
    sync_overhead_ns: round3(sync.median),
    sync_overhead_ns_ci95: roundPair(sync.ci95),
    async_overhead_ns: round3(async.median),
    async_overhead_ns_ci95: roundPair(async.ci95),
    rounds_ns_per_call: { sync: rounds.sync.map(round3), async: rounds.async.map(round3), c: rounds.c.map(round3) },
  };
}

/** The `host` section. */
export function hostResult(raw: HostRounds): HostResult {
  const requireMs = medianEstimate(raw.require_ms);
  const start = medianEstimate(raw.node_start_ms);
  return {
    call: 'memfd.getSealsSync / memfd.getSeals against fcntl(F_GET_SEALS) on a memfd',
    rounds: raw.params.rounds,
    warmup: raw.params.warmup,
    ...callCost(raw.seals),
    luo_enotty: { call: 'LIVEUPDATE_SESSION_RETRIEVE_FD on a memfd (ENOTTY), addon sync/Promise against ioctl()', ...callCost(raw.enotty) },
    requires: raw.require_ms.length,
    require_ms: round3(requireMs.median),
    require_ms_ci95: roundPair(requireMs.ci95),
    require_modules: raw.require_modules,
    require_test_bed_modules: raw.require_modules.filter((m) => TEST_BED.test(m)),
    node_start_ms: round3(start.median),
    node_start_ms_ci95: roundPair(start.ci95),
  };
}

/** The `fdpass` section. */
export function fdPassResult(raw: HostRounds): FdPassResult {
  const { sync, async, c } = raw.fdpass;
  const syncRatio = ratioOverBoots([{ node: sync, c }]);
  const asyncRatio = ratioOverBoots([{ node: async, c }]);
  return {
    c_ns_per_roundtrip: round3(medianEstimate(c).median),
    sync_ns_per_roundtrip: round3(medianEstimate(sync).median),
    async_ns_per_roundtrip: round3(medianEstimate(async).median),
    sync_ratio: round3(syncRatio.median),
    sync_ratio_ci95: roundPair(syncRatio.ci95),
    async_ratio: round3(asyncRatio.median),
    async_ratio_ci95: roundPair(asyncRatio.ci95),
    rounds_ns_per_roundtrip: { sync: sync.map(round3), async: async.map(round3), c: c.map(round3) },
  };
}

/** Targets of the host cases. */
export function hostTargets(host: HostResult, fdpass: FdPassResult): Target[] {
  return [
    target('host sync overhead over C (ns per call) <= 500', host.sync_overhead_ns, host.sync_overhead_ns_ci95, 500, host.rounds),
    target('host Promise overhead over C (ns per call) <= 15000', host.async_overhead_ns, host.async_overhead_ns_ci95, 15_000, host.rounds),
    target('fdpass sync / C <= 1.5', fdpass.sync_ratio, fdpass.sync_ratio_ci95, 1.5, host.rounds),
    target('fdpass Promise / C <= 3', fdpass.async_ratio, fdpass.async_ratio_ci95, 3, host.rounds),
    target("host require('liveupdate') (ms) <= 8", host.require_ms, host.require_ms_ci95, 8, host.requires),
  ];
}
