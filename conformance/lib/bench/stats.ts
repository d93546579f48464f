/**
 * The benchmark's statistics: medians, percentile-bootstrap confidence
 * intervals with a seeded generator (the same data always gives the same
 * interval), and the verdict on a target. Pure: no I/O, no clock.
 *
 * Why intervals: on a shared machine under emulation one run's ratio moves
 * by more than a target's margin, so a target is only called met when the
 * whole interval is under it.
 * @internal
 */

/** Uniform numbers in [0, 1). */
export type Random = () => number;

/**
 * A small, fast generator (mulberry32: a 32-bit state advanced by a Weyl
 * step, then mixed) whose sequence is fixed by its seed. Not for secrets.
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), state | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 2 ** 32;
  };
}

function sorted(values: readonly number[], what: string): number[] {
  if (values.length === 0) throw new RangeError(`${what} of no values`);
  if (!values.every(Number.isFinite)) throw new RangeError(`${what} of a value that is not a finite number`);
  return [...values].sort((a, b) => a - b);
}

/**
 * The `p` quantile (0 to 1), interpolating linearly between the two order
 * statistics around position p·(n−1) (Hyndman and Fan's type 7, R's default).
 */
export function quantile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`quantile ${p} is outside [0, 1]`);
  const xs = sorted(values, 'quantile');
  const position = p * (xs.length - 1);
  const below = Math.floor(position);
  const low = xs[below] as number;
  const high = xs[Math.min(below + 1, xs.length - 1)] as number;
  return low + (high - low) * (position - below);
}

/** The median; the mean of the middle two for an even count. */
export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** `items.length` draws from `items` with replacement. */
export function resample<T>(items: readonly T[], random: Random): T[] {
  return Array.from({ length: items.length }, () => items[Math.floor(random() * items.length)] as T);
}

/** A statistic of one bootstrap sample; it may resample further (within groups) with `random`. */
export type Statistic<T> = (sample: readonly T[], random: Random) => number;

/** How to bootstrap. */
export interface BootstrapOptions {
  /** Bootstrap samples drawn (default 4000). */
  readonly resamples?: number;
  /** Confidence level of the interval (default 0.95). */
  readonly level?: number;
  /** Seed of the generator (default fixed, so reports are reproducible). */
  readonly seed?: number;
}

const DEFAULT_RESAMPLES = 4000;
const DEFAULT_SEED = 0x6c75_6f21;

/** The statistic over `resamples` samples of `items` drawn with replacement, sorted. */
export function bootstrapDistribution<T>(items: readonly T[], statistic: Statistic<T>, options: BootstrapOptions = {}): number[] {
  if (items.length === 0) throw new RangeError('bootstrap of no values');
  const random = seededRandom(options.seed ?? DEFAULT_SEED);
  const count = options.resamples ?? DEFAULT_RESAMPLES;
  return sorted(
    Array.from({ length: count }, () => statistic(resample(items, random), random)),
    'bootstrap',
  );
}

/** A confidence interval: [low, high]. */
export type Interval = readonly [number, number];

/**
 * The percentile-bootstrap confidence interval of `statistic` over `items`:
 * the (1−level)/2 and (1+level)/2 quantiles of its bootstrap distribution.
 */
export function bootstrapCi<T>(items: readonly T[], statistic: Statistic<T>, options: BootstrapOptions = {}): Interval {
  const level = options.level ?? 0.95;
  if (!(level > 0 && level < 1)) throw new RangeError(`confidence level ${level} is outside (0, 1)`);
  const distribution = bootstrapDistribution(items, statistic, options);
  return [quantile(distribution, (1 - level) / 2), quantile(distribution, (1 + level) / 2)];
}

/** Whether a target "at most `limit`" holds. */
export type Verdict = 'met' | 'missed' | 'undecided';

/**
 * Met when the whole interval is under the limit, missed when it is all
 * over it, else undecided. An interval resting on fewer than two
 * observations shows no spread at all, so it decides nothing.
 */
export function verdict(interval: Interval, limit: number, observations = 2): Verdict {
  if (observations < 2) return 'undecided';
  if (interval[1] < limit) return 'met';
  if (interval[0] > limit) return 'missed';
  return 'undecided';
}

/** A median, its 95% interval, and how many observations the interval rests on. */
export interface Estimate {
  readonly median: number;
  readonly ci95: Interval;
  readonly observations: number;
}

/** The median of `values` and its bootstrap interval. */
export function medianEstimate(values: readonly number[], options: BootstrapOptions = {}): Estimate {
  return { median: median(values), ci95: bootstrapCi(values, (sample) => median(sample), options), observations: values.length };
}

/** The rounds of one boot (or one run) on both sides; index i of each is one interleaved round. */
export interface PairedRounds {
  readonly node: readonly number[];
  readonly c: readonly number[];
}

/** node's median over C's median. */
function ratioOfMedians(rounds: PairedRounds): number {
  return median(rounds.node) / median(rounds.c);
}

/** The same rounds, drawn with replacement as pairs (a round's node and C stay together). */
function resampleRounds(rounds: PairedRounds, random: Random): PairedRounds {
  if (rounds.node.length !== rounds.c.length) throw new RangeError(`unpaired rounds: ${rounds.node.length} node, ${rounds.c.length} C`);
  const picks = resample(
    rounds.node.map((_, i) => i),
    random,
  );
  return { node: picks.map((i) => rounds.node[i] as number), c: picks.map((i) => rounds.c[i] as number) };
}

/**
 * The node/C ratio over independent boots: per boot, node's median over C's
 * median; reported, the median over boots. Its interval resamples both
 * levels (boots, then the interleaved rounds within each boot), so it
 * carries the spread between boots and within them; with one boot it is the
 * rounds' spread alone.
 */
export function ratioOverBoots(boots: readonly PairedRounds[], options: BootstrapOptions = {}): Estimate {
  return {
    median: median(boots.map(ratioOfMedians)),
    ci95: bootstrapCi(boots, (sample, random) => median(sample.map((boot) => ratioOfMedians(resampleRounds(boot, random)))), options),
    observations: boots.reduce((sum, boot) => sum + boot.node.length, 0),
  };
}
