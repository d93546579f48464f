/**
 * The benchmark must not rot: run its quick mode on one kernel (the default
 * one, to save CI time) and check that the result has every field with sane
 * values. Never asserts speed: slow numbers are BENCHMARKS.md's business.
 */
import { beforeAll, expect, it } from 'vitest';
import { pickKernel, runBench } from '../../lib/bench/run.js';
import type { BenchResult } from '../../lib/bench/report.js';
import { describeOneKernel } from '../../../test/kernel/support.js';

/** A positive, finite number. */
function positive(value: unknown): void {
  expect(typeof value).toBe('number');
  expect(Number.isFinite(value)).toBe(true);
  expect(value as number).toBeGreaterThan(0);
}

/** `ratio` is node / C, up to the rounding to three decimals. */
function isRatio(ratio: number, node: number, c: number): void {
  positive(ratio);
  expect(Math.abs(ratio - node / c)).toBeLessThan(0.002 * Math.max(1, ratio));
}

// One kernel only, the benchmark's default, to save CI time.
describeOneKernel('benchmark (quick)', (kernel) => {
  let result: BenchResult;

  beforeAll(async () => {
    result = await runBench({ quick: true, kernel: kernel.path });
  });

  it('reports the kernel, the machine and every case', () => {
    expect(result.kernel).toBe(kernel.release);
    expect(result.mode).toBe('quick');
    positive(result.machine.nproc);
    for (const key of ['preserve_small', 'retrieve_small', 'preserve_large', 'event_loop', 'blackout', 'addon_rss_kib'] as const) {
      expect(result).toHaveProperty(key);
    }
  });

  it('has per-ioctl times for both sides and their ratio', () => {
    for (const r of [result.preserve_small, result.retrieve_small]) {
      expect(r.n).toBe(result.params.n);
      positive(r.node_us_per_op);
      positive(r.c_us_per_op);
      isRatio(r.ratio, r.node_us_per_op, r.c_us_per_op);
      expect(r.node_rounds_us).toHaveLength(result.params.rounds);
      expect(r.c_rounds_us).toHaveLength(result.params.rounds);
    }
  });

  it('has the large preserve, the event-loop delays and the blackout', () => {
    const large = result.preserve_large;
    expect(large.bytes).toBe(result.params.large);
    positive(large.node_ms);
    positive(large.c_ms);
    isRatio(large.ratio, large.node_ms, large.c_ms);
    const loop = result.event_loop;
    expect(loop.bytes).toBe(result.params.large);
    for (const v of [loop.sync_max_lag_ms, loop.async_max_lag_ms, loop.sync_preserve_ms, loop.async_preserve_ms]) positive(v);
    expect(result.blackout.files).toBe(100);
    positive(result.blackout.node.init_to_all_retrieved_ms);
    positive(result.blackout.c.init_to_all_retrieved_ms);
    // Node's blackout includes its own start; the LUO calls are part of it.
    expect(result.blackout.node.open_to_all_retrieved_ms).toBeLessThan(result.blackout.node.init_to_all_retrieved_ms);
    positive(result.addon_rss_kib);
    expect(result.targets).toHaveLength(4);
  });

  it('has the diagnostics', () => {
    positive(result.layers.api_us_per_op);
    positive(result.layers.addon_us_per_op);
    positive(result.large_swap.node_wrote_c_preserved_ms);
    expect(result.preserve_small.warmup_rounds_us.node).toHaveLength(result.params.warmup);
  });
}, (all) => pickKernel(undefined, all));
