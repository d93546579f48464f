/**
 * The binding's own cost at native speed, on the host, with no LUO needed:
 * nanoseconds per call of the sync and the Promise forms against a C loop
 * (bench/host_bench.c) making the same syscall in the same run, rounds of
 * the three interleaved (who goes first rotates) so that a machine shared
 * with other work slows them alike. Also what `require('liveupdate')` costs
 * a fresh node and what it loads.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { memfd, recvFds, recvFdsSync, sendFds, sendFdsSync, socketPair } from 'liveupdate';
import { libraryBinding } from '../native.js';
import { libraryRoot } from '../vm/initramfs.js';
import { LineChild } from './line-child.js';
import { ERROR_PROCESSES, WARM_SUCCESSES } from './params.js';
import { median } from './stats.js';
import { nodePrinted, nodeStartOnce, requireOnce, type RequireSample } from './fresh-node.js';
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

/** One host case's rounds, nanoseconds per call of each form, index i = round i. */
export interface FormRounds {
  readonly sync: number[];
  readonly async: number[];
  readonly c: number[];
}

/** One form of a case: a batch of `count` calls; resolves when they are done. */
type Batch = (count: number) => void | Promise<void>;

/** A batch of `count` calls that times itself: resolves to the ns it spent in them. */
type TimedBatch = (count: number) => Promise<number>;

/**
 * A form of a case as interleave() runs it: node's batch (timed here), one
 * that times itself (`timed`), or C's (timed by C, in ns).
 */
type Form =
  | { readonly count: number; readonly node: Batch }
  | { readonly count: number; readonly timed: TimedBatch }
  | { readonly count: number; readonly c: (count: number) => Promise<number> };

const MEMFD_NAME = 'liveupdate-host-bench';
const ONE_BYTE = Buffer.from('x');
/** A number no process here has open: the kernel answers EBADF. */
const NOT_OPEN = 1_000_000;

/**
 * Runs `warmup + rounds` rounds; each times one batch of every form (node's
 * sync calls, its Promise calls, C's, and node's own anchors), in an order
 * that rotates by round, so that a machine shared with other work slows them
 * alike. Returns nanoseconds per call of each form, index i = round i.
 */
async function interleave<K extends string>(params: HostParams, forms: Readonly<Record<K, Form>>): Promise<Record<K, number[]>> {
  const names = Object.keys(forms) as K[];
  const out = Object.fromEntries(names.map((name) => [name, [] as number[]])) as Record<K, number[]>;
  const time = async (form: Form): Promise<number> => {
    if ('c' in form) return (await form.c(form.count)) / form.count;
    if ('timed' in form) return (await form.timed(form.count)) / form.count;
    const started = process.hrtime.bigint();
    await form.node(form.count);
    return Number(process.hrtime.bigint() - started) / form.count;
  };
  for (let r = 0; r < params.warmup + params.rounds; r++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(r + k) % names.length] as K;
      out[name].push(await time(forms[name]));
    }
  }
  for (const name of names) out[name] = out[name].slice(params.warmup);
  return out;
}

/** The C server, compiled now from bench/host_bench.c (`root`: this package's). */
async function startC(root: string): Promise<LineChild> {
  const program = compileC({ sources: [path.join(root, 'bench', 'host_bench.c')], out: path.join(root, 'build', 'bench', 'host_bench'), flags: ['-Werror', '-I', path.join(libraryRoot(), 'include')] });
  const child = new LineChild(program, []);
  await child.expect('ready');
  return child;
}

/** The seals case: ours against C, and node's own Promise calls over the same libuv pool against C's fstat. */
export interface SealsRounds extends FormRounds {
  /** `fs.fstat(fd, callback)`, ns per call. */
  readonly fstat_callback: number[];
  /** `filehandle.stat()` of fs.promises, ns per call. */
  readonly fstat_promise: number[];
  /** C's fstat(), ns per call. */
  readonly c_fstat: number[];
}

/**
 * `memfd.getSealsSync` and `memfd.getSeals` against fcntl(F_GET_SEALS): the
 * success path of a one-syscall call; and, as the anchor of the Promise
 * form's overhead, node's own `fs.fstat(fd, callback)` and fs.promises'
 * `filehandle.stat()` (both on the libuv pool, as getSeals is) against C's
 * fstat() on the same memfd.
 */
async function seals(params: HostParams, c: LineChild): Promise<SealsRounds> {
  const fd = memfd.createSync(MEMFD_NAME, { allowSealing: true });
  const handle = await fs.promises.open(`/proc/self/fd/${fd}`, 'r');
  const fstat = (): Promise<void> => new Promise((resolve, reject) => fs.fstat(handle.fd, (error) => (error ? reject(error) : resolve())));
  try {
    return await interleave(params, {
      sync: {
        count: 20_000,
        node: (count) => {
          for (let i = 0; i < count; i++) memfd.getSealsSync(fd);
        },
      },
      async: {
        count: 2_000,
        node: async (count) => {
          for (let i = 0; i < count; i++) await memfd.getSeals(fd);
        },
      },
      c: { count: 20_000, c: (count) => c.ask(`seals ${count}`) },
      fstat_callback: {
        count: 2_000,
        node: async (count) => {
          for (let i = 0; i < count; i++) await fstat();
        },
      },
      fstat_promise: {
        count: 2_000,
        node: async (count) => {
          for (let i = 0; i < count; i++) await handle.stat();
        },
      },
      c_fstat: { count: 20_000, c: (count) => c.ask(`fstat ${count}`) },
    });
  } finally {
    await handle.close();
    fs.closeSync(fd);
  }
}

/** The errors case's rounds in one process: ns per call of each form, index i = round i. */
export interface ErrorProcessRounds {
  /** `memfd.getSealsSync(fd)` of a number not open: the kernel's EBADF as a BadFileDescriptorError, thrown and caught; ns per call. */
  readonly ours: number[];
  /** `fs.fstatSync(-1)` thrown and caught (node's argument check: a RangeError); ns per call. */
  readonly node: number[];
  /** `fs.fstatSync(fd)` of a number not open (the kernel's EBADF as node's system error), thrown and caught; ns per call. */
  readonly node_ebadf: number[];
}

/** A typed error built and thrown, against node's own: the rounds of each fresh process the case ran in. */
export interface ErrorRounds {
  readonly processes: readonly ErrorProcessRounds[];
}

/** What a failure costs: our typed error, built and thrown, against node's own fstatSync failures, in {@link ERROR_PROCESSES} fresh processes. */
function errors(params: HostParams): ErrorRounds {
  const each: HostParams = { rounds: Math.max(3, Math.ceil(params.rounds / ERROR_PROCESSES)), warmup: params.warmup, requires: 0 };
  const child = path.join(__dirname, 'host-errors.js');
  const processes: ErrorProcessRounds[] = [];
  for (let i = 0; i < ERROR_PROCESSES; i++) {
    processes.push(JSON.parse(nodePrinted([child, JSON.stringify(each)], `the errors case's process ${i + 1}`)) as ErrorProcessRounds);
  }
  return { processes };
}

/**
 * The errors case in this process (host-errors.js runs it in a fresh one):
 * first {@link WARM_SUCCESSES} successful calls of the same function, which
 * V8 optimizes (as the seals case did in the benchmark's own process, and as
 * a program that works before it fails does), then the rounds.
 */
export async function errorRoundsHere(params: HostParams): Promise<ErrorProcessRounds> {
  const fd = memfd.createSync(MEMFD_NAME);
  try {
    for (let i = 0; i < WARM_SUCCESSES; i++) memfd.getSealsSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const expectCode = (code: string, run: () => unknown): void => {
    try {
      run();
    } catch (error) {
      if ((error as { code?: unknown }).code === code) return;
      throw error;
    }
    throw new Error(`expected ${code}`);
  };
  return interleave(params, {
    ours: {
      count: ERROR_CALLS,
      node: (count) => {
        for (let i = 0; i < count; i++) expectCode('EBADF', () => memfd.getSealsSync(NOT_OPEN));
      },
    },
    node: {
      count: ERROR_CALLS,
      node: (count) => {
        for (let i = 0; i < count; i++) expectCode('ERR_OUT_OF_RANGE', () => fs.fstatSync(-1));
      },
    },
    node_ebadf: {
      count: ERROR_CALLS,
      node: (count) => {
        for (let i = 0; i < count; i++) expectCode('EBADF', () => fs.fstatSync(NOT_OPEN));
      },
    },
  });
}

/** Calls in one batch of the errors case. */
const ERROR_CALLS = 5_000;

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
    return await interleave(params, {
      sync: {
        count: 5_000,
        node: (count) => {
          for (let i = 0; i < count; i++) {
            try {
              native.retrieveFd(fd, 1n);
            } catch (error) {
              expectEnotty(error);
            }
          }
        },
      },
      async: {
        count: 2_000,
        node: async (count) => {
          for (let i = 0; i < count; i++) await native.retrieveFdAsync(fd, 1n).then(() => expectEnotty(new Error('RETRIEVE_FD on a memfd succeeded')), expectEnotty);
        },
      },
      c: { count: 20_000, c: (count) => c.ask(`enotty ${count}`) },
    });
  } finally {
    fs.closeSync(fd);
  }
}

/** The one fd a receive must have brought; closes it. */
function closeReceived(fds: readonly number[]): void {
  if (fds.length !== 1) throw new Error(`received ${fds.length} fds, not 1`);
  fs.closeSync(fds[0] as number);
}

/** Round trips timed together, as bench/host_bench.c's PASS_BATCH. */
const PASS_BATCH = 100;

/**
 * `count` round trips made by `batch` (n at a time, each pushing the fds it
 * received onto `held`), timed in batches of PASS_BATCH, as C times its own:
 * the received fds are closed between batches, untimed. The close is no part
 * of a send and a receive, and node's fs.closeSync costs more than C's
 * close(2) by itself (its trace-event lookups). Resolves to the ns spent in
 * the batches.
 */
async function passInBatches(count: number, batch: (held: (readonly number[])[], n: number) => void | Promise<void>): Promise<number> {
  const held: (readonly number[])[] = [];
  let spent = 0n;
  for (let done = 0; done < count; done += PASS_BATCH) {
    const n = Math.min(PASS_BATCH, count - done);
    held.length = 0;
    const started = process.hrtime.bigint();
    // Awaited only when it is a Promise: a sync batch's clock stops without a microtask turn.
    const pending = batch(held, n);
    if (pending !== undefined) await pending;
    spent += process.hrtime.bigint() - started;
    for (const fds of held) closeReceived(fds);
  }
  return Number(spent);
}

/** The fd-passing case: ours against C, and the same byte without fds over node's own `net`. */
export interface FdPassRounds extends FormRounds {
  /** One byte written on a node `net.Socket` over a Unix stream pair and its 'data' event on the other end, ns per round trip. */
  readonly net: number[];
}

/**
 * One memfd with one byte over a seqpacket pair: send, receive, close the
 * received fd; and the anchor a Node user knows: the same byte, without an
 * fd, through node's own `net` over a Unix socket pair (write, then the
 * peer's 'data' event).
 */
async function fdPass(params: HostParams, c: LineChild): Promise<FdPassRounds> {
  const fd = memfd.createSync(MEMFD_NAME);
  const [a, b] = socketPair('seqpacket');
  const [x, y] = socketPair('stream');
  // node:net loads here: the package itself never loads it for fd numbers.
  const net = await import('node:net');
  const writer = new net.Socket({ fd: x, readable: false, writable: true });
  const reader = new net.Socket({ fd: y, readable: true, writable: false });
  const netRoundTrip = (): Promise<void> =>
    new Promise((resolve) => {
      reader.once('data', () => resolve());
      writer.write(ONE_BYTE);
    });
  try {
    return await interleave(params, {
      sync: {
        count: 2_000,
        timed: (count) =>
          passInBatches(count, (held, n) => {
            for (let i = 0; i < n; i++) {
              sendFdsSync(a, [fd], ONE_BYTE);
              held.push(recvFdsSync(b).fds);
            }
          }),
      },
      async: {
        count: 1_000,
        timed: (count) =>
          passInBatches(count, async (held, n) => {
            for (let i = 0; i < n; i++) {
              await sendFds(a, [fd], ONE_BYTE);
              held.push((await recvFds(b)).fds);
            }
          }),
      },
      c: { count: 2_000, c: (count) => c.ask(`fdpass ${count}`) },
      net: {
        count: 1_000,
        node: async (count) => {
          for (let i = 0; i < count; i++) await netRoundTrip();
        },
      },
    });
  } finally {
    writer.destroy();
    reader.destroy();
    for (const n of [fd, a, b]) fs.closeSync(n);
  }
}

/** Everything the host cases measured, raw (report.ts turns it into medians and intervals). */
export interface HostRounds {
  readonly params: HostParams;
  readonly seals: SealsRounds;
  readonly enotty: FormRounds;
  readonly fdpass: FdPassRounds;
  readonly errors: ErrorRounds;
  readonly require_ms: number[];
  /** The first read of `LiveUpdate` after each require, ms. */
  readonly live_update_ms: number[];
  readonly node_start_ms: number[];
  /** The module files `require('liveupdate')` loaded (from the first sample). */
  readonly require_modules: readonly string[];
}

/** Runs the host cases. */
export async function runHost(root: string, params: HostParams, progress: (line: string) => void): Promise<HostRounds> {
  const c = await startC(root);
  try {
    progress(`host: ${params.rounds} rounds (after ${params.warmup} warm-up) of getSeals (with node's fs.fstat anchors), a refused LUO ioctl, fd passing (with node's net anchor) and errors (with node's fstatSync), node and C interleaved`);
    const sealsRounds = await seals(params, c);
    const enottyRounds = await refusedIoctl(params, c);
    const fdpassRounds = await fdPass(params, c);
    const errorRounds = errors(params);
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
      errors: errorRounds,
      require_ms: requires.map((r) => r.ms),
      live_update_ms: requires.map((r) => r.live_update_ms),
      node_start_ms: starts,
      require_modules: requires[0]?.modules ?? [],
    };
  } finally {
    await c.end();
  }
}
