/**
 * The benchmark's statistics. Every expectation here is derived by hand or
 * from a known distribution, never by running the code under test again.
 */
import { describe, expect, it } from 'vitest';
import {
  bootstrapCi,
  bootstrapDistribution,
  median,
  medianEstimate,
  quantile,
  ratioOverBoots,
  seededRandom,
  verdict,
} from '../lib/bench/stats.js';

/** The share of `values` equal to `x`. */
function share(values: readonly number[], x: number): number {
  return values.filter((v) => v === x).length / values.length;
}

/**
 * Standard normal draws from a generator of the test's own (a 31-bit
 * Park-Miller LCG and Box-Muller), so the data does not come from the
 * generator under test.
 */
function normals(seed: number): () => number {
  let state = seed;
  const uniform = (): number => {
    state = (state * 48271) % 2147483647;
    return state / 2147483647;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

describe('median and quantile', () => {
  it('take the middle value of an odd count and the mean of the middle two of an even one', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('interpolate between order statistics (position p·(n−1))', () => {
    // [1, 2, 3, 4]: p = 0.25 sits at position 0.75, three quarters from 1 to 2.
    expect(quantile([4, 3, 2, 1], 0.25)).toBeCloseTo(1.75, 12);
    expect(quantile([10, 20], 0.9)).toBeCloseTo(19, 12);
    expect(quantile([5, 9, 1], 0)).toBe(1);
    expect(quantile([5, 9, 1], 1)).toBe(9);
  });

  it('refuse no values, non-numbers and quantiles outside [0, 1]', () => {
    expect(() => median([])).toThrow(RangeError);
    expect(() => median([1, Number.NaN])).toThrow(RangeError);
    expect(() => quantile([1], 1.5)).toThrow(RangeError);
  });
});

describe('seededRandom', () => {
  it('repeats its sequence for a seed and differs between seeds', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const c = seededRandom(43);
    const first = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(first);
    expect(Array.from({ length: 5 }, () => c())).not.toEqual(first);
  });

  it('is uniform on [0, 1): ten equal bins pass a chi-square test', () => {
    const random = seededRandom(7);
    const draws = 100_000;
    const bins = new Array<number>(10).fill(0);
    let outside = 0;
    for (let i = 0; i < draws; i++) {
      const u = random();
      if (!(u >= 0 && u < 1)) outside++;
      else bins[Math.floor(u * 10)]! += 1;
    }
    expect(outside).toBe(0);
    const expected = draws / 10;
    const chiSquare = bins.reduce((sum, observed) => sum + (observed - expected) ** 2 / expected, 0);
    // 27.88 is the 0.999 quantile of chi-square with 9 degrees of freedom.
    expect(chiSquare).toBeLessThan(27.88);
  });
});

describe('bootstrap', () => {
  it('of the median of [1, 2, 3] gives 1, 2 and 3 with probabilities 7/27, 13/27, 7/27', () => {
    // A resample's median is 1 when at least two of its three draws are 1:
    // 3·(1/3)²·(2/3) + (1/3)³ = 7/27; likewise 3; the rest (13/27) is 2.
    const distribution = bootstrapDistribution([1, 2, 3], (s) => median(s), { resamples: 20_000 });
    expect(share(distribution, 1)).toBeCloseTo(7 / 27, 1.5);
    expect(share(distribution, 2)).toBeCloseTo(13 / 27, 1.5);
    expect(share(distribution, 3)).toBeCloseTo(7 / 27, 1.5);
    // Both tails (2.5 %) fall inside the 26 % masses at 1 and 3.
    expect(bootstrapCi([1, 2, 3], (s) => median(s))).toEqual([1, 3]);
  });

  it('of the mean of [1, 2] gives 1, 1.5 and 2 with probabilities 1/4, 1/2, 1/4', () => {
    const distribution = bootstrapDistribution([1, 2], (s) => (s[0]! + s[1]!) / 2, { resamples: 20_000 });
    expect(share(distribution, 1)).toBeCloseTo(0.25, 1.5);
    expect(share(distribution, 1.5)).toBeCloseTo(0.5, 1.5);
    expect(share(distribution, 2)).toBeCloseTo(0.25, 1.5);
  });

  it('of a constant sample is that constant', () => {
    expect(medianEstimate([5, 5, 5, 5])).toEqual({ median: 5, ci95: [5, 5], observations: 4 });
  });

  it('is reproducible: the same seed gives the same interval', () => {
    const values = [3.1, 2.7, 3.9, 3.3, 2.2, 4.0, 3.0];
    const stat = (s: readonly number[]): number => median(s);
    expect(bootstrapCi(values, stat, { seed: 9 })).toEqual(bootstrapCi(values, stat, { seed: 9 }));
  });

  it("has the width the median's sampling distribution predicts for normal data", () => {
    // The median of n normal draws has standard deviation σ·sqrt(π/2)/sqrt(n);
    // n = 400, σ = 1: 0.0627, so a 95 % interval is about 2·1.96·0.0627 = 0.246 wide.
    const draw = normals(12345);
    const values = Array.from({ length: 400 }, draw);
    const [low, high] = bootstrapCi(values, (s) => median(s), { resamples: 2000 });
    expect(high - low).toBeGreaterThan(0.246 * 0.75);
    expect(high - low).toBeLessThan(0.246 * 1.25);
  });

  it('covers the true median about 95 % of the time', () => {
    // 200 experiments of 41 normal draws (true median 0): a 95 % interval should
    // miss it about 10 times; the binomial spread (sd ≈ 3.1) and the bootstrap's
    // known slight conservatism for medians leave 88 % to 99.5 %.
    const draw = normals(2024);
    let covered = 0;
    const experiments = 200;
    for (let e = 0; e < experiments; e++) {
      const values = Array.from({ length: 41 }, draw);
      const [low, high] = bootstrapCi(values, (s) => median(s), { resamples: 1000, seed: e + 1 });
      if (low <= 0 && 0 <= high) covered++;
    }
    expect(covered / experiments).toBeGreaterThan(0.88);
    expect(covered / experiments).toBeLessThan(0.995);
  }, 60_000);

  it('refuses no values and levels outside (0, 1)', () => {
    expect(() => bootstrapCi([], (s) => s.length)).toThrow(RangeError);
    expect(() => bootstrapCi([1], (s) => s.length, { level: 1 })).toThrow(RangeError);
  });
});

describe('ratioOverBoots', () => {
  it('is exact when node takes twice as long as C in every round of every boot', () => {
    const boots = [
      { node: [2, 4, 6], c: [1, 2, 3] },
      { node: [10, 8], c: [5, 4] },
    ];
    expect(ratioOverBoots(boots)).toEqual({ median: 2, ci95: [2, 2], observations: 5 });
  });

  it('is the median of the per-boot ratios, with the spread between boots in its interval', () => {
    // Rounds within a boot agree, so only the boots vary: ratios 1, 2, 3. The
    // median over three resampled boots is 1 or 3 with probability 7/27 each,
    // more than either 2.5 % tail, so the interval is [1, 3].
    const boots = [
      { node: [1, 1, 1], c: [1, 1, 1] },
      { node: [4, 4], c: [2, 2] },
      { node: [9, 9, 9], c: [3, 3, 3] },
    ];
    expect(ratioOverBoots(boots)).toEqual({ median: 2, ci95: [1, 3], observations: 8 });
  });

  it("with one boot, the interval comes from that boot's rounds (paired)", () => {
    // Node's rounds are C's times 1.5 plus nothing: pairing keeps every resampled ratio 1.5.
    expect(ratioOverBoots([{ node: [3, 6, 4.5, 7.5], c: [2, 4, 3, 5] }]).ci95).toEqual([1.5, 1.5]);
    // Unpaired spread: node 10 or 30, C always 10: the ratio of medians ranges over [1, 3].
    const wide = ratioOverBoots([{ node: [10, 30, 10, 30, 10, 30], c: [10, 10, 10, 10, 10, 10] }]);
    expect(wide.median).toBe(2);
    expect(wide.ci95[0]).toBe(1);
    expect(wide.ci95[1]).toBe(3);
  });

  it('refuses rounds that are not paired', () => {
    expect(() => ratioOverBoots([{ node: [1, 2], c: [1] }])).toThrow(RangeError);
  });
});

describe('verdict', () => {
  it('is met only when the whole interval is under the limit, missed when all over it', () => {
    expect(verdict([0.9, 1.2], 1.25)).toBe('met');
    expect(verdict([1.3, 1.6], 1.25)).toBe('missed');
    expect(verdict([1.1, 1.4], 1.25)).toBe('undecided');
    // On the limit is neither under nor over it.
    expect(verdict([1.0, 1.25], 1.25)).toBe('undecided');
    expect(verdict([1.25, 1.5], 1.25)).toBe('undecided');
  });

  it('decides nothing from a single observation, whose interval is a point', () => {
    expect(verdict([2, 2], 1.25, 1)).toBe('undecided');
    expect(verdict([1, 1], 1.25, 1)).toBe('undecided');
    expect(verdict([1, 1], 1.25, 2)).toBe('met');
  });
});
