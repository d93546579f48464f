/**
 * The session calls of a simulated session fd, for lib/session.ts: it loads
 * this module only when the kernel answers a session call with ENOTTY (the
 * fd is no LUO session). A simulated session fd is a SOCK_SEQPACKET socket
 * whose other end a simulator holds (lib/simulator/kernel.ts): in the
 * simulator's own process the call goes to it directly; from another
 * process (a client of `liveupdate agent --simulate`) it goes over the
 * socket, the file passed beside the request with SCM_RIGHTS.
 * @internal
 */
import * as fs from 'node:fs';
import { recvFds, recvFdsSync, sendFds, sendFdsSync, type RecvResult } from '../fdpass.js';
import { native, type LuoBinding, type RetrievedFds } from '../native.js';
import { duplicate, localSession, systemError, type SimulatedLuo, type SimulatedSession, type WireReply, type WireRequest } from './kernel.js';

/** The session calls, as the native layer has them. */
export type SimulatedSessionCalls = Pick<
  LuoBinding,
  'preserveFd' | 'preserveFdAsync' | 'retrieveFd' | 'retrieveFdAsync' | 'retrieveFds' | 'retrieveFdsAsync' | 'finishSession' | 'finishSessionAsync' | 'getSessionName' | 'getSessionNameAsync'
>;

/** The calls a simulator answers one request at a time; {@link withBatches} makes the rest. */
type SingleCalls = Omit<SimulatedSessionCalls, 'retrieveFds' | 'retrieveFdsAsync'>;

/** How long a call from another process waits for the simulator's answer. */
const WIRE_TIMEOUT_MS = 10_000;

/** The calls for `sessionFd` if it may be a simulated session (a socket), else null. */
export function simulatedSessionCalls(sessionFd: number): SimulatedSessionCalls | null {
  let stat: fs.Stats;
  try {
    stat = fs.fstatSync(sessionFd);
  } catch {
    return null;
  }
  if (!stat.isSocket()) return null;
  const here = localSession(stat.ino);
  return withBatches(here === undefined ? WIRE_CALLS : localCalls(here.luo, here.session));
}

/**
 * `calls` with the batch of retrieves the addon makes of RETRIEVE_FD, from
 * their single retrieves, all or nothing as there: the fds in token order,
 * or the failed token's index and errno, those retrieved closed.
 */
function withBatches(calls: SingleCalls): SimulatedSessionCalls {
  const retrieveFdsAsync = async (sessionFd: number, tokens: BigUint64Array): Promise<RetrievedFds> => {
    const fds: number[] = [];
    for (const [index, token] of tokens.entries()) {
      try {
        fds.push(await calls.retrieveFdAsync(sessionFd, token));
      } catch (error) {
        return failedAt(index, error, fds);
      }
    }
    return fds;
  };
  const retrieveFds = (sessionFd: number, tokens: BigUint64Array): RetrievedFds => {
    const fds: number[] = [];
    for (const [index, token] of tokens.entries()) {
      try {
        fds.push(calls.retrieveFd(sessionFd, token));
      } catch (error) {
        return failedAt(index, error, fds);
      }
    }
    return fds;
  };
  return { ...calls, retrieveFds, retrieveFdsAsync };
}

/** A batch's failure at `index`: the fds retrieved before it closed, and its errno; an error without one is thrown. */
function failedAt(index: number, error: unknown, fds: readonly number[]): RetrievedFds {
  fds.forEach((fd) => fs.closeSync(fd));
  const errno = (error as { errno?: unknown }).errno;
  if (typeof errno !== 'number') throw error;
  return { index, errno };
}

/** A call answered at once, as a Promise for the Async forms. */
function later<T>(call: () => T): Promise<T> {
  try {
    return Promise.resolve(call());
  } catch (error) {
    return Promise.reject(error as Error);
  }
}

/** The calls answered by the simulator of this process. */
function localCalls(luo: SimulatedLuo, session: SimulatedSession): SingleCalls {
  const preserveFd = (_s: number, fd: number, token: bigint): number => {
    // A close in this process is seen first (the kernel sees it at once): a file it unpreserved is free again.
    luo.settle();
    luo.preserve(session, token, () => duplicate(fd));
    return 0;
  };
  const retrieveFd = (_s: number, token: bigint): number => luo.retrieve(session, token);
  const finishSession = (): number => {
    luo.finish(session);
    return 0;
  };
  const getSessionName = (): string => luo.getName(session);
  return {
    preserveFd,
    preserveFdAsync: (s, fd, token) => later(() => preserveFd(s, fd, token)),
    retrieveFd,
    retrieveFdAsync: (s, token) => later(() => retrieveFd(s, token)),
    finishSession,
    finishSessionAsync: () => later(finishSession),
    getSessionName,
    getSessionNameAsync: () => later(getSessionName),
  };
}

/** A send or receive failure on a session socket whose simulator is gone (its kernel was left by a kexec, or it stopped). */
function gone(error: unknown): Error {
  const code = (error as { code?: unknown }).code;
  return code === 'EPIPE' || code === 'ECONNRESET' || code === 'ECONNREFUSED' ? systemError('ESTALE') : (error as Error);
}

/** The reply's result: its fd (or 0), its name, or the errno it carries; EOF means the simulator is gone. */
function resultOf(message: RecvResult): { fd: number; name: string } {
  if (message.eof) throw systemError('ESTALE');
  const reply = JSON.parse(message.data.toString('utf8')) as WireReply;
  if (!reply.ok) {
    message.fds.forEach((fd) => fs.closeSync(fd));
    throw systemError(reply.code);
  }
  return { fd: message.fds[0] ?? 0, name: reply.name ?? '' };
}

/** A request over the socket, waiting for the answer. A file that is not open travels as `badFd` (the simulator checks the token first, as the kernel does). */
function askSync(sessionFd: number, request: WireRequest, fd?: number): { fd: number; name: string } {
  try {
    try {
      sendFdsSync(sessionFd, fd === undefined ? [] : [fd], JSON.stringify(request));
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EBADF' || fd === undefined) throw error;
      sendFdsSync(sessionFd, [], JSON.stringify({ ...request, badFd: true }));
    }
    // An answer not there in time fails with ETIMEDOUT.
    native.waitReadable(sessionFd, WIRE_TIMEOUT_MS);
    return resultOf(recvFdsSync(sessionFd, { maxFds: 1, maxBytes: 4096 }));
  } catch (error) {
    throw gone(error);
  }
}

/** The requests of this process on each session fd, one at a time (their answers come in order). */
const queues = new Map<number, Promise<unknown>>();

/** The Promise form of {@link askSync}. */
function ask(sessionFd: number, request: WireRequest, fd?: number): Promise<{ fd: number; name: string }> {
  const run = async (): Promise<{ fd: number; name: string }> => {
    try {
      try {
        await sendFds(sessionFd, fd === undefined ? [] : [fd], JSON.stringify(request));
      } catch (error) {
        if ((error as { code?: unknown }).code !== 'EBADF' || fd === undefined) throw error;
        await sendFds(sessionFd, [], JSON.stringify({ ...request, badFd: true }));
      }
      return resultOf(await recvFds(sessionFd, { maxFds: 1, maxBytes: 4096, signal: AbortSignal.timeout(WIRE_TIMEOUT_MS) }));
    } catch (error) {
      throw gone(error);
    }
  };
  const previous = queues.get(sessionFd) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(run);
  const done = next.catch(() => {});
  queues.set(sessionFd, done);
  void done.then(() => {
    if (queues.get(sessionFd) === done) queues.delete(sessionFd);
  });
  return next;
}

/** The calls of a session whose simulator runs in another process. */
const WIRE_CALLS: SingleCalls = {
  preserveFd: (s, fd, token) => (askSync(s, { op: 'preserve', token: token.toString() }, fd), 0),
  preserveFdAsync: async (s, fd, token) => (await ask(s, { op: 'preserve', token: token.toString() }, fd), 0),
  retrieveFd: (s, token) => askSync(s, { op: 'retrieve', token: token.toString() }).fd,
  retrieveFdAsync: async (s, token) => (await ask(s, { op: 'retrieve', token: token.toString() })).fd,
  finishSession: (s) => (askSync(s, { op: 'finish' }), 0),
  finishSessionAsync: async (s) => (await ask(s, { op: 'finish' }), 0),
  getSessionName: (s) => askSync(s, { op: 'getName' }).name,
  getSessionNameAsync: async (s) => (await ask(s, { op: 'getName' })).name,
};

