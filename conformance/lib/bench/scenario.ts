/**
 * The guest side of `npm run bench`: stage functions for the kernel test bed
 * that time the public API (LiveUpdate, Session, memfd) and, in the same
 * kernel, the static C program bench/luo_bench.c making the same ioctls.
 *
 * Four kernels. Stage 1 preserves: the small-ioctl rounds (their sessions
 * are kept for stage 2) and the large memfds with the sync and the async
 * API. Stage 2 retrieves the small rounds' sessions, and C preserves its
 * 100-file blackout session. In stage 3 the C program, as pid 1 (rdinit=),
 * starts the C blackout agent, which retrieves C's session, before exec'ing
 * the node runner; node preserves its own blackout session. In stage 4 pid 1
 * starts the node agent the same way. So each side's blackout is the first
 * retrieval in a freshly booted kernel, by an agent that an init started,
 * and each side's kernel brought only that side's session: the first open
 * of /dev/liveupdate rebuilds every incoming session and file, and the
 * small rounds' 34,000 files (a full run) would otherwise land in one
 * side's open.
 *
 * Fairness: both sides time only the ioctls (files and sessions are made
 * beforehand) on the same clock (CLOCK_MONOTONIC), with the same warm-up;
 * the small cases alternate node and C every 50 calls, so a machine shared
 * with other work slows both alike. /dev/liveupdate has one owner at a time:
 * each side opens it only to create or retrieve its sessions.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { LiveUpdate, memfd, type Session } from 'liveupdate';
import { libraryBinding } from '../native.js';
import { statFields } from '../harness/proc-stat.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import { emptyRequireOnce, nodeStartOnce, requireOnce, type RequireSample } from './fresh-node.js';
import { LineChild } from './line-child.js';
import {
  BLACKOUT_FILES,
  C_BLACKOUT_SESSION,
  C_PREFIX,
  FRESH_NODE_RUNS,
  GUEST_AGENT_RESULT,
  GUEST_C_BENCH,
  GUEST_INIT_RESULT,
  NODE_BLACKOUT_SESSION,
  NODE_PREFIX,
  paramsFromCmdline,
  type BenchParams,
} from './params.js';

const PAGE = Buffer.alloc(4096, 0x5a);
const CHUNK_BYTES = Buffer.alloc(1 << 20, 0x5a);
/** Quiet time around a large preserve, so the delay monitor sees the loop before and after. */
const SETTLE_MS = 50;
const NS_PER_MS = 1e6;

function params(): BenchParams {
  return paramsFromCmdline(fs.readFileSync('/proc/cmdline', 'utf8'));
}

/** Tokens 1..n as bigints, made before any timing (the C side uses 1..n too). */
function tokens(n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => BigInt(i + 1));
}

/** `n` memfds of one written page each: what each small-case file is. */
function pageMemfds(n: number): number[] {
  return Array.from({ length: n }, () => {
    const fd = memfd.createSync('bench-small');
    fs.writeSync(fd, PAGE, 0, PAGE.length, 0);
    return fd;
  });
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) fs.closeSync(fd);
}

/** Opens the device only as long as `use` runs: C needs it next. */
function withDevice<T>(use: (luo: LiveUpdate) => T): T {
  const luo = LiveUpdate.openSync();
  try {
    return use(luo);
  } finally {
    luo.closeSync();
  }
}

/** Runs the C program to completion (`fd3`, if given, becomes its fd 3); its JSON result. */
function runC(args: readonly string[], fd3?: number): Record<string, JsonValue> {
  const stdio = fd3 === undefined ? (['ignore', 'pipe', 'inherit'] as const) : (['ignore', 'pipe', 'inherit', fd3] as const);
  const out = spawnSync(GUEST_C_BENCH, args, { encoding: 'utf8', stdio: [...stdio] });
  if (out.status !== 0) throw new Error(`luo_bench ${args.join(' ')} exited with ${String(out.status ?? out.signal)}`);
  return JSON.parse(out.stdout) as Record<string, JsonValue>;
}

/**
 * The C program in a mode that answers commands line by line (serve-*,
 * preserve-session). Kept by the stage: sessions it preserved must live
 * until the kexec, so it is never told to stop.
 */
function cProgram(ctx: StageContext, args: readonly string[]): LineChild {
  const child = new LineChild(GUEST_C_BENCH, args);
  ctx.keep(child.process);
  return child;
}

/** Calls per timed chunk; node's and C's chunks alternate. */
const CHUNK = 50;

/** Times one chunk of calls [from, to) of round `round`; returns nanoseconds. */
type ChunkFn = (round: number, from: number, to: number) => number | Promise<number>;

/** Per-round µs per call of each side: timed rounds, and the warm-up rounds before them. */
interface Rounds {
  readonly node: number[];
  readonly c: number[];
  readonly warmup: { node: number[]; c: number[] };
}

/**
 * Runs `warmup + rounds` rounds of `n` calls per side in chunks of
 * {@link CHUNK}, alternating sides chunk by chunk (and which side goes
 * first), so that both are timed within the same few milliseconds of a
 * machine shared with other work. The warm-up rounds are reported but left
 * out of the medians: under emulation the first thousands of calls through
 * new code (V8 tiering the JS up, QEMU translating it) cost many times the
 * steady state that the per-ioctl comparison is about.
 */
async function interleaved(p: BenchParams, node: ChunkFn, c: ChunkFn): Promise<Rounds> {
  const total = p.warmup + p.rounds;
  const ns = { node: new Array<number>(total).fill(0), c: new Array<number>(total).fill(0) };
  let turn = 0;
  for (let r = 0; r < total; r++) {
    for (let from = 0; from < p.n; from += CHUNK, turn++) {
      const to = Math.min(from + CHUNK, p.n);
      if (turn % 2 === 0) ns.node[r] = (ns.node[r] ?? 0) + (await node(r, from, to));
      ns.c[r] = (ns.c[r] ?? 0) + (await c(r, from, to));
      if (turn % 2 === 1) ns.node[r] = (ns.node[r] ?? 0) + (await node(r, from, to));
    }
  }
  const us = (side: number[]): number[] => side.map((x) => x / 1000 / p.n);
  const [node1, c1] = [us(ns.node), us(ns.c)];
  return { node: node1.slice(p.warmup), c: c1.slice(p.warmup), warmup: { node: node1.slice(0, p.warmup), c: c1.slice(0, p.warmup) } };
}

function perOpValue(n: number, r: Rounds): JsonValue {
  return { n, node_us_per_op: r.node, c_us_per_op: r.c, warmup_us_per_op: r.warmup };
}

/** Nanoseconds `body` takes, on the C side's clock (CLOCK_MONOTONIC). */
function timed(body: () => void): number {
  const started = process.hrtime.bigint();
  body();
  return Number(process.hrtime.bigint() - started);
}

/** Node's preserve side: every session and memfd made first; chunks preserve into them. */
function nodePreserver(ctx: StageContext, p: BenchParams, names: (r: number) => string, how: 'api' | 'addon' = 'api'): { chunk: ChunkFn; sessions: Session[] } {
  const total = p.warmup + p.rounds;
  const sessions = withDevice((luo) => Array.from({ length: total }, (_, r) => luo.createSessionSync(names(r))));
  ctx.keep(...sessions);
  const fds = sessions.map(() => pageMemfds(p.n));
  const ts = tokens(p.n);
  const addon = libraryBinding();
  const chunk: ChunkFn = (r, from, to) => {
    const session = sessions[r] as Session;
    const files = fds[r] as number[];
    const ns =
      how === 'api'
        ? timed(() => {
            for (let i = from; i < to; i++) session.preserveSync(files[i] as number, ts[i] as bigint);
          })
        : timed(() => {
            const sessionFd = session.fd;
            for (let i = from; i < to; i++) addon.preserveFd(sessionFd, files[i] as number, ts[i] as bigint);
          });
    closeAll(files.slice(from, to)); // the kernel holds its own references
    return ns;
  };
  return { chunk, sessions };
}

/** Node's retrieve side: every session retrieved first; chunks retrieve their fds, the last one finishes. */
function nodeRetriever(p: BenchParams): ChunkFn {
  const total = p.warmup + p.rounds;
  const sessions = withDevice((luo) => Array.from({ length: total }, (_, r) => luo.retrieveSessionSync(`${NODE_PREFIX}${r}`)));
  const ts = tokens(p.n);
  const fds = new Array<number>(p.n).fill(-1);
  return (r, from, to) => {
    const session = sessions[r] as Session;
    const ns = timed(() => {
      for (let i = from; i < to; i++) fds[i] = session.retrieveSync(ts[i] as bigint);
    });
    if (to === p.n) {
      session.finishSync();
      session.closeSync();
      closeAll(fds);
    }
    return ns;
  };
}

/** The C side of a small case: the server, once it has made everything. */
async function cServer(ctx: StageContext, mode: 'serve-preserve' | 'serve-retrieve', p: BenchParams): Promise<ChunkFn> {
  const c = cProgram(ctx, [mode, String(p.n), String(p.warmup + p.rounds), C_PREFIX, String(CHUNK)]);
  await c.expect('ready');
  return () => c.ask();
}

async function preserveSmall(ctx: StageContext): Promise<JsonValue> {
  const p = params();
  const node = nodePreserver(ctx, p, (r) => `${NODE_PREFIX}${r}`); // node owns the device first
  const c = await cServer(ctx, 'serve-preserve', p);
  return perOpValue(p.n, await interleaved(p, node.chunk, c));
}

async function retrieveSmall(ctx: StageContext): Promise<JsonValue> {
  const p = params();
  const node = nodeRetriever(p);
  const c = await cServer(ctx, 'serve-retrieve', p);
  return perOpValue(p.n, await interleaved(p, node, c));
}

/**
 * Diagnostic, not a comparison with C: where node's per-ioctl time goes.
 * The same preserve chunks through the public API (Session.preserveSync)
 * and straight through the addon (the addon's preserveFd: N-API only, none of
 * the TypeScript layer's checks), interleaved; the sessions are closed after.
 */
async function layers(ctx: StageContext): Promise<JsonValue> {
  const p = params();
  const api = nodePreserver(ctx, p, (r) => `bench-layer-api-${r}`, 'api');
  const addon = nodePreserver(ctx, p, (r) => `bench-layer-addon-${r}`, 'addon');
  const r = await interleaved(p, api.chunk, addon.chunk);
  for (const session of [...api.sessions, ...addon.sessions]) session.closeSync();
  return { n: p.n, api_us_per_op: r.node, addon_us_per_op: r.c, warmup_us_per_op: { api: r.warmup.node, addon: r.warmup.c } };
}

/** A memfd of `bytes` with every page written, so preserving it pins real pages. */
function largeMemfd(bytes: number): number {
  const fd = memfd.createSync('bench-large');
  for (let offset = 0; offset < bytes; offset += CHUNK_BYTES.length) {
    fs.writeSync(fd, CHUNK_BYTES, 0, Math.min(CHUNK_BYTES.length, bytes - offset), offset);
  }
  return fd;
}

/** One large preserve, timed: its event loop's largest delay, and the CPU time node's other threads took meanwhile. */
interface LargeTiming {
  readonly ms: number;
  readonly maxLagMs: number;
  readonly otherThreadsCpuMs: number;
}

/** One large preserve in a new session, timed, with the event loop's largest delay around it. */
async function largePreserve(fd: number, how: 'sync' | 'async'): Promise<LargeTiming> {
  const session: Session = withDevice((luo) => luo.createSessionSync(`bench-n-large-${how}`));
  const monitor = monitorEventLoopDelay({ resolution: 1 });
  monitor.enable();
  await sleep(SETTLE_MS);
  const cpuBefore = otherThreadsCpuMs();
  const started = performance.now();
  if (how === 'sync') session.preserveSync(fd, 1n);
  else await session.preserve(fd, 1n);
  const ms = performance.now() - started;
  const otherThreads = otherThreadsCpuMs() - cpuBefore;
  await sleep(SETTLE_MS);
  monitor.disable();
  await session.close(); // unpreserves
  return { ms, maxLagMs: monitor.max / NS_PER_MS, otherThreadsCpuMs: otherThreads };
}

/**
 * CPU time (user + system, ms) of this process's threads other than the
 * main one, from /proc/self/task/<tid>/stat. In the sync case that is V8's
 * and libuv's helper threads, which under emulation compete with the
 * preserving thread for the host's cores.
 */
function otherThreadsCpuMs(): number {
  const ticksPerMs = guestMachine().clock_tick / 1000;
  let ticks = 0;
  for (const tid of fs.readdirSync('/proc/self/task')) {
    if (Number(tid) === process.pid) continue;
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const fields = statFields(stat);
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // the thread ended meanwhile
    }
  }
  return ticks / ticksPerMs;
}

/** What the guest tells about itself (`luo_bench machine`): its clock tick and its hypervisor's CPUID signature. */
export interface GuestMachine {
  readonly clock_tick: number;
  readonly hypervisor: string;
}

let machineRead: GuestMachine | undefined;

/** The guest's clock tick and hypervisor, read once by the C program (node has no sysconf). */
export function guestMachine(): GuestMachine {
  if (machineRead === undefined) {
    const out = runC(['machine']);
    if (typeof out['clock_tick'] !== 'number' || !(out['clock_tick'] > 0) || typeof out['hypervisor'] !== 'string') throw new Error(`luo_bench machine said ${JSON.stringify(out)}`);
    machineRead = { clock_tick: out['clock_tick'], hypervisor: out['hypervisor'] };
  }
  return machineRead;
}

/** Node's large round with one API: a fresh memfd preserved twice (fresh, repeat), as C's rounds do. */
async function nodeLargeRound(bytes: number, how: 'sync' | 'async'): Promise<{ fresh: LargeTiming; repeat: LargeTiming }> {
  const fd = largeMemfd(bytes);
  const fresh = await largePreserve(fd, how);
  const repeat = await largePreserve(fd, how);
  fs.closeSync(fd); // free its memory before the next side makes its own
  return { fresh, repeat };
}

/**
 * The large case. Each round, each of node-sync, node-async and C preserves
 * a fresh memfd of `large` bytes twice: the first ("fresh") preserve is what
 * an agent pays once per update, and may include the kernel moving pages it
 * cannot pin long-term; the second ("repeat") is the pinning alone. Who goes
 * first rotates from round to round.
 */
async function preserveLarge(): Promise<JsonValue> {
  const p = params();
  const out = { sync: [] as Awaited<ReturnType<typeof nodeLargeRound>>[], async: [] as Awaited<ReturnType<typeof nodeLargeRound>>[], cFresh: [] as number[], cRepeat: [] as number[] };
  const steps: (() => Promise<void>)[] = [
    async () => void out.sync.push(await nodeLargeRound(p.large, 'sync')),
    async () => void out.async.push(await nodeLargeRound(p.large, 'async')),
    () => {
      const c = runC(['preserve-large', String(p.large), '1']);
      out.cFresh.push(firstNumber(c, 'fresh_ms'));
      out.cRepeat.push(firstNumber(c, 'repeat_ms'));
      return Promise.resolve();
    },
  ];
  for (let r = 0; r < p.largeRounds; r++) {
    for (let k = 0; k < steps.length; k++) await (steps[(r + k) % steps.length] as () => Promise<void>)();
  }
  return {
    bytes: p.large,
    node_sync_ms: out.sync.map((x) => x.fresh.ms),
    node_sync_max_lag_ms: out.sync.map((x) => x.fresh.maxLagMs),
    node_async_ms: out.async.map((x) => x.fresh.ms),
    node_async_max_lag_ms: out.async.map((x) => x.fresh.maxLagMs),
    c_ms: out.cFresh,
    node_sync_repeat_ms: out.sync.map((x) => x.repeat.ms),
    node_sync_repeat_max_lag_ms: out.sync.map((x) => x.repeat.maxLagMs),
    node_async_repeat_ms: out.async.map((x) => x.repeat.ms),
    node_async_repeat_max_lag_ms: out.async.map((x) => x.repeat.maxLagMs),
    c_repeat_ms: out.cRepeat,
    node_sync_other_threads_cpu_ms: out.sync.map((x) => x.fresh.otherThreadsCpuMs),
    node_sync_repeat_other_threads_cpu_ms: out.sync.map((x) => x.repeat.otherThreadsCpuMs),
  };
}

/**
 * Diagnostic for the large case: node writes a fresh memfd and C preserves
 * it (inherited as fd 3), next to node preserving one it wrote and C one it
 * wrote, in rotating order. If C is as slow on node's pages as node is, the
 * gap comes from where the pages were placed, not from the preserving process.
 */
async function largeSwap(): Promise<JsonValue> {
  const p = params();
  const out = { nodeWroteNode: [] as number[], nodeWroteC: [] as number[], cWroteC: [] as number[] };
  const steps: (() => Promise<void>)[] = [
    async () => void out.nodeWroteNode.push((await nodeLargeRound(p.large, 'sync')).fresh.ms),
    () => {
      const fd = largeMemfd(p.large);
      try {
        out.nodeWroteC.push(firstNumber(runC(['preserve-fd', '3'], fd), 'fresh_ms'));
      } finally {
        fs.closeSync(fd);
      }
      return Promise.resolve();
    },
    () => {
      out.cWroteC.push(firstNumber(runC(['preserve-large', String(p.large), '1']), 'fresh_ms'));
      return Promise.resolve();
    },
  ];
  for (let r = 0; r < SWAP_ROUNDS; r++) {
    for (let k = 0; k < steps.length; k++) await (steps[(r + k) % steps.length] as () => Promise<void>)();
  }
  return { bytes: p.large, node_wrote_node_preserved_ms: out.nodeWroteNode, node_wrote_c_preserved_ms: out.nodeWroteC, c_wrote_c_preserved_ms: out.cWroteC };
}

/** Rounds of the role-swap diagnostic. */
const SWAP_ROUNDS = 3;

function firstNumber(result: Record<string, JsonValue>, key: string): number {
  const rounds = result[key];
  if (!Array.isArray(rounds) || typeof rounds[0] !== 'number') throw new Error(`luo_bench gave no ${key}: ${JSON.stringify(result)}`);
  return rounds[0];
}

/** A session of {@link BLACKOUT_FILES} one-page memfds, kept to the kexec. */
function preserveNodeBlackout(ctx: StageContext): JsonValue {
  const session = withDevice((luo) => luo.createSessionSync(NODE_BLACKOUT_SESSION));
  ctx.keep(session);
  const fds = pageMemfds(BLACKOUT_FILES);
  tokens(BLACKOUT_FILES).forEach((token, i) => session.preserveSync(fds[i] as number, token));
  closeAll(fds);
  return { files: BLACKOUT_FILES };
}

/** The C program preserves its blackout session and holds it to the kexec. */
async function preserveCBlackout(ctx: StageContext): Promise<JsonValue> {
  await cProgram(ctx, ['preserve-session', C_BLACKOUT_SESSION, String(BLACKOUT_FILES)]).line();
  return { files: BLACKOUT_FILES };
}

/** What pid 1 (the C program) wrote for the node runner: the instants around the agent it started. */
interface InitResult {
  readonly stage: number;
  /** "c", "node" or "" (no agent in this stage). */
  readonly agent: string;
  /** Pid 1's start: the kernel's start to /init. */
  readonly start_ns: number;
  /** Just before it forked the agent. */
  readonly spawn_ns: number;
  readonly agent_status: number;
}

/** What a blackout agent printed (bench/blackout-agent.js, `luo_bench blackout-agent`). */
interface AgentResult {
  readonly start_ns: number;
  readonly script_ns: number;
  readonly required_ns: number;
  readonly opened_ns: number;
  readonly session_ns: number;
  readonly done_ns: number;
  readonly retrieved: number;
  /** Major page faults (pages read from the disk) so far, at script_ns, required_ns, done_ns. */
  readonly script_faults: number;
  readonly required_faults: number;
  readonly done_faults: number;
}

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/**
 * One side's blackout taken apart (ms), from what pid 1 and the agent it
 * started recorded. The package's share is everything the agent did once
 * running: for node require + open + retrieves, for C open + retrieves.
 */
function blackoutSteps(ctx: StageContext, side: 'c' | 'node'): Record<string, number> {
  const init = readJson<InitResult>(GUEST_INIT_RESULT);
  ctx.equal(`pid 1 started the ${side} agent`, init.agent, side);
  ctx.equal(`the ${side} agent exited with 0`, init.agent_status, 0);
  const agent = readJson<AgentResult>(GUEST_AGENT_RESULT);
  ctx.equal(`the ${side} agent retrieved every file`, agent.retrieved, BLACKOUT_FILES);
  const ms = (from: number, to: number): number => (to - from) / NS_PER_MS;
  return {
    kernel_to_init_ms: init.start_ns / NS_PER_MS,
    init_to_running_ms: ms(init.spawn_ns, agent.script_ns),
    require_ms: ms(agent.script_ns, agent.required_ns),
    open_ms: ms(agent.required_ns, agent.opened_ns),
    retrieve_session_ms: ms(agent.opened_ns, agent.session_ns),
    retrieve_fds_ms: ms(agent.session_ns, agent.done_ns),
    package_share_ms: ms(agent.script_ns, agent.done_ns),
    init_to_all_retrieved_ms: ms(init.spawn_ns, agent.done_ns),
    open_to_all_retrieved_ms: ms(agent.required_ns, agent.done_ns),
    process_start_to_all_retrieved_ms: ms(agent.start_ns, agent.done_ns),
    start_major_faults: agent.script_faults,
    require_major_faults: agent.required_faults - agent.script_faults,
    share_major_faults: agent.done_faults - agent.script_faults,
  };
}

/** Stage 3: the C agent pid 1 started, the first to retrieve in this kernel. */
function cBlackout(ctx: StageContext): JsonValue {
  return { files: BLACKOUT_FILES, ...blackoutSteps(ctx, 'c') };
}

/**
 * Stage 4: the node agent pid 1 started; then, in the same guest, the
 * floor of node's start and `require('liveupdate')` in fresh nodes.
 */
function nodeBlackout(ctx: StageContext): JsonValue {
  const steps = blackoutSteps(ctx, 'node');
  const root = path.dirname(require.resolve('liveupdate/package.json'));
  const emptyFile = '/tmp/bench-empty-module.js';
  fs.writeFileSync(emptyFile, '');
  const floor: number[] = [];
  const requires: RequireSample[] = [];
  const empty: number[] = [];
  for (let i = 0; i < FRESH_NODE_RUNS; i++) {
    floor.push(nodeStartOnce());
    requires.push(requireOnce(root));
    empty.push(emptyRequireOnce(emptyFile));
  }
  return {
    files: BLACKOUT_FILES,
    ...steps,
    node_floor_ms: floor,
    fresh_require_ms: requires.map((r) => r.ms),
    fresh_live_update_ms: requires.map((r) => r.live_update_ms),
    fresh_empty_require_ms: empty,
  };
}

/**
 * RSS of the addon: the resident pages of the loaded .node file in this
 * process (from smaps), and what `require('liveupdate')` adds to a fresh node.
 */
function addonRss(): JsonValue {
  const script = "const a=process.memoryUsage.rss();require('liveupdate');console.log(JSON.stringify({before:a,after:process.memoryUsage.rss()}))";
  const out = spawnSync(process.execPath, ['-e', script], { cwd: '/lu', encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const fresh = JSON.parse(out.stdout) as { before: number; after: number };
  return { addon_rss_kib: smapsRssKib(/\.node$/), require_rss_kib: Math.round((fresh.after - fresh.before) / 1024) };
}

/** The summed Rss of this process's mappings whose path matches. */
function smapsRssKib(path: RegExp): number {
  let inside = false;
  let total = 0;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header !== null) inside = path.test(header[1] ?? '');
    else if (inside && line.startsWith('Rss:')) total += Number(/(\d+)/.exec(line)?.[1] ?? 0);
  }
  return total;
}

/**
 * The benchmark, four kernels. The node blackout case comes first so that
 * the node floor is measured before anything else loads the guest.
 * @internal
 */
export default defineScenario('bench', [
  defineCase('blackout-node', [null, null, preserveNodeBlackout, nodeBlackout]),
  defineCase('blackout-c', [null, preserveCBlackout, cBlackout]),
  defineCase('machine', [() => ({ ...guestMachine() })]),
  defineCase('small', [preserveSmall, retrieveSmall]),
  defineCase('large', [preserveLarge]),
  defineCase('large-swap', [largeSwap]),
  defineCase('layers', [layers]),
  defineCase('addon-rss', [addonRss]),
]);
