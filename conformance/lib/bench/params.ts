/**
 * What the benchmark's host driver and its guest stages agree on: the sizes
 * of a run (carried on the kernel command line, which every stage inherits),
 * the C program's guest path and the names of the sessions it uses.
 * @internal
 */

/** The sizes of one benchmark run. */
export interface BenchParams {
  /** Files per session in the small cases (preserve_small, retrieve_small). */
  readonly n: number;
  /** Timed rounds per side in the small cases; a round is one session of `n` files. */
  readonly rounds: number;
  /** Warm-up rounds per side before them (reported, not in the medians). */
  readonly warmup: number;
  /** Bytes of the large memfd (preserve_large, event_loop). */
  readonly large: number;
  /** Rounds per side and per API in the large cases. */
  readonly largeRounds: number;
}

/** The full run: what BENCHMARKS.md records. */
export const FULL: BenchParams = { n: 1000, rounds: 9, warmup: 8, large: 1 << 30, largeRounds: 5 };
/** `--quick`: small enough for CI, big enough that every number is real. */
export const QUICK: BenchParams = { n: 100, rounds: 2, warmup: 1, large: 64 << 20, largeRounds: 2 };

/** Files in each blackout session (the C program's BLACKOUT_FILES). */
export const BLACKOUT_FILES = 100;

/**
 * Fresh nodes in this guest, alternating: `node -e 0` (start to exit, the
 * floor under any node program), `require('liveupdate')` timed inside one,
 * as the host case times it, and the require of an empty file (node's own
 * loader, the floor under any require); rounds per boot. Eleven: a fresh
 * node's time in a guest varies by tens of percent from one to the next,
 * and the target's ratio is of the medians of each boot's rounds (about a
 * second each).
 */
export const FRESH_NODE_RUNS = 11;

/**
 * Fresh node processes the errors case runs in, one after another. The
 * ratio differs by process more than by round within one (1.49 to 1.73 of
 * node's throw in one run), node's own throw more than ours: how V8 tiers
 * each side's code is settled once per process. The rounds of one process
 * cannot show that; the processes, pooled as boots are, do.
 */
export const ERROR_PROCESSES = 5;

/** Successful calls before the errors case's rounds, in each of its processes. */
export const WARM_SUCCESSES = 100_000;

/** Guest path of the static C program (bench/luo_bench.c); also pid 1 via rdinit=. */
export const GUEST_C_BENCH = '/lu/bench/luo_bench';
/** Where the C program, as pid 1, leaves its measurement (its INIT_RESULT). */
export const GUEST_INIT_RESULT = '/run/luo-bench-init.json';
/** Where the blackout agent pid 1 starts writes its own (the C program's AGENT_RESULT). */
export const GUEST_AGENT_RESULT = '/run/luo-bench-agent.json';
/** Guest path of the node blackout agent (bench/blackout-agent.js; the C program's NODE_AGENT). */
export const GUEST_NODE_AGENT = '/lu/bench/blackout-agent.js';
/** The blackout session the C program retrieves as pid 1 (its BLACKOUT_SESSION). */
export const C_BLACKOUT_SESSION = 'bench-c-blackout';
/** The blackout session the node stage retrieves. */
export const NODE_BLACKOUT_SESSION = 'bench-node-blackout';
/** Session name prefixes of the small cases: `<prefix><round>`. */
export const NODE_PREFIX = 'bench-n-';
export const C_PREFIX = 'bench-c-';

/** The kernel parameter that carries the sizes. */
const PARAM = 'lu.bench';

/** The kernel command-line words for a run: C as pid 1 first, and the sizes. */
export function benchCmdline(params: BenchParams): string {
  const sizes = Object.entries(params).map(([k, v]) => `${k}:${String(v)}`).join(',');
  return `rdinit=${GUEST_C_BENCH} ${PARAM}=${sizes}`;
}

/** The sizes from a kernel command line; throws if they are missing or malformed. */
export function paramsFromCmdline(cmdline: string): BenchParams {
  const word = cmdline.split(/\s+/).find((w) => w.startsWith(`${PARAM}=`));
  if (word === undefined) throw new Error(`no ${PARAM}= on the kernel command line`);
  const values = new Map(word.slice(PARAM.length + 1).split(',').map((kv) => kv.split(':') as [string, string]));
  const get = (key: keyof BenchParams): number => {
    const value = Number(values.get(key));
    if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`${PARAM}: bad or missing ${key} in ${word}`);
    return value;
  };
  return { n: get('n'), rounds: get('rounds'), warmup: get('warmup'), large: get('large'), largeRounds: get('largeRounds') };
}

/**
 * Clients of the agent path, one count per kernel after the first: each
 * count preserves in one kernel and claims in the next, so each is measured
 * in a kernel where it is the only one. `--quick` leaves out 100.
 */
export const AGENT_FULL: readonly number[] = [1, 10, 100];
export const AGENT_QUICK: readonly number[] = [1, 10];

/** The kernel parameter that carries the agent path's client counts. */
const AGENT_PARAM = 'lu.agentbench';

/** The kernel command-line word for the agent run. */
export function agentCmdline(counts: readonly number[]): string {
  return `${AGENT_PARAM}=${counts.join(',')}`;
}

/** The client counts from a kernel command line; throws if they are missing or malformed. */
export function agentCountsFromCmdline(cmdline: string): number[] {
  const word = cmdline.split(/\s+/).find((w) => w.startsWith(`${AGENT_PARAM}=`));
  if (word === undefined) throw new Error(`no ${AGENT_PARAM}= on the kernel command line`);
  const counts = word.slice(AGENT_PARAM.length + 1).split(',').map(Number);
  if (counts.length === 0 || !counts.every((n) => Number.isSafeInteger(n) && n > 0)) throw new Error(`${AGENT_PARAM}: not a list of positive counts: ${word}`);
  return counts;
}
