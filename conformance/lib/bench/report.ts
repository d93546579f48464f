/**
 * Turns what one boot's guest stages returned into that boot's result
 * (medians, node/C ratios), and prints the whole benchmark's result (boots
 * combined in boots.ts, host cases in host-report.ts) as a table.
 * @internal
 */
import type { GroupResults } from './groups.js';
import type { JsonValue } from '../vm/protocol.js';
import type { AgentHostResult, AgentResult, StartFigures } from './agent-report.js';
import type { Judged, RatioOverBoots } from './boots.js';
import { poolWakeupNote, round3, type ErrorsResult, type FdPassResult, type HostOnlyResult, type HostResult, type PromiseResult, type Target } from './host-report.js';
import type { BenchParams } from './params.js';
import { median, type Interval } from './stats.js';

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

/** One side's blackout taken apart (ms): pid 1 started its agent, the first to retrieve in that kernel. */
export interface BlackoutSide {
  /** The kernel's start to pid 1 (not part of the blackout as defined). */
  readonly kernel_to_init_ms: number;
  /** Pid 1 forking the agent to the agent's first line of code (node: its whole startup). */
  readonly init_to_running_ms: number;
  /** `require('liveupdate')` (C: 0, nothing to load). */
  readonly require_ms: number;
  readonly open_ms: number;
  readonly retrieve_session_ms: number;
  /** The session's files, one RETRIEVE_FD each. */
  readonly retrieve_fds_ms: number;
  /** Everything the agent did once running: require (node), open, retrieves. */
  readonly package_share_ms: number;
  /** Pid 1 forking the agent to its last fd: the blackout. */
  readonly init_to_all_retrieved_ms: number;
  /** Only the LUO calls: open the device, retrieve the session and its files. */
  readonly open_to_all_retrieved_ms: number;
  /** From the agent's own process start to its last fd. */
  readonly process_start_to_all_retrieved_ms: number;
  /** Major page faults (pages the process read from the disk) before its first line of code: node's start (C: its exec). */
  readonly start_major_faults: number;
  /** Those during `require('liveupdate')` (C: 0). */
  readonly require_major_faults: number;
  /** Those during the package's share: require, open, retrieves. */
  readonly share_major_faults: number;
}

/** One boot's blackout. */
export interface BootBlackout {
  readonly files: number;
  readonly node: BlackoutSide;
  readonly c: BlackoutSide;
  /** A fresh `node -e 0` in the same guest, start to exit (median of a few): the floor under node's start. */
  readonly node_floor_ms: number;
  /** node / C, of init_to_all_retrieved_ms. */
  readonly ratio: number;
  /** Fresh nodes in the same guest after the blackout, alternating: the host case's measurement, made in the guest. */
  readonly fresh: FreshNodeRounds;
}

/** Fresh nodes, alternating: `node -e 0` start to exit, `require('liveupdate')` and an empty file's require, each timed inside another (ms each). */
export interface FreshNodeRounds {
  readonly node_start_ms: readonly number[];
  readonly require_ms: readonly number[];
  /** The first read of `LiveUpdate` after each require. */
  readonly live_update_ms: readonly number[];
  /** node's own loader: the require of an empty file, the floor under any require. */
  readonly empty_require_ms: readonly number[];
}

/** What the guest told about itself. */
export interface GuestMachine {
  /** The guest's clock tick (sysconf(_SC_CLK_TCK)), which /proc's CPU times count in. */
  readonly clock_tick: number;
  /** The hypervisor's CPUID signature ("TCGTCGTCGTCG", "KVMKVMKVM", or "" for none). */
  readonly hypervisor: string;
}

/** One boot's result: every case of the guest benchmark, from one run of its four kernels. */
export interface BootResult {
  readonly kernel: string;
  readonly guest: GuestMachine;
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
  readonly blackout: BootBlackout;
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
}

/** The guest cases over all boots (boots.ts): each ratio with its interval and, where it has a target, its verdict. */
export type GuestResult = Omit<BootResult, 'kernel' | 'guest' | 'preserve_small' | 'retrieve_small' | 'preserve_large' | 'event_loop' | 'blackout'> & {
  readonly preserve_small: PerOp & Judged;
  readonly retrieve_small: PerOp & Judged;
  readonly preserve_large: BootResult['preserve_large'] & Judged & { readonly repeat: LargeTiming & RatioOverBoots };
  readonly event_loop: BootResult['event_loop'] & { readonly lag_ratio_ci95: Interval; readonly verdict: Target['verdict'] };
  readonly blackout: BootBlackout & {
    readonly ratio_ci95: Interval;
    readonly boot_ratios: readonly number[];
    /** The package's share (node: require, open, retrieves) over C's (open, retrieves): the blackout's target. */
    readonly share_ratio: number;
    readonly share_ratio_ci95: Interval;
    readonly share_verdict: Target['verdict'];
    /** `require('liveupdate')` in fresh nodes in the guest against `node -e 0` there, over every boot. */
    readonly fresh_require: FreshRequire;
  };
  readonly targets: readonly Target[];
};

/** `require('liveupdate')` in the guest's fresh nodes, judged against node's own start there. */
export interface FreshRequire {
  readonly samples: number;
  readonly require_ms: number;
  readonly require_ms_ci95: Interval;
  /** Then its `LiveUpdate` (what opening the device loads). */
  readonly live_update_ms: number;
  readonly node_start_ms: number;
  /** node's own require of an empty file there: the floor under any require. */
  readonly empty_require_ms: number;
  /** require / node -e 0: median over boots of each boot's ratio of medians. */
  readonly ratio: number;
  readonly ratio_ci95: Interval;
  readonly verdict: Target['verdict'];
}

/** The benchmark's result: what `npm run bench -- --json` prints. */
export type BenchResult = RunInfo &
  GuestResult & {
    /** Independent boots of the guest benchmark. */
    readonly boots: number;
    readonly host: HostResult;
    readonly fdpass: FdPassResult;
    /** A Promise call's overhead against node's own over the same libuv pool. */
    readonly promise: PromiseResult;
    /** A typed error built and thrown against node's own. */
    readonly errors: ErrorsResult;
    /** The agent path: /init to every client holding its fds again, and the agent's requests per second. */
    readonly agent: AgentResult;
    /** The opt-in groups that ran (groups.ts), each with its own run's date, kernel and load. */
    readonly groups?: GroupResults;
  };

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
  readonly machine: {
    readonly nproc: number;
    readonly cpu: string;
    /** QEMU's accelerator as the guest saw it (its hypervisor's CPUID signature): "tcg", "kvm", or the raw signature. */
    readonly accel: string;
    /** The host's and the guest's clock tick (sysconf(_SC_CLK_TCK)). */
    readonly host_clock_tick: number;
    readonly guest_clock_tick: number;
    readonly guest_memory: string;
    readonly guest_cpus: number;
    /** `qemu-system-x86_64 --version`'s first line. */
    readonly qemu?: string;
    /** The host's 1-minute load average when the run started and ended: how shared the machine was. */
    readonly loadavg?: { readonly start: number; readonly end: number };
  };
  readonly date: string;
  /** The commit measured (`git describe --always --dirty`), when the benchmark runs from a git checkout. */
  readonly commit: string;
}

/** What the hypervisor signature says about QEMU's accelerator. */
export function accelOf(hypervisor: string): string {
  if (hypervisor === 'TCGTCGTCGTCG') return 'tcg';
  if (hypervisor.startsWith('KVMKVMKVM')) return 'kvm';
  return hypervisor === '' ? 'none' : hypervisor;
}

function blackoutSide(value: JsonValue | undefined, where: string): BlackoutSide {
  const keys = [
    'kernel_to_init_ms',
    'init_to_running_ms',
    'require_ms',
    'open_ms',
    'retrieve_session_ms',
    'retrieve_fds_ms',
    'package_share_ms',
    'init_to_all_retrieved_ms',
    'open_to_all_retrieved_ms',
    'process_start_to_all_retrieved_ms',
    'start_major_faults',
    'require_major_faults',
    'share_major_faults',
  ] as const;
  return Object.fromEntries(keys.map((k) => [k, round3(num(value, k, where))])) as unknown as BlackoutSide;
}

function blackoutOf(values: StageValues): BootBlackout {
  const nodeValues = values('bench/blackout-node', 4);
  const node = blackoutSide(nodeValues, 'blackout-node');
  const c = blackoutSide(values('bench/blackout-c', 3), 'blackout-c');
  return {
    files: num(nodeValues, 'files', 'blackout-node'),
    node,
    c,
    node_floor_ms: round3(median(nums(nodeValues, 'node_floor_ms', 'blackout-node'))),
    ratio: round3(node.init_to_all_retrieved_ms / c.init_to_all_retrieved_ms),
    fresh: {
      node_start_ms: nums(nodeValues, 'node_floor_ms', 'blackout-node').map(round3),
      require_ms: nums(nodeValues, 'fresh_require_ms', 'blackout-node').map(round3),
      live_update_ms: nums(nodeValues, 'fresh_live_update_ms', 'blackout-node').map(round3),
      empty_require_ms: nums(nodeValues, 'fresh_empty_require_ms', 'blackout-node').map(round3),
    },
  };
}

function guestOf(value: JsonValue | undefined): GuestMachine {
  const hypervisor = field(value, 'hypervisor', 'machine');
  return { clock_tick: num(value, 'clock_tick', 'machine'), hypervisor: typeof hypervisor === 'string' ? hypervisor : '' };
}

/** Builds one boot's result from its guest's case values. */
export function buildBoot(kernel: string, values: StageValues): BootResult {
  const small = perOp(values('bench/small', 1), 'small (stage 1)');
  const retrieve = perOp(values('bench/small', 2), 'small (stage 2)');
  const large = values('bench/large', 1);
  const nodeLarge = median(nums(large, 'node_sync_ms', 'large'));
  const cLarge = median(nums(large, 'c_ms', 'large'));
  const syncLag = median(nums(large, 'node_sync_max_lag_ms', 'large'));
  const asyncLag = median(nums(large, 'node_async_max_lag_ms', 'large'));
  const rss = values('bench/addon-rss', 1);
  const layers = values('bench/layers', 1);
  const api = median(nums(layers, 'api_us_per_op', 'layers'));
  const addon = median(nums(layers, 'addon_us_per_op', 'layers'));
  return {
    kernel,
    guest: guestOf(values('bench/machine', 1)),
    preserve_small: small,
    retrieve_small: retrieve,
    preserve_large: {
      bytes: num(large, 'bytes', 'large'),
      rounds: nums(large, 'node_sync_ms', 'large').length,
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
    blackout: blackoutOf(values),
    large_swap: swapOf(values('bench/large-swap', 1)),
    layers: { n: num(layers, 'n', 'layers'), api_us_per_op: round3(api), addon_us_per_op: round3(addon), api_over_addon: round3(api / addon) },
    addon_rss_kib: num(rss, 'addon_rss_kib', 'addon-rss'),
    require_rss_kib: num(rss, 'require_rss_kib', 'addon-rss'),
  };
}

function lagRepeat(large: JsonValue | undefined): BootResult['event_loop']['repeat'] {
  const sync = median(nums(large, 'node_sync_repeat_max_lag_ms', 'large'));
  const async = median(nums(large, 'node_async_repeat_max_lag_ms', 'large'));
  return { sync_max_lag_ms: round3(sync), async_max_lag_ms: round3(async), lag_ratio: round3(async / sync) };
}

function repeatOf(large: JsonValue | undefined): LargeTiming {
  const node = nums(large, 'node_sync_repeat_ms', 'large');
  const c = nums(large, 'c_repeat_ms', 'large');
  return { node_ms: round3(median(node)), c_ms: round3(median(c)), ratio: round3(median(node) / median(c)), node_rounds_ms: node.map(round3), c_rounds_ms: c.map(round3), min: minOf(node, c) };
}

function swapOf(value: JsonValue | undefined): BootResult['large_swap'] {
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

const fmt = (x: number, digits = 2): string => x.toFixed(digits);

const ci = (interval: Interval, digits = 3): string => `[${fmt(interval[0], digits)}, ${fmt(interval[1], digits)}]`;

/** The guest's fresh-node require as a row of the main table: its "C" column is `node -e 0` in the same guest. */
function freshRequireRow(f: FreshRequire): string[] {
  const label = `require('liveupdate') in a fresh node in the guest, ms (C column: node -e 0 there; ${f.samples} of each; then its LiveUpdate: ${fmt(f.live_update_ms)}; an empty file's require: ${fmt(f.empty_require_ms)})`;
  return [label, fmt(f.require_ms), fmt(f.node_start_ms), fmt(f.ratio, 3), ci(f.ratio_ci95), f.verdict];
}

/** The readable table. */
export function formatTable(r: BenchResult): string {
  const b = r.boots;
  const rows: string[][] = [
    ['case', 'node', 'C', 'node/C', '95% interval', 'verdict'],
    [`preserve_small (${r.preserve_small.n} files, µs/ioctl, median of ${b} boot(s) × ${r.preserve_small.rounds} rounds)`, fmt(r.preserve_small.node_us_per_op), fmt(r.preserve_small.c_us_per_op), fmt(r.preserve_small.ratio, 3), ci(r.preserve_small.ratio_ci95), r.preserve_small.verdict],
    [`retrieve_small (${r.retrieve_small.n} files, µs/ioctl, same)`, fmt(r.retrieve_small.node_us_per_op), fmt(r.retrieve_small.c_us_per_op), fmt(r.retrieve_small.ratio, 3), ci(r.retrieve_small.ratio_ci95), r.retrieve_small.verdict],
    cold('preserve_small', r.preserve_small),
    cold('retrieve_small', r.retrieve_small),
    [`preserve_large (${mib(r.preserve_large.bytes)} fresh memfd, ms, ${b} boot(s) × ${r.preserve_large.rounds} rounds)`, fmt(r.preserve_large.node_ms), fmt(r.preserve_large.c_ms), fmt(r.preserve_large.ratio, 3), ci(r.preserve_large.ratio_ci95), r.preserve_large.verdict],
    [`  fastest round (ms)`, fmt(r.preserve_large.min.node_ms), fmt(r.preserve_large.min.c_ms), fmt(r.preserve_large.min.ratio, 3), '', ''],
    [`  repeat (same memfd again, ms)`, fmt(r.preserve_large.repeat.node_ms), fmt(r.preserve_large.repeat.c_ms), fmt(r.preserve_large.repeat.ratio, 3), ci(r.preserve_large.repeat.ratio_ci95), ''],
    [`blackout (init starts the agent to ${r.blackout.files} fds retrieved, ms)`, fmt(r.blackout.node.init_to_all_retrieved_ms), fmt(r.blackout.c.init_to_all_retrieved_ms), fmt(r.blackout.ratio, 1), ci(r.blackout.ratio_ci95, 1), ''],
    [`  the package's share (node: require, open, retrieves; C: open, retrieves)`, fmt(r.blackout.node.package_share_ms), fmt(r.blackout.c.package_share_ms), fmt(r.blackout.share_ratio, 2), ci(r.blackout.share_ratio_ci95, 2), r.blackout.share_verdict],
    freshRequireRow(r.blackout.fresh_require),
  ];
  const steps: string[][] = [
    ['blackout taken apart (ms, median over boots)', 'node', 'C'],
    ['kernel start to /init (not counted)', fmt(r.blackout.node.kernel_to_init_ms), fmt(r.blackout.c.kernel_to_init_ms)],
    [`/init to the agent running (node -e 0 in the same guest: ${fmt(r.blackout.node_floor_ms)})`, fmt(r.blackout.node.init_to_running_ms), fmt(r.blackout.c.init_to_running_ms)],
    ["require('liveupdate') and its LiveUpdate (the kernel's first node process)", fmt(r.blackout.node.require_ms), fmt(r.blackout.c.require_ms)],
    ['open /dev/liveupdate', fmt(r.blackout.node.open_ms), fmt(r.blackout.c.open_ms)],
    ['retrieve the session', fmt(r.blackout.node.retrieve_session_ms), fmt(r.blackout.c.retrieve_session_ms)],
    [`retrieve its ${r.blackout.files} fds`, fmt(r.blackout.node.retrieve_fds_ms), fmt(r.blackout.c.retrieve_fds_ms)],
    ['pages read from the disk (major faults): before its first line', fmt(r.blackout.node.start_major_faults, 0), fmt(r.blackout.c.start_major_faults, 0)],
    ['  during the require', fmt(r.blackout.node.require_major_faults, 0), fmt(r.blackout.c.require_major_faults, 0)],
    ['  during the package\'s share (require, open, retrieves)', fmt(r.blackout.node.share_major_faults, 0), fmt(r.blackout.c.share_major_faults, 0)],
  ];
  const loop: string[][] = [
    ['event loop while preserving ' + mib(r.event_loop.bytes), 'preserveSync', 'preserve (async)', 'async/sync', '95% interval', 'verdict'],
    ['largest event-loop delay (ms)', fmt(r.event_loop.sync_max_lag_ms), fmt(r.event_loop.async_max_lag_ms), fmt(r.event_loop.lag_ratio, 3), ci(r.event_loop.lag_ratio_ci95), r.event_loop.verdict],
    ['  on the repeat preserve (ms)', fmt(r.event_loop.repeat.sync_max_lag_ms), fmt(r.event_loop.repeat.async_max_lag_ms), fmt(r.event_loop.repeat.lag_ratio, 3), '', ''],
    ['preserve time (ms)', fmt(r.event_loop.sync_preserve_ms), fmt(r.event_loop.async_preserve_ms), '', '', ''],
  ];
  return [
    `liveupdate benchmark: kernel ${r.kernel}, ${r.mode} run, ${b} boot(s), ${r.date}, commit ${r.commit}`,
    `machine: ${r.machine.nproc} CPUs (${r.machine.cpu}), clock tick ${r.machine.host_clock_tick} Hz; QEMU ${r.machine.accel}, guest ${r.machine.guest_cpus} vCPUs / ${r.machine.guest_memory}, clock tick ${r.machine.guest_clock_tick} Hz`,
    '',
    table(rows),
    '',
    table(steps),
    '',
    table(loop),
    '',
    `where node's preserve time goes: public API ${fmt(r.layers.api_us_per_op)} µs/ioctl, the addon alone ${fmt(r.layers.addon_us_per_op)} µs/ioctl (API/addon ${fmt(r.layers.api_over_addon, 3)}, interleaved)`,
    `large preserve by writer/preserver (fresh, median ms): node/node ${fmt(r.large_swap.node_wrote_node_preserved_ms)}, node/C ${fmt(r.large_swap.node_wrote_c_preserved_ms)}, C/C ${fmt(r.large_swap.c_wrote_c_preserved_ms)}`,
    `addon RSS: ${r.addon_rss_kib} KiB resident of the .node file; require('liveupdate') adds ${r.require_rss_kib} KiB to a fresh node`,
    '',
    agentTable(r.agent, b),
    '',
    ...hostAndTargets(r),
  ].join('\n');
}

/** A median and its interval in one cell. */
const withCi = (value: number, interval: Interval, digits: number): string => `${fmt(value, digits)} ${ci(interval, digits)}`;

/** The agent path: one column per client count, each figure the median over boots with its interval. */
export function agentTable(a: AgentResult, boots: number): string {
  const after = a.after_kexec;
  const row = (name: string, pick: (x: AgentResult['after_kexec'][number]) => string): string[] => [name, ...after.map(pick)];
  const rows: string[][] = [
    [`agent path (liveupdate agent, ms from the new kernel's /init, median of ${boots} boot(s) [95%])`, ...after.map((x) => `${x.clients} client(s)`)],
    row('kernel start to its pid 1 task (/proc/1/stat, not counted)', (x) => withCi(x.kernel_to_pid1_task_ms, x.kernel_to_pid1_task_ms_ci95, 0)),
    row('kernel start to /init running (not counted)', (x) => withCi(x.kernel_to_init_ms, x.kernel_to_init_ms_ci95, 0)),
    row('/init to the runner (pid 1, node) starting the agent', (x) => withCi(x.init_to_runner_ms, x.init_to_runner_ms_ci95, 0)),
    row('/init to the agent answering (its node start, the manifest)', (x) => withCi(x.init_to_agent_answering_ms, x.init_to_agent_answering_ms_ci95, 0)),
    row('/init to every client holding its fds again', (x) => withCi(x.init_to_all_hold_fds_ms, x.init_to_all_hold_fds_ms_ci95, 0)),
    row('  the claim phase alone (first connect to last fd)', (x) => withCi(x.claim_ms, x.claim_ms_ci95, 0)),
    row('    of it, to half the clients connected and greeted', (x) => withCi(x.hello_answered_ms, x.hello_answered_ms_ci95, 0)),
    row('    CPU time over it: the agent / the clients (one node)', (x) => `${fmt(x.agent_cpu_ms, 0)} / ${fmt(x.clients_cpu_ms, 0)}`),
    row('clients holding their own bytes again (fewest in any boot)', (x) => `${x.held} of ${x.clients}`),
    ['agent requests/s while they preserved (hello, createSession, ready)', ...a.preserve.map((p) => withCi(p.requests_per_s, p.requests_per_s_ci95, 1))],
    ["agent's RSS with them all holding a session, MiB", ...a.preserve.map((p) => `${fmt(p.agent_rss_kib / 1024, 1)} ${ci([p.agent_rss_kib_ci95[0] / 1024, p.agent_rss_kib_ci95[1] / 1024], 1)}`)],
  ];
  const blackout: string[][] = [
    [`the blackout on the host's clock (ms from the agent sealing its manifest, frozenAt, in the old kernel)`, ...after.map((x) => `${x.clients} client(s)`)],
    row("the old kernel's last line (LUO froze, it jumps)", (x) => withCi(x.frozen_to_kexec_line_ms, x.frozen_to_kexec_line_ms_ci95, 1)),
    row("the new kernel's first line (its banner)", (x) => withCi(x.frozen_to_kernel_up_ms, x.frozen_to_kernel_up_ms_ci95, 0)),
    row('its /init runs', (x) => withCi(x.frozen_to_init_ms, x.frozen_to_init_ms_ci95, 0)),
    row('the agent answers', (x) => withCi(x.frozen_to_agent_answering_ms, x.frozen_to_agent_answering_ms_ci95, 0)),
    row('every client holds its fds again', (x) => withCi(x.frozen_to_all_hold_fds_ms, x.frozen_to_all_hold_fds_ms_ci95, 0)),
    row("  the 'Run /init' line to node's time origin in pid 1 (node's loading, unseen inside)", (x) => withCi(x.init_line_to_node_origin_ms, x.init_line_to_node_origin_ms_ci95, 0)),
    row("clock samples' spread (the quickest places each kernel's clocks)", (x) => fmt(x.clock_jitter_ms, 2)),
  ];
  return [table(rows), startLine(`in the guest, median of ${boots} boot(s)`, a.start), agentHostLine(a.host), table(blackout), `(${a.clocks.frozen_to_})`].join('\n');
}

/** The agent's start as today and from a snapshot, against node -e 0. */
function startLine(where: string, st: StartFigures): string {
  return `agent start ${where} (spawn to first answer, a plain file as its device): ${fmt(st.agent_ms, 0)} ms as today = ${fmt(st.agent_over_node, 2)}× node -e 0 (${fmt(st.node_ms, 0)} ms) ${ci(st.agent_over_node_ci95, 2)}; from a V8 snapshot ${fmt(st.snapshot_ms, 0)} ms = ${fmt(st.snapshot_over_node, 2)}× ${ci(st.snapshot_over_node_ci95, 2)} (blob ${fmt(st.snapshot_blob_bytes / 2 ** 20, 1)} MiB, built in ${fmt(st.snapshot_build_ms, 0)} ms)`;
}

function agentHostLine(h: AgentHostResult): string {
  const claims = h.claim_path.map((c) => `${c.clients}: ${fmt(c.ms.value, 1)} ms ${ci(c.ms.ci95, 1)}, ${fmt(c.us_per_client.value, 0)} µs/client (agent CPU ${fmt(c.agent_cpu_us_per_client.value, 0)} µs/client), RSS ${fmt(c.rss_kib.value / 1024, 1)} MiB (${fmt(c.rss_bytes_per_client.value / 1024, 1)} KiB/client)`);
  return [
    `host, no LUO: the agent process served ${h.clients} clients (ready + sessions) at ${fmt(h.requests_per_s, 0)} requests/s ${ci(h.requests_per_s_ci95, 0)} (median of ${h.rounds} rounds after ${h.warmup} warm-up)`,
    startLine(`on the host, median of ${h.startRounds} interleaved rounds`, h.start),
    `host: claim path up to the device call (connect, hello, retrieveSession answered "unavailable": no device), all clients at once: ${claims.join('; ')}; per-client growth ${fmt(h.claim_path_growth, 2)}×; RSS idle ${fmt(h.rss_idle_kib / 1024, 1)} MiB`,
  ].join('\n');
}

/** The host cases' table (also all that `--host-only` prints, with its targets). */
type HostSections = { readonly host: HostResult; readonly fdpass: FdPassResult; readonly promise: PromiseResult; readonly errors: ErrorsResult };

function hostLines(r: HostSections): string {
  const h = r.host;
  const f = r.fdpass;
  const p = r.promise;
  const e = r.errors;
  const calls: string[][] = [
    ['host, native speed (ns per call, median of rounds)', 'sync', 'Promise', 'C', 'sync − C [95%]', 'Promise − C [95%]'],
    ['memfd.getSeals vs fcntl(F_GET_SEALS)', fmt(h.sync_ns_per_call, 0), fmt(h.async_ns_per_call, 0), fmt(h.c_ns_per_call, 0), `${fmt(h.sync_overhead_ns, 0)} ${ci(h.sync_overhead_ns_ci95, 0)}`, `${fmt(h.async_overhead_ns, 0)} ${ci(h.async_overhead_ns_ci95, 0)}`],
    ['LUO RETRIEVE_FD on a memfd (ENOTTY; addon, error built)', fmt(h.luo_enotty.sync_ns_per_call, 0), fmt(h.luo_enotty.async_ns_per_call, 0), fmt(h.luo_enotty.c_ns_per_call, 0), `${fmt(h.luo_enotty.sync_overhead_ns, 0)} ${ci(h.luo_enotty.sync_overhead_ns_ci95, 0)}`, `${fmt(h.luo_enotty.async_overhead_ns, 0)} ${ci(h.luo_enotty.async_overhead_ns_ci95, 0)}`],
    ['fd passing: send + receive one memfd (seqpacket; closes untimed, between batches of 100)', fmt(f.sync_ns_per_roundtrip, 0), fmt(f.async_ns_per_roundtrip, 0), fmt(f.c_ns_per_roundtrip, 0), `×${fmt(f.sync_ratio, 2)} ${ci(f.sync_ratio_ci95, 2)}`, `×${fmt(f.async_ratio, 2)} ${ci(f.async_ratio_ci95, 2)}`],
  ];
  const anchors: string[][] = [
    ["against node's own, same run (ns, median of rounds)", 'ours', "node's", 'ours / node [95%]'],
    ['fd passing Promise round trip vs the same byte without fds over net (Unix)', fmt(f.async_ns_per_roundtrip, 0), fmt(f.net_ns_per_roundtrip, 0), `×${fmt(f.async_over_net_ratio, 2)} ${ci(f.async_over_net_ratio_ci95, 2)}`],
    ['Promise call overhead over its syscall vs fs.promises filehandle.stat()', fmt(p.ours_overhead_ns, 0), fmt(p.node_promise_overhead_ns, 0), `×${fmt(p.over_promise_ratio, 2)} ${ci(p.over_promise_ratio_ci95, 2)}`],
    ['Promise call overhead over its syscall vs fs.fstat(fd, callback)', fmt(p.ours_overhead_ns, 0), fmt(p.node_callback_overhead_ns, 0), `×${fmt(p.over_callback_ratio, 2)} ${ci(p.over_callback_ratio_ci95, 2)}`],
    [`typed error (EBADF) built and thrown vs fs.fstatSync(-1) (${e.processes} fresh processes: ${e.over_node_ratio_by_process.map((r) => fmt(r, 2)).join(', ')})`, fmt(e.ours_ns, 0), fmt(e.node_ns, 0), `×${fmt(e.over_node_ratio, 2)} ${ci(e.over_node_ratio_ci95, 2)}`],
    ['typed error (EBADF) built and thrown vs fs.fstatSync(EBADF)', fmt(e.ours_ns, 0), fmt(e.node_ebadf_ns, 0), `×${fmt(e.over_node_ebadf_ratio, 2)} ${ci(e.over_node_ebadf_ratio_ci95, 2)}`],
  ];
  const testBed = h.require_test_bed_modules.length === 0 ? 'no test bed code' : `TEST BED CODE: ${h.require_test_bed_modules.join(', ')}`;
  return [
    table(calls),
    `${h.rounds} rounds after ${h.warmup} warm-up, node sync, node Promise, C and node's own anchors interleaved (order rotating)`,
    '',
    table(anchors),
    ...[poolWakeupNote(p)].filter((note): note is string => note !== null),
    '',
    `require('liveupdate') in a fresh node: ${fmt(h.require_ms)} ms ${ci(h.require_ms_ci95, 2)}, ${h.require_modules.length} module files, ${testBed}; then its LiveUpdate: ${fmt(h.live_update_ms)} ms ${ci(h.live_update_ms_ci95, 2)}; node -e 0: ${fmt(h.node_start_ms)} ms ${ci(h.node_start_ms_ci95, 2)}`,
  ].join('\n');
}

/** The host cases, then one line per target: its verdict, value and interval. */
function hostAndTargets(r: HostSections & { readonly targets: readonly Target[] }): string[] {
  return [
    hostLines(r),
    '',
    'targets (met: the whole 95% interval under the limit; missed: all of it over):',
    ...r.targets.map((t) => `  ${t.verdict.padEnd(9)} ${t.name}: ${fmt(t.value, 3)} ${ci(t.ci95)}`),
  ];
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

/** What `--host-only` prints. */
export function formatHostTable(r: HostOnlyResult): string {
  return [
    `liveupdate benchmark, host cases only: ${r.mode} run, ${r.date}, commit ${r.commit}`,
    `machine: ${r.machine.nproc} CPUs (${r.machine.cpu}), clock tick ${r.machine.host_clock_tick} Hz`,
    '',
    agentHostLine(r.agent.host),
    '',
    ...hostAndTargets(r),
  ].join('\n');
}
