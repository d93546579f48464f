/**
 * The benchmark must not rot: run its quick mode, one boot, on one kernel
 * (the default one, to save CI time) and check that the result has every
 * field with sane values. Never asserts speed: slow numbers are
 * BENCHMARKS.md's business.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, expect, it } from 'vitest';
import { AGENT_QUICK, ERROR_PROCESSES, FRESH_NODE_RUNS } from '../../lib/bench/params.js';
import { pickKernel } from '../../lib/bench/run.js';
import type { BenchResult } from '../../lib/bench/report.js';
import type { Interval } from '../../lib/bench/stats.js';
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

/** A 95% interval around its estimate. */
function brackets(interval: Interval, estimate: number): void {
  expect(interval).toHaveLength(2);
  expect(interval[0]).toBeLessThanOrEqual(estimate);
  expect(estimate).toBeLessThanOrEqual(interval[1]);
}

const VERDICTS = ['met', 'missed', 'undecided'];

// One kernel only, the benchmark's default, to save CI time.
describeOneKernel('benchmark (quick)', (kernel) => {
  let result: BenchResult;

  beforeAll(async () => {
    // As users run it: the compiled command in its own node, whose output is the JSON.
    const run = path.resolve(__dirname, '..', '..', 'dist', 'bench', 'run.js');
    const out = await promisify(execFile)(process.execPath, [run, '--quick', '--boots', '1', '--json', '--kernel', kernel.path], { maxBuffer: 64 << 20 });
    result = JSON.parse(out.stdout) as BenchResult;
  });

  it('reports the kernel, the machine as read from it, and every case', () => {
    expect(result.kernel).toBe(kernel.release);
    expect(result.mode).toBe('quick');
    expect(result.boots).toBe(1);
    positive(result.machine.nproc);
    // Read in the guest from the hypervisor's CPUID signature, not from QEMU's arguments.
    expect(['tcg', 'kvm']).toContain(result.machine.accel);
    positive(result.machine.host_clock_tick);
    positive(result.machine.guest_clock_tick);
    expect(result.commit).not.toBe('');
    for (const key of ['preserve_small', 'retrieve_small', 'preserve_large', 'event_loop', 'blackout', 'addon_rss_kib', 'agent'] as const) {
      expect(result).toHaveProperty(key);
    }
  });

  it('has per-ioctl times for both sides and their ratio', () => {
    for (const r of [result.preserve_small, result.retrieve_small]) {
      expect(r.n).toBe(result.params.n);
      positive(r.node_us_per_op);
      positive(r.c_us_per_op);
      isRatio(r.ratio, r.node_us_per_op, r.c_us_per_op);
      brackets(r.ratio_ci95, r.ratio);
      expect(VERDICTS).toContain(r.verdict);
      expect(r.boot_ratios).toHaveLength(1);
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
    brackets(large.ratio_ci95, large.ratio);
    brackets(loop.lag_ratio_ci95, loop.lag_ratio);
    positive(result.addon_rss_kib);
  });

  it('takes the blackout apart, for node and for C', () => {
    const b = result.blackout;
    expect(b.files).toBe(100);
    for (const side of [b.node, b.c]) {
      for (const step of ['kernel_to_init_ms', 'init_to_running_ms', 'open_ms', 'retrieve_session_ms', 'retrieve_fds_ms', 'package_share_ms', 'init_to_all_retrieved_ms'] as const) positive(side[step]);
      // The steps follow one another: the whole is at least its parts.
      expect(side.init_to_all_retrieved_ms).toBeGreaterThanOrEqual(side.init_to_running_ms + side.package_share_ms - 0.01);
      expect(side.package_share_ms).toBeGreaterThanOrEqual(side.require_ms + side.open_ms + side.retrieve_session_ms + side.retrieve_fds_ms - 0.01);
    }
    positive(b.node.require_ms);
    expect(b.c.require_ms).toBe(0);
    // Pages read from the disk, counted by the kernel: none in C's (absent) require, the require within the share.
    for (const side of [b.node, b.c]) {
      for (const faults of [side.start_major_faults, side.require_major_faults, side.share_major_faults]) expect(faults).toBeGreaterThanOrEqual(0);
      expect(side.share_major_faults).toBeGreaterThanOrEqual(side.require_major_faults);
    }
    expect(b.c.require_major_faults).toBe(0);
    positive(b.node_floor_ms);
    brackets(b.share_ratio_ci95, b.share_ratio);
    expect(VERDICTS).toContain(b.share_verdict);
    // Fresh nodes in the same guest: FRESH_NODE_RUNS of each per boot, alternating, require judged against node -e 0.
    const f = b.fresh_require;
    expect(f.samples).toBe(FRESH_NODE_RUNS * result.boots);
    expect(b.fresh.require_ms).toHaveLength(f.samples);
    expect(b.fresh.node_start_ms).toHaveLength(f.samples);
    for (const v of [f.require_ms, f.live_update_ms, f.node_start_ms, f.empty_require_ms, f.ratio]) positive(v);
    expect(b.fresh.empty_require_ms).toHaveLength(f.samples);
    brackets(f.require_ms_ci95, f.require_ms);
    brackets(f.ratio_ci95, f.ratio);
    expect(VERDICTS).toContain(f.verdict);
  });

  it("has the host cases: the binding's cost at native speed, fd passing, require", () => {
    const h = result.host;
    for (const cost of [h, h.luo_enotty]) {
      for (const v of [cost.sync_ns_per_call, cost.async_ns_per_call, cost.c_ns_per_call]) positive(v);
      brackets(cost.sync_overhead_ns_ci95, cost.sync_overhead_ns);
      brackets(cost.async_overhead_ns_ci95, cost.async_overhead_ns);
      expect(cost.rounds_ns_per_call.sync).toHaveLength(h.rounds);
    }
    const f = result.fdpass;
    for (const v of [f.c_ns_per_roundtrip, f.sync_ns_per_roundtrip, f.async_ns_per_roundtrip]) positive(v);
    brackets(f.sync_ratio_ci95, f.sync_ratio);
    brackets(f.async_ratio_ci95, f.async_ratio);
    // The typed error, in fresh processes of its own, judged over them.
    const e = result.errors;
    expect(e.processes).toBe(ERROR_PROCESSES);
    expect(e.over_node_ratio_by_process).toHaveLength(ERROR_PROCESSES);
    expect(e.rounds_ns.ours).toHaveLength(e.observations);
    for (const v of [e.ours_ns, e.node_ns, e.node_ebadf_ns, ...e.over_node_ratio_by_process]) positive(v);
    brackets(e.over_node_ratio_ci95, e.over_node_ratio);
    positive(h.require_ms);
    // The library alone: requiring it loads none of the test bed.
    expect(h.require_modules.length).toBeGreaterThan(0);
    expect(h.require_test_bed_modules).toEqual([]);
  });

  it('has the agent path: every client holds its fds again, each step from /init with its interval', () => {
    const a = result.agent;
    expect(a.counts).toEqual(AGENT_QUICK);
    expect(a.boot_results).toHaveLength(1);
    expect(a.after_kexec.map((x) => x.clients)).toEqual(AGENT_QUICK);
    for (const x of a.after_kexec) {
      // Checked in the guest: each client read back the bytes it preserved.
      expect(x.held).toBe(x.clients);
      for (const key of ['kernel_to_pid1_task_ms', 'kernel_to_init_ms', 'init_to_runner_ms', 'init_to_agent_answering_ms', 'init_to_all_hold_fds_ms', 'claim_ms'] as const) {
        positive(x[key]);
        brackets(x[`${key}_ci95`], x[key]);
      }
      // One clock, steps in order: the pid 1 task, /init, the runner, the agent answering, the last fd.
      expect(x.kernel_to_pid1_task_ms).toBeLessThanOrEqual(x.kernel_to_init_ms + 10);
      expect(x.init_to_runner_ms).toBeLessThan(x.init_to_agent_answering_ms);
      expect(x.init_to_agent_answering_ms).toBeLessThan(x.init_to_all_hold_fds_ms);
      expect(x.claim_ms).toBeLessThanOrEqual(x.init_to_all_hold_fds_ms - x.init_to_agent_answering_ms + 0.01);
    }
    expect(a.preserve.map((p) => [p.clients, p.requests])).toEqual(AGENT_QUICK.map((n) => [n, 3 * n]));
    for (const p of a.preserve) {
      positive(p.requests_per_s);
      brackets(p.requests_per_s_ci95, p.requests_per_s);
    }
    positive(a.host.requests_per_s);
    brackets(a.host.requests_per_s_ci95, a.host.requests_per_s);
    expect(a.host.rounds_requests_per_s).toHaveLength(a.host.rounds);
  });

  it('judges every target on its interval', () => {
    const names = result.targets.map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
    for (const required of [
      'fdpass sync / C <= 1.5',
      "typed error built and thrown / node's fs.fstatSync(-1) throw <= 1.5",
      "host require('liveupdate') (ms) <= 5",
      "blackout: package's share (require, open, retrieves) / C's retrieval <= 1.25",
      "guest require('liveupdate') / node -e 0 in the same guest <= 0.1",
      'event_loop async/sync max lag < 0.1',
    ]) {
      expect(names).toContain(required);
    }
    for (const t of result.targets) {
      brackets(t.ci95, t.value);
      expect(VERDICTS).toContain(t.verdict);
      expect(t.met).toBe(t.verdict === 'met');
      if (t.verdict === 'met') expect(t.ci95[1]).toBeLessThan(t.limit);
      if (t.verdict === 'missed') expect(t.ci95[0]).toBeGreaterThan(t.limit);
    }
  });

  it('has the diagnostics', () => {
    positive(result.layers.api_us_per_op);
    positive(result.layers.addon_us_per_op);
    positive(result.large_swap.node_wrote_c_preserved_ms);
    expect(result.preserve_small.warmup_rounds_us.node).toHaveLength(result.params.warmup);
  });
}, (all) => pickKernel(undefined, all));
