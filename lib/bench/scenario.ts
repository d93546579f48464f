/**
 * The guest side of `npm run bench`: stage functions for the kernel test bed
 * that time the public API (LiveUpdate, Session, memfd) and, in the same
 * kernel, the static C program bench/luo_bench.c making the same ioctls.
 *
 * Two kernels. Stage 1 preserves: the small-ioctl rounds (their sessions are
 * kept for stage 2), the large memfd with the sync and the async API, and
 * one 100-file blackout session per side. Stage 2 retrieves: the C program
 * has already run as pid 1 (rdinit=) and timed its blackout session before
 * exec'ing the node runner; the node runner's first case times its own.
 *
 * Fairness: both sides time only the ioctls (files are made beforehand) with
 * the same clock; node and C rounds alternate (N C C N N C ...) so that a
 * kernel whose cost grows with what is already preserved favours neither.
 * /dev/liveupdate has one owner at a time, so node closes it before C runs.
 * @internal
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { LiveUpdate, memfd, type Session } from '../index.js';
import { native } from '../native.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import {
  BLACKOUT_FILES,
  C_BLACKOUT_SESSION,
  C_PREFIX,
  GUEST_C_BENCH,
  GUEST_INIT_RESULT,
  NODE_BLACKOUT_SESSION,
  NODE_PREFIX,
  paramsFromCmdline,
  type BenchParams,
} from './params.js';

const PAGE = Buffer.alloc(4096, 0x5a);
const CHUNK = Buffer.alloc(1 << 20, 0x5a);
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

/** Runs the C program to completion; its JSON result. */
function runC(args: readonly string[]): Record<string, JsonValue> {
  const out = spawnSync(GUEST_C_BENCH, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (out.status !== 0) throw new Error(`luo_bench ${args.join(' ')} exited with ${String(out.status ?? out.signal)}`);
  return JSON.parse(out.stdout) as Record<string, JsonValue>;
}

/**
 * Starts the C program in a mode that preserves sessions and then holds them
 * open until its stdin closes; resolves with its JSON line. The child is
 * kept so its sessions reach the kexec.
 */
function holdC(ctx: StageContext, args: readonly string[]): Promise<Record<string, JsonValue>> {
  const child = spawn(GUEST_C_BENCH, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  ctx.keep(child);
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      text += chunk;
      const line = text.indexOf('\n');
      if (line >= 0) resolve(JSON.parse(text.slice(0, line)) as Record<string, JsonValue>);
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`luo_bench ${args.join(' ')} exited early with ${String(code)}`)));
  });
}

function firstRound(result: Record<string, JsonValue>, key: string): number {
  const rounds = result[key];
  if (!Array.isArray(rounds) || typeof rounds[0] !== 'number') throw new Error(`luo_bench gave no ${key}: ${JSON.stringify(result)}`);
  return rounds[0];
}

/** Node's side of one preserve round: µs per PRESERVE_FD over `n` calls. */
function nodePreserveRound(ctx: StageContext, p: BenchParams, round: number): number {
  const session = withDevice((luo) => luo.createSessionSync(`${NODE_PREFIX}${round}`));
  ctx.keep(session);
  const fds = pageMemfds(p.n);
  const ts = tokens(p.n);
  const started = performance.now();
  for (let i = 0; i < p.n; i++) session.preserveSync(fds[i] as number, ts[i] as bigint);
  const us = ((performance.now() - started) * 1000) / p.n;
  closeAll(fds); // the kernel holds its own references
  return us;
}

/** Node's side of one retrieve round: µs per RETRIEVE_FD over `n` calls. */
function nodeRetrieveRound(p: BenchParams, round: number): number {
  const session = withDevice((luo) => luo.retrieveSessionSync(`${NODE_PREFIX}${round}`));
  const ts = tokens(p.n);
  const fds = new Array<number>(p.n).fill(-1);
  const started = performance.now();
  for (let i = 0; i < p.n; i++) fds[i] = session.retrieveSync(ts[i] as bigint);
  const us = ((performance.now() - started) * 1000) / p.n;
  session.finishSync();
  session.closeSync();
  closeAll(fds);
  return us;
}

/** Timed rounds per side, and the warm-up rounds before them. */
interface Rounds {
  readonly node: number[];
  readonly c: number[];
  readonly warmup: { node: number[]; c: number[] };
}

/**
 * Runs `warmup + rounds` rounds per side, alternating which side goes first
 * (N C, C N, N C, ...). The warm-up rounds are reported but left out of the
 * medians: under emulation the first thousands of calls through new code
 * (V8 tiering the JS up, QEMU translating it) cost many times the steady
 * state, and the steady state is what the per-ioctl comparison is about.
 * Both sides get the same warm-up.
 */
async function alternate(p: BenchParams, node: (r: number) => number, c: (r: number) => Promise<number>): Promise<Rounds> {
  const times = { node: [] as number[], c: [] as number[] };
  for (let r = 0; r < p.warmup + p.rounds; r++) {
    if (r % 2 === 0) times.node.push(node(r));
    times.c.push(await c(r));
    if (r % 2 === 1) times.node.push(node(r));
  }
  const w = p.warmup;
  return { node: times.node.slice(w), c: times.c.slice(w), warmup: { node: times.node.slice(0, w), c: times.c.slice(0, w) } };
}

function perOpValue(n: number, r: Rounds): JsonValue {
  return { n, node_us_per_op: r.node, c_us_per_op: r.c, warmup_us_per_op: r.warmup };
}

async function preserveSmall(ctx: StageContext): Promise<JsonValue> {
  const p = params();
  const r = await alternate(
    p,
    (round) => nodePreserveRound(ctx, p, round),
    async (round) => firstRound(await holdC(ctx, ['preserve-small', String(p.n), '1', C_PREFIX, String(round)]), 'us_per_op'),
  );
  return perOpValue(p.n, r);
}

async function retrieveSmall(): Promise<JsonValue> {
  const p = params();
  const r = await alternate(
    p,
    (round) => nodeRetrieveRound(p, round),
    (round) => Promise.resolve(firstRound(runC(['retrieve-small', String(p.n), '1', C_PREFIX, String(round)]), 'us_per_op')),
  );
  return perOpValue(p.n, r);
}

/**
 * Diagnostic, not a comparison with C: where node's per-ioctl time goes.
 * The same preserve rounds through the public API (Session.preserveSync)
 * and straight through the addon (native.preserveFd: N-API only, none of
 * the TypeScript layer's checks), alternating; each session is closed after.
 */
async function layers(): Promise<JsonValue> {
  const p = params();
  const round = (how: 'api' | 'addon', r: number): number => {
    const session = withDevice((luo) => luo.createSessionSync(`bench-layer-${how}-${r}`));
    const fds = pageMemfds(p.n);
    const ts = tokens(p.n);
    const sessionFd = session.fd;
    const started = performance.now();
    if (how === 'api') for (let i = 0; i < p.n; i++) session.preserveSync(fds[i] as number, ts[i] as bigint);
    else for (let i = 0; i < p.n; i++) native.preserveFd(sessionFd, fds[i] as number, ts[i] as bigint);
    const us = ((performance.now() - started) * 1000) / p.n;
    session.closeSync();
    closeAll(fds);
    return us;
  };
  const r = await alternate(p, (i) => round('api', i), (i) => Promise.resolve(round('addon', i)));
  return { n: p.n, api_us_per_op: r.node, addon_us_per_op: r.c, warmup_us_per_op: { api: r.warmup.node, addon: r.warmup.c } };
}

/** A memfd of `bytes` with every page written, so preserving it pins real pages. */
function largeMemfd(bytes: number): number {
  const fd = memfd.createSync('bench-large');
  for (let offset = 0; offset < bytes; offset += CHUNK.length) {
    fs.writeSync(fd, CHUNK, 0, Math.min(CHUNK.length, bytes - offset), offset);
  }
  return fd;
}

/** One large preserve, timed, with the event loop's largest delay around it. */
async function largeRound(fd: number, how: 'sync' | 'async'): Promise<{ ms: number; maxLagMs: number }> {
  const session: Session = withDevice((luo) => luo.createSessionSync(`bench-n-large-${how}`));
  const monitor = monitorEventLoopDelay({ resolution: 1 });
  monitor.enable();
  await sleep(SETTLE_MS);
  const started = performance.now();
  if (how === 'sync') session.preserveSync(fd, 1n);
  else await session.preserve(fd, 1n);
  const ms = performance.now() - started;
  await sleep(SETTLE_MS);
  monitor.disable();
  await session.close(); // unpreserves: the next round starts from the same state
  return { ms, maxLagMs: monitor.max / NS_PER_MS };
}

/**
 * The C rounds run half before and half after node's, so that a drift in
 * the machine's speed during the case favours neither side.
 */
async function preserveLarge(): Promise<JsonValue> {
  const p = params();
  const cRounds = (count: number): number[] => {
    const ms = runC(['preserve-large', String(p.large), String(count)])['ms'];
    return Array.isArray(ms) ? ms.filter((x): x is number => typeof x === 'number') : [];
  };
  const cBefore = cRounds(Math.ceil(p.largeRounds / 2));
  const fd = largeMemfd(p.large);
  const sync: { ms: number; maxLagMs: number }[] = [];
  const async: { ms: number; maxLagMs: number }[] = [];
  for (let r = 0; r < p.largeRounds; r++) {
    sync.push(await largeRound(fd, 'sync'));
    async.push(await largeRound(fd, 'async'));
  }
  fs.closeSync(fd); // free its memory before C makes its own
  const cAfter = cRounds(Math.floor(p.largeRounds / 2));
  return {
    bytes: p.large,
    node_sync_ms: sync.map((s) => s.ms),
    node_sync_max_lag_ms: sync.map((s) => s.maxLagMs),
    node_async_ms: async.map((s) => s.ms),
    node_async_max_lag_ms: async.map((s) => s.maxLagMs),
    c_ms: [...cBefore, ...cAfter],
  };
}

/** Stage 1 of the blackout case: one 100-file session per side, held to the kexec. */
async function preserveBlackout(ctx: StageContext): Promise<JsonValue> {
  const session = withDevice((luo) => luo.createSessionSync(NODE_BLACKOUT_SESSION));
  ctx.keep(session);
  const fds = pageMemfds(BLACKOUT_FILES);
  tokens(BLACKOUT_FILES).forEach((token, i) => session.preserveSync(fds[i] as number, token));
  closeAll(fds);
  await holdC(ctx, ['preserve-session', C_BLACKOUT_SESSION, String(BLACKOUT_FILES)]);
  return { files: BLACKOUT_FILES };
}

/** What the C program, as pid 1, wrote for the node runner. */
interface InitResult {
  readonly start_ns: number;
  /** Just before it opened the device (after mounting devtmpfs). */
  readonly open_ns: number;
  readonly done_ns: number;
  readonly retrieved: number;
  readonly session_rc: number;
  readonly exec_ns: number;
}

/**
 * Stage 2, the first case the node runner runs: node's blackout is from the
 * exec of the node /init (recorded by pid 1 just before it) to its 100th fd;
 * C's is from pid 1's start to its 100th fd. Both on CLOCK_MONOTONIC
 * (process.hrtime is CLOCK_MONOTONIC).
 */
function retrieveBlackout(ctx: StageContext): JsonValue {
  const opening = Number(process.hrtime.bigint());
  const session = withDevice((luo) => luo.retrieveSessionSync(NODE_BLACKOUT_SESSION));
  const fds = tokens(BLACKOUT_FILES).map((token) => session.retrieveSync(token));
  const done = Number(process.hrtime.bigint());
  const sinceNodeStart = performance.now(); // performance's time origin is node's start
  session.finishSync();
  session.closeSync();
  closeAll(fds);
  const init = JSON.parse(fs.readFileSync(GUEST_INIT_RESULT, 'utf8')) as InitResult;
  ctx.equal('C retrieved every file', init.retrieved, BLACKOUT_FILES);
  return {
    files: BLACKOUT_FILES,
    node_init_to_all_retrieved_ms: (done - init.exec_ns) / NS_PER_MS,
    node_process_start_to_all_retrieved_ms: sinceNodeStart,
    node_open_to_all_retrieved_ms: (done - opening) / NS_PER_MS,
    c_open_to_all_retrieved_ms: (init.done_ns - init.open_ns) / NS_PER_MS,
    c_init_to_all_retrieved_ms: (init.done_ns - init.start_ns) / NS_PER_MS,
    kernel_to_init_ms: init.start_ns / NS_PER_MS,
    c_init_total_ms: (init.exec_ns - init.start_ns) / NS_PER_MS,
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
 * The benchmark. The blackout case comes first so that in stage 2 it is the
 * first thing the node runner does.
 * @internal
 */
export default defineScenario('bench', [
  defineCase('blackout', [preserveBlackout, retrieveBlackout]),
  defineCase('small', [preserveSmall, retrieveSmall]),
  defineCase('large', [preserveLarge]),
  defineCase('layers', [layers]),
  defineCase('addon-rss', [addonRss]),
]);
