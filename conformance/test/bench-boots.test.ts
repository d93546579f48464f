/**
 * Combining independent boots of the guest benchmark, on boots made up here
 * whose answers are worked out by hand (no kernel, no timing).
 */
import { describe, expect, it } from 'vitest';
import { combineBoots } from '../lib/bench/boots.js';
import type { BlackoutSide, BootResult, LargeTiming, PerOp } from '../lib/bench/report.js';

const perOp = (node: number[], c: number[]): PerOp => ({
  n: 100,
  rounds: node.length,
  node_us_per_op: 0,
  c_us_per_op: 0,
  ratio: 0,
  node_rounds_us: node,
  c_rounds_us: c,
  warmup_rounds_us: { node: [1], c: [1] },
});

const large = (node: number[], c: number[]): LargeTiming => ({ node_ms: 0, c_ms: 0, ratio: 0, node_rounds_ms: node, c_rounds_ms: c, min: { node_ms: Math.min(...node), c_ms: Math.min(...c), ratio: 0 } });

const side = (share: number, whole: number): BlackoutSide => ({
  kernel_to_init_ms: 1000,
  init_to_running_ms: whole - share,
  require_ms: 0,
  open_ms: 1,
  retrieve_session_ms: 1,
  retrieve_fds_ms: share - 2,
  package_share_ms: share,
  init_to_all_retrieved_ms: whole,
  open_to_all_retrieved_ms: share,
  process_start_to_all_retrieved_ms: whole,
  start_major_faults: 900,
  require_major_faults: 300,
  share_major_faults: 320,
});

/**
 * A boot where node takes `k` times C's time in the small cases, `large`
 * times in the large one, the async lag is `lag` of the sync lag, and node's
 * package share in the blackout is `share` times C's.
 */
function boot(k: number, largeK: number, lag: number, share: number, requireShare = 0.08): BootResult {
  const c = [10, 20, 30];
  return {
    kernel: '7.2.13',
    guest: { clock_tick: 100, hypervisor: 'TCGTCGTCGTCG' },
    preserve_small: perOp(
      c.map((x) => x * k),
      c,
    ),
    retrieve_small: perOp(
      c.map((x) => x * k),
      c,
    ),
    preserve_large: {
      ...large([100 * largeK, 200 * largeK], [100, 200]),
      bytes: 1 << 20,
      rounds: 2,
      node_other_threads_cpu_ms: { fresh: [0, 0], repeat: [0, 0] },
      repeat: large([10, 20], [10, 20]),
    },
    event_loop: {
      bytes: 1 << 20,
      sync_max_lag_ms: 1000,
      async_max_lag_ms: 1000 * lag,
      sync_preserve_ms: 1000,
      async_preserve_ms: 1000,
      lag_ratio: lag,
      rounds: { sync_max_lag_ms: [1000, 1000], async_max_lag_ms: [1000 * lag, 1000 * lag], async_preserve_ms: [1000, 1000] },
      repeat: { sync_max_lag_ms: 100, async_max_lag_ms: 10, lag_ratio: 0.1 },
    },
    blackout: {
      files: 100,
      node: side(10 * share, 3000),
      c: side(10, 15),
      node_floor_ms: 2000,
      ratio: 200,
      // Fresh nodes alternating: node -e 0 at 300 and 400 ms, each require that share of it.
      fresh: { node_start_ms: [300, 400], require_ms: [300 * requireShare, 400 * requireShare], live_update_ms: [50, 50], empty_require_ms: [20, 24] },
    },
    large_swap: { bytes: 1 << 20, node_wrote_node_preserved_ms: 1, node_wrote_c_preserved_ms: 1, c_wrote_c_preserved_ms: 1, rounds: { node_wrote_node_preserved_ms: [1], node_wrote_c_preserved_ms: [1], c_wrote_c_preserved_ms: [1] } },
    layers: { n: 100, api_us_per_op: 2, addon_us_per_op: 1, api_over_addon: 2 },
    addon_rss_kib: 200,
    require_rss_kib: 4000,
  };
}

describe('combineBoots', () => {
  it('reports the median over boots and an interval spanning the boots when they disagree', () => {
    // Small-case ratios 1.0, 1.2, 1.4 over three boots: median 1.2. Within each
    // boot the ratio is exact, so only the boots vary; a resample's median is
    // the lowest or the highest boot with probability 7/27 each, more than a
    // 2.5 % tail, so the interval is [1.0, 1.4]: it straddles 1.25, undecided.
    const r = combineBoots([boot(1.0, 1, 0.01, 1), boot(1.2, 1, 0.01, 1), boot(1.4, 1, 0.01, 1)]);
    expect(r.preserve_small.ratio).toBe(1.2);
    expect(r.preserve_small.ratio_ci95).toEqual([1, 1.4]);
    expect(r.preserve_small.boot_ratios).toEqual([1, 1.2, 1.4]);
    expect(r.preserve_small.verdict).toBe('undecided');
    // Every boot's rounds, in boot order.
    expect(r.preserve_small.node_rounds_us).toHaveLength(9);
  });

  it('judges each target on its interval: met, missed', () => {
    // Large ratio 1.5 in every boot (over 1.1: missed), lag ratio 0.05 (under 0.1: met),
    // blackout share 1.2 (under 1.25: met), small ratio 0.9 (met).
    const r = combineBoots([boot(0.9, 1.5, 0.05, 1.2), boot(0.9, 1.5, 0.05, 1.2)]);
    expect(r.preserve_small.verdict).toBe('met');
    expect(r.preserve_large.ratio).toBe(1.5);
    expect(r.preserve_large.verdict).toBe('missed');
    expect(r.event_loop.lag_ratio).toBe(0.05);
    expect(r.event_loop.verdict).toBe('met');
    expect(r.blackout.share_ratio).toBe(1.2);
    expect(r.blackout.share_verdict).toBe('met');
    // The whole blackout: 3000 ms against 15 ms, 200×, no target.
    expect(r.blackout.ratio).toBe(200);
    expect(r.targets.map((t) => t.verdict)).toEqual(['met', 'met', 'missed', 'met', 'met', 'met']);
  });

  it("judges the guest's fresh-node require against node -e 0 there, pairing each boot's rounds", () => {
    // require at 8% and 20% of node's start in the boots' rounds: 0.08 met; 0.2 missed; a boot of each straddles 0.1.
    const met = combineBoots([boot(1, 1, 0.01, 1, 0.08), boot(1, 1, 0.01, 1, 0.08)]).blackout.fresh_require;
    expect(met).toMatchObject({ samples: 4, require_ms: 28, node_start_ms: 350, live_update_ms: 50, empty_require_ms: 22, ratio: 0.08, verdict: 'met' });
    expect(combineBoots([boot(1, 1, 0.01, 1, 0.2), boot(1, 1, 0.01, 1, 0.2)]).blackout.fresh_require.verdict).toBe('missed');
    const mixed = combineBoots([boot(1, 1, 0.01, 1, 0.08), boot(1, 1, 0.01, 1, 0.2)]);
    expect(mixed.blackout.fresh_require.ratio_ci95).toEqual([0.08, 0.2]);
    expect(mixed.blackout.fresh_require.verdict).toBe('undecided');
    // Every boot's rounds, in boot order.
    expect(mixed.blackout.fresh.require_ms).toEqual([24, 32, 60, 80]);
  });

  it('refuses no boots', () => {
    expect(() => combineBoots([])).toThrow(RangeError);
  });
});
