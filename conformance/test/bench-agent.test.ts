/**
 * The agent path's part of the benchmark, on guest values made up here
 * whose answers are worked out by hand (no kernel, no timing).
 */
import { describe, expect, it } from 'vitest';
import { agentBoot, agentHostResult, combineAgent, type AgentBoot } from '../lib/bench/agent-report.js';
import { agentCmdline, agentCountsFromCmdline } from '../lib/bench/params.js';
import type { JsonValue } from '../lib/vm/protocol.js';

/** What kernel `stage` of a run with `counts` returns, every timing shifted by `slow` ms. */
function stageValue(stage: number, counts: readonly number[], slow = 0): JsonValue {
  const claimed = counts[stage - 2];
  const preserved = counts[stage - 1];
  return {
    kernel_to_pid1_task_ms: 200 + slow,
    kernel_to_init_ms: 1500 + slow,
    init_to_runner_ms: 2000 + slow,
    init_to_agent_answering_ms: 9000 + slow,
    claim: claimed === undefined ? null : { clients: claimed, held: claimed, init_to_first_connect_ms: 9100 + slow, init_to_all_hold_fds_ms: 9100 + 50 * claimed + slow, claim_ms: 50 * claimed },
    preserve: preserved === undefined ? null : { clients: preserved, ms: 100 * preserved + slow, requests: 3 * preserved, requests_per_s: (3 * preserved * 1000) / (100 * preserved + slow) },
  };
}

const bootOf = (counts: readonly number[], slow = 0): AgentBoot => agentBoot((stage) => stageValue(stage, counts, slow), counts);

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

  it('says which value is missing, and refuses a kernel that claimed the wrong count', () => {
    expect(() => agentBoot((stage) => (stage === 2 ? { ...(stageValue(2, [1]) as object), claim: null } : stageValue(stage, [1])), [1])).toThrow(/kernel 2.claim lacks clients/);
    expect(() => agentBoot((stage) => stageValue(stage, [10]), [1])).toThrow(/10 clients claimed, expected 1/);
    expect(() => agentBoot(() => undefined, [1])).toThrow(/kernel 1 lacks/);
  });
});

describe('the agent path over boots', () => {
  const host = agentHostResult({ params: { clients: 100, iterations: 10, rounds: 3, warmup: 1 }, requests_per_s: [3000, 1000, 2000] });

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
    expect(r.preserve.map((p) => [p.clients, p.requests, p.ms])).toEqual([
      [1, 3, 130],
      [10, 30, 1030],
    ]);
    expect(r.boot_results).toHaveLength(3);
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

  it('refuses to combine no boots', () => {
    expect(() => combineAgent([1], [], host)).toThrow(RangeError);
  });
});
