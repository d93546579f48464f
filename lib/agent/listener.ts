/**
 * The agent's listening socket and its connection limits (AGENT-PROTOCOL.md,
 * "Limits: connections and the socket"). It makes the socket without ever
 * following a link another user could plant, refuses a socket path another
 * agent still serves without blocking on it, accepts connections in
 * batches per turn of the event loop (the kernel's backlog, SOMAXCONN,
 * holding a burst meanwhile), and admits a connection only within the caps:
 * so many per uid, so many in all, some always kept for root. A peer the policy refuses, or one
 * over a cap, is answered and closed at once instead of being held.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { agentError, errnoError, type LiveUpdateError } from '../errors.js';
import { native, type Cancellable, type NativeReadableWatch } from '../native.js';
import { invalidArgValue } from '../validate.js';
import { closeQuietly } from './fdstore.js';
import { DEFAULT_SOCKET, toWireError, type JsonValue } from './protocol.js';

/** How many connections the agent serves at once. */
export interface ConnectionLimits {
  /** Connections at once, all users together, root included (default 4096). */
  readonly total: number;
  /** Connections at once of one uid other than root (default 1024). */
  readonly perUid: number;
  /** Of `total`, the connections only root may use, so that root can always connect (default 64). */
  readonly reservedForRoot: number;
}

/** sd-varlink's bounds, and room for root beyond what every other user together may take. */
export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = { total: 4096, perUid: 1024, reservedForRoot: 64 };

/** A connection that has not said hello within this time is dropped (the agent's default). */
export const DEFAULT_HELLO_TIMEOUT_MS = 5000;

/**
 * How long a refused connection stays open for its refusal to be read: until
 * the peer's first message or its EOF, at most this long. Closing at once
 * would make most clients' hello fail with EPIPE before they read why.
 */
export const REFUSAL_LINGER_MS = 1000;

/** Refused connections of one uid waiting out {@link REFUSAL_LINGER_MS} at once; more are answered and closed at once. */
export const LINGERING_REFUSALS_PER_UID = 8;

/** Longest text of one log field; what a peer chose is cut there. */
export const MAX_LOG_TEXT = 1024;

/** Connections accepted in one turn of the event loop before the agent serves anything else. */
const ACCEPT_BATCH = 64;

/** Where the agent listens: a path to create, or a socket it was given (socket activation). */
export interface ListenOptions {
  /** The socket path to create (default `/run/liveupdate/agent.sock`); ignored with `listenFd`. */
  socket?: string | undefined;
  /** A listening SOCK_SEQPACKET Unix socket to serve instead. */
  listenFd?: number | undefined;
  /** The connection caps; missing fields take {@link DEFAULT_CONNECTION_LIMITS}. */
  limits?: Partial<ConnectionLimits> | undefined;
}

/** What the agent does with each connection the listener accepts. */
export interface ConnectionHandler<P extends { readonly uid: number }> {
  /** Who is at the other end, as the kernel says (never what the peer says); throws when it cannot tell. */
  identify(fd: number): P;
  /** Why this peer may not connect at all (the policy), or null. */
  refusal(peer: P): LiveUpdateError | null;
  /** Serves an admitted connection; owns `fd` and settles once it is closed. */
  serve(fd: number, peer: P): Promise<void>;
  /** One line of the agent's log. */
  event(name: string, fields: Record<string, JsonValue | undefined>): void;
}

/** The socket path this listener made: its checked directory, held open, and the inode it bound. */
interface OwnedPath {
  readonly shown: string;
  readonly directoryFd: number;
  readonly inode: number;
}

/**
 * The listening socket. `Listener.open()` makes (or takes) it, before the
 * agent touches anything else, so that a socket it must not use stops it
 * first; `accept()` serves connections (queued meanwhile) until `close()`.
 */
export class Listener<P extends { readonly uid: number }> {
  /** The caps this listener applies. */
  readonly limits: ConnectionLimits;
  readonly #fd: number;
  readonly #owned: OwnedPath | null;
  #started = false;
  /** Connections served, by uid (refused ones lingering are not: they count only against {@link LINGERING_REFUSALS_PER_UID}). */
  readonly #perUid = new Map<number, number>();
  readonly #lingering = new Map<number, Set<() => void>>();
  /** Refusals of each uid closed at once while its lingering ones lasted, not logged one by one. */
  readonly #unlogged = new Map<number, number>();
  #open = 0;
  /** The listening socket's readiness watcher, kept from one batch of accepts to the next. */
  #accepting: NativeReadableWatch | null = null;
  #closed = false;

  private constructor(fd: number, owned: OwnedPath | null, limits: ConnectionLimits) {
    this.#fd = fd;
    this.#owned = owned;
    this.limits = limits;
  }

  /**
   * Listens on `options.listenFd`, or creates `options.socket` (mode 0666:
   * the policy, not the file mode, decides who is served) in a directory
   * only root may change. Bad limits are a TypeError before anything is
   * touched; an unsafe directory or a path in use, a typed error (`EPERM`,
   * `EEXIST`, `EADDRINUSE`) naming it.
   */
  static async open<P extends { readonly uid: number }>(options: ListenOptions): Promise<Listener<P>> {
    const limits = connectionLimits(options.limits ?? {}, 'limits', (text) => invalidArgValue('options.limits', text, options.limits));
    if (options.listenFd !== undefined) {
      if (native.socketType(options.listenFd) !== native.SOCK_SEQPACKET) {
        throw invalidArgValue('options.listenFd', 'must be a listening SOCK_SEQPACKET Unix socket', options.listenFd);
      }
      refuseFdPassing(options.listenFd);
      return new Listener(options.listenFd, null, limits);
    }
    const { fd, owned } = await bindSocket(options.socket ?? DEFAULT_SOCKET);
    return new Listener(fd, owned, limits);
  }

  /** Starts accepting: each connection within the limits goes to `handler`. */
  accept(handler: ConnectionHandler<P>): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    void this.#acceptLoop(handler);
  }

  /** The socket path this listener created, or null when it serves a socket it was given. */
  get socketPath(): string | null {
    return this.#owned?.shown ?? null;
  }

  /** The soft RLIMIT_NOFILE the agent runs with (node raises it to the hard limit at its start), or null if unknown. */
  static openFilesLimit(): number | null {
    try {
      const line = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
      return line === undefined || line === 'unlimited' ? null : Number(line);
    } catch {
      return null;
    }
  }

  /** Stops accepting, closes the listening socket and lingering refusals, and removes the socket path if it is still the one bound here. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#accepting?.close();
    closeQuietly(this.#fd);
    for (const set of this.#lingering.values()) for (const end of [...set]) end();
    if (this.#owned !== null) removeOwnSocket(this.#owned);
  }

  async #acceptLoop(handler: ConnectionHandler<P>): Promise<void> {
    while (!this.#closed) {
      try {
        const readable = await (this.#accepting ??= watchReadable(this.#fd)).wait();
        // Not cancelled by close(): the watch could not be armed, and would not be the next time at once either.
        if (!readable && !this.#closed) throw new Error('the listening socket could not be watched');
        // Everything waiting, in a bounded batch: a flood is drained fast, and root's connection in it reached.
        for (let n = 0; n < ACCEPT_BATCH && !this.#closed && readableNow(this.#fd); n++) this.#admit(native.unixAccept(this.#fd), handler);
      } catch (error) {
        if (this.#closed) return;
        handler.event('accept-failed', { message: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  #admit(fd: number, handler: ConnectionHandler<P>): void {
    let peer: P;
    try {
      peer = handler.identify(fd);
    } catch (error) {
      handler.event('peer-unknown', { message: (error as Error).message });
      closeQuietly(fd);
      return;
    }
    const refusal = this.#overLimit(peer.uid) ?? handler.refusal(peer);
    if (refusal !== null) {
      this.#refuse(fd, peer, refusal, handler);
      return;
    }
    this.#count(peer.uid, +1);
    void this.#serveCounted(fd, peer, handler);
  }

  /** Serves an admitted connection; it counts against its uid until it is closed. (One async frame per connection, not a chain of Promises and closures.) */
  async #serveCounted(fd: number, peer: P, handler: ConnectionHandler<P>): Promise<void> {
    try {
      await handler.serve(fd, peer);
    } catch (error) {
      handler.event('serve-failed', { message: (error as Error).message });
    } finally {
      this.#count(peer.uid, -1);
    }
  }

  /** Why one more connection of `uid` is over a cap, or null. Root counts only against `total`. */
  #overLimit(uid: number): LiveUpdateError | null {
    const { total, perUid, reservedForRoot } = this.limits;
    const others = this.#open - (this.#perUid.get(0) ?? 0);
    let why: string | null = null;
    if (this.#open >= total) why = `the agent has ${this.#open} connections, its limit`;
    else if (uid !== 0 && others >= total - reservedForRoot) why = `the agent has ${others} connections of users other than root, its limit (${reservedForRoot} more are kept for root)`;
    else if (uid !== 0 && (this.#perUid.get(uid) ?? 0) >= perUid) why = `uid ${uid} has ${perUid} connections, its limit`;
    return why === null ? null : agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `too many connections: ${why}`, { operation: 'agent.connect' });
  }

  #count(uid: number, delta: number): void {
    this.#open += delta;
    const n = (this.#perUid.get(uid) ?? 0) + delta;
    if (n === 0) this.#perUid.delete(uid);
    else this.#perUid.set(uid, n);
  }

  /** The last lingering refusal of `uid` is over: the ones closed unlogged meanwhile are logged as one line. */
  #endOfRefusals(uid: number, handler: ConnectionHandler<P>): void {
    this.#lingering.delete(uid);
    const count = this.#unlogged.get(uid);
    this.#unlogged.delete(uid);
    if (count !== undefined) handler.event('refused-unlogged', { uid, count });
  }

  /**
   * Answers `refusal` (id 0) without waiting, then closes: at the peer's
   * first message or EOF, at most {@link REFUSAL_LINGER_MS} later; at once
   * when its uid already has {@link LINGERING_REFUSALS_PER_UID} lingering.
   */
  #refuse(fd: number, peer: P, refusal: LiveUpdateError, handler: ConnectionHandler<P>): void {
    const wire = toWireError(refusal, 'agent.connect');
    try {
      native.sendFds(fd, Buffer.from(JSON.stringify({ v: 1, id: 0, ok: false, error: wire })), [], 0, 0);
    } catch {
      // Its buffer is full or it is gone: it is closed all the same.
    }
    const lingering = this.#lingering.get(peer.uid) ?? new Set<() => void>();
    if (lingering.size >= LINGERING_REFUSALS_PER_UID) {
      // A flood: answered, closed, and only counted (logged once the uid's lingering refusals are over).
      this.#unlogged.set(peer.uid, (this.#unlogged.get(peer.uid) ?? 0) + 1);
      closeQuietly(fd);
      return;
    }
    handler.event('refused', { uid: peer.uid, op: 'agent.connect', code: refusal.code, message: refusal.message });
    const waiting = waitReadable(fd);
    const timer = setTimeout(() => waiting.cancel(), REFUSAL_LINGER_MS);
    const end = (): void => {
      if (!lingering.delete(end)) return;
      if (lingering.size === 0) this.#endOfRefusals(peer.uid, handler);
      clearTimeout(timer);
      waiting.cancel();
      drainAndClose(fd);
    };
    lingering.add(end);
    this.#lingering.set(peer.uid, lingering);
    void waiting.settled.then(end);
  }
}

/**
 * Checks a `limits` object (of the policy file, or the agent's options):
 * every field optional, each a non-negative integer, `reservedForRoot` below
 * `total`. `fail` builds the error for a bad field (the policy's
 * AgentPolicyError by default).
 */
export function connectionLimits(
  value: unknown,
  where = 'limits',
  fail: (text: string) => Error = (text) => agentError('ERR_LIVEUPDATE_AGENT_POLICY', text, { operation: 'agent.start' }),
): ConnectionLimits {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail(`${where} must be an object`);
  const given = value as Record<string, unknown>;
  const unknown = Object.keys(given).filter((k) => !(k in DEFAULT_CONNECTION_LIMITS));
  if (unknown.length > 0) throw fail(`${where}: unknown field(s): ${unknown.join(', ')}`);
  const field = (key: keyof ConnectionLimits): number => {
    const v = given[key] ?? DEFAULT_CONNECTION_LIMITS[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw fail(`${where}.${key} must be a non-negative integer`);
    return v;
  };
  const limits = { total: field('total'), perUid: field('perUid'), reservedForRoot: field('reservedForRoot') };
  if (limits.reservedForRoot >= limits.total) throw fail(`${where}.reservedForRoot (${limits.reservedForRoot}) must be below ${where}.total (${limits.total})`);
  return limits;
}

/**
 * A log field as it may be written: control characters (C0, C1, DEL, line
 * and paragraph separators, bidirectional overrides) replaced by U+FFFD,
 * strings cut at {@link MAX_LOG_TEXT} characters, in nested arrays and
 * objects too. Anything a peer chose (a client name, an operation it
 * made up) then cannot forge a line or flood the log.
 */
export function boundedLogValue(value: JsonValue | undefined): JsonValue | undefined {
  if (typeof value === 'string') return boundedLogText(value);
  if (Array.isArray(value)) return value.map((v) => boundedLogValue(v) ?? null);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [boundedLogText(k), boundedLogValue(v) ?? null]));
  }
  return value;
}

const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function boundedLogText(text: string): string {
  let cut = text.length > MAX_LOG_TEXT ? text.slice(0, MAX_LOG_TEXT) : text;
  // Never half a surrogate pair.
  if (cut.length < text.length && /[\ud800-\udbff]$/.test(cut)) cut = cut.slice(0, -1);
  const clean = cut.replace(UNPRINTABLE, '\ufffd');
  return cut.length < text.length ? `${clean}…(${text.length - cut.length} more characters)` : clean;
}

// ---- the socket path ----------------------------------------------------------

/** `EPERM`, `EEXIST`, ... as Node's system errors look, for a refusal made before the syscall it names. */
function startError(code: 'EPERM' | 'EEXIST' | 'EADDRINUSE' | 'ENOTDIR', syscall: string, where: string, why: string, fix?: string): LiveUpdateError {
  return errnoError(code, syscall, { operation: 'agent.start', path: where, hint: why, ...(fix === undefined ? {} : { fix }) });
}

/**
 * Creates the socket: in its directory, opened once and checked (owned by
 * root, writable by nobody else, every directory above it unchangeable by
 * other users), every later step through that open directory
 * (`/proc/self/fd/N/NAME`), so nothing can be swapped between the check
 * and the bind or the chmod.
 */
async function bindSocket(socketPath: string): Promise<{ fd: number; owned: OwnedPath }> {
  const shown = path.resolve(socketPath);
  const directoryFd = openSocketDirectory(path.dirname(shown));
  try {
    const inDirectory = `/proc/self/fd/${directoryFd}/${path.basename(shown)}`;
    await clearStaleSocket(inDirectory, shown);
    const fd = native.unixBind(native.SOCK_SEQPACKET, inDirectory);
    try {
      refuseFdPassing(fd);
      // Until this chmod only root may connect (the umask's mode); the directory is root's alone, so this is the socket just bound.
      fs.chmodSync(inDirectory, 0o666);
      return { fd, owned: { shown, directoryFd, inode: fs.lstatSync(inDirectory).ino } };
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  } catch (error) {
    closeQuietly(directoryFd);
    throw error;
  }
}

/**
 * Opens the socket's directory (creating it, mode 0755, if missing) and
 * checks it: a directory, owned by the agent's user, not writable by group
 * or others (not even with the sticky bit: another user could then take the
 * socket's name first), and every directory above it owned by root and
 * either not writable by others or sticky. Returns the open fd.
 */
function openSocketDirectory(dir: string): number {
  const created = fs.mkdirSync(dir, { recursive: true, mode: 0o755 }) !== undefined;
  let fd: number;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOTDIR') throw startError('ENOTDIR', 'open', dir, `the socket's directory ${dir} is not a directory`);
    throw error;
  }
  try {
    // A directory just made (and still the agent's) gets its mode set, not left to the umask.
    if (created && fs.fstatSync(fd).uid === process.geteuid?.()) fs.fchmodSync(fd, 0o755);
    checkSocketDirectory(dir, fs.fstatSync(fd));
    // Both the way clients take (the path as given, links and all) and where it leads.
    const given = path.resolve(dir);
    const real = fs.readlinkSync(`/proc/self/fd/${fd}`);
    for (const above of new Set([...directoriesAbove(given), ...directoriesAbove(real)])) checkAncestor(dir, above, fs.lstatSync(above));
    const last = fs.lstatSync(given);
    if (last.isSymbolicLink()) checkAncestor(dir, given, last);
    return fd;
  } catch (error) {
    closeQuietly(fd);
    throw error;
  }
}

const FIX_DIRECTORY = 'give the socket a directory only root can write (chown root and chmod 0755 it), such as the default /run/liveupdate';

function checkSocketDirectory(dir: string, st: fs.Stats): void {
  const euid = process.geteuid?.() ?? 0;
  if (!st.isDirectory()) throw startError('ENOTDIR', 'open', dir, `the socket's directory ${dir} is not a directory`);
  if (st.uid !== euid) throw startError('EPERM', 'bind', dir, `the socket's directory ${dir} is owned by uid ${st.uid}, not by the agent's uid ${euid}: its owner could swap the socket for a link`, FIX_DIRECTORY);
  if ((st.mode & 0o022) !== 0) {
    throw startError('EPERM', 'bind', dir, `the socket's directory ${dir} is writable by ${st.mode & 0o002 ? 'others' : 'its group'} (mode ${modeText(st.mode)}): another user could put a link where the socket goes`, FIX_DIRECTORY);
  }
}

/** `/a/b/c` → `/a/b`, `/a`, `/`. */
function directoriesAbove(dir: string): string[] {
  const above: string[] = [];
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    above.push(d);
    if (d === '/') return above;
  }
}

/** A directory above the socket's, or a link on the way to it: root's (or the agent's), and only a sticky directory writable by others. */
function checkAncestor(dir: string, above: string, st: fs.Stats): void {
  const euid = process.geteuid?.() ?? 0;
  const what = st.isSymbolicLink() ? 'a link on the way to' : 'above';
  if (st.uid !== 0 && st.uid !== euid) throw startError('EPERM', 'bind', dir, `${above}, ${what} the socket's directory ${dir}, is owned by uid ${st.uid}, not root: its owner could redirect the socket's path`, FIX_DIRECTORY);
  if (!st.isSymbolicLink() && (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw startError('EPERM', 'bind', dir, `${above}, above the socket's directory ${dir}, is writable by other users and not sticky (mode ${modeText(st.mode)}): they could replace the directory`, FIX_DIRECTORY);
  }
}

function modeText(mode: number): string {
  return `0${(mode & 0o7777).toString(8)}`;
}

/**
 * A socket file left by an agent that died is removed; a live one is
 * refused, without blocking: a stream connect is refused at once by a
 * socket of another type (EPROTOTYPE: the agent's is SOCK_SEQPACKET) and
 * never waits on a full backlog (non-blocking, and bounded besides).
 */
async function clearStaleSocket(inDirectory: string, shown: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(inDirectory);
  } catch {
    return;
  }
  if (!st.isSocket()) throw startError('EEXIST', 'bind', shown, `${shown} exists and is not a socket: it is left alone`, 'remove it, or give the agent another --socket');
  if ((await probe(inDirectory)) === 'stale') {
    fs.rmSync(inDirectory, { force: true });
    return;
  }
  throw startError('EADDRINUSE', 'bind', shown, `another agent is listening on ${shown}`, 'stop that agent first, or give this one another --socket');
}

/** Time a probe of an existing socket may take before it counts as in use. */
const PROBE_TIMEOUT_MS = 1000;

/** `stale` when no socket is bound to that file any more (ECONNREFUSED), else `in use`. */
function probe(socketPath: string): Promise<'stale' | 'in use'> {
  return new Promise((resolve) => {
    // node:net loads here, not with the agent: only a leftover socket file is probed.
    const socket = (require('node:net') as typeof import('node:net')).connect({ path: socketPath });
    const settle = (result: 'stale' | 'in use'): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => settle('in use'), PROBE_TIMEOUT_MS);
    socket.once('connect', () => settle('in use'));
    socket.once('error', (error: NodeJS.ErrnoException) => settle(error.code === 'ECONNREFUSED' || error.code === 'ENOENT' ? 'stale' : 'in use'));
  });
}

/** Removes the socket file if it is still the one this listener bound (a newer agent's is left alone). */
function removeOwnSocket(owned: OwnedPath): void {
  const inDirectory = `/proc/self/fd/${owned.directoryFd}/${path.basename(owned.shown)}`;
  try {
    const st = fs.lstatSync(inDirectory);
    if (st.isSocket() && st.ino === owned.inode) fs.unlinkSync(inDirectory);
  } catch {
    // Already gone.
  }
  closeQuietly(owned.directoryFd);
}

// ---- fds ----------------------------------------------------------------------

/**
 * Turns SO_PASSRIGHTS off on the listening socket (Linux 6.16+; accepted
 * sockets inherit it): no client can then send the agent an fd at all, so
 * none can make it close one whose close blocks. Older kernels keep the
 * default; there the receive path closes what arrives off the event loop.
 */
function refuseFdPassing(fd: number): void {
  native.setPassRights(fd, false);
}

/** A wait for `fd` to be readable that may be cancelled any time, also once it is over. */
export interface Wait {
  /** Resolves (never rejects): true when `fd` is readable or hung up, false when the wait was cancelled or failed. */
  readonly settled: Promise<boolean>;
  cancel(): void;
}

/**
 * Waits for `fd` to be readable on the event loop (a poll watcher, no
 * thread, no buffer): what a connection costs while it is quiet.
 */
export function waitReadable(fd: number): Wait {
  const pending: Cancellable<boolean> = native.waitReadableAsync(fd);
  return { settled: pending.then(readable, notReadable), cancel: () => pending.cancel() };
}

const readable = (): boolean => true;
const notReadable = (): boolean => false;

/**
 * A watcher of `fd`'s readiness kept across waits, for a socket waited on
 * message after message (a connection): each wait re-arms it with one
 * syscall, where {@link waitReadable} sets a watcher up and tears it down.
 * It holds its own copy of `fd`'s file open: close it with the fd.
 * @internal
 */
export function watchReadable(fd: number): NativeReadableWatch {
  return new native.ReadableWatch(fd);
}

/** Whether a connection, a message or EOF is waiting on `fd`, without waiting. */
export function readableNow(fd: number): boolean {
  return native.readableNow(fd);
}

/** Reads what the peer already sent (unread data would reset the connection before the refusal is read), then closes. */
function drainAndClose(fd: number): void {
  try {
    for (let n = 0; n < 4 && readableNow(fd); n++) {
      if (native.recvFds(fd, 0, 0, 0).status === 1) break;
    }
  } catch {
    // Reset or gone: closing is all that is left.
  }
  closeQuietly(fd);
}
