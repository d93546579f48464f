/**
 * Turns the host cases' rounds (host.ts) into the `host` and `fdpass`
 * sections of the benchmark's result: medians, intervals, and the targets.
 * Pure.
 * @internal
 */
import type { AgentHostResult } from './agent-report.js';
import type { ErrorProcessRounds, FormRounds, HostRounds } from './host.js';
import { median, medianEstimate, ratioOverBoots, verdict, type Estimate, type Interval } from './stats.js';

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
  /** The first read of its `LiveUpdate` export after the require (what opening the device needs loaded), ms. */
  readonly live_update_ms: number;
  readonly live_update_ms_ci95: Interval;
  /** The module files it loaded, relative to the package, and those that belong to the test bed (none, if all is well). */
  readonly require_modules: readonly string[];
  readonly require_test_bed_modules: readonly string[];
  /** A fresh `node -e 0`, start to exit (ms): the floor under any node program. */
  readonly node_start_ms: number;
  readonly node_start_ms_ci95: Interval;
}

/** The `fdpass` section: one memfd over a seqpacket pair, send + receive (the received fds closed between timed batches, on both sides). */
export interface FdPassResult {
  readonly c_ns_per_roundtrip: number;
  readonly sync_ns_per_roundtrip: number;
  readonly async_ns_per_roundtrip: number;
  /** node / C: median of node's rounds over the median of C's, and the paired-bootstrap interval. */
  readonly sync_ratio: number;
  readonly sync_ratio_ci95: Interval;
  readonly async_ratio: number;
  readonly async_ratio_ci95: Interval;
  /** The same byte without fds through node's own `net` over a Unix stream pair (write, then the peer's 'data'), ns per round trip. */
  readonly net_ns_per_roundtrip: number;
  /** Promise / net: median of our Promise rounds over the median of net's, and the paired-bootstrap interval. */
  readonly async_over_net_ratio: number;
  readonly async_over_net_ratio_ci95: Interval;
  readonly rounds_ns_per_roundtrip: { readonly sync: readonly number[]; readonly async: readonly number[]; readonly c: readonly number[]; readonly net: readonly number[] };
}

/**
 * The `promise` section: what a Promise call adds over the syscall, ours
 * (memfd.getSeals over fcntl) against node's own over the same libuv pool
 * (fs.fstat with a callback, fs.promises' filehandle.stat(), over fstat).
 */
export interface PromiseResult {
  /** Per round, Promise call minus C's syscall (ns); medians over rounds. */
  readonly ours_overhead_ns: number;
  readonly node_callback_overhead_ns: number;
  readonly node_promise_overhead_ns: number;
  /** Ours over node's, median of ours over median of node's per-round overheads, with the paired-bootstrap interval. */
  readonly over_callback_ratio: number;
  readonly over_callback_ratio_ci95: Interval;
  readonly over_promise_ratio: number;
  readonly over_promise_ratio_ci95: Interval;
  readonly rounds_ns_per_call: { readonly fstat_callback: readonly number[]; readonly fstat_promise: readonly number[]; readonly c_fstat: readonly number[] };
}

/** The `errors` section: a typed error built and thrown, against node's own throws, in the same fresh processes. */
export interface ErrorsResult {
  /** Fresh node processes the case ran in (each warmed by successful calls first). */
  readonly processes: number;
  /** memfd.getSealsSync of a number not open: the syscall, the native error, the typed BadFileDescriptorError, thrown and caught (ns, median of every round). */
  readonly ours_ns: number;
  /** fs.fstatSync(-1) thrown and caught (ns): node's argument check, the anchor the issue names. */
  readonly node_ns: number;
  /** fs.fstatSync of a number not open (ns): node's own system error from the kernel's EBADF. */
  readonly node_ebadf_ns: number;
  /** The median over processes of each one's ratio, its interval over processes and their rounds. */
  readonly over_node_ratio: number;
  readonly over_node_ratio_ci95: Interval;
  /** Each process's ratio, in the order they ran. */
  readonly over_node_ratio_by_process: readonly number[];
  readonly over_node_ebadf_ratio: number;
  readonly over_node_ebadf_ratio_ci95: Interval;
  /** Rounds the ratios rest on, over every process. */
  readonly observations: number;
  /** Every process's rounds, one after another. */
  readonly rounds_ns: { readonly ours: readonly number[]; readonly node: readonly number[]; readonly node_ebadf: readonly number[] };
}

/** The host cases alone: what `npm run bench -- --host-only` prints. */
export interface HostOnlyResult {
  readonly mode: 'full' | 'quick';
  readonly machine: { readonly nproc: number; readonly cpu: string; readonly host_clock_tick: number };
  readonly date: string;
  readonly commit: string;
  readonly host: HostResult;
  readonly fdpass: FdPassResult;
  readonly promise: PromiseResult;
  readonly errors: ErrorsResult;
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

/**
 * A target from an estimate resting on `observations` (fewer than two:
 * undecided), judged on its interval as published (three decimals): an
 * interval whose bound rounds onto the limit is undecided, never a verdict
 * its own printed figures contradict.
 */
export function target(name: string, value: number, ci95: Interval, limit: number, observations: number): Target {
  const published = roundPair(ci95);
  const v = verdict(published, limit, observations);
  return { name, value: round3(value), ci95: published, limit, verdict: v, met: v === 'met' };
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
  const liveUpdateMs = medianEstimate(raw.live_update_ms);
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
    live_update_ms: round3(liveUpdateMs.median),
    live_update_ms_ci95: roundPair(liveUpdateMs.ci95),
    require_modules: raw.require_modules,
    require_test_bed_modules: raw.require_modules.filter((m) => TEST_BED.test(m)),
    node_start_ms: round3(start.median),
    node_start_ms_ci95: roundPair(start.ci95),
  };
}

/** The `fdpass` section. */
export function fdPassResult(raw: HostRounds): FdPassResult {
  const { sync, async, c, net } = raw.fdpass;
  const syncRatio = ratioOverBoots([{ node: sync, c }]);
  const asyncRatio = ratioOverBoots([{ node: async, c }]);
  const overNet = ratioTo(async, net);
  return {
    c_ns_per_roundtrip: round3(medianEstimate(c).median),
    sync_ns_per_roundtrip: round3(medianEstimate(sync).median),
    async_ns_per_roundtrip: round3(medianEstimate(async).median),
    sync_ratio: round3(syncRatio.median),
    sync_ratio_ci95: roundPair(syncRatio.ci95),
    async_ratio: round3(asyncRatio.median),
    async_ratio_ci95: roundPair(asyncRatio.ci95),
    net_ns_per_roundtrip: round3(medianEstimate(net).median),
    async_over_net_ratio: overNet.ratio,
    async_over_net_ratio_ci95: overNet.ci95,
    rounds_ns_per_roundtrip: { sync: sync.map(round3), async: async.map(round3), c: c.map(round3), net: net.map(round3) },
  };
}

/** Round by round, `form` minus `base`. */
function minus(form: readonly number[], base: readonly number[]): number[] {
  return form.map((x, i) => x - (base[i] as number));
}

/** The median of `xs`, rounded. */
function medianOf(xs: readonly number[]): number {
  return round3(medianEstimate(xs).median);
}

/** Ours over an anchor of the same run: median over median, with the paired-bootstrap interval, rounded. */
function ratioTo(ours: readonly number[], anchor: readonly number[]): { readonly ratio: number; readonly ci95: Interval } {
  const estimate = ratioOverBoots([{ node: ours, c: anchor }]);
  return { ratio: round3(estimate.median), ci95: roundPair(estimate.ci95) };
}

/** The `promise` section. */
export function promiseResult(raw: HostRounds): PromiseResult {
  const s = raw.seals;
  const ours = minus(s.async, s.c);
  const callback = minus(s.fstat_callback, s.c_fstat);
  const promise = minus(s.fstat_promise, s.c_fstat);
  const overCallback = ratioTo(ours, callback);
  const overPromise = ratioTo(ours, promise);
  return {
    ours_overhead_ns: medianOf(ours),
    node_callback_overhead_ns: medianOf(callback),
    node_promise_overhead_ns: medianOf(promise),
    over_callback_ratio: overCallback.ratio,
    over_callback_ratio_ci95: overCallback.ci95,
    over_promise_ratio: overPromise.ratio,
    over_promise_ratio_ci95: overPromise.ci95,
    rounds_ns_per_call: { fstat_callback: s.fstat_callback.map(round3), fstat_promise: s.fstat_promise.map(round3), c_fstat: s.c_fstat.map(round3) },
  };
}

/** The `errors` section: each fresh process's rounds judged as a boot's are. */
export function errorsResult(raw: HostRounds): ErrorsResult {
  const { processes } = raw.errors;
  const pooled = (form: keyof ErrorProcessRounds): number[] => processes.flatMap((p) => p[form]);
  const overProcesses = (anchor: 'node' | 'node_ebadf'): Estimate => ratioOverBoots(processes.map((p) => ({ node: p.ours, c: p[anchor] })));
  const overNode = overProcesses('node');
  const overEbadf = overProcesses('node_ebadf');
  return {
    processes: processes.length,
    ours_ns: medianOf(pooled('ours')),
    node_ns: medianOf(pooled('node')),
    node_ebadf_ns: medianOf(pooled('node_ebadf')),
    over_node_ratio: round3(overNode.median),
    over_node_ratio_ci95: roundPair(overNode.ci95),
    over_node_ratio_by_process: processes.map((p) => round3(median(p.ours) / median(p.node))),
    over_node_ebadf_ratio: round3(overEbadf.median),
    over_node_ebadf_ratio_ci95: roundPair(overEbadf.ci95),
    observations: overNode.observations,
    rounds_ns: { ours: pooled('ours').map(round3), node: pooled('node').map(round3), node_ebadf: pooled('node_ebadf').map(round3) },
  };
}

/** The absolute limit on a Promise call's overhead over C, ns (judged beside the relative one against node's own). */
export const PROMISE_OVERHEAD_LIMIT_NS = 15_000;

/**
 * When node's own Promise-free callback (`fs.fstat(fd, callback)`) already
 * pays more over C than {@link PROMISE_OVERHEAD_LIMIT_NS}, the libuv pool's
 * hand-off and wake-up dominate on this machine and the absolute limit
 * measures the machine, not the package: says so with the numbers. Null
 * when node's own stays under it.
 */
export function poolWakeupNote(promise: PromiseResult): string | null {
  if (!(promise.node_callback_overhead_ns >= PROMISE_OVERHEAD_LIMIT_NS)) return null;
  const ns = (value: number): string => value.toFixed(0);
  return (
    `the thread pool's hand-off and wake-up dominate on this machine: node's own fs.fstat(fd, callback) pays ${ns(promise.node_callback_overhead_ns)} ns over C's fstat, ` +
    `over the ${ns(PROMISE_OVERHEAD_LIMIT_NS)}-ns limit by itself; ours pays ${ns(promise.ours_overhead_ns)} ns, ×${promise.over_callback_ratio.toFixed(2)} node's own`
  );
}

/** Targets of the host cases. */
export function hostTargets(host: HostResult, fdpass: FdPassResult, promise: PromiseResult, errors: ErrorsResult): Target[] {
  return [
    target('host sync overhead over C (ns per call) <= 500', host.sync_overhead_ns, host.sync_overhead_ns_ci95, 500, host.rounds),
    target(`host Promise overhead over C (ns per call) <= ${PROMISE_OVERHEAD_LIMIT_NS}`, host.async_overhead_ns, host.async_overhead_ns_ci95, PROMISE_OVERHEAD_LIMIT_NS, host.rounds),
    target("host Promise overhead / node's fs.promises filehandle.stat() overhead <= 1.25", promise.over_promise_ratio, promise.over_promise_ratio_ci95, 1.25, host.rounds),
    target("host Promise overhead / node's fs.fstat(fd, callback) overhead <= 1.25", promise.over_callback_ratio, promise.over_callback_ratio_ci95, 1.25, host.rounds),
    target('fdpass sync / C <= 1.5', fdpass.sync_ratio, fdpass.sync_ratio_ci95, 1.5, host.rounds),
    target('fdpass Promise / C <= 3', fdpass.async_ratio, fdpass.async_ratio_ci95, 3, host.rounds),
    target("fdpass Promise / node's net round trip of the same byte without fds <= 1.25", fdpass.async_over_net_ratio, fdpass.async_over_net_ratio_ci95, 1.25, host.rounds),
    target("typed error built and thrown / node's fs.fstatSync(-1) throw <= 1.5", errors.over_node_ratio, errors.over_node_ratio_ci95, 1.5, errors.observations),
    target("host require('liveupdate') (ms) <= 5", host.require_ms, host.require_ms_ci95, 5, host.requires),
  ];
}
