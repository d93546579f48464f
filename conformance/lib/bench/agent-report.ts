/**
 * The agent path's part of the benchmark's result: each boot's guest values
 * (agent-scenario.ts) turned into per-count figures, the boots combined into
 * medians with 95% bootstrap intervals, and the host load's rounds (agent-host.ts)
 * into requests per second. No target: the issue sets none, and a floor
 * for an agent that answers a few requests per client per update would be
 * invented here. Pure.
 * @internal
 */
import { HOST_CLOCK_NOTE, initLineToOriginMs, kernelInstants, kexecClocks, onHost, type Arrivals } from '../vm/clock.js';
import type { JsonValue } from '../vm/protocol.js';
import type { AgentHostParams, AgentHostRounds } from './agent-host.js';
import { round3, roundPair, target, type Target } from './host-report.js';
import { medianEstimate, ratioOverBoots, type Interval } from './stats.js';

/** The guest case of the agent path (scenario/case). */
export const AGENT_CASE = 'bench-agent/path';

/** Timings of one count's kernel (ms from its /init unless named otherwise). */
export interface AgentAfterKexec {
  /** Clients that preserved in the previous kernel and claim in this one. */
  readonly clients: number;
  /** Clients that got their own bytes back (every one, if all is well). */
  readonly held: number;
  /** The kernel's start to its pid 1 task (/proc/1/stat: before drivers and the initramfs; exec keeps it). */
  readonly kernel_to_pid1_task_ms: number;
  /** The kernel's start to /init running (node's time origin in pid 1; not part of the path as defined). */
  readonly kernel_to_init_ms: number;
  /** To the test bed's runner (pid 1, node) reaching its first case, which starts the agent. */
  readonly init_to_runner_ms: number;
  /** To the agent, a fresh node that has read the manifest, answering a first client. */
  readonly init_to_agent_answering_ms: number;
  /** To every client holding its fd again: the agent path's blackout. */
  readonly init_to_all_hold_fds_ms: number;
  /** The claim phase alone: the clients' first connect to the last fd. */
  readonly claim_ms: number;
  /** Within it, the first connect to half the clients' hellos answered (the connects, before any claim), ms. */
  readonly hello_answered_ms: number;
  /** The agent's CPU time (all its threads) over the claim phase, ms: not inflated by what else shares the machine. */
  readonly agent_cpu_ms: number;
  /** The clients' CPU time (the runner, all of them in one node) over the claim phase, ms: the other end of the same requests. */
  readonly clients_cpu_ms: number;
  /**
   * The whole blackout on the host's clock, from the agent sealing its
   * manifest in the old kernel (`frozenAt`): to the old kernel's last line
   * (LUO froze, it jumps), the new kernel's first line (its banner), its
   * /init, the agent answering and every client holding its fds again.
   */
  readonly frozen_to_kexec_line_ms: number;
  readonly frozen_to_kernel_up_ms: number;
  readonly frozen_to_init_ms: number;
  readonly frozen_to_agent_answering_ms: number;
  readonly frozen_to_all_hold_fds_ms: number;
  /** How far apart the samples of either kernel arrived (the serial line's jitter; the quickest one places the clocks), ms. */
  readonly clock_jitter_ms: number;
  /** The kernel's "Run /init" line (console) to node's time origin in pid 1 (records): /init's exec and node's loading before its clock starts, ms. */
  readonly init_line_to_node_origin_ms: number;
}

/** One count's preserve phase (connect, createSession, preserve, ready; all clients at once). */
export interface AgentPreserve {
  readonly clients: number;
  /** Requests that reached the agent: hello, createSession and ready per client (the preserve is the client's own ioctl). */
  readonly requests: number;
  readonly ms: number;
  readonly requests_per_s: number;
  /** The agent's resident memory with these clients connected, each holding a session, KiB. */
  readonly agent_rss_kib: number;
}

/** The agent's resident memory with 1000 clients at most: 80 MiB. */
const RSS_LIMIT_KIB = 80 * 1024;
/** The agent's start at most node's own + 20%. */
const START_LIMIT = 1.2;

/** The agent's start (spawn to its first answer; a plain file as its device) as today and from a V8 snapshot, each over `node -e 0` in the same rounds: medians over boots. */
export interface StartFigures {
  readonly node_ms: number;
  readonly agent_ms: number;
  readonly snapshot_ms: number;
  readonly agent_over_node: number;
  readonly agent_over_node_ci95: Interval;
  readonly snapshot_over_node: number;
  readonly snapshot_over_node_ci95: Interval;
  readonly snapshot_build_ms: number;
  readonly snapshot_blob_bytes: number;
}

/** The start figures of `starts` (one per boot, at least one), judged against node's own + 20%. */
function startFigures(starts: readonly AgentStartRounds[], where: string, note = ''): { start: StartFigures; targets: Target[] } {
  const over = (pick: (s: AgentStartRounds) => readonly number[]) => ratioOverBoots(starts.map((s) => ({ node: pick(s), c: s.node_ms })));
  const agent = over((s) => s.agent_ms);
  const snapshot = over((s) => s.snapshot_ms);
  const med = (pick: (s: AgentStartRounds) => readonly number[]): number => overBoots(starts, (s) => medianEstimate(pick(s)).median).value;
  return {
    start: {
      node_ms: med((s) => s.node_ms),
      agent_ms: med((s) => s.agent_ms),
      snapshot_ms: med((s) => s.snapshot_ms),
      agent_over_node: round3(agent.median),
      agent_over_node_ci95: roundPair(agent.ci95),
      snapshot_over_node: round3(snapshot.median),
      snapshot_over_node_ci95: roundPair(snapshot.ci95),
      snapshot_build_ms: overBoots(starts, (s) => s.build_ms).value,
      snapshot_blob_bytes: (starts[0] as AgentStartRounds).blob_bytes,
    },
    targets: [
      target(`agent start ${where} (spawn to first answer) / node -e 0 <= 1.2${note}`, agent.median, agent.ci95, START_LIMIT, agent.observations),
      target(`agent start from a V8 snapshot ${where} / node -e 0 <= 1.2${note}`, snapshot.median, snapshot.ci95, START_LIMIT, snapshot.observations),
    ],
  };
}

/** The starts of the last kernel, interleaved rounds, ms (agent-snapshot.ts). */
export interface AgentStartRounds {
  readonly node_ms: readonly number[];
  readonly agent_ms: readonly number[];
  readonly snapshot_ms: readonly number[];
  readonly build_ms: number;
  readonly blob_bytes: number;
}

/** One boot's agent path. */
export interface AgentBoot {
  readonly after_kexec: readonly AgentAfterKexec[];
  readonly preserve: readonly AgentPreserve[];
  readonly starts: AgentStartRounds;
}

/** What the guest returned for one kernel: reads a field, or says which is missing. */
type Reader = (key: string) => JsonValue;

function reader(value: JsonValue | undefined, where: string): Reader {
  return (key) => {
    if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value) || !(key in value)) {
      throw new Error(`agent path result ${where} lacks ${key}: ${JSON.stringify(value ?? null)}`);
    }
    return value[key] as JsonValue;
  };
}

function numberAt(read: Reader, key: string, where: string): number {
  const v = read(key);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`agent path result ${where}.${key} is not a number`);
  return v;
}

/** The host-clock figures of the kexec into kernel `stage`: each instant since the old kernel's `frozenAt`. */
function onHostClock(arrivals: Arrivals, stage: number, at: { frozenWall: number; initMono: number; answeringMono: number; allHoldMono: number }): Pick<AgentAfterKexec, Extract<keyof AgentAfterKexec, `frozen_to_${string}` | `clock_${string}` | 'init_line_to_node_origin_ms'>> {
  const c = kexecClocks(arrivals, stage - 1);
  if (c.oldFit === undefined || c.nextFit === undefined) throw new Error(`agent path: kernel ${stage - 1} or ${stage} sent no clock samples`);
  const frozen = onHost(c.oldFit, 'wall', at.frozenWall);
  const [jump, up, init] = kernelInstants(c).map((i) => i.atMs - frozen) as [number, number, number];
  return {
    frozen_to_kexec_line_ms: round3(jump),
    frozen_to_kernel_up_ms: round3(up),
    frozen_to_init_ms: round3(init),
    frozen_to_agent_answering_ms: round3(onHost(c.nextFit, 'mono', at.answeringMono) - frozen),
    frozen_to_all_hold_fds_ms: round3(onHost(c.nextFit, 'mono', at.allHoldMono) - frozen),
    clock_jitter_ms: round3(Math.max(c.oldFit.jitterMs, c.nextFit.jitterMs)),
    init_line_to_node_origin_ms: round3(initLineToOriginMs(c.next, c.nextFit, at.initMono)),
  };
}

/**
 * One boot's agent path from its stage values (`stageValue(n)`: what kernel
 * n returned) and what arrived from its guest, stamped (the host clock), for
 * `counts` clients.
 */
export function agentBoot(stageValue: (stage: number) => JsonValue | undefined, counts: readonly number[], arrivals: Arrivals): AgentBoot {
  const after: AgentAfterKexec[] = [];
  const preserve: AgentPreserve[] = [];
  for (let stage = 1; stage <= counts.length + 1; stage++) {
    const where = `kernel ${stage}`;
    const read = reader(stageValue(stage), where);
    if (stage >= 2) {
      const claim = read('claim');
      const c = reader(claim, `${where}.claim`);
      const num = (k: string): number => numberAt(c, k, `${where}.claim`);
      if (num('clients') !== counts[stage - 2]) throw new Error(`agent path ${where}: ${num('clients')} clients claimed, expected ${String(counts[stage - 2])}`);
      after.push({
        clients: num('clients'),
        held: num('held'),
        kernel_to_pid1_task_ms: round3(numberAt(read, 'kernel_to_pid1_task_ms', where)),
        kernel_to_init_ms: round3(numberAt(read, 'kernel_to_init_ms', where)),
        init_to_runner_ms: round3(numberAt(read, 'init_to_runner_ms', where)),
        init_to_agent_answering_ms: round3(numberAt(read, 'init_to_agent_answering_ms', where)),
        init_to_all_hold_fds_ms: round3(num('init_to_all_hold_fds_ms')),
        claim_ms: round3(num('claim_ms')),
        hello_answered_ms: round3(num('hello_answered_ms')),
        agent_cpu_ms: round3(num('agent_cpu_ms')),
        clients_cpu_ms: round3(num('clients_cpu_ms')),
        ...onHostClock(arrivals, stage, { frozenWall: num('frozen_at_wall_ms'), initMono: numberAt(read, 'kernel_to_init_ms', where), answeringMono: numberAt(read, 'agent_answering_mono_ms', where), allHoldMono: num('all_hold_fds_mono_ms') }),
      });
    }
    if (stage <= counts.length) {
      const p = reader(read('preserve'), `${where}.preserve`);
      const num = (k: string): number => numberAt(p, k, `${where}.preserve`);
      preserve.push({ clients: num('clients'), requests: num('requests'), ms: round3(num('ms')), requests_per_s: round3(num('requests_per_s')), agent_rss_kib: num('agent_rss_kib') });
    }
  }
  return { after_kexec: after, preserve, starts: startRounds(stageValue(counts.length + 1)) };
}

function startRounds(value: JsonValue | undefined): AgentStartRounds {
  const read = reader(reader(value, 'the last kernel')('starts'), 'the last kernel.starts');
  const list = (key: string): number[] => {
    const v = read(key);
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new Error(`agent path: starts.${key} is not a list of numbers`);
    return (v as number[]).map(round3);
  };
  const one = (key: string): number => numberAt(read, key, 'starts');
  return { node_ms: list('node_ms'), agent_ms: list('agent_ms'), snapshot_ms: list('snapshot_ms'), build_ms: round3(one('build_ms')), blob_bytes: one('blob_bytes') };
}

/** A figure over boots: the median and its interval. */
function overBoots<T>(boots: readonly T[], pick: (boot: T) => number): { value: number; ci95: Interval } {
  const e = medianEstimate(boots.map(pick));
  return { value: round3(e.median), ci95: roundPair(e.ci95) };
}

/** Each timing of {@link AgentAfterKexec} as the median over boots, with `<key>_ci95` beside it. */
export type AfterKexecOverBoots = AgentAfterKexec & { readonly [K in Exclude<keyof AgentAfterKexec, 'clients' | 'held'> as `${K}_ci95`]: Interval };

/** A count's preserve phase over boots. */
export interface PreserveOverBoots {
  readonly clients: number;
  readonly requests: number;
  readonly ms: number;
  readonly ms_ci95: Interval;
  readonly requests_per_s: number;
  readonly requests_per_s_ci95: Interval;
  readonly agent_rss_kib: number;
  readonly agent_rss_kib_ci95: Interval;
}

/** A median over rounds and its interval. */
interface Figure {
  readonly value: number;
  readonly ci95: Interval;
}

/** The claim path up to the device call for one count (host, no device). */
export interface ClaimPathResult {
  readonly clients: number;
  /** All clients at once: the first connect to the last answer, ms. */
  readonly ms: Figure;
  /** `ms` per client, µs. */
  readonly us_per_client: Figure;
  /** The agent's CPU time (all its threads) per client, µs: what each client costs it, whatever else runs on the machine. */
  readonly agent_cpu_us_per_client: Figure;
  /** The agent's resident memory with these clients connected, KiB. */
  readonly rss_kib: Figure;
  /** Its growth over the idle agent per client connected, bytes. */
  readonly rss_bytes_per_client: Figure;
  /** Each round's ms. */
  readonly rounds_ms: readonly number[];
}

/** The host part of the agent path: requests per second, the start, the claim path up to the device and the memory. */
export interface AgentHostResult extends AgentHostParams {
  readonly requests_per_s: number;
  readonly requests_per_s_ci95: Interval;
  readonly rounds_requests_per_s: readonly number[];
  /** The agent's start on the host, as today and from a snapshot, against `node -e 0`; and its rounds. */
  readonly start: StartFigures & { readonly rounds: AgentStartRounds };
  readonly rss_idle_kib: number;
  readonly claim_path: readonly ClaimPathResult[];
  /** Per-client time at the largest count over that at the second smallest: 1 when the cost per client does not grow. */
  readonly claim_path_growth: number;
  readonly targets: readonly Target[];
}

/** The `agent` section of the benchmark's result. */
export interface AgentResult {
  /** The client counts, one kernel each. */
  readonly counts: readonly number[];
  /** Per count: the kernel where its clients claim. `held` is the fewest clients holding their bytes in any boot. */
  readonly after_kexec: readonly AfterKexecOverBoots[];
  /** Per count: the kernel where its clients preserve; the agent's requests per second in the guest. */
  readonly preserve: readonly PreserveOverBoots[];
  readonly host: AgentHostResult;
  /** Which clock each figure is read on, and its resolution. */
  readonly clocks: typeof AGENT_CLOCKS;
  /**
   * The agent's start in the guest (spawn to its first answer; a plain file as its device)
   * as node starts it today and from a V8 snapshot, each over `node -e 0`
   * in the same rounds: medians over boots, judged against node's own + 20%.
   */
  readonly start: StartFigures;
  readonly targets: readonly Target[];
  /** Each boot's figures, in boot order. */
  readonly boot_results: readonly AgentBoot[];
}

const TIMINGS = [
  'kernel_to_pid1_task_ms',
  'kernel_to_init_ms',
  'init_to_runner_ms',
  'init_to_agent_answering_ms',
  'init_to_all_hold_fds_ms',
  'claim_ms',
  'hello_answered_ms',
  'agent_cpu_ms',
  'clients_cpu_ms',
  'frozen_to_kexec_line_ms',
  'frozen_to_kernel_up_ms',
  'frozen_to_init_ms',
  'frozen_to_agent_answering_ms',
  'frozen_to_all_hold_fds_ms',
  'clock_jitter_ms',
  'init_line_to_node_origin_ms',
] as const;

function afterOverBoots(boots: readonly AgentBoot[], index: number): AfterKexecOverBoots {
  const at = boots.map((b) => b.after_kexec[index] as AgentAfterKexec);
  const timings = TIMINGS.flatMap((key) => {
    const o = overBoots(at, (a) => a[key]);
    return [
      [key, o.value],
      [`${key}_ci95`, o.ci95],
    ] as const;
  });
  return { clients: (at[0] as AgentAfterKexec).clients, held: Math.min(...at.map((a) => a.held)), ...Object.fromEntries(timings) } as AfterKexecOverBoots;
}

function preserveOverBoots(boots: readonly AgentBoot[], index: number): PreserveOverBoots {
  const at = boots.map((b) => b.preserve[index] as AgentPreserve);
  const ms = overBoots(at, (p) => p.ms);
  const rate = overBoots(at, (p) => p.requests_per_s);
  const rss = overBoots(at, (p) => p.agent_rss_kib);
  const first = at[0] as AgentPreserve;
  return { clients: first.clients, requests: first.requests, ms: ms.value, ms_ci95: ms.ci95, requests_per_s: rate.value, requests_per_s_ci95: rate.ci95, agent_rss_kib: rss.value, agent_rss_kib_ci95: rss.ci95 };
}

function figure(values: readonly number[]): Figure {
  const e = medianEstimate(values);
  return { value: round3(e.median), ci95: roundPair(e.ci95) };
}


/** The host load's rounds as figures, with their targets. */
export function agentHostResult(raw: AgentHostRounds): AgentHostResult {
  const e = medianEstimate(raw.requests_per_s);
  const starts = startFigures([raw.start], 'on the host', " (the issue's target is the guest's new kernel)");
  const claim_path = raw.claim_path.map((c) => ({
    clients: c.clients,
    ms: figure(c.ms),
    us_per_client: figure(c.ms.map((ms) => (ms * 1000) / c.clients)),
    agent_cpu_us_per_client: figure(c.agent_cpu_ms.map((ms) => (ms * 1000) / c.clients)),
    rss_kib: figure(c.rss_kib),
    rss_bytes_per_client: figure(c.rss_kib.map((kib) => ((kib - raw.rss_idle_kib) * 1024) / c.clients)),
    rounds_ms: c.ms.map(round3),
  }));
  const largest = claim_path.at(-1);
  const small = claim_path[1] ?? claim_path[0];
  const targets = [...starts.targets];
  if (largest !== undefined) {
    const rss = raw.claim_path.at(-1)?.rss_kib ?? [];
    targets.push(target(`agent RSS with ${largest.clients} clients connected on the host (no device: no sessions held), KiB <= 80 MiB`, largest.rss_kib.value, largest.rss_kib.ci95, RSS_LIMIT_KIB, rss.length));
  }
  return {
    ...raw.params,
    requests_per_s: round3(e.median),
    requests_per_s_ci95: roundPair(e.ci95),
    rounds_requests_per_s: raw.requests_per_s.map(round3),
    start: { ...starts.start, rounds: raw.start },
    rss_idle_kib: raw.rss_idle_kib,
    claim_path,
    claim_path_growth: largest === undefined || small === undefined ? 1 : round3(largest.us_per_client.value / small.us_per_client.value),
    targets,
  };
}

/** Which clock the figures are read on, by their name's start. */
export const AGENT_CLOCKS = {
  kernel_to_: "the new kernel's CLOCK_MONOTONIC (the pid 1 task's start in clock ticks of 10 ms; node's time origin in pid 1, 1 µs)",
  init_to_: "the new kernel's CLOCK_MONOTONIC (process.hrtime in pid 1, 1 ns), from /init (node's time origin in pid 1)",
  claim_ms: "the new kernel's CLOCK_MONOTONIC (process.hrtime in pid 1, 1 ns)",
  hello_answered_ms: "the new kernel's CLOCK_MONOTONIC (process.hrtime in pid 1, 1 ns)",
  agent_cpu_ms: "the agent's CPU time, all its threads (/proc/PID/task/*/schedstat, 1 ns; without schedstat /proc/PID/stat, 10 ms)",
  clients_cpu_ms: "the runner's CPU time (process.cpuUsage, 1 µs)",
  frozen_to_: HOST_CLOCK_NOTE,
  clock_: "the host clock: the spread of each kernel's clock samples",
  init_line_to_node_origin_ms: HOST_CLOCK_NOTE,
} as const;

/**
 * The claim phase for 100 clients (first connect to last fd) when this
 * path's goal was set, ms, under the same emulation: a hundred clients
 * waited for the agent's readiness by polling.
 */
const CLAIM_PHASE_WHEN_SET_MS = 2984;

/** The claim phase's target: 100 clients' within a fifth of {@link CLAIM_PHASE_WHEN_SET_MS}; none in a run without 100 clients (--quick). */
function claimPhaseTargets(after: readonly AfterKexecOverBoots[], boots: number): Target[] {
  const hundred = after.find((a) => a.clients === 100);
  if (hundred === undefined) return [];
  const limit = Math.round(CLAIM_PHASE_WHEN_SET_MS / 5);
  return [target(`claim phase of 100 clients in the guest (first connect to last fd), ms <= ${limit} (a fifth of the ${CLAIM_PHASE_WHEN_SET_MS} ms it took when this goal was set)`, hundred.claim_ms, hundred.claim_ms_ci95, limit, boots)];
}

/** The `agent` section from every boot (at least one, all with the same counts) and the host load. */
export function combineAgent(counts: readonly number[], boots: readonly AgentBoot[], host: AgentHostResult): AgentResult {
  if (boots.length === 0) throw new RangeError('no boots of the agent path to combine');
  const { start, targets: startTargets } = startFigures(
    boots.map((b) => b.starts),
    'in the guest',
  );
  const after_kexec = counts.map((_, i) => afterOverBoots(boots, i));
  const targets = [...startTargets, ...claimPhaseTargets(after_kexec, boots.length)];
  return {
    counts,
    after_kexec,
    preserve: counts.map((_, i) => preserveOverBoots(boots, i)),
    host,
    clocks: AGENT_CLOCKS,
    start,
    targets,
    boot_results: boots,
  };
}
