/**
 * Session: one named LUO session, outgoing (created in this kernel, files
 * preserved into it) or incoming (retrieved after the kexec, files retrieved
 * from it).
 *
 * Lifetime is explicit. Closing an outgoing session unpreserves every file
 * in it, so nothing here closes a session behind the caller's back: garbage
 * collection never does, and a session object that is dropped keeps its fd
 * (and the kernel keeps the files preserved) until the process exits.
 */
import { callAsync, callSync, sessionStateError, systemErrorOf, translateError, type ErrorContext, type Operation } from './errors.js';
import { isHugetlbFile, readFdLink, SESSION_LINK_PREFIX } from './fdlink.js';
import { onFirstUse } from './lazy.js';
import { native, type LuoBinding, type RetrievedFds } from './native.js';
import type * as SimulatorCallsModule from './simulator/calls.js';
import { checkFd, invalidArgType, invalidArgValue, toToken } from './validate.js';

/** The session calls a session fd answers. */
type SessionCalls = Pick<
  LuoBinding,
  'preserveFd' | 'preserveFdAsync' | 'retrieveFd' | 'retrieveFdAsync' | 'retrieveFds' | 'retrieveFdsAsync' | 'finishSession' | 'finishSessionAsync' | 'getSessionName' | 'getSessionNameAsync'
>;

/** lib/simulator/calls.ts, loaded only for a session fd the kernel does not know (see {@link simulated}). */
function simulatorCalls(): typeof SimulatorCallsModule {
  return onFirstUse('simulator/calls', () => require('./simulator/calls.js') as typeof SimulatorCallsModule);
}

/**
 * The calls of a simulated session (lib/simulator: its fds are sockets, on
 * which the kernel answers a LUO ioctl with ENOTTY), loaded only then, or
 * the kernel's failure as it was.
 */
function simulated(error: unknown, sessionFd: number): SessionCalls {
  if ((error as { code?: unknown }).code === 'ENOTTY') {
    const calls = simulatorCalls().simulatedSessionCalls(sessionFd);
    if (calls !== null) return calls;
  }
  throw error;
}

/**
 * A simulated session's calls, where the kernel refused a batch of
 * retrieves as it refuses any LUO ioctl on a fd that is no LUO session
 * (ENOTTY for the first token, nothing retrieved); else null, the result
 * stands as the kernel gave it.
 */
function simulatedBatch(result: RetrievedFds, sessionFd: number): SessionCalls | null {
  if (Array.isArray(result) || result.index !== 0) return null;
  try {
    return simulated(systemErrorOf(result.errno, 'ioctl'), sessionFd);
  } catch {
    return null;
  }
}

/** The kernel's session calls; a simulated session's (see {@link simulated}) where the kernel does not know the fd. */
const luo: SessionCalls = {
  preserveFd(sessionFd, fd, token) {
    try {
      return native.preserveFd(sessionFd, fd, token);
    } catch (error) {
      return simulated(error, sessionFd).preserveFd(sessionFd, fd, token);
    }
  },
  preserveFdAsync: (sessionFd, fd, token) => native.preserveFdAsync(sessionFd, fd, token).catch((error: unknown) => simulated(error, sessionFd).preserveFdAsync(sessionFd, fd, token)),
  retrieveFd(sessionFd, token) {
    try {
      return native.retrieveFd(sessionFd, token);
    } catch (error) {
      return simulated(error, sessionFd).retrieveFd(sessionFd, token);
    }
  },
  retrieveFdAsync: (sessionFd, token) => native.retrieveFdAsync(sessionFd, token).catch((error: unknown) => simulated(error, sessionFd).retrieveFdAsync(sessionFd, token)),
  retrieveFds(sessionFd, tokens) {
    const result = native.retrieveFds(sessionFd, tokens);
    return simulatedBatch(result, sessionFd)?.retrieveFds(sessionFd, tokens) ?? result;
  },
  retrieveFdsAsync: async (sessionFd, tokens) => {
    const result = await native.retrieveFdsAsync(sessionFd, tokens);
    return (await simulatedBatch(result, sessionFd)?.retrieveFdsAsync(sessionFd, tokens)) ?? result;
  },
  finishSession(sessionFd) {
    try {
      return native.finishSession(sessionFd);
    } catch (error) {
      return simulated(error, sessionFd).finishSession(sessionFd);
    }
  },
  finishSessionAsync: (sessionFd) => native.finishSessionAsync(sessionFd).catch((error: unknown) => simulated(error, sessionFd).finishSessionAsync(sessionFd)),
  getSessionName(sessionFd) {
    try {
      return native.getSessionName(sessionFd);
    } catch (error) {
      return simulated(error, sessionFd).getSessionName(sessionFd);
    }
  },
  getSessionNameAsync: (sessionFd) => native.getSessionNameAsync(sessionFd).catch((error: unknown) => simulated(error, sessionFd).getSessionNameAsync(sessionFd)),
};

/** Where a session is in its life. */
export type SessionState = 'outgoing' | 'incoming' | 'finished' | 'closed';

/** The kernel's request names, for error messages. */
const REQUEST: Partial<Record<Operation, string>> = {
  preserve: 'LIVEUPDATE_SESSION_PRESERVE_FD',
  retrieve: 'LIVEUPDATE_SESSION_RETRIEVE_FD',
  finish: 'LIVEUPDATE_SESSION_FINISH',
  getName: 'LIVEUPDATE_SESSION_GET_NAME',
};

/**
 * The context of a refused preserve: LUO's reason when the file is a hugetlb
 * memfd, which its memfd handler does not take (memfd_luo.c accepts shmem
 * files only), so no handler does and the kernel says ENOENT.
 */
function preserveContext(context: ErrorContext, error: unknown): ErrorContext {
  if ((error as { code?: unknown }).code !== 'ENOENT' || context.fd === undefined || !isHugetlbFile(context.fd)) return context;
  return {
    ...context,
    hint: "it is a hugetlb memfd (MFD_HUGETLB), and LUO's memfd handler preserves shmem memfds only",
    fix: 'back the memory with a memfd made without MFD_HUGETLB (memfd.create)',
  };
}

/** Which states each operation accepts before any ioctl is issued. */
const ALLOWED: Partial<Record<Operation, readonly SessionState[]>> = {
  // Outgoing/incoming mismatches are left to the kernel (EINVAL), so that its
  // answer, not a guess of ours, is what callers see.
  preserve: ['outgoing', 'incoming'],
  retrieve: ['outgoing', 'incoming'],
  finish: ['outgoing', 'incoming'],
  getName: ['outgoing', 'incoming', 'finished'],
};

/**
 * A LUO session. Get one from {@link LiveUpdate.createSession},
 * {@link LiveUpdate.retrieveSession} or {@link Session.fromFd}.
 */
export class Session {
  #fd: number;
  #state: SessionState;
  #name: string;
  /** Calls on the thread pool that still use the fd; close waits for them. */
  readonly #inFlight = new Set<Promise<unknown>>();

  /** @internal Sessions come from LiveUpdate or Session.fromFd. */
  constructor(fd: number, name: string, state: 'outgoing' | 'incoming') {
    this.#fd = fd;
    this.#name = name;
    this.#state = state;
  }

  /** The session's name (as created or retrieved; {@link getNameSync} asks the kernel). */
  get name(): string {
    return this.#name;
  }

  /** The session's fd, or -1 once closed. The fd stays owned by this object. */
  get fd(): number {
    return this.#fd;
  }

  /** `'outgoing'`, `'incoming'`, `'finished'` (incoming, after finish) or `'closed'`. */
  get state(): SessionState {
    return this.#state;
  }

  /**
   * Wraps a session fd received from elsewhere (another process over a Unix
   * socket, systemd's fd store) as a Session; it takes ownership of the fd.
   * Refuses any fd that is not a LUO session. Whether the session is outgoing
   * or incoming is asked of the kernel with a request that changes nothing.
   */
  static fromFd(fd: number): Session {
    checkFd(fd);
    const context: ErrorContext = { operation: 'fromFd', fd };
    const link = readFdLink(fd, context);
    if (!link.startsWith(SESSION_LINK_PREFIX)) {
      throw invalidArgValue('fd', `must be a LUO session fd (fd ${fd} is ${link})`, fd);
    }
    const name = queryName(fd) ?? link.slice(SESSION_LINK_PREFIX.length);
    return new Session(fd, name, probeDirection(fd));
  }

  /**
   * Preserves the file of `fd` in this outgoing session under `token`
   * (a u64 as bigint, or a non-negative safe integer). The fd stays the
   * caller's; the kernel keeps its own reference. Preserving pins every page
   * of a memfd, which takes time for large files: this runs on the thread pool.
   */
  async preserve(fd: number, token: bigint | number): Promise<void> {
    const call = this.#prepare('preserve', { fd: checkFd(fd), token: toToken(token) });
    await this.#track(callAsync((error) => preserveContext(call.context, error), () => luo.preserveFdAsync(call.sessionFd, fd, call.token)));
  }

  /** The synchronous form of {@link preserve}. */
  preserveSync(fd: number, token: bigint | number): void {
    checkFd(fd);
    const t = toToken(token);
    const sessionFd = this.#usable('preserve', fd, t);
    // An agent preserves thousands of files in a row: the error context (and
    // a closure) is only built when the kernel refuses (see BENCHMARKS.md).
    try {
      luo.preserveFd(sessionFd, fd, t);
    } catch (error) {
      throw translateError(error, preserveContext(this.#context('preserve', { fd, token: t }), error));
    }
  }

  /**
   * Retrieves the file preserved under `token` in this incoming session and
   * returns a new fd for it (close-on-exec; the caller owns it). Retrieving
   * the same token again gives another fd to the same file.
   */
  async retrieve(token: bigint | number): Promise<number> {
    const call = this.#prepare('retrieve', { token: toToken(token) });
    return this.#track(callAsync(call.context, () => luo.retrieveFdAsync(call.sessionFd, call.token)));
  }

  /** The synchronous form of {@link retrieve}. */
  retrieveSync(token: bigint | number): number {
    const t = toToken(token);
    const sessionFd = this.#usable('retrieve', undefined, t);
    try {
      return luo.retrieveFd(sessionFd, t);
    } catch (error) {
      throw translateError(error, this.#context('retrieve', { token: t }));
    }
  }

  /**
   * Retrieves the files preserved under each of `tokens` (in order) in this
   * incoming session and returns a new fd for each (close-on-exec; the caller
   * owns them), with one call into the kernel layer and, for this form, one
   * trip to the thread pool for all of them. All or nothing: if one fails,
   * the fds already retrieved are closed and the error names that token. LUO
   * gives a token's file out again on the next retrieve, so nothing is lost.
   */
  async retrieveMany(tokens: readonly (bigint | number)[]): Promise<number[]> {
    const list = toTokens(tokens);
    const call = this.#prepare('retrieve', {});
    const result = await this.#track(callAsync(call.context, () => luo.retrieveFdsAsync(call.sessionFd, list)));
    return this.#retrieved(result, list);
  }

  /** The synchronous form of {@link retrieveMany}. */
  retrieveManySync(tokens: readonly (bigint | number)[]): number[] {
    const list = toTokens(tokens);
    const call = this.#prepare('retrieve', {});
    return this.#retrieved(
      callSync(call.context, () => luo.retrieveFds(call.sessionFd, list)),
      list,
    );
  }

  /** A batch's fds, or the typed error of the token that failed (as {@link retrieveSync} would throw for it). */
  #retrieved(result: RetrievedFds, tokens: BigUint64Array): number[] {
    if (Array.isArray(result)) return result;
    throw translateError(systemErrorOf(result.errno, 'ioctl'), this.#context('retrieve', { token: tokens[result.index]! }));
  }

  /**
   * Finishes this incoming session: the kernel releases what it kept for the
   * update. Files never retrieved are discarded. The fd stays open until
   * {@link close}; no further retrieve is possible.
   */
  async finish(): Promise<void> {
    const call = this.#prepare('finish', {});
    await this.#track(callAsync(call.context, () => luo.finishSessionAsync(call.sessionFd)));
    this.#state = 'finished';
  }

  /** The synchronous form of {@link finish}. */
  finishSync(): void {
    const call = this.#prepare('finish', {});
    callSync(call.context, () => luo.finishSession(call.sessionFd));
    this.#state = 'finished';
  }

  /** Asks the kernel for the session's name (LIVEUPDATE_SESSION_GET_NAME, Linux 7.0+). */
  async getName(): Promise<string> {
    const call = this.#prepare('getName', {});
    return this.#track(callAsync(call.context, () => luo.getSessionNameAsync(call.sessionFd)));
  }

  /** The synchronous form of {@link getName}. */
  getNameSync(): string {
    const call = this.#prepare('getName', {});
    return callSync(call.context, () => luo.getSessionName(call.sessionFd));
  }

  /**
   * Closes the session fd. On an OUTGOING session this unpreserves every file
   * in it and the session will not exist after the kexec. On an incoming
   * session that was not finished, the kernel finishes it. Waits for calls
   * still running on the thread pool. Closing twice is a no-op.
   */
  async close(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    this.closeSync();
  }

  /**
   * The synchronous form of {@link close}. Throws a SessionStateError while a
   * Promise-form call on this session is still running (await it, or use
   * {@link close}), since closing then could let that call reach another file
   * that reuses the fd number.
   */
  closeSync(): void {
    if (this.#state === 'closed') return;
    if (this.#inFlight.size > 0) {
      throw sessionStateError(this.#context('close'), `cannot close session '${this.#name}' while ${this.#inFlight.size} call(s) on it are running; await them or use close()`);
    }
    const fd = this.#fd;
    this.#fd = -1;
    this.#state = 'closed';
    callSync({ ...this.#context('close'), fd }, () => native.close(fd));
  }

  /** Closes the session (see {@link closeSync}): for `using`. Mind that this unpreserves an outgoing session. */
  [Symbol.dispose](): void {
    this.closeSync();
  }

  /** Closes the session (see {@link close}): for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Debug output that never touches the kernel. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Session { name: '${this.#name}', state: '${this.#state}', fd: ${this.#fd} }`;
  }

  #context(operation: Operation, extra: { fd?: number; token?: bigint } = {}): ErrorContext {
    return { operation, sessionName: this.#name, request: REQUEST[operation], ...extra };
  }

  /** Checks the state before any syscall and captures the fd the call will use. */
  #prepare(operation: Operation, extra: { fd?: number; token?: bigint }): { context: ErrorContext; sessionFd: number; token: bigint } {
    const sessionFd = this.#usable(operation, extra.fd, extra.token);
    return { context: this.#context(operation, extra), sessionFd, token: extra.token ?? 0n };
  }

  /** The state check of {@link #prepare} without its allocations: the fd the call will use. */
  #usable(operation: Operation, fd: number | undefined, token: bigint | undefined): number {
    if (!(ALLOWED[operation] ?? []).includes(this.#state)) {
      const extra = { ...(fd === undefined ? {} : { fd }), ...(token === undefined ? {} : { token }) };
      throw sessionStateError(this.#context(operation, extra), `session '${this.#name}' is ${this.#state}; ${operation} is not possible`);
    }
    return this.#fd;
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inFlight.add(promise);
    const forget = (): void => {
      this.#inFlight.delete(promise);
    };
    promise.then(forget, forget);
    return promise;
  }
}

/** `tokens` checked (an array of tokens, each as {@link toToken} takes it), as the addon takes them. */
function toTokens(tokens: unknown): BigUint64Array {
  if (!Array.isArray(tokens)) throw invalidArgType('tokens', 'an instance of Array', tokens);
  const list = new BigUint64Array(tokens.length);
  // Every index read, holes too (forEach would skip one, leaving token 0 there).
  for (let i = 0; i < tokens.length; i++) list[i] = toToken((tokens as unknown[])[i], `tokens[${i}]`);
  return list;
}

/** GET_NAME where the kernel has it; null on kernels without it. */
function queryName(fd: number): string | null {
  try {
    return native.getSessionName(fd);
  } catch {
    return null;
  }
}

/**
 * PRESERVE_FD with fd -1 is refused with EINVAL on an incoming session
 * before anything else is looked at, and with EBADF (or EEXIST) on an
 * outgoing one: a probe that preserves nothing.
 */
function probeDirection(fd: number): 'outgoing' | 'incoming' {
  try {
    // The session's own fd as the file: an incoming session refuses any
    // preserve (EINVAL) before looking at it; an outgoing one finds no
    // handler for a session file (ENOENT) and preserves nothing. (-1 is no
    // longer let through: the binding refuses it before the ioctl.)
    native.preserveFd(fd, fd, 0n);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'EINVAL') return 'incoming';
    return 'outgoing';
  }
  return 'outgoing';
}
