/**
 * How the benchmark turns rounds into figures, intervals and verdicts, on
 * rounds made up here with hand-computed answers (no LUO, no timing).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorsResult, fdPassResult, hostResult, hostTargets, poolWakeupNote, promiseResult, target } from '../lib/bench/host-report.js';
import type { ErrorRounds, FdPassRounds, FormRounds, HostRounds, SealsRounds } from '../lib/bench/host.js';
import { emptyRequireOnce, requireOnce } from '../lib/bench/fresh-node.js';
import { accelOf } from '../lib/bench/report.js';

const flat = (sync: number, async: number, c: number, n = 5): FormRounds => ({
  sync: new Array<number>(n).fill(sync),
  async: new Array<number>(n).fill(async),
  c: new Array<number>(n).fill(c),
});

const fill = (x: number, n = 5): number[] => new Array<number>(n).fill(x);

/** getSeals rounds with node's anchors: fs.fstat's callback and Promise forms against C's fstat. */
const seals = (form: FormRounds, callback: number, promise: number, cFstat: number): SealsRounds => ({
  ...form,
  fstat_callback: fill(callback, form.c.length),
  fstat_promise: fill(promise, form.c.length),
  c_fstat: fill(cFstat, form.c.length),
});

const fdpass = (form: FormRounds, net: number): FdPassRounds => ({ ...form, net: fill(net, form.c.length) });

const errors = (ours: number, node: number, ebadf: number): ErrorRounds => ({
  processes: [0, 1, 2].map(() => ({ ours: fill(ours), node: fill(node), node_ebadf: fill(ebadf) })),
});

function rounds(overrides: Partial<HostRounds> = {}): HostRounds {
  return {
    params: { rounds: 5, warmup: 1, requires: 3 },
    seals: seals(flat(600, 12_000, 200), 10_200, 11_000, 200),
    enotty: flat(3_000, 14_000, 250),
    fdpass: fdpass(flat(6_000, 9_000, 4_000), 8_000),
    errors: errors(6_000, 4_000, 5_000),
    require_ms: [3, 4, 4],
    live_update_ms: [1, 2, 3],
    node_start_ms: [40, 41, 42],
    require_modules: ['dist/index.js', 'dist/session.js'],
    ...overrides,
  };
}

describe('host figures', () => {
  it('take the overhead per round, node minus C in the same round', () => {
    // Round by round: 500−200, 700−300, 900−400 = 300, 400, 500; median 400. The
    // difference of the medians (700 − 300) happens to agree here; the pairing
    // matters in the next case.
    const form: FormRounds = { sync: [500, 700, 900], async: [10_000, 11_000, 12_000], c: [200, 300, 400] };
    const host = hostResult(rounds({ seals: seals(form, 0, 0, 0), params: { rounds: 3, warmup: 1, requires: 3 } }));
    expect(host.sync_ns_per_call).toBe(700);
    expect(host.c_ns_per_call).toBe(300);
    expect(host.sync_overhead_ns).toBe(400);
    expect(host.async_overhead_ns).toBe(10_700);
  });

  it('pair the rounds: a slow round slows both sides and leaves the overhead alone', () => {
    // Every round node = C + 100, while the machine's load moves both by 10×.
    const form: FormRounds = { sync: [200, 2_100, 300], async: [9_000, 9_000, 9_000], c: [100, 2_000, 200] };
    const host = hostResult(rounds({ seals: seals(form, 0, 0, 0) }));
    expect(host.sync_overhead_ns).toBe(100);
    expect(host.sync_overhead_ns_ci95).toEqual([100, 100]);
  });

  it("judge the targets: over C, against node's own anchors in the same run, and require's time", () => {
    // Constant rounds: every interval is a point. sync 400 over C (met), Promise
    // 11 800 (met); that overhead over node's fs.promises (11 000 − 200) is 1.093 (met), over
    // its callback (10 200 − 200) 1.18 (met); fd passing 6000/4000 = 1.5 (on the limit:
    // undecided), 9000/4000 = 2.25 (met), 9000 over net's 8000 = 1.125 (met); the error
    // 6000 over fstatSync's 4000 = 1.5 (undecided); require 4 ms (met).
    const judge = (raw: HostRounds) => hostTargets(hostResult(raw), fdPassResult(raw), promiseResult(raw), errorsResult(raw));
    expect(judge(rounds()).map((t) => [t.value, t.verdict])).toEqual([
      [400, 'met'],
      [11_800, 'met'],
      [1.093, 'met'],
      [1.18, 'met'],
      [1.5, 'undecided'],
      [2.25, 'met'],
      [1.125, 'met'],
      [1.5, 'undecided'],
      [4, 'met'],
    ]);
    const slow = rounds({
      seals: seals(flat(900, 30_000, 200), 10_200, 11_000, 200),
      fdpass: fdpass(flat(16_000, 20_000, 4_000), 8_000),
      errors: errors(20_000, 4_000, 5_000),
      require_ms: [12, 13, 14],
    });
    expect(judge(slow).map((t) => t.verdict)).toEqual(['missed', 'missed', 'missed', 'missed', 'missed', 'missed', 'missed', 'missed', 'missed']);
  });

  it("say when the thread pool's wake-up, not the package, is over the absolute Promise limit (node's own callback over it too)", () => {
    expect(poolWakeupNote(promiseResult(rounds()))).toBeNull();
    const pooled = rounds({ seals: seals(flat(400, 25_200, 200), 25_200, 27_000, 200) });
    expect(poolWakeupNote(promiseResult(pooled))).toBe(
      "the thread pool's hand-off and wake-up dominate on this machine: node's own fs.fstat(fd, callback) pays 25000 ns over C's fstat, " +
        'over the 15000-ns limit by itself; ours pays 25000 ns, ×1.00 node\'s own',
    );
  });

  it('judge the typed error over its processes: the median of their ratios, an interval spanning them', () => {
    // Three processes at 1.4, 1.45 and 1.8 of node's throw (5 rounds each, constant): the
    // median is 1.45, and the interval reaches the slow process's 1.8, so it is undecided.
    const process = (ours: number) => ({ ours: fill(ours), node: fill(4_000), node_ebadf: fill(5_000) });
    const e = errorsResult(rounds({ errors: { processes: [process(5_600), process(5_800), process(7_200)] } }));
    expect(e.processes).toBe(3);
    expect(e.over_node_ratio_by_process).toEqual([1.4, 1.45, 1.8]);
    expect(e.over_node_ratio).toBe(1.45);
    expect(e.over_node_ratio_ci95).toEqual([1.4, 1.8]);
    expect(e.observations).toBe(15);
    expect(e.rounds_ns.ours).toHaveLength(15);
  });

  it('give the fd-passing ratio of medians with a paired interval', () => {
    // Rounds 20/10, 30/10, 40/10: median ratio 3; resampled medians of three
    // pairs range over 2 to 4 with 7/27 at each end, so the interval is [2, 4].
    const form: FormRounds = { sync: [20, 30, 40], async: [30, 30, 30], c: [10, 10, 10] };
    const result = fdPassResult(rounds({ fdpass: fdpass(form, 30) }));
    expect(result.sync_ratio).toBe(3);
    expect(result.sync_ratio_ci95).toEqual([2, 4]);
    expect(result.async_ratio_ci95).toEqual([3, 3]);
  });

  it('name the test bed modules that require loaded, if any', () => {
    expect(hostResult(rounds()).require_test_bed_modules).toEqual([]);
    const leaky = rounds({ require_modules: ['dist/index.js', 'dist/vm/guest.js', 'conformance/dist/bench/run.js', 'dist/conformance/suite.js'] });
    expect(hostResult(leaky).require_test_bed_modules).toEqual(['dist/vm/guest.js', 'conformance/dist/bench/run.js', 'dist/conformance/suite.js']);
  });
});

describe('target', () => {
  it('judges the interval as published: a bound that rounds onto the limit decides nothing', () => {
    expect(target('t', 0.105, [0.10004, 0.117], 0.1, 5)).toMatchObject({ ci95: [0.1, 0.117], verdict: 'undecided', met: false });
    expect(target('t', 0.095, [0.09, 0.09996], 0.1, 5)).toMatchObject({ ci95: [0.09, 0.1], verdict: 'undecided', met: false });
    expect(target('t', 0.105, [0.1006, 0.117], 0.1, 5)).toMatchObject({ ci95: [0.101, 0.117], verdict: 'missed', met: false });
    expect(target('t', 0.095, [0.09, 0.0994], 0.1, 5)).toMatchObject({ ci95: [0.09, 0.099], verdict: 'met', met: true });
  });
});

describe('accelOf', () => {
  it("reads QEMU's accelerator from the guest's hypervisor signature", () => {
    expect(accelOf('TCGTCGTCGTCG')).toBe('tcg');
    expect(accelOf('KVMKVMKVM')).toBe('kvm');
    expect(accelOf('')).toBe('none');
    expect(accelOf('Microsoft Hv')).toBe('Microsoft Hv');
  });
});

describe('requireOnce', () => {
  it("lists the library's modules that require('liveupdate') loads, and none of the test bed", () => {
    // Needs the compiled library (npm run compile), as every host test does.
    const sample = requireOnce(path.resolve(__dirname, '..', '..'));
    expect(sample.ms).toBeGreaterThan(0);
    expect(sample.live_update_ms).toBeGreaterThan(0);
    expect(sample.modules).toContain('dist/index.js');
    expect(sample.modules.filter((m) => /(^|\/)(vm|bench|conformance)\//.test(m))).toEqual([]);
  });
});

describe('emptyRequireOnce', () => {
  it("times node's own require of an empty file, and fails loudly for a file that is not there", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-empty-'));
    try {
      const file = path.join(dir, 'empty.js');
      fs.writeFileSync(file, '');
      const ms = emptyRequireOnce(file);
      expect(Number.isFinite(ms)).toBe(true);
      expect(ms).toBeGreaterThan(0);
      expect(() => emptyRequireOnce(path.join(dir, 'absent.js'))).toThrow(/exited with 1/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
