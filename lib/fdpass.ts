/**
 * Passing file descriptors between processes over Unix sockets
 * (SCM_RIGHTS), which Node core cannot do.
 *
 * - Stream, seqpacket and datagram sockets; up to 253 fds (SCM_MAX_FD) per
 *   message. Received fds are close-on-exec (MSG_CMSG_CLOEXEC).
 * - The Promise forms are driven by the event loop: the native side tries
 *   sendmsg/recvmsg with MSG_DONTWAIT and, when the socket is not ready,
 *   waits on a uv_poll_t. No thread is parked per socket. The Sync forms
 *   block in poll().
 * - Truncated control data (MSG_CTRUNC) is an error, and every fd that did
 *   arrive is closed before it is reported. Every fd a receive does not
 *   hand over (more than `maxFds`, or with a refused message) is taken in
 *   and closed by this package, the Promise forms' on a thread of its own:
 *   a peer's file can make its last close block (a TCP socket lingering on
 *   unsent data), and that must hold neither the event loop nor the libuv
 *   thread pool. A receiver that wants no fds at all from untrusted peers
 *   should also have the kernel refuse them (SO_PASSRIGHTS off, Linux 6.16+).
 *
 * On a stream socket a message is a frame by default: an 8-byte header
 * ("LUFD" and a big-endian u32 length) then the bytes, sent with the fds in
 * the first sendmsg. The receiver reads exactly one frame, so the fds it
 * returns are always those sent with that frame's bytes. With
 * `framing: 'none'` the bytes go as they are (to talk to a peer that does not
 * use this package); the kernel then attaches fds to the read that takes
 * the first byte of the send that carried them, and such a read can also
 * contain bytes sent before them.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { callAsync, callSync, errnoNumber, packageError, translateError, type ErrorContext, type Operation } from './errors.js';
import { loadNative, native, type Cancellable, type NativeBinding, type NativeRecvResult, type NativeStepError } from './native.js';
import { checkFd, invalidArgType, invalidArgValue, outOfRange } from './validate.js';

// What the hot paths read: module-local, because the CommonJS build reads
// an exported constant off `exports` at every use, and this module's
// exports (re-exported getters among them) are a slow dictionary object.
const SCM_MAX_FD = 253;
const MAX_BYTES = 65536;
const { allocUnsafe } = Buffer;

/** The most fds one message may carry (the kernel's SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE = SCM_MAX_FD;

/** Default `maxBytes` of a receive: the largest message accepted. */
export const DEFAULT_MAX_BYTES = MAX_BYTES;

let binding: NativeBinding | undefined;

/** The addon (loaded on first use), kept here: a call reads no other module's exports for it. */
function addon(): NativeBinding {
  return (binding ??= loadNative());
}

/** A Unix socket: a `net.Socket` (see {@link sendFds} for the rules) or an fd number. */
export type SocketLike = net.Socket | number;

/** How a stream socket's bytes are split into messages; ignored by seqpacket and datagram sockets. */
export type Framing = 'frame' | 'none';

/** Options of {@link sendFds} and {@link sendFdsSync}. */
export interface SendOptions {
  /** Stream sockets only: `'frame'` (default) or `'none'` (raw bytes; an empty message sends one NUL byte). */
  framing?: Framing;
  /** Cancels a pending send (Promise form only); a stream left with part of the message is out of step. */
  signal?: AbortSignal;
  /** Most ms to wait for the socket to take the whole message, then `ETIMEDOUT`. Default: no limit. */
  timeout?: number;
}

/** Options of {@link recvFds} and {@link recvFdsSync}. */
export interface RecvOptions {
  /** Most fds accepted; more is a {@link ControlTruncatedError}. Default and maximum 253. */
  maxFds?: number;
  /** Largest message accepted in bytes; a longer one is a {@link MessageTruncatedError}. Default 65536. */
  maxBytes?: number;
  /** Stream sockets only: `'frame'` (default) or `'none'`. Must match the sender. */
  framing?: Framing;
  /** Cancels a pending receive (Promise form only). */
  signal?: AbortSignal;
}

/** One received message. */
export interface RecvResult {
  /** The fds that came with the message, close-on-exec, owned by the caller. */
  fds: number[];
  /** The message's bytes. */
  data: Buffer;
  /** True when the peer shut down (stream, seqpacket) before a message began: data and fds are empty. */
  eof: boolean;
}

export {
  ControlTruncatedError,
  FdPassError,
  FramingError,
  MessageTruncatedError,
  NotUnixSocketError,
  PeerClosedError,
  SocketBusyError,
  StreamOutOfStepError,
  type FdPassErrorCode,
} from './errors.js';

const STATUS_OK = 0;
const STATUS_EOF = 1;
const STATUS_BAD_FRAME = 4;

/** Turns a native receive into a result, or throws the error its status names. */
function toResult(raw: NativeRecvResult, maxFds: number, maxBytes: number): RecvResult {
  if (raw.status === STATUS_OK) return { fds: raw.fds, data: raw.data, eof: false };
  if (raw.status === STATUS_EOF) return { fds: [], data: Buffer.alloc(0), eof: true };
  const closed = raw.dropped;
  switch (raw.status) {
    case 2:
      throw packageError('ERR_LIVEUPDATE_FDS_TRUNCATED', `the message carried more fds than fit (maxFds is ${maxFds}); the ${closed} that arrived were closed`, { operation: 'recvFds', closedFds: closed });
    case 3:
      throw packageError('ERR_LIVEUPDATE_MESSAGE_TRUNCATED', `a ${raw.length}-byte message exceeds maxBytes (${maxBytes}); it was skipped`, { operation: 'recvFds', closedFds: closed, length: raw.length });
    case STATUS_BAD_FRAME:
      throw packageError('ERR_LIVEUPDATE_BAD_FRAME', 'the stream does not carry frames of this package (or fds arrived mid-frame)', { operation: 'recvFds', closedFds: closed });
    default:
      throw packageError('ERR_LIVEUPDATE_SHORT_FRAME', 'the peer closed the stream in the middle of a frame', { operation: 'recvFds', closedFds: closed });
  }
}

// ---- validation (before any syscall) ----------------------------------------

/**
 * Checks `fds` in place and returns it: the native side reads the caller's
 * array itself, within the call (checking each number again), so no copy
 * is made of it.
 */
function checkFds(fds: unknown): readonly number[] {
  if (!Array.isArray(fds)) throw invalidArgType('fds', 'an instance of Array', fds);
  if (fds.length > SCM_MAX_FD) {
    throw outOfRange('fds.length', `<= ${SCM_MAX_FD} (SCM_MAX_FD, the kernel's limit per message)`, fds.length);
  }
  for (let i = 0; i < fds.length; i++) {
    const fd: unknown = fds[i];
    // The name is built only for the error: this runs on every send.
    if (!(typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 && fd <= 0x7fff_ffff)) checkFd(fd, `fds[${i}]`);
  }
  return fds as readonly number[];
}

/** The fds as the native send takes them: a message's usual one fd as a number, which it reads without an array. */
function fdsArg(fds: readonly number[]): number | readonly number[] {
  return fds.length === 1 ? fds[0]! : fds;
}

function toBytes(data: unknown): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (data instanceof Uint8Array) return data;
  throw invalidArgType('data', 'of type string or an instance of Buffer or Uint8Array', data);
}

function framingCode(framing: unknown): number {
  if (framing === undefined || framing === 'frame') return 0;
  if (framing === 'none') return 1;
  throw invalidArgValue('options.framing', "must be 'frame' or 'none'", framing);
}

function checkCount(value: unknown, name: string, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > max) throw outOfRange(name, `an integer >= 0 and <= ${max}`, value);
  return value;
}

function checkTimeout(timeout: unknown): number {
  return checkCount(timeout, 'options.timeout', 0x7fff_ffff, -1);
}

function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined || signal instanceof AbortSignal) return signal;
  throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
}

/** The options of a call given none: one object for all, never written. */
const NO_OPTIONS = Object.freeze({});

function checkOptions<T extends object>(options: unknown): Partial<T> {
  if (options === undefined) return NO_OPTIONS;
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'of type object', options);
  return options as Partial<T>;
}

// ---- net.Socket ---------------------------------------------------------------

/** The part of a net.Socket's private libuv handle used here. */
interface PipeHandle {
  fd?: unknown;
  reading?: boolean;
  readStop?: () => number;
}

/**
 * The fd under a net.Socket. Node has no public accessor, so this reads the
 * libuv handle's `fd` (stable for the handle's life). The native side works
 * on its own dup of it, so neither Node's watcher nor a later close of the
 * socket can make it touch the wrong file.
 */
function handleFd(socket: net.Socket): { fd: number; handle: PipeHandle } {
  const handle = (socket as unknown as { _handle?: PipeHandle | null })._handle;
  const fd = handle?.fd;
  if (socket.destroyed || socket.connecting || !handle || typeof fd !== 'number' || fd < 0) {
    throw invalidArgValue('socket', 'must be a connected Unix socket', socket.constructor.name);
  }
  return { fd, handle };
}

/**
 * Prepares a net.Socket for a receive: Node must not read from it, because
 * its reads use read(2), which discards any fds the bytes carried. A socket
 * in flowing mode is refused; otherwise it is paused and its libuv read is
 * stopped (Node's pause() alone keeps reading ahead into the buffer). It
 * stays paused afterwards: resume() hands it back to Node.
 */
function fdForReceive(socket: net.Socket): number {
  const { fd, handle } = handleFd(socket);
  if (socket.readableFlowing === true) {
    throw invalidArgValue('socket', "is in flowing mode (a 'data' listener or resume()); call socket.pause() first", 'net.Socket');
  }
  if (socket.readableLength > 0) {
    throw invalidArgValue('socket', 'has bytes Node already read into its buffer (fds sent with them are lost)', 'net.Socket');
  }
  socket.pause();
  if (handle.reading === true && typeof handle.readStop === 'function') {
    handle.reading = false;
    handle.readStop();
  }
  return fd;
}

/** A net.Socket for a send: Node's own queued writes would interleave with ours. */
function fdForSend(socket: net.Socket): number {
  const { fd } = handleFd(socket);
  if (socket.writableLength > 0) {
    throw invalidArgValue('socket', "has writes queued by Node; wait for 'drain' first", 'net.Socket');
  }
  return fd;
}

function socketFd(socket: unknown, direction: 'send' | 'recv'): number {
  if (typeof socket === 'number') return checkFd(socket, 'socket');
  // node:net loads here, not with the package; a net.Socket given loaded it already.
  if (socket instanceof (require('node:net') as typeof net).Socket) return direction === 'send' ? fdForSend(socket) : fdForReceive(socket);
  throw invalidArgType('socket', 'an instance of net.Socket or of type number', socket);
}

// ---- one operation at a time per socket and direction -----------------------

type Direction = 'send' | 'recv';

/** The public operation of a direction, for errors. */
function operationOf(direction: Direction): Operation {
  return direction === 'send' ? 'sendFds' : 'recvFds';
}

/**
 * The key of a socket and direction: the socket's inode, not its fd number,
 * so a dup shares the queue and a number reused for another socket does not
 * inherit this one's state.
 */
function socketKey(fd: number, direction: Direction): string {
  const { dev, ino } = fs.fstatSync(fd, { bigint: true });
  return `${direction}:${dev}:${ino}`;
}

const queues = new Map<string, Promise<unknown>>();

/**
 * Sockets whose stream stopped mid-message in a direction: only closing
 * them helps, so every later call on them is refused. No close of the
 * caller's is seen here, and a number cannot be held weakly, so an entry
 * would outlive its socket: a long-running server whose peers send bad
 * frames would grow this forever. Instead, whenever the set has doubled
 * since the last look, the entries of sockets this process no longer has
 * open (no fd in /proc/self/fd is that socket) are dropped:
 * the set stays proportional to the out-of-step sockets still open,
 * at a cost spread over the additions. Where /proc cannot be read, the
 * older half goes instead: a forgotten socket is then read again, and a
 * stream out of step only fails again as a bad frame.
 */
class OutOfStepSockets {
  static readonly FIRST_SWEEP = 64;
  readonly #keys = new Set<string>();
  #sweepAt = OutOfStepSockets.FIRST_SWEEP;

  has(key: string): boolean {
    return this.#keys.has(key);
  }

  add(key: string): void {
    this.#keys.add(key);
    if (this.#keys.size < this.#sweepAt) return;
    this.#sweep();
    this.#sweepAt = Math.max(OutOfStepSockets.FIRST_SWEEP, 2 * this.#keys.size);
  }

  get size(): number {
    return this.#keys.size;
  }

  #sweep(): void {
    const open = openSocketInodes();
    const keys = [...this.#keys];
    const stale = open === null ? keys.slice(0, keys.length >> 1) : keys.filter((key) => !open.has(key.slice(key.lastIndexOf(':') + 1)));
    for (const key of stale) this.#keys.delete(key);
  }
}

/**
 * The inode numbers of every socket this process has an fd of, or null
 * without /proc. Read from the links' text (`socket:[INO]`), which touches
 * no file: an fstat of any fd could wait on a FUSE daemon.
 */
function openSocketInodes(): Set<string> | null {
  let names: string[];
  try {
    names = fs.readdirSync('/proc/self/fd');
  } catch {
    return null;
  }
  const inodes = new Set<string>();
  for (const name of names) {
    try {
      const ino = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${name}`))?.[1];
      if (ino !== undefined) inodes.add(ino);
    } catch {
      // Closed since the listing (the listing's own fd, too): not one of ours.
    }
  }
  return inodes;
}

const outOfStep = new OutOfStepSockets();

/** How many sockets are marked out of step, for the tests of its bound. @internal */
export function outOfStepCount(): number {
  return outOfStep.size;
}

/** Refuses a call on a socket that is out of step in that direction. */
function checkInStep(key: string, direction: Direction): void {
  if (outOfStep.has(key)) {
    const what = direction === 'send' ? 'send' : 'receive';
    throw packageError('ERR_LIVEUPDATE_OUT_OF_STEP', `an earlier ${what} stopped in the middle of a message; the stream is out of step: close it`, { operation: operationOf(direction) });
  }
}

/**
 * The key of a socket and direction when anything is tracked: while no
 * socket has a Promise call queued and none is out of step (the usual
 * case), a call has nothing to look up, and makes no fstat for it.
 */
function trackedKey(fd: number, direction: Direction): string | undefined {
  return untracked() ? undefined : socketKey(fd, direction);
}

/** No socket has a Promise call queued, and none is out of step: no call has a key to look up. */
function untracked(): boolean {
  return queues.size === 0 && outOfStep.size === 0;
}

/** A Promise send done within its call: the byte count, not a pending operation. */
function isSent(now: number | Cancellable<number>): now is number {
  return typeof now === 'number';
}

/** A Promise receive done within its call: the result (written into the buffers, or an object), not a pending operation. */
function isReceived(now: number | NativeRecvResult | Cancellable<NativeRecvResult>): now is number | NativeRecvResult {
  return !(now instanceof Promise);
}

/** Marks the socket out of step in a direction (its key looked up now if not yet). */
function markOutOfStep(fd: number, direction: Direction, key: string | undefined): void {
  try {
    outOfStep.add(key ?? socketKey(fd, direction));
  } catch {
    // The socket is gone (closed meanwhile): nothing left to refuse.
  }
}

/** Runs a native call on `fd`; an error that left the stream mid-message marks the socket out of step. */
function marking<T>(fd: number, direction: Direction, key: string | undefined, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if ((error as NativeStepError).outOfStep === true) markOutOfStep(fd, direction, key);
    throw error;
  }
}

/** Watches a pending native operation: a rejection that left the stream mid-message marks the socket. */
function marked<T>(key: string, pending: Cancellable<T>): Cancellable<T> {
  pending.catch((error: unknown) => {
    if ((error as NativeStepError).outOfStep === true) outOfStep.add(key);
  });
  return pending;
}

/** Refuses a synchronous call while a Promise call in the same direction is queued on the socket. */
function checkNotBusy(key: string, direction: Direction): void {
  if (queues.has(key)) {
    const what = direction === 'send' ? 'send' : 'receive';
    throw packageError('ERR_LIVEUPDATE_SOCKET_BUSY', `a Promise ${what} is pending on this socket; the synchronous form would cut into its message`, { operation: operationOf(direction) });
  }
}

/**
 * Before a synchronous call on the caller's own fd: refuses it while a
 * Promise call in the same direction is pending and on a socket out of
 * step (looked up only when some socket is either). Returns the socket's
 * key when it was looked up.
 */
function enterSync(fd: number, direction: Direction): string | undefined {
  if (untracked()) return undefined;
  let key: string;
  try {
    key = socketKey(fd, direction);
  } catch (error) {
    throw translateError(error, { operation: operationOf(direction), fd });
  }
  checkNotBusy(key, direction);
  checkInStep(key, direction);
  return key;
}

/** A synchronous call's failure, typed; one that left the stream mid-message marks the socket out of step. */
function syncFailure(error: unknown, fd: number, direction: Direction, key: string | undefined): unknown {
  if ((error as NativeStepError).outOfStep === true) markOutOfStep(fd, direction, key);
  return translateError(error, { operation: operationOf(direction), fd });
}

/**
 * Runs `run` after every earlier operation on the same socket and direction
 * has settled: two sends must not interleave their bytes on a stream, and
 * two receives must not split one frame between them.
 */
function serialize<T>(key: string, run: () => Promise<T>): Promise<T> {
  const previous = queues.get(key) ?? Promise.resolve();
  const next = previous.then(run, run);
  const tail = next.then(
    () => undefined,
    () => undefined,
  );
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return next;
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR', cause: signal.reason as unknown });
}

/**
 * Awaits a native operation; an abort cancels it and rejects with an
 * AbortError, a timeout (ms >= 0) cancels it with ETIMEDOUT.
 */
async function withCancel<T>(start: () => Cancellable<T>, signal: AbortSignal | undefined, timeout = -1): Promise<T> {
  if (signal?.aborted) throw abortError(signal);
  return settle(start(), signal, timeout);
}

/** Awaits a started native operation as {@link withCancel} does; an abort that came already cancels it at once. */
async function settle<T>(pending: Cancellable<T>, signal: AbortSignal | undefined, timeout = -1): Promise<T> {
  const onAbort = (): void => pending.cancel();
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  const timer = timeout < 0 ? undefined : setTimeout(() => pending.cancel(errnoNumber('ETIMEDOUT')), timeout);
  try {
    return await pending;
  } catch (error) {
    if (signal?.aborted) throw abortError(signal);
    throw error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * A Promise call with nothing queued before it on its socket: the native
 * side tries it at once, on the caller's numbers, and answers with the
 * result when it is done then (`done` tells), returned as it is (the
 * caller is an async function: no Promise more is made for it). One that
 * must wait has taken copies of what it acts on; it is queued, so that
 * later calls on the socket wait behind it, and settles with the socket's
 * readiness. Throws what the attempt threw.
 */
function startNow<Done, Later>(
  context: ErrorContext & { fd: number },
  direction: Direction,
  key: string | undefined,
  opts: { signal: AbortSignal | undefined; timeout?: number },
  start: () => Done | Cancellable<Later>,
  done: (now: Done | Cancellable<Later>) => now is Done,
): Done | Promise<Later> {
  if (opts.signal?.aborted) throw abortError(opts.signal);
  const now = callSync(context, () => marking(context.fd, direction, key, start));
  if (done(now)) return now;
  let queueKey: string;
  try {
    queueKey = key ?? callSync(context, () => socketKey(context.fd, direction));
  } catch (error) {
    now.cancel();
    throw error;
  }
  return callAsync(context, () => serialize(queueKey, () => settle(marked(queueKey, now), opts.signal, opts.timeout)));
}

// ---- public API -----------------------------------------------------------------

/**
 * Sends `fds` (at most 253) and `data` as one message over a Unix socket.
 * The fds are duplicated into the receiver; the caller still owns its own.
 *
 * On a stream socket the fds go in the same sendmsg as the first bytes, and
 * any bytes left over are sent after, without the fds again. Sends on one
 * socket run one after another: with none pending, the send is tried at
 * once, so a message the socket has room for is sent when the call returns.
 * A `net.Socket` must be connected and have no writes queued by Node.
 *
 * @param socket A connected Unix socket: `net.Socket` or fd number.
 * @param fds The fds to pass.
 * @param data Bytes to send with them (a string is UTF-8).
 * @throws TypeError/RangeError (`ERR_INVALID_ARG_*`, `ERR_OUT_OF_RANGE`) before any syscall;
 *   Node-style system errors (`EPIPE`, `ECONNREFUSED`, ...) from the kernel.
 */
export async function sendFds(socket: SocketLike, fds: readonly number[], data?: string | Uint8Array, options?: SendOptions): Promise<void> {
  const checked = checkFds(fds);
  const bytes = toBytes(data);
  const opts = checkOptions<SendOptions>(options);
  const framing = framingCode(opts.framing);
  const signal = checkSignal(opts.signal);
  const timeout = checkTimeout(opts.timeout);
  const first = socketFd(socket, 'send'); // Validates before queueing.
  const key = untracked() ? undefined : callSync({ operation: 'sendFds', fd: first }, () => trackedKey(first, 'send'));
  if (key !== undefined) checkInStep(key, 'send');
  if (key === undefined || !queues.has(key)) {
    const now = startNow({ operation: 'sendFds', fd: first }, 'send', key, { signal, timeout }, () => addon().sendFdsAsync(first, bytes, fdsArg(checked), framing), isSent);
    if (typeof now !== 'number') await now;
    return;
  }
  // Queued behind another send: the files are pinned now (the socket too,
  // when it is a number); the native call copies them again only when this
  // send's turn comes. One pin for all, so that no copy can take the number
  // of another argument the caller closed.
  const byNumber = typeof socket === 'number';
  const pinned = pin(byNumber ? [first, ...checked] : checked, 'sendFds');
  const sent = byNumber ? pinned.slice(1) : pinned;
  try {
    await serialize(key, async () => {
      checkInStep(key, 'send');
      // A net.Socket is checked again when its turn comes: Node may have queued writes since.
      const fd = byNumber ? pinned[0]! : socketFd(socket, 'send');
      // Errors name the caller's fd, not the private copy.
      const context = { operation: 'sendFds' as const, fd: byNumber ? first : fd };
      await callAsync(context, () => withCancel(() => marked(key, asPending(addon().sendFdsAsync(fd, bytes, sent, framing))), signal, timeout));
    });
  } finally {
    unpin(pinned);
  }
}

/** A native Promise-form result as a pending operation (one done at once is already settled). */
function asPending<T>(now: T | Cancellable<T>): Cancellable<T> {
  return now instanceof Promise ? now : Object.assign(Promise.resolve(now), { cancel: () => {} });
}

/** The synchronous form of {@link sendFds}: blocks until the whole message is sent (or `timeout` ms). */
export function sendFdsSync(socket: SocketLike, fds: readonly number[], data?: string | Uint8Array, options?: Omit<SendOptions, 'signal'>): void {
  const checked = checkFds(fds);
  const bytes = toBytes(data);
  let framing = 0;
  let timeout = -1;
  if (options !== undefined) {
    const opts = checkOptions<SendOptions>(options);
    framing = framingCode(opts.framing);
    timeout = checkTimeout(opts.timeout);
  }
  const fd = socketFd(socket, 'send');
  const key = enterSync(fd, 'send');
  const { data: room, args, sendFdsArgs } = registered();
  args[SEND_ARG.fd] = fd;
  args[SEND_ARG.framing] = framing;
  args[SEND_ARG.timeout] = timeout;
  args[SEND_ARG.fdCount] = checked.length;
  for (let i = 0; i < checked.length; i++) args[SEND_ARG.fds + i] = checked[i]!;
  // A short message's bytes go through the room as its numbers do; a longer one is read where it is.
  const length = bytes.length;
  const short = length < COPY_BY_HAND;
  if (short) for (let i = 0; i < length; i++) room[i] = bytes[i]!;
  args[SEND_ARG.length] = short ? length : -1;
  try {
    sendFdsArgs(short ? undefined : bytes);
  } catch (error) {
    throw syncFailure(error, fd, 'send', key);
  }
}

/**
 * Receives one message and the fds that came with it (close-on-exec; the
 * caller owns them and must close them).
 *
 * Receives on one socket run one after another: with none pending, a
 * message already there is taken at once. A `net.Socket` must not be
 * in flowing mode and must have nothing in Node's read buffer; it is paused
 * and Node's reading on it stopped, and it stays so (call `resume()` to
 * give it back to Node), because Node's reads would discard the fds.
 *
 * A receive whose message has arrived settles once the fds it does not
 * hand over are closed, even when aborted meanwhile (the abort waits for
 * them). With `maxFds: 0` no fd ever reaches the caller.
 *
 * @throws {@link ControlTruncatedError} when more fds came than `maxFds`
 *   (those that arrived are closed); {@link MessageTruncatedError};
 *   {@link FramingError}; TypeError/RangeError before any syscall;
 *   Node-style system errors from the kernel.
 */
export async function recvFds(socket: SocketLike, options?: RecvOptions): Promise<RecvResult> {
  const opts = checkOptions<RecvOptions>(options);
  const maxFds = checkCount(opts.maxFds, 'options.maxFds', SCM_MAX_FD, SCM_MAX_FD);
  const maxBytes = checkCount(opts.maxBytes, 'options.maxBytes', 0x7fff_ffff, MAX_BYTES);
  const framing = framingCode(opts.framing);
  const signal = checkSignal(opts.signal);
  const first = socketFd(socket, 'recv'); // Validates (and pauses a net.Socket) before queueing.
  const key = untracked() ? undefined : callSync({ operation: 'recvFds', fd: first }, () => trackedKey(first, 'recv'));
  if (key !== undefined) checkInStep(key, 'recv');
  if (key === undefined || !queues.has(key)) {
    const into = intoFor(maxBytes);
    const start = (): number | NativeRecvResult | Cancellable<NativeRecvResult> => addon().recvFdsAsync(first, maxBytes, maxFds, framing, into);
    const started = startNow({ operation: 'recvFds', fd: first }, 'recv', key, { signal }, start, isReceived);
    const now = started instanceof Promise ? await started : started;
    if (typeof now === 'number' && rooms!.meta[0] === STATUS_OK) return messageInto(now);
    return received(now, maxFds, maxBytes, () => markOutOfStep(first, 'recv', key));
  }
  // Queued behind another receive: a number is pinned now; a net.Socket is looked at again when its turn comes.
  const pinned = pin(typeof socket === 'number' ? [first] : [], 'recvFds');
  try {
    return await serialize(key, async () => {
      checkInStep(key, 'recv');
      const fd = pinned[0] ?? socketFd(socket, 'recv');
      const context = { operation: 'recvFds' as const, fd: typeof socket === 'number' ? first : fd };
      const raw = await callAsync(context, () => withCancel(() => marked(key, asPending(addon().recvFdsAsync(fd, maxBytes, maxFds, framing))), signal));
      if (raw.outOfStep) outOfStep.add(key);
      return toResult(raw, maxFds, maxBytes);
    });
  } finally {
    unpin(pinned);
  }
}

/** The synchronous form of {@link recvFds}: blocks until a message arrives. */
export function recvFdsSync(socket: SocketLike, options?: Omit<RecvOptions, 'signal'>): RecvResult {
  let maxFds = SCM_MAX_FD;
  let maxBytes = MAX_BYTES;
  let framing = 0;
  if (options !== undefined) {
    const opts = checkOptions<RecvOptions>(options);
    maxFds = checkCount(opts.maxFds, 'options.maxFds', SCM_MAX_FD, SCM_MAX_FD);
    maxBytes = checkCount(opts.maxBytes, 'options.maxBytes', 0x7fff_ffff, MAX_BYTES);
    framing = framingCode(opts.framing);
  }
  const fd = socketFd(socket, 'recv');
  const key = enterSync(fd, 'recv');
  const { args, recvFdsArgs } = registered();
  args[RECV_ARG.fd] = fd;
  args[RECV_ARG.maxBytes] = maxBytes;
  args[RECV_ARG.maxFds] = maxFds;
  args[RECV_ARG.framing] = framing;
  args[RECV_ARG.into] = maxBytes <= MAX_BYTES ? 1 : 0;
  let now: number | NativeRecvResult;
  try {
    now = recvFdsArgs();
  } catch (error) {
    throw syncFailure(error, fd, 'recv', key);
  }
  if (typeof now === 'number' && rooms!.meta[0] === STATUS_OK) return messageInto(now);
  return received(now, maxFds, maxBytes, () => markOutOfStep(fd, 'recv', key));
}

/**
 * The result of a receive as the native side gave it (a byte count, the
 * rest in {@link rooms}, or an object), or the error its status
 * names; `markOutOfStep` runs first for a stream left out of step. (A
 * message received whole into the buffers is read by messageInto first.)
 */
function received(now: number | NativeRecvResult, maxFds: number, maxBytes: number, markOutOfStep: () => void): RecvResult {
  const raw = readResult(now);
  if (raw.outOfStep) markOutOfStep();
  return toResult(raw, maxFds, maxBytes);
}

/**
 * The typed arrays shared with the native side, made on first use and
 * registered with it then (once per environment: a Worker has its own).
 * `data` and `meta`: where it writes a receive that is done within its call
 * (bytes; then status, fds dropped, length, outOfStep, fd count, fds), read
 * back at once by {@link readInto}: cheaper than an object, a Buffer and an
 * array made through N-API; for a maxBytes up to the default (a larger one
 * gets its result as an object). `args`: where a synchronous call writes its
 * numbers ({@link SEND_ARG}, {@link RECV_ARG}) for the native side to read,
 * cheaper than passing each as an argument it reads through N-API. The
 * two calls that read `args` are kept beside them: a load from the addon's
 * exports (too many properties for a fast object) is a generic lookup at
 * every call.
 */
let rooms: Rooms | undefined;

interface Rooms {
  readonly data: Buffer;
  readonly meta: Int32Array;
  readonly args: Int32Array;
  readonly sendFdsArgs: NativeBinding['sendFdsArgs'];
  readonly recvFdsArgs: NativeBinding['recvFdsArgs'];
}

/** {@link rooms}, registered on the first call. */
function registered(): Rooms {
  if (rooms === undefined) {
    const native = addon();
    // Another copy of this module in the process may have registered first: then both use its arrays.
    const [data, meta, args] = native.setRooms(Buffer.allocUnsafeSlow(MAX_BYTES), new Int32Array(RECV_META_HEADER + SCM_MAX_FD), new Int32Array(SEND_ARG.fds + SCM_MAX_FD));
    rooms = { data, meta, args, sendFdsArgs: native.sendFdsArgs, recvFdsArgs: native.recvFdsArgs };
  }
  return rooms;
}

/**
 * Whether a Promise receive of `maxBytes` is written into {@link rooms}
 * (registered by then), which passing `true` in their place names.
 */
function intoFor(maxBytes: number): boolean {
  if (maxBytes > MAX_BYTES) return false;
  registered();
  return true;
}

/** Where sendFdsSync writes its numbers in `args` (native/napi_fdpass.cc, CallArg): the fds from `fds` on. */
const enum SEND_ARG {
  fd = 0,
  framing = 1,
  timeout = 2,
  /** The bytes' length when they are copied into `data`, else -1 (passed as the argument). */
  length = 3,
  fdCount = 4,
  fds = 5,
}

/** Where recvFdsSync writes its numbers in `args`; `into` is 1 for a result written into `data` and `meta`. */
const enum RECV_ARG {
  fd = 0,
  maxBytes = 1,
  maxFds = 2,
  framing = 3,
  into = 4,
}

/** Numbers in front of the fds in `meta`: status, fds dropped, length, outOfStep, fd count. */
const RECV_META_HEADER = 5;

/** The receive the native side wrote into {@link rooms}, `length` bytes. */
function readInto(length: number): NativeRecvResult {
  const { meta } = rooms!;
  return { status: meta[0]!, data: bytesInto(length), fds: fdsInto(), dropped: meta[1]!, length: meta[2]!, outOfStep: meta[3] === 1 };
}

/** A message received whole into {@link rooms} (status ok): the result itself, made once. */
function messageInto(length: number): RecvResult {
  return { fds: fdsInto(), data: bytesInto(length), eof: false };
}

/** The fds in {@link rooms}' meta, as a new array. */
function fdsInto(): number[] {
  const meta = rooms!.meta;
  const count = meta[4]!;
  if (count === 1) return [meta[RECV_META_HEADER]!]; // The usual one, as a packed array.
  const fds = new Array<number>(count);
  for (let i = 0; i < count; i++) fds[i] = meta[RECV_META_HEADER + i]!;
  return fds;
}

/** Bytes below this are copied one by one: cheaper than Buffer.copy's call for the usual short message. */
const COPY_BY_HAND = 64;

/** A copy of the first `length` bytes in {@link rooms}: the result shares no memory with the next receive. */
function bytesInto(length: number): Buffer {
  const data = rooms!.data;
  const bytes = allocUnsafe(length);
  if (length < COPY_BY_HAND) {
    for (let i = 0; i < length; i++) bytes[i] = data[i]!;
  } else {
    data.copy(bytes, 0, 0, length);
  }
  return bytes;
}

/** A receive's result as the native side gave it: written into {@link rooms} (a byte count), or an object. */
function readResult(now: number | NativeRecvResult): NativeRecvResult {
  return typeof now === 'number' ? readInto(now) : now;
}

/**
 * Private copies (F_DUPFD_CLOEXEC) of fd numbers, taken when a call is made
 * for an operation that waits its turn in the queue, so that it acts on
 * these files even if the caller closes and reuses the numbers meanwhile.
 * The native side owns them (a Worker that dies holding them closes them);
 * {@link unpin} closes them when the operation is done.
 */
function pin(fds: readonly number[], operation: Operation): number[] {
  return callSync({ operation, fd: fds[0] }, () => native.pinFds(fds));
}

function unpin(pinned: number[]): void {
  native.unpinFds(pinned);
}

/** Unix socket types for {@link socketPair}. */
export type UnixSocketType = 'stream' | 'seqpacket' | 'dgram';

function typeCode(type: unknown): number {
  if (type === 'stream') return native.SOCK_STREAM;
  if (type === 'seqpacket') return native.SOCK_SEQPACKET;
  if (type === 'dgram') return native.SOCK_DGRAM;
  throw invalidArgValue('type', "must be 'stream', 'seqpacket' or 'dgram'", type);
}

/**
 * A connected pair of Unix sockets (socketpair(2), close-on-exec), for
 * handing one end to a child process. Node's `net` makes only stream
 * sockets; this makes seqpacket and datagram pairs too. The caller owns
 * both fds.
 */
export function socketPair(type: UnixSocketType = 'stream'): [number, number] {
  const code = typeCode(type);
  return callSync({ operation: 'socketPair' }, () => native.socketPair(code));
}
