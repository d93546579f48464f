/**
 * Combines independent boots of the guest benchmark: each boot's result
 * (report.ts) keeps its rounds; the combined result reports every ratio as
 * the median over boots with a 95% bootstrap interval that resamples boots
 * and the interleaved rounds within them, and judges each target on that
 * interval. Pure.
 * @internal
 */
import type { BlackoutSide, BootResult, FreshNodeRounds, FreshRequire, GuestResult, LargeTiming, PerOp } from './report.js';
import { median, medianEstimate, ratioOverBoots, type Estimate, type Interval, type PairedRounds } from './stats.js';
import { round3, roundPair, target, type Target } from './host-report.js';

/** A ratio's estimate over boots, as reported. */
export interface RatioOverBoots {
  /** Median over boots of each boot's node/C ratio. */
  readonly ratio: number;
  readonly ratio_ci95: Interval;
  /** Each boot's ratio, in boot order. */
  readonly boot_ratios: readonly number[];
}

/** A guest case's ratio over boots, judged against its target. */
export type Judged = RatioOverBoots & { readonly verdict: Target['verdict'] };

function estimate(boots: readonly PairedRounds[]): Estimate & { readonly perBoot: number[] } {
  return { ...ratioOverBoots(boots), perBoot: boots.map((b) => median(b.node) / median(b.c)) };
}

function judged(boots: readonly PairedRounds[], limit: number, name: string, targets: Target[]): Judged {
  const e = estimate(boots);
  const t = target(name, e.median, e.ci95, limit, e.observations);
  targets.push(t);
  return { ratio: round3(e.median), ratio_ci95: roundPair(e.ci95), boot_ratios: e.perBoot.map(round3), verdict: t.verdict };
}

const medianOf = (xs: readonly number[]): number => round3(median(xs));

function perOpOverBoots(boots: readonly PerOp[], name: string, targets: Target[]): PerOp & Judged {
  const first = boots[0] as PerOp;
  return {
    ...first,
    rounds: first.rounds,
    node_us_per_op: medianOf(boots.map((b) => b.node_us_per_op)),
    c_us_per_op: medianOf(boots.map((b) => b.c_us_per_op)),
    node_rounds_us: boots.flatMap((b) => b.node_rounds_us),
    c_rounds_us: boots.flatMap((b) => b.c_rounds_us),
    warmup_rounds_us: { node: boots.flatMap((b) => b.warmup_rounds_us.node), c: boots.flatMap((b) => b.warmup_rounds_us.c) },
    ...judged(
      boots.map((b) => ({ node: b.node_rounds_us, c: b.c_rounds_us })),
      1.25,
      `${name} ratio <= 1.25`,
      targets,
    ),
  };
}

function largeOverBoots(boots: readonly LargeTiming[]): LargeTiming & RatioOverBoots {
  const e = estimate(boots.map((b) => ({ node: b.node_rounds_ms, c: b.c_rounds_ms })));
  const minNode = Math.min(...boots.map((b) => b.min.node_ms));
  const minC = Math.min(...boots.map((b) => b.min.c_ms));
  return {
    node_ms: medianOf(boots.map((b) => b.node_ms)),
    c_ms: medianOf(boots.map((b) => b.c_ms)),
    node_rounds_ms: boots.flatMap((b) => b.node_rounds_ms),
    c_rounds_ms: boots.flatMap((b) => b.c_rounds_ms),
    min: { node_ms: minNode, c_ms: minC, ratio: round3(minNode / minC) },
    ratio: round3(e.median),
    ratio_ci95: roundPair(e.ci95),
    boot_ratios: e.perBoot.map(round3),
  };
}

/** The combined result of `boots` (at least one), with the targets judged on intervals. */
export function combineBoots(boots: readonly BootResult[]): GuestResult {
  if (boots.length === 0) throw new RangeError('no boots to combine');
  const first = boots[0] as BootResult;
  const targets: Target[] = [];
  const large = boots.map((b) => b.preserve_large);
  const largeFresh = largeOverBoots(large);
  const lag = boots.map((b) => b.event_loop);
  const lagBoots = lag.map((l) => ({ node: l.rounds.async_max_lag_ms, c: l.rounds.sync_max_lag_ms }));
  const lagRatio = estimate(lagBoots);
  const blackout = boots.map((b) => b.blackout);
  return {
    preserve_small: perOpOverBoots(
      boots.map((b) => b.preserve_small),
      'preserve_small',
      targets,
    ),
    retrieve_small: perOpOverBoots(
      boots.map((b) => b.retrieve_small),
      'retrieve_small',
      targets,
    ),
    preserve_large: {
      ...first.preserve_large,
      ...largeFresh,
      ...judged(
        large.map((l) => ({ node: l.node_rounds_ms, c: l.c_rounds_ms })),
        1.1,
        'preserve_large ratio <= 1.1',
        targets,
      ),
      node_other_threads_cpu_ms: {
        fresh: large.flatMap((l) => l.node_other_threads_cpu_ms.fresh),
        repeat: large.flatMap((l) => l.node_other_threads_cpu_ms.repeat),
      },
      repeat: largeOverBoots(large.map((l) => l.repeat)),
    },
    event_loop: {
      ...first.event_loop,
      sync_max_lag_ms: medianOf(lag.map((l) => l.sync_max_lag_ms)),
      async_max_lag_ms: medianOf(lag.map((l) => l.async_max_lag_ms)),
      sync_preserve_ms: medianOf(lag.map((l) => l.sync_preserve_ms)),
      async_preserve_ms: medianOf(lag.map((l) => l.async_preserve_ms)),
      lag_ratio: round3(lagRatio.median),
      lag_ratio_ci95: roundPair(lagRatio.ci95),
      // "under a tenth": the interval's upper bound must be below 0.1.
      verdict: pushTarget(targets, target('event_loop async/sync max lag < 0.1', lagRatio.median, lagRatio.ci95, 0.1, lagRatio.observations)),
      rounds: {
        sync_max_lag_ms: lag.flatMap((l) => l.rounds.sync_max_lag_ms),
        async_max_lag_ms: lag.flatMap((l) => l.rounds.async_max_lag_ms),
        async_preserve_ms: lag.flatMap((l) => l.rounds.async_preserve_ms),
      },
      repeat: {
        sync_max_lag_ms: medianOf(lag.map((l) => l.repeat.sync_max_lag_ms)),
        async_max_lag_ms: medianOf(lag.map((l) => l.repeat.async_max_lag_ms)),
        lag_ratio: medianOf(lag.map((l) => l.repeat.lag_ratio)),
      },
    },
    blackout: combineBlackout(blackout, targets),
    large_swap: {
      bytes: first.large_swap.bytes,
      node_wrote_node_preserved_ms: medianOf(boots.map((b) => b.large_swap.node_wrote_node_preserved_ms)),
      node_wrote_c_preserved_ms: medianOf(boots.map((b) => b.large_swap.node_wrote_c_preserved_ms)),
      c_wrote_c_preserved_ms: medianOf(boots.map((b) => b.large_swap.c_wrote_c_preserved_ms)),
      rounds: {
        node_wrote_node_preserved_ms: boots.flatMap((b) => b.large_swap.rounds.node_wrote_node_preserved_ms),
        node_wrote_c_preserved_ms: boots.flatMap((b) => b.large_swap.rounds.node_wrote_c_preserved_ms),
        c_wrote_c_preserved_ms: boots.flatMap((b) => b.large_swap.rounds.c_wrote_c_preserved_ms),
      },
    },
    layers: {
      n: first.layers.n,
      api_us_per_op: medianOf(boots.map((b) => b.layers.api_us_per_op)),
      addon_us_per_op: medianOf(boots.map((b) => b.layers.addon_us_per_op)),
      api_over_addon: medianOf(boots.map((b) => b.layers.api_over_addon)),
    },
    addon_rss_kib: median(boots.map((b) => b.addon_rss_kib)),
    require_rss_kib: median(boots.map((b) => b.require_rss_kib)),
    targets,
  };
}

function pushTarget(targets: Target[], t: Target): Target['verdict'] {
  targets.push(t);
  return t.verdict;
}

/** Each side's blackout steps: medians over boots; the package's share against C's retrieval, judged. */
function combineBlackout(boots: readonly BootResult['blackout'][], targets: Target[]): GuestResult['blackout'] {
  const first = boots[0] as BootResult['blackout'];
  const medianSteps = (pick: (b: BootResult['blackout']) => BlackoutSide): BlackoutSide =>
    Object.fromEntries(Object.keys(pick(first)).map((k) => [k, medianOf(boots.map((b) => pick(b)[k as keyof BlackoutSide]))])) as unknown as BlackoutSide;
  const whole = estimate(boots.map((b) => ({ node: [b.node.init_to_all_retrieved_ms], c: [b.c.init_to_all_retrieved_ms] })));
  const share = estimate(boots.map((b) => ({ node: [b.node.package_share_ms], c: [b.c.package_share_ms] })));
  return {
    files: first.files,
    node: medianSteps((b) => b.node),
    c: medianSteps((b) => b.c),
    node_floor_ms: medianOf(boots.map((b) => b.node_floor_ms)),
    ratio: round3(whole.median),
    ratio_ci95: roundPair(whole.ci95),
    share_ratio: round3(share.median),
    share_ratio_ci95: roundPair(share.ci95),
    share_verdict: pushTarget(targets, target("blackout: package's share (require, open, retrieves) / C's retrieval <= 1.25", share.median, share.ci95, 1.25, share.observations)),
    boot_ratios: whole.perBoot.map(round3),
    fresh: {
      node_start_ms: boots.flatMap((b) => b.fresh.node_start_ms),
      require_ms: boots.flatMap((b) => b.fresh.require_ms),
      live_update_ms: boots.flatMap((b) => b.fresh.live_update_ms),
      empty_require_ms: boots.flatMap((b) => b.fresh.empty_require_ms),
    },
    fresh_require: freshRequire(boots.map((b) => b.fresh), targets),
  };
}

/** `require('liveupdate')` over `node -e 0` in the same guest, each boot's rounds paired as they alternated. */
function freshRequire(boots: readonly FreshNodeRounds[], targets: Target[]): FreshRequire {
  const all = (pick: (b: FreshNodeRounds) => readonly number[]): number[] => boots.flatMap(pick);
  const ratio = ratioOverBoots(boots.map((b) => ({ node: b.require_ms, c: b.node_start_ms })));
  const requireMs = medianEstimate(all((b) => b.require_ms));
  return {
    samples: ratio.observations,
    require_ms: round3(requireMs.median),
    require_ms_ci95: roundPair(requireMs.ci95),
    live_update_ms: medianOf(all((b) => b.live_update_ms)),
    node_start_ms: medianOf(all((b) => b.node_start_ms)),
    empty_require_ms: medianOf(all((b) => b.empty_require_ms)),
    ratio: round3(ratio.median),
    ratio_ci95: roundPair(ratio.ci95),
    verdict: pushTarget(targets, target("guest require('liveupdate') / node -e 0 in the same guest <= 0.1", ratio.median, ratio.ci95, 0.1, ratio.observations)),
  };
}
