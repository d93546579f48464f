/**
 * The binding's own cost at native speed, on the host, with no LUO needed:
 * nanoseconds per call of the sync and the Promise forms against a C loop
 * (bench/host_bench.c) making the same syscall in the same run, rounds of
 * the three interleaved (who goes first rotates) so that a machine shared
 * with other work slows them alike. Also what `require('liveupdate')` costs
 * a fresh node and what it loads.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { memfd, recvFds, recvFdsSync, sendFds, sendFdsSync, socketPair } from 'liveupdate';
import { libraryBinding } from '../native.js';
import { libraryRoot } from '../vm/initramfs.js';
import { LineChild } from './line-child.js';
import { median } from './stats.js';
import { compileC } from '../harness/compile.js';

/** Sizes of the host cases. */
export interface HostParams {
  /** Timed rounds of each case (each: node sync, node Promise, C, in rotating order). */
  readonly rounds: number;
  /** Rounds run first and dropped: V8 tiering the loops up, caches warming. */
  readonly warmup: number;
  /** Fresh node processes timed around `require('liveupdate')`. */
  readonly requires: number;
}

export const HOST_FULL: HostParams = { rounds: 41, warmup: 4, requires: 21 };
export const HOST_QUICK: HostParams = { rounds: 11, warmup: 2, requires: 7 };

/** Calls per round of each form: sized so every round takes milliseconds, far above the clock's resolution. */
interface CallCounts {
  readonly sync: number;
  readonly async: number;
  readonly c: number;
}

/** One host case's rounds, nanoseconds per call of each form, index i = round i. */
export interface FormRounds {
  readonly sync: number[];
  readonly async: number[];
  readonly c: number[];
}

/** One form of a case: a batch of `count` calls; resolves when they are done. */
type Batch = (count: number) => void | Promise<void>;

const MEMFD_NAME = 'liveupdate-host-bench';
const ONE_BYTE = Buffer.from('x');

/**
 * Runs `warmup + rounds` rounds; each times a batch of node sync calls, one
 * of node Promise calls and one of C's, in an order that rotates by round.
 */
async function interleave(params: HostParams, counts: CallCounts, sync: Batch, async: Batch, c: (count: number) => Promise<number>): Promise<FormRounds> {
  const out: FormRounds = { sync: [], async: [], c: [] };
  const timeNode = async (batch: Batch, count: number): Promise<number> => {
    const started = process.hrtime.bigint();
    await batch(count);
    return Number(process.hrtime.bigint() - started) / count;
  };
  const steps: (() => Promise<void>)[] = [
    async () => void out.sync.push(await timeNode(sync, counts.sync)),
    async () => void out.async.push(await timeNode(async, counts.async)),
    async () => void out.c.push((await c(counts.c)) / counts.c),
  ];
  for (let r = 0; r < params.warmup + params.rounds; r++) {
    for (let k = 0; k < steps.length; k++) await (steps[(r + k) % steps.length] as () => Promise<void>)();
  }
  const timed = (xs: number[]): number[] => xs.slice(params.warmup);
  return { sync: timed(out.sync), async: timed(out.async), c: timed(out.c) };
}

/** The C server, compiled now from bench/host_bench.c (`root`: this package's). */
async function startC(root: string): Promise<LineChild> {
  const program = compileC({ sources: [path.join(root, 'bench', 'host_bench.c')], out: path.join(root, 'build', 'bench', 'host_bench'), flags: ['-Werror', '-I', path.join(libraryRoot(), 'include')] });
  const child = new LineChild(program, []);
  await child.expect('ready');
  return child;
}

/** `memfd.getSealsSync` and `memfd.getSeals` against fcntl(F_GET_SEALS): the success path of a one-syscall call. */
async function seals(params: HostParams, c: LineChild): Promise<FormRounds> {
  const fd = memfd.createSync(MEMFD_NAME, { allowSealing: true });
  try {
    return await interleave(
      params,
      { sync: 20_000, async: 2_000, c: 20_000 },
      (count) => {
        for (let i = 0; i < count; i++) memfd.getSealsSync(fd);
      },
      async (count) => {
        for (let i = 0; i < count; i++) await memfd.getSeals(fd);
      },
      (count) => c.ask(`seals ${count}`),
    );
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A LUO ioctl (RETRIEVE_FD) on a memfd, which the kernel refuses with ENOTTY
 * after the same user/kernel round trip as a real one. Through the addon's
 * LUO glue directly: the public API refuses a memfd as a session before any
 * syscall (Session.fromFd checks the fd is a LUO session). Node's figure
 * includes building the thrown error, which C's loop does not do.
 */
async function refusedIoctl(params: HostParams, c: LineChild): Promise<FormRounds> {
  const fd = memfd.createSync(MEMFD_NAME);
  const native = libraryBinding();
  const expectEnotty = (error: unknown): void => {
    if ((error as { code?: unknown }).code !== 'ENOTTY') throw error;
  };
  try {
    return await interleave(
      params,
      { sync: 5_000, async: 2_000, c: 20_000 },
      (count) => {
        for (let i = 0; i < count; i++) {
          try {
            native.retrieveFd(fd, 1n);
          } catch (error) {
            expectEnotty(error);
          }
        }
      },
      async (count) => {
        for (let i = 0; i < count; i++) await native.retrieveFdAsync(fd, 1n).then(() => expectEnotty(new Error('RETRIEVE_FD on a memfd succeeded')), expectEnotty);
      },
      (count) => c.ask(`enotty ${count}`),
    );
  } finally {
    fs.closeSync(fd);
  }
}

/** The one fd a receive must have brought; closes it. */
function closeReceived(fds: readonly number[]): void {
  if (fds.length !== 1) throw new Error(`received ${fds.length} fds, not 1`);
  fs.closeSync(fds[0] as number);
}

/** One memfd with one byte over a seqpacket pair: send, receive, close the received fd. */
async function fdPass(params: HostParams, c: LineChild): Promise<FormRounds> {
  const fd = memfd.createSync(MEMFD_NAME);
  const [a, b] = socketPair('seqpacket');
  try {
    return await interleave(
      params,
      { sync: 2_000, async: 1_000, c: 2_000 },
      (count) => {
        for (let i = 0; i < count; i++) {
          sendFdsSync(a, [fd], ONE_BYTE);
          closeReceived(recvFdsSync(b).fds);
        }
      },
      async (count) => {
        for (let i = 0; i < count; i++) {
          await sendFds(a, [fd], ONE_BYTE);
          closeReceived((await recvFds(b)).fds);
        }
      },
      (count) => c.ask(`fdpass ${count}`),
    );
  } finally {
    for (const x of [fd, a, b]) fs.closeSync(x);
  }
}

/** What one fresh node measured around `require('liveupdate')`. */
export interface RequireSample {
  readonly ms: number;
  /** Every module file the require loaded (relative to `root`). */
  readonly modules: readonly string[];
}

/**
 * `require('liveupdate')` in a fresh node: milliseconds, and the module
 * files it loaded (to show it loads no test bed code).
 */
export function requireOnce(root: string): RequireSample {
  const script = [
    'const before = new Set(Object.keys(require.cache));',
    'const t0 = process.hrtime.bigint();',
    `require(${JSON.stringify(root)});`,
    'const ms = Number(process.hrtime.bigint() - t0) / 1e6;',
    'const modules = Object.keys(require.cache).filter((m) => !before.has(m));',
    'process.stdout.write(JSON.stringify({ ms, modules }));',
  ].join('\n');
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (out.status !== 0) throw new Error(`node -e require(${root}) exited with ${String(out.status ?? out.signal)}`);
  const sample = JSON.parse(out.stdout) as { ms: number; modules: string[] };
  return { ms: sample.ms, modules: sample.modules.map((m) => path.relative(root, m)) };
}

/** Milliseconds a fresh `node -e 0` takes, start to exit: the floor of any node program. */
export function nodeStartOnce(): number {
  const started = process.hrtime.bigint();
  const out = spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  if (out.status !== 0) throw new Error('node -e 0 failed');
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** Everything the host cases measured, raw (report.ts turns it into medians and intervals). */
export interface HostRounds {
  readonly params: HostParams;
  readonly seals: FormRounds;
  readonly enotty: FormRounds;
  readonly fdpass: FormRounds;
  readonly require_ms: number[];
  readonly node_start_ms: number[];
  /** The module files `require('liveupdate')` loaded (from the first sample). */
  readonly require_modules: readonly string[];
}

/** Runs the host cases. */
export async function runHost(root: string, params: HostParams, progress: (line: string) => void): Promise<HostRounds> {
  const c = await startC(root);
  try {
    progress(`host: ${params.rounds} rounds (after ${params.warmup} warm-up) of getSeals, a refused LUO ioctl and fd passing, node and C interleaved`);
    const sealsRounds = await seals(params, c);
    const enottyRounds = await refusedIoctl(params, c);
    const fdpassRounds = await fdPass(params, c);
    progress(`host: ${params.requires} fresh nodes timed around require('liveupdate') and node -e 0, alternating`);
    const requires: RequireSample[] = [];
    const starts: number[] = [];
    for (let i = 0; i < params.requires; i++) {
      requires.push(requireOnce(libraryRoot()));
      starts.push(nodeStartOnce());
    }
    progress(`host: getSealsSync ${median(sealsRounds.sync).toFixed(0)} ns, C ${median(sealsRounds.c).toFixed(0)} ns; fd pass sync ${median(fdpassRounds.sync).toFixed(0)} ns, C ${median(fdpassRounds.c).toFixed(0)} ns`);
    return {
      params,
      seals: sealsRounds,
      enotty: enottyRounds,
      fdpass: fdpassRounds,
      require_ms: requires.map((r) => r.ms),
      node_start_ms: starts,
      require_modules: requires[0]?.modules ?? [],
    };
  } finally {
    await c.end();
  }
}
