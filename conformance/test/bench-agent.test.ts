/**
 * The agent path's part of the benchmark, on guest values made up here
 * whose answers are worked out by hand (no kernel, no timing).
 */
import { describe, expect, it } from 'vitest';
import { agentBoot, agentHostResult, combineAgent, type AgentBoot } from '../lib/bench/agent-report.js';
import { agentCmdline, agentCountsFromCmdline } from '../lib/bench/params.js';
import { CLOCK_REPORT, type Arrivals, type StampedLine, type StampedRecord } from '../lib/vm/clock.js';
import type { JsonValue } from '../lib/vm/protocol.js';

/** Kernel k's clocks count from host ms k × 100 000; its wall clock, set from the RTC, is 500 × k ms behind. */
const zeroOf = (k: number): number => 100_000 * k;
const wallAtZero = (k: number): number => 1_780_000_000_000 + zeroOf(k) - 500 * k;
/** The old kernel's agent seals its manifest at its monotonic 49 990 ms; the kernel's last line comes 10 ms later. */
const FROZEN_MONO = 49_990;
const JUMP_PRINTK = 50_000;

/** What kernel `stage` of a run with `counts` returns, every timing shifted by `slow` ms. */
function stageValue(stage: number, counts: readonly number[], slow = 0): JsonValue {
  const claimed = counts[stage - 2];
  const preserved = counts[stage - 1];
  const init = 1500 + slow;
  return {
    kernel_to_pid1_task_ms: 200 + slow,
    kernel_to_init_ms: init,
    init_to_runner_ms: 2000 + slow,
    init_to_agent_answering_ms: 9000 + slow,
    agent_answering_mono_ms: init + 9000 + slow,
    claim:
      claimed === undefined
        ? null
        : {
            clients: claimed,
            held: claimed,
            init_to_first_connect_ms: 9100 + slow,
            init_to_all_hold_fds_ms: 9100 + 50 * claimed + slow,
            claim_ms: 50 * claimed,
            hello_answered_ms: 20 * claimed,
            agent_cpu_ms: 20 * claimed,
            clients_cpu_ms: 25 * claimed,
            all_hold_fds_mono_ms: init + 9100 + 50 * claimed + slow,
            frozen_at_wall_ms: wallAtZero(stage - 1) + FROZEN_MONO,
            first_open_at_wall_ms: wallAtZero(stage) + 3000,
          },
    // The last kernel: node -e 0 500 ms, the agent 1500 ms, from its snapshot 550 ms (+ slow each).
    starts: preserved === undefined ? { node_ms: [500 + slow, 500 + slow], agent_ms: [1500 + slow, 1500 + slow], snapshot_ms: [550 + slow, 550 + slow], build_ms: 4000, blob_bytes: 5 * 2 ** 20 } : null,
    preserve: preserved === undefined ? null : { clients: preserved, ms: 100 * preserved + slow, requests: 3 * preserved, requests_per_s: (3 * preserved * 1000) / (100 * preserved + slow), agent_rss_kib: 60_000 + 20 * preserved },
  };
}

/** What the host saw of `kernels` kernels: their console lines and clock samples, stamped (the quickest 0.5 ms after the fact). */
function arrivalsOf(kernels: number): Arrivals {
  const console: StampedLine[] = [];
  const records: StampedRecord[] = [];
  const line = (k: number, printkMs: number, text: string, latency: number): void => {
    console.push({ atMs: zeroOf(k) + printkMs + latency, text: `[${(printkMs / 1000).toFixed(6).padStart(12)}] ${text}` });
  };
  for (let k = 1; k <= kernels; k++) {
    line(k, 0, 'Linux version 7.3.4', 700);
    line(k, 1500, 'Run /init as init process', 0.2);
    if (k < kernels) line(k, JUMP_PRINTK, 'kexec_core: Starting new kernel', 0.5);
    for (const [mono, latency] of [[20_000, 0.5], [20_015, 3]] as const) {
      records.push({ atMs: zeroOf(k) + mono + latency, record: { t: 'report', stage: k, case: 'bench-agent/path', name: CLOCK_REPORT, value: { mono, wall: wallAtZero(k) + mono } } });
    }
  }
  return { console, records };
}

const round = (x: number): number => Math.round(x * 1000) / 1000;

const bootOf = (counts: readonly number[], slow = 0): AgentBoot => agentBoot((stage) => stageValue(stage, counts, slow), counts, arrivalsOf(counts.length + 1));

describe('agent path counts on the kernel command line', () => {
  it('go there and come back', () => {
    expect(agentCmdline([1, 10, 100])).toBe('lu.agentbench=1,10,100');
    expect(agentCountsFromCmdline('console=ttyS0 lu.agentbench=1,10,100 lu.stage=3')).toEqual([1, 10, 100]);
  });

  it('refuse a missing or malformed list', () => {
    expect(() => agentCountsFromCmdline('console=ttyS0')).toThrow(/no lu.agentbench=/);
    expect(() => agentCountsFromCmdline('lu.agentbench=1,,10')).toThrow(/positive counts/);
    expect(() => agentCountsFromCmdline('lu.agentbench=1,-10')).toThrow(/positive counts/);
    expect(() => agentCountsFromCmdline('lu.agentbench=1.5')).toThrow(/positive counts/);
  });
});

describe('one boot of the agent path', () => {
  it('takes the claims from the kernel after each count, the preserves from its own', () => {
    const boot = bootOf([1, 10, 100]);
    expect(boot.after_kexec.map((a) => [a.clients, a.held, a.init_to_all_hold_fds_ms, a.claim_ms])).toEqual([
      [1, 1, 9150, 50],
      [10, 10, 9600, 500],
      [100, 100, 14100, 5000],
    ]);
    expect(boot.after_kexec[0]).toMatchObject({ kernel_to_pid1_task_ms: 200, kernel_to_init_ms: 1500, init_to_runner_ms: 2000, init_to_agent_answering_ms: 9000 });
    expect(boot.preserve.map((p) => [p.clients, p.requests, p.ms, p.requests_per_s])).toEqual([
      [1, 3, 100, 30],
      [10, 30, 1000, 30],
      [100, 300, 10000, 30],
    ]);
  });

  it("reads the blackout on the host's clock, from frozenAt in the old kernel to every fd in the new one, whatever the wall clocks say", () => {
    const boot = bootOf([1, 10]);
    const [one, ten] = boot.after_kexec as [AgentBoot['after_kexec'][number], AgentBoot['after_kexec'][number]];
    // frozenAt is placed at kernel 1's zero + 49 990.5 (its quickest sample came 0.5 ms late), the new kernel's instants
    // likewise; the kernel's lines are where they arrived (the banner 700 ms late, with the console).
    const frozen = 100_000 + 49_990.5;
    expect(one).toMatchObject({
      frozen_to_kexec_line_ms: 10,
      frozen_to_kernel_up_ms: 200_700 - frozen,
      frozen_to_init_ms: 51_509.7,
      frozen_to_agent_answering_ms: 200_000.5 + 1500 + 9000 - frozen,
      frozen_to_all_hold_fds_ms: 200_000.5 + 1500 + 9150 - frozen,
      clock_jitter_ms: 2.5,
      init_line_to_node_origin_ms: 0.3, // node's origin at monotonic 1500 lands 0.3 ms after the line arrived
    });
    // The wall clocks alone (500 ms apart more per kernel) would have said otherwise.
    const naive = wallAtZero(2) + 1500 + 9150 - (wallAtZero(1) + FROZEN_MONO);
    expect(naive - one.frozen_to_all_hold_fds_ms).toBe(-500);
    expect(ten.frozen_to_all_hold_fds_ms - ten.frozen_to_agent_answering_ms).toBe(ten.init_to_all_hold_fds_ms - ten.init_to_agent_answering_ms);
  });

  it('says which value is missing, and refuses a kernel that claimed the wrong count', () => {
    const arrivals = arrivalsOf(2);
    expect(() => agentBoot((stage) => (stage === 2 ? { ...(stageValue(2, [1]) as object), claim: null } : stageValue(stage, [1])), [1], arrivals)).toThrow(/kernel 2.claim lacks clients/);
    expect(() => agentBoot((stage) => stageValue(stage, [10]), [1], arrivals)).toThrow(/10 clients claimed, expected 1/);
    expect(() => agentBoot(() => undefined, [1], arrivals)).toThrow(/kernel 1 lacks/);
    expect(() => agentBoot((stage) => stageValue(stage, [1]), [1], { ...arrivals, records: [] })).toThrow(/sent no clock samples/);
    expect(() => agentBoot((stage) => stageValue(stage, [1]), [1], { ...arrivals, console: [] })).toThrow(/0 kernel\(s\)/);
  });
});

describe('the agent path over boots', () => {
  const host = agentHostResult({
    params: { clients: 100, iterations: 10, rounds: 3, warmup: 1, startRounds: 3, claimCounts: [1, 10, 1000], claimRounds: 3 },
    requests_per_s: [3000, 1000, 2000],
    start: { agent_ms: [60, 66, 63], node_ms: [50, 55, 52], snapshot_ms: [51, 56, 53], build_ms: 900, blob_bytes: 5e6 },
    rss_idle_kib: 50_000,
    claim_path: [
      { clients: 1, ms: [1, 1, 1], agent_cpu_ms: [0.5, 0.5, 0.5], rss_kib: [50_100, 50_100, 50_100] },
      { clients: 10, ms: [5, 6, 4], agent_cpu_ms: [2, 3, 2], rss_kib: [50_200, 50_300, 50_250] },
      { clients: 1000, ms: [1000, 900, 800], agent_cpu_ms: [200, 150, 100], rss_kib: [70_000, 90_000, 80_000] },
    ],
  });

  it('reports each timing as the median over boots, with an interval that brackets it', () => {
    // Boots 0, 300 and 30 ms slower: medians are those of the 30 ms boot.
    const r = combineAgent([1, 10], [bootOf([1, 10]), bootOf([1, 10], 300), bootOf([1, 10], 30)], host);
    expect(r.counts).toEqual([1, 10]);
    expect(r.after_kexec.map((a) => [a.clients, a.init_to_all_hold_fds_ms, a.init_to_agent_answering_ms, a.claim_ms])).toEqual([
      [1, 9180, 9030, 50],
      [10, 9630, 9030, 500],
    ]);
    for (const a of r.after_kexec) {
      // Three boots: the bootstrap's medians are among the three values, so the interval spans at most their range.
      expect(a.init_to_all_hold_fds_ms_ci95[0]).toBeGreaterThanOrEqual(a.init_to_all_hold_fds_ms - 30);
      expect(a.init_to_all_hold_fds_ms_ci95[0]).toBeLessThanOrEqual(a.init_to_all_hold_fds_ms);
      expect(a.init_to_all_hold_fds_ms_ci95[1]).toBeGreaterThanOrEqual(a.init_to_all_hold_fds_ms);
      expect(a.init_to_all_hold_fds_ms_ci95[1]).toBeLessThanOrEqual(a.init_to_all_hold_fds_ms + 270);
      // The claim phase took the same in every boot: an interval of one point.
      expect(a.claim_ms_ci95).toEqual([a.claim_ms, a.claim_ms]);
    }
    // The agent's CPU over each claim phase: the same in every boot.
    expect(r.after_kexec.map((a) => [a.agent_cpu_ms, a.agent_cpu_ms_ci95])).toEqual([
      [20, [20, 20]],
      [200, [200, 200]],
    ]);
    expect(r.preserve.map((p) => [p.clients, p.requests, p.ms])).toEqual([
      [1, 3, 130],
      [10, 30, 1030],
    ]);
    expect(r.boot_results).toHaveLength(3);
  });

  it("judges the agent's start, as today and from a snapshot, against node -e 0 in the same rounds", () => {
    const r = combineAgent([1], [bootOf([1]), bootOf([1], 300), bootOf([1], 30)], host);
    expect(r.start).toMatchObject({ node_ms: 530, agent_ms: 1530, snapshot_ms: 580, agent_over_node: round(1530 / 530), snapshot_over_node: round(580 / 530), snapshot_blob_bytes: 5 * 2 ** 20 });
    expect(r.targets.map((t) => [t.limit, t.verdict])).toEqual([
      [1.2, 'missed'],
      [1.2, 'met'],
    ]);
    expect(() => agentBoot((stage) => ({ ...(stageValue(stage, [1]) as object), starts: null }), [1], arrivalsOf(2))).toThrow(/starts/);
  });

  it('judges the claim phase of 100 clients against a fifth of the 2984 ms it took when the goal was set, where 100 clients ran', () => {
    /** `boot` with its claim phase of count index `i` taking `ms`. */
    const claimTook = (boot: AgentBoot, i: number, ms: number): AgentBoot => ({
      ...boot,
      after_kexec: boot.after_kexec.map((a, at) => (at === i ? { ...a, claim_ms: ms } : a)),
    });
    const claimTarget = (boots: AgentBoot[], counts: number[]) => combineAgent(counts, boots, host).targets.find((t) => t.name.startsWith('claim phase of 100 clients'));
    const base = bootOf([10, 100]); // 100 clients: 5000 ms
    expect(claimTarget([base, base, base], [10, 100])).toMatchObject({ value: 5000, limit: 597, verdict: 'missed' });
    expect(claimTarget([400, 420, 410].map((ms) => claimTook(base, 1, ms)), [10, 100])).toMatchObject({ value: 410, verdict: 'met' });
    expect(claimTarget([400, 700, 500].map((ms) => claimTook(base, 1, ms)), [10, 100])).toMatchObject({ value: 500, verdict: 'undecided' });
    // A run without 100 clients (--quick: 1 and 10) has no such target.
    expect(claimTarget([bootOf([1, 10])], [1, 10])).toBeUndefined();
  });

  it('keeps the fewest clients that got their bytes back in any boot', () => {
    const short = bootOf([10]);
    const lost: AgentBoot = { ...short, after_kexec: [{ ...(short.after_kexec[0] as AgentBoot['after_kexec'][number]), held: 9 }] };
    expect(combineAgent([10], [short, lost, short], host).after_kexec[0]?.held).toBe(9);
  });

  it("gives the host load's median over rounds and its interval", () => {
    expect(host.requests_per_s).toBe(2000);
    expect(host.requests_per_s_ci95[0]).toBeGreaterThanOrEqual(1000);
    expect(host.requests_per_s_ci95[1]).toBeLessThanOrEqual(3000);
    expect(host.rounds_requests_per_s).toEqual([3000, 1000, 2000]);
    expect(host).toMatchObject({ clients: 100, iterations: 10, rounds: 3, warmup: 1 });
  });

  it("judges the agent's start against node's own and its memory with the most clients, and says how the per-client cost grows", () => {
    expect(host.start.agent_over_node).toBeCloseTo(63 / 52, 3);
    expect(host.start.snapshot_over_node).toBeCloseTo(53 / 52, 3);
    expect(host.claim_path.map((c) => [c.clients, c.ms.value, c.us_per_client.value, c.rss_kib.value])).toEqual([
      [1, 1, 1000, 50_100],
      [10, 5, 500, 50_250],
      [1000, 900, 900, 80_000],
    ]);
    expect(host.claim_path_growth).toBeCloseTo(900 / 500, 3);
    // Per client: the agent's CPU (median round, µs) and its RSS over the idle agent (median round, bytes).
    expect(host.claim_path.map((c) => [c.agent_cpu_us_per_client.value, c.rss_bytes_per_client.value])).toEqual([
      [500, 100 * 1024],
      [200, 25 * 1024],
      [150, (30_000 * 1024) / 1000],
    ]);
    expect(host.targets.map((t) => [t.limit, t.value])).toEqual([
      [1.2, 1.212],
      [1.2, 1.019],
      [80 * 1024, 80_000],
    ]);
  });

  it('refuses to combine no boots', () => {
    expect(() => combineAgent([1], [], host)).toThrow(RangeError);
  });
});
