/**
 * Turns what the guest stages returned into the benchmark's result (medians,
 * node/C ratios, targets) and prints it as JSON or as a table.
 * @internal
 */
import type { JsonValue } from '../vm/protocol.js';
import type { BenchParams } from './params.js';

/** A node-vs-C comparison of a per-ioctl cost. */
export interface PerOp {
  readonly n: number;
  readonly rounds: number;
  readonly node_us_per_op: number;
  readonly c_us_per_op: number;
  /** node / C. */
  readonly ratio: number;
  readonly node_rounds_us: readonly number[];
  readonly c_rounds_us: readonly number[];
  /** The warm-up rounds of each side (not in the medians): the cold path. */
  readonly warmup_rounds_us: { readonly node: readonly number[]; readonly c: readonly number[] };
}

/** A node-vs-C comparison of one large preserve (node: preserveSync), in ms. */
export interface LargeTiming {
  readonly node_ms: number;
  readonly c_ms: number;
  /** node / C. */
  readonly ratio: number;
  readonly node_rounds_ms: readonly number[];
  readonly c_rounds_ms: readonly number[];
  /**
   * The fastest round of each side and their ratio: noise from a shared
   * machine only ever adds time, so the minima estimate the intrinsic cost.
   */
  readonly min: { readonly node_ms: number; readonly c_ms: number; readonly ratio: number };
}

/** The benchmark's result: what `npm run bench -- --json` prints. */
export interface BenchResult {
  readonly kernel: string;
  readonly mode: 'full' | 'quick';
  readonly params: BenchParams;
  readonly machine: { readonly nproc: number; readonly cpu: string; readonly accel: string; readonly guest_memory: string; readonly guest_cpus: number };
  readonly date: string;
  readonly preserve_small: PerOp;
  readonly retrieve_small: PerOp;
  readonly preserve_large: LargeTiming & {
    readonly bytes: number;
    readonly rounds: number;
    /** CPU time node's other threads used during each sync preserve (fresh, then repeat): diagnostic. */
    readonly node_other_threads_cpu_ms: { readonly fresh: readonly number[]; readonly repeat: readonly number[] };
    /** The same memfd preserved a second time: the pinning alone, without the kernel moving pages first. */
    readonly repeat: LargeTiming;
  };
  readonly event_loop: {
    readonly bytes: number;
    readonly sync_max_lag_ms: number;
    readonly async_max_lag_ms: number;
    readonly sync_preserve_ms: number;
    readonly async_preserve_ms: number;
    /** async_max_lag_ms / sync_max_lag_ms. */
    readonly lag_ratio: number;
    readonly rounds: { readonly sync_max_lag_ms: readonly number[]; readonly async_max_lag_ms: readonly number[]; readonly async_preserve_ms: readonly number[] };
    /** The same on the repeat preserves (see preserve_large.repeat). */
    readonly repeat: { readonly sync_max_lag_ms: number; readonly async_max_lag_ms: number; readonly lag_ratio: number };
  };
  readonly blackout: {
    readonly files: number;
    /**
     * Each side measured in its own kernel, where it is the first to retrieve.
     * process_start_to_all_retrieved_ms: from node's time origin (its own start);
     * open_to_all_retrieved_ms: only the LUO calls (open the device, retrieve the session and its fds);
     * kernel_to_init_ms: that kernel's start to its pid 1 (not part of the blackout as defined).
     */
    readonly node: { readonly init_to_all_retrieved_ms: number; readonly process_start_to_all_retrieved_ms: number; readonly open_to_all_retrieved_ms: number; readonly kernel_to_init_ms: number };
    readonly c: { readonly init_to_all_retrieved_ms: number; readonly open_to_all_retrieved_ms: number; readonly kernel_to_init_ms: number };
    /** node / C. */
    readonly ratio: number;
  };
  /**
   * Diagnostic: fresh large preserves by writer and preserver (medians, ms),
   * to tell where the pages were placed from which process preserves them.
   */
  readonly large_swap: {
    readonly bytes: number;
    readonly node_wrote_node_preserved_ms: number;
    readonly node_wrote_c_preserved_ms: number;
    readonly c_wrote_c_preserved_ms: number;
    readonly rounds: { readonly node_wrote_node_preserved_ms: readonly number[]; readonly node_wrote_c_preserved_ms: readonly number[]; readonly c_wrote_c_preserved_ms: readonly number[] };
  };
  /**
   * Diagnostic: the same preserve rounds through the public API and straight
   * through the addon (N-API only), so the TypeScript layer's share shows.
   */
  readonly layers: { readonly n: number; readonly api_us_per_op: number; readonly addon_us_per_op: number; readonly api_over_addon: number };
  readonly addon_rss_kib: number;
  /** What `require('liveupdate')` adds to a fresh node's RSS (JS modules included). */
  readonly require_rss_kib: number;
  readonly targets: readonly Target[];
}

/** One target of issue 6 and whether this run met it. */
export interface Target {
  readonly name: string;
  readonly value: number;
  readonly limit: number;
  readonly met: boolean;
}

/** The median; the mean of the middle two for an even count. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** What the host needs from one case: the value its stage returned. */
export type StageValues = (caseName: string, stage: number) => JsonValue | undefined;

function field(value: JsonValue | undefined, key: string, where: string): JsonValue {
  if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value) || !(key in value)) {
    throw new Error(`benchmark result ${where} lacks ${key}: ${JSON.stringify(value ?? null)}`);
  }
  return value[key] as JsonValue;
}

function num(value: JsonValue | undefined, key: string, where: string): number {
  const v = field(value, key, where);
  if (typeof v !== 'number') throw new Error(`benchmark result ${where}.${key} is not a number`);
  return v;
}

function nums(value: JsonValue | undefined, key: string, where: string): number[] {
  const v = field(value, key, where);
  if (!Array.isArray(v) || !v.every((x): x is number => typeof x === 'number')) throw new Error(`benchmark result ${where}.${key} is not a list of numbers`);
  return v;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function perOp(value: JsonValue | undefined, where: string): PerOp {
  const node = nums(value, 'node_us_per_op', where);
  const c = nums(value, 'c_us_per_op', where);
  const nodeMedian = median(node);
  const cMedian = median(c);
  return {
    n: num(value, 'n', where),
    rounds: node.length,
    node_us_per_op: round3(nodeMedian),
    c_us_per_op: round3(cMedian),
    ratio: round3(nodeMedian / cMedian),
    node_rounds_us: node.map(round3),
    c_rounds_us: c.map(round3),
    warmup_rounds_us: {
      node: nums(field(value, 'warmup_us_per_op', where), 'node', where).map(round3),
      c: nums(field(value, 'warmup_us_per_op', where), 'c', where).map(round3),
    },
  };
}

/** Everything about the run that is not a measurement. */
export interface RunInfo {
  readonly kernel: string;
  readonly mode: 'full' | 'quick';
  readonly params: BenchParams;
  readonly machine: BenchResult['machine'];
  readonly date: string;
}

/** Builds the result from the guest's case values. */
export function buildResult(info: RunInfo, values: StageValues): BenchResult {
  const small = perOp(values('bench/small', 1), 'small (stage 1)');
  const retrieve = perOp(values('bench/small', 2), 'small (stage 2)');
  const large = values('bench/large', 1);
  const nodeLarge = median(nums(large, 'node_sync_ms', 'large'));
  const cLarge = median(nums(large, 'c_ms', 'large'));
  const syncLag = median(nums(large, 'node_sync_max_lag_ms', 'large'));
  const asyncLag = median(nums(large, 'node_async_max_lag_ms', 'large'));
  const cBlackoutValues = values('bench/blackout-c', 2);
  const nodeBlackoutValues = values('bench/blackout-node', 3);
  const nodeBlackout = num(nodeBlackoutValues, 'node_init_to_all_retrieved_ms', 'blackout-node');
  const cBlackout = num(cBlackoutValues, 'c_init_to_all_retrieved_ms', 'blackout-c');
  const rss = values('bench/addon-rss', 1);
  const layers = values('bench/layers', 1);
  const api = median(nums(layers, 'api_us_per_op', 'layers'));
  const addon = median(nums(layers, 'addon_us_per_op', 'layers'));
  const result = {
    ...info,
    preserve_small: small,
    retrieve_small: retrieve,
    preserve_large: {
      bytes: num(large, 'bytes', 'large'),
      rounds: info.params.largeRounds,
      node_ms: round3(nodeLarge),
      c_ms: round3(cLarge),
      ratio: round3(nodeLarge / cLarge),
      node_rounds_ms: nums(large, 'node_sync_ms', 'large').map(round3),
      c_rounds_ms: nums(large, 'c_ms', 'large').map(round3),
      min: minOf(nums(large, 'node_sync_ms', 'large'), nums(large, 'c_ms', 'large')),
      node_other_threads_cpu_ms: {
        fresh: nums(large, 'node_sync_other_threads_cpu_ms', 'large').map(round3),
        repeat: nums(large, 'node_sync_repeat_other_threads_cpu_ms', 'large').map(round3),
      },
      repeat: repeatOf(large),
    },
    event_loop: {
      bytes: num(large, 'bytes', 'large'),
      sync_max_lag_ms: round3(syncLag),
      async_max_lag_ms: round3(asyncLag),
      sync_preserve_ms: round3(nodeLarge),
      async_preserve_ms: round3(median(nums(large, 'node_async_ms', 'large'))),
      lag_ratio: round3(asyncLag / syncLag),
      rounds: {
        sync_max_lag_ms: nums(large, 'node_sync_max_lag_ms', 'large').map(round3),
        async_max_lag_ms: nums(large, 'node_async_max_lag_ms', 'large').map(round3),
        async_preserve_ms: nums(large, 'node_async_ms', 'large').map(round3),
      },
      repeat: lagRepeat(large),
    },
    blackout: {
      files: num(nodeBlackoutValues, 'files', 'blackout-node'),
      node: {
        init_to_all_retrieved_ms: round3(nodeBlackout),
        process_start_to_all_retrieved_ms: round3(num(nodeBlackoutValues, 'node_process_start_to_all_retrieved_ms', 'blackout-node')),
        open_to_all_retrieved_ms: round3(num(nodeBlackoutValues, 'node_open_to_all_retrieved_ms', 'blackout-node')),
        kernel_to_init_ms: round3(num(nodeBlackoutValues, 'kernel_to_init_ms', 'blackout-node')),
      },
      c: {
        init_to_all_retrieved_ms: round3(cBlackout),
        open_to_all_retrieved_ms: round3(num(cBlackoutValues, 'c_open_to_all_retrieved_ms', 'blackout-c')),
        kernel_to_init_ms: round3(num(cBlackoutValues, 'kernel_to_init_ms', 'blackout-c')),
      },
      ratio: round3(nodeBlackout / cBlackout),
    },
    large_swap: swapOf(values('bench/large-swap', 1)),
    layers: { n: num(layers, 'n', 'layers'), api_us_per_op: round3(api), addon_us_per_op: round3(addon), api_over_addon: round3(api / addon) },
    addon_rss_kib: num(rss, 'addon_rss_kib', 'addon-rss'),
    require_rss_kib: num(rss, 'require_rss_kib', 'addon-rss'),
  };
  return { ...result, targets: targets(result) };
}

function lagRepeat(large: JsonValue | undefined): BenchResult['event_loop']['repeat'] {
  const sync = median(nums(large, 'node_sync_repeat_max_lag_ms', 'large'));
  const async = median(nums(large, 'node_async_repeat_max_lag_ms', 'large'));
  return { sync_max_lag_ms: round3(sync), async_max_lag_ms: round3(async), lag_ratio: round3(async / sync) };
}

function repeatOf(large: JsonValue | undefined): BenchResult['preserve_large']['repeat'] {
  const node = nums(large, 'node_sync_repeat_ms', 'large');
  const c = nums(large, 'c_repeat_ms', 'large');
  return { node_ms: round3(median(node)), c_ms: round3(median(c)), ratio: round3(median(node) / median(c)), node_rounds_ms: node.map(round3), c_rounds_ms: c.map(round3), min: minOf(node, c) };
}

function swapOf(value: JsonValue | undefined): BenchResult['large_swap'] {
  const keys = ['node_wrote_node_preserved_ms', 'node_wrote_c_preserved_ms', 'c_wrote_c_preserved_ms'] as const;
  const [nn, nc, cc] = keys.map((k) => nums(value, k, 'large-swap')) as [number[], number[], number[]];
  return {
    bytes: num(value, 'bytes', 'large-swap'),
    node_wrote_node_preserved_ms: round3(median(nn)),
    node_wrote_c_preserved_ms: round3(median(nc)),
    c_wrote_c_preserved_ms: round3(median(cc)),
    rounds: { node_wrote_node_preserved_ms: nn.map(round3), node_wrote_c_preserved_ms: nc.map(round3), c_wrote_c_preserved_ms: cc.map(round3) },
  };
}

function minOf(node: readonly number[], c: readonly number[]): { node_ms: number; c_ms: number; ratio: number } {
  const [n, k] = [Math.min(...node), Math.min(...c)];
  return { node_ms: round3(n), c_ms: round3(k), ratio: round3(n / k) };
}

/** The targets of issue 6. */
function targets(r: Pick<BenchResult, 'preserve_small' | 'retrieve_small' | 'preserve_large' | 'event_loop'>): Target[] {
  const t = (name: string, value: number, limit: number): Target => ({ name, value, limit, met: value <= limit });
  return [
    t('preserve_small ratio <= 1.25', r.preserve_small.ratio, 1.25),
    t('retrieve_small ratio <= 1.25', r.retrieve_small.ratio, 1.25),
    t('preserve_large ratio <= 1.1', r.preserve_large.ratio, 1.1),
    // "under a tenth": strictly below; a ratio exactly 0.1 misses.
    { ...t('event_loop async/sync max lag < 0.1', r.event_loop.lag_ratio, 0.1), met: r.event_loop.lag_ratio < 0.1 },
  ];
}

const fmt = (x: number, digits = 2): string => x.toFixed(digits);

/** The readable table. */
export function formatTable(r: BenchResult): string {
  const rows: string[][] = [
    ['case', 'node', 'C', 'node/C'],
    [`preserve_small (${r.preserve_small.n} files, µs/ioctl, median of ${r.preserve_small.rounds} after ${r.params.warmup} warm-up)`, fmt(r.preserve_small.node_us_per_op), fmt(r.preserve_small.c_us_per_op), fmt(r.preserve_small.ratio, 3)],
    [`retrieve_small (${r.retrieve_small.n} files, µs/ioctl, median of ${r.retrieve_small.rounds} after ${r.params.warmup} warm-up)`, fmt(r.retrieve_small.node_us_per_op), fmt(r.retrieve_small.c_us_per_op), fmt(r.retrieve_small.ratio, 3)],
    cold('preserve_small', r.preserve_small),
    cold('retrieve_small', r.retrieve_small),
    [`preserve_large (${mib(r.preserve_large.bytes)} fresh memfd, ms, median of ${r.preserve_large.rounds})`, fmt(r.preserve_large.node_ms), fmt(r.preserve_large.c_ms), fmt(r.preserve_large.ratio, 3)],
    [`  fastest of ${r.preserve_large.rounds} (ms)`, fmt(r.preserve_large.min.node_ms), fmt(r.preserve_large.min.c_ms), fmt(r.preserve_large.min.ratio, 3)],
    [`  preserve_large repeat (same memfd again, ms, median)`, fmt(r.preserve_large.repeat.node_ms), fmt(r.preserve_large.repeat.c_ms), fmt(r.preserve_large.repeat.ratio, 3)],
    [`  repeat, fastest of ${r.preserve_large.rounds} (ms)`, fmt(r.preserve_large.repeat.min.node_ms), fmt(r.preserve_large.repeat.min.c_ms), fmt(r.preserve_large.repeat.min.ratio, 3)],
    [`blackout (/init to ${r.blackout.files} fds retrieved, ms)`, fmt(r.blackout.node.init_to_all_retrieved_ms), fmt(r.blackout.c.init_to_all_retrieved_ms), fmt(r.blackout.ratio, 1)],
    [`  of which LUO calls (open device to last fd, ms)`, fmt(r.blackout.node.open_to_all_retrieved_ms), fmt(r.blackout.c.open_to_all_retrieved_ms), fmt(r.blackout.node.open_to_all_retrieved_ms / r.blackout.c.open_to_all_retrieved_ms, 2)],
  ];
  const loop: string[][] = [
    ['event loop while preserving ' + mib(r.event_loop.bytes), 'preserveSync', 'preserve (async)', 'async/sync'],
    ['largest event-loop delay (ms)', fmt(r.event_loop.sync_max_lag_ms), fmt(r.event_loop.async_max_lag_ms), fmt(r.event_loop.lag_ratio, 3)],
    ['  on the repeat preserve (ms)', fmt(r.event_loop.repeat.sync_max_lag_ms), fmt(r.event_loop.repeat.async_max_lag_ms), fmt(r.event_loop.repeat.lag_ratio, 3)],
    ['preserve time (ms)', fmt(r.event_loop.sync_preserve_ms), fmt(r.event_loop.async_preserve_ms), ''],
  ];
  return [
    `liveupdate benchmark: kernel ${r.kernel}, ${r.mode} run, ${r.date}`,
    `machine: ${r.machine.nproc} CPUs (${r.machine.cpu}), QEMU ${r.machine.accel}, guest ${r.machine.guest_cpus} vCPUs / ${r.machine.guest_memory}`,
    '',
    table(rows),
    '',
    table(loop),
    '',
    `where node's preserve time goes: public API ${fmt(r.layers.api_us_per_op)} µs/ioctl, the addon alone ${fmt(r.layers.addon_us_per_op)} µs/ioctl (API/addon ${fmt(r.layers.api_over_addon, 3)}, interleaved)`,
    `large preserve by writer/preserver (fresh, median ms): node/node ${fmt(r.large_swap.node_wrote_node_preserved_ms)}, node/C ${fmt(r.large_swap.node_wrote_c_preserved_ms)}, C/C ${fmt(r.large_swap.c_wrote_c_preserved_ms)}`,
    `addon RSS: ${r.addon_rss_kib} KiB resident of the .node file; require('liveupdate') adds ${r.require_rss_kib} KiB to a fresh node`,
    `blackout: node's own start to its last fd ${fmt(r.blackout.node.process_start_to_all_retrieved_ms)} ms (the rest is exec and node's startup); kernel start to pid 1 ${fmt(r.blackout.node.kernel_to_init_ms)} ms (node's kernel), ${fmt(r.blackout.c.kernel_to_init_ms)} ms (C's), not counted`,
    '',
    'targets:',
    ...r.targets.map((t) => `  ${t.met ? 'met   ' : 'MISSED'} ${t.name}: ${fmt(t.value, 3)}`),
  ].join('\n');
}

/** The first warm-up round: what a process that preserves once (cold) pays. */
function cold(name: string, r: PerOp): string[] {
  const node = r.warmup_rounds_us.node[0] ?? NaN;
  const c = r.warmup_rounds_us.c[0] ?? NaN;
  return [`  ${name} cold: first round of ${r.n} (µs/ioctl)`, fmt(node), fmt(c), fmt(node / c, 3)];
}

function mib(bytes: number): string {
  return bytes >= 1 << 30 ? `${bytes / (1 << 30)} GiB` : `${bytes / (1 << 20)} MiB`;
}

function table(rows: readonly string[][]): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  const line = (row: readonly string[]): string => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(rows[0] ?? []), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}
