/**
 * The service manager's side doors, without libsystemd: sd_notify messages
 * (readiness, status, the fd store) to `$NOTIFY_SOCKET`, the `BARRIER=1`
 * handshake, and the fds a service is started with (`$LISTEN_FDS`), among
 * which LUO session fds are recognised.
 *
 * With `FileDescriptorStorePreserve=yes` (and systemd v261+ across a kexec)
 * a service can park its LUO session fd in the fd store with
 * `notify({ FDSTORE: 1, FDNAME: 'luo' }, [session.fd])` and get it back from
 * {@link listenFds} after the update; `Session.fromFd` wraps it.
 */
import { callSync, errnoError, errnoNumber, packageError, translateError, type LiveUpdateError } from './errors.js';
import { sendFds, sendFdsSync, MAX_FDS_PER_MESSAGE } from './fdpass.js';
import { readFdLink, SESSION_LINK_PREFIX } from './fdlink.js';
import { closeFd, native } from './native.js';
import { checkFd, invalidArgType, invalidArgValue, outOfRange } from './validate.js';

/**
 * Fields of a notification: an object (`{ READY: 1, STATUS: 'up' }`; `true`
 * is sent as 1, `false` as 0), one string of newline-separated `KEY=VALUE`
 * lines, or an array of such lines.
 */
export type NotifyFields = Readonly<Record<string, string | number | boolean>> | string | readonly string[];

/** Options of {@link notify} and {@link barrier}. */
export interface NotifyOptions {
  /** Delete `$NOTIFY_SOCKET` from `process.env` afterwards, sent or not (as libsystemd's unset_environment). */
  unsetEnvironment?: boolean;
  /**
   * Most ms to wait for the service manager, then `ETIMEDOUT`. Default 5000.
   * A manager that does not read its socket fills it, and a send then waits
   * for room: this bounds that wait (and, for a barrier, the wait for its
   * answer too).
   */
  timeout?: number;
}

/** Options of {@link barrier}. */
export type BarrierOptions = NotifyOptions;

/** What {@link notify} did. */
export type NotifyResult =
  | {
      /** The datagram was sent. */
      sent: true;
      /** The `$NOTIFY_SOCKET` address it went to. */
      socket: string;
      /** The exact bytes sent. */
      message: string;
    }
  | {
      /** Nothing was sent, as libsystemd does when there is no service manager to tell. */
      sent: false;
      /** Why: `'NOTIFY_SOCKET is not set'`. */
      reason: string;
    };

/** Longest FDNAME systemd accepts. */
export const MAX_FDNAME_LENGTH = 255;

const KEY = /^[A-Z][A-Z0-9_]*$/;

// ---- building and checking a message -------------------------------------------

function lineOf(key: string, value: unknown): string {
  if (!KEY.test(key)) throw invalidArgValue('fields', `has a key that is not an upper-case identifier (${JSON.stringify(key)})`, key);
  if (typeof value === 'boolean') return `${key}=${value ? 1 : 0}`;
  if (typeof value === 'number') return `${key}=${value}`;
  if (typeof value === 'string') {
    if (value.includes('\n')) throw invalidArgValue(`fields.${key}`, 'must not contain a newline (it ends the field)', value);
    return `${key}=${value}`;
  }
  throw invalidArgType(`fields.${key}`, 'of type string, number or boolean', value);
}

function linesOf(fields: unknown): string[] {
  if (typeof fields === 'string') return fields.split('\n');
  if (Array.isArray(fields)) {
    return fields.map((line: unknown, i) => {
      if (typeof line !== 'string') throw invalidArgType(`fields[${i}]`, 'of type string', line);
      if (line.includes('\n')) throw invalidArgValue(`fields[${i}]`, 'must be one line', line);
      return line;
    });
  }
  if (typeof fields === 'object' && fields !== null) return Object.entries(fields).map(([k, v]) => lineOf(k, v));
  throw invalidArgType('fields', 'of type object, string or Array', fields);
}

/**
 * systemd's rule for fd names (fdname_is_valid): printable ASCII, no ':'
 * (the separator of $LISTEN_FDNAMES), at most 255 characters.
 */
export function isValidFdName(name: string): boolean {
  return name.length <= MAX_FDNAME_LENGTH && /^[\x20-\x7e]*$/.test(name) && !name.includes(':');
}

/**
 * The assignments of a message. systemd reads a repeated key in different
 * ways (the first FDNAME=, FDSTORE=1 on any line), so a key may appear once.
 */
function assignments(lines: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq);
    if (out.has(key)) throw invalidArgValue('fields', `must not repeat ${key}= (the service manager would not read it as one value)`, line);
    out.set(key, line.slice(eq + 1));
  }
  return out;
}

/** Refuses what systemd would ignore or drop, before anything is sent. */
function checkSemantics(fields: Map<string, string>, fdCount: number): void {
  const name = fields.get('FDNAME');
  if (name !== undefined && !isValidFdName(name)) {
    throw invalidArgValue('fields.FDNAME', "must be printable ASCII without ':' and at most 255 characters", name);
  }
  const store = fields.get('FDSTORE') === '1';
  const barrierMsg = fields.get('BARRIER') === '1';
  if (store && fdCount === 0) throw invalidArgValue('fds', 'must not be empty with FDSTORE=1', []);
  if (barrierMsg && fdCount !== 1) throw invalidArgValue('fds', 'must be exactly the write end of a pipe with BARRIER=1 (use barrier())', fdCount);
  if (fdCount > 0 && !store && !barrierMsg) throw invalidArgValue('fds', 'are only taken with FDSTORE=1 (the service manager closes others)', fdCount);
  const remove = fields.get('FDSTOREREMOVE') === '1';
  if (remove && name === undefined) throw invalidArgValue('fields', 'need FDNAME= with FDSTOREREMOVE=1', 'FDSTOREREMOVE=1');
  // systemd removes and ignores the store request: a message does one of them.
  if (remove && store) throw invalidArgValue('fields', 'must not have both FDSTORE=1 and FDSTOREREMOVE=1', 'FDSTORE=1, FDSTOREREMOVE=1');
  if (fields.has('FDPOLL') && !store) throw invalidArgValue('fields', 'may have FDPOLL= only with FDSTORE=1', 'FDPOLL');
}

/** The datagram's text: the lines joined by '\n', checked. */
function buildMessage(fields: unknown, fds: readonly number[]): string {
  const lines = linesOf(fields);
  const message = lines.join('\n');
  if (message.length === 0) throw invalidArgValue('fields', 'must not be empty', fields);
  if (message.includes('\0')) throw invalidArgValue('fields', 'must not contain NUL characters', fields);
  checkSemantics(assignments(lines), fds.length);
  return message;
}

function checkNotifyFds(fds: unknown): number[] {
  if (fds === undefined) return [];
  if (!Array.isArray(fds)) throw invalidArgType('fds', 'an instance of Array', fds);
  if (fds.length > MAX_FDS_PER_MESSAGE) throw outOfRange('fds.length', `<= ${MAX_FDS_PER_MESSAGE}`, fds.length);
  return fds.map((fd: unknown, i) => checkFd(fd, `fds[${i}]`));
}

// ---- the socket ---------------------------------------------------------------

type NotifyOperation = 'notify' | 'barrier';

/** `$NOTIFY_SOCKET` if it is an address this package can reach: a path or an abstract `@name`. */
function notifySocket(operation: NotifyOperation): string | undefined {
  const address = process.env['NOTIFY_SOCKET'];
  if (address === undefined || address === '') return undefined;
  if (address.startsWith('/') || address.startsWith('@')) return address;
  // vsock:CID:PORT (systemd in a VM) has no AF_UNIX form.
  throw errnoError('EAFNOSUPPORT', 'connect', { operation, path: address, hint: 'it is not a Unix socket address' });
}

const NOT_SET: NotifyResult = { sent: false, reason: 'NOTIFY_SOCKET is not set' };

/** A datagram socket connected to `$NOTIFY_SOCKET`; a failure names the variable and its value. */
function connectNotify(address: string, operation: NotifyOperation): number {
  return callSync({ operation, path: address }, () => native.unixConnect(native.SOCK_DGRAM, address));
}

/** Runs `send` with a datagram socket connected to `address`, and closes it. */
async function withNotifySocket<T>(address: string, operation: NotifyOperation, send: (fd: number) => Promise<T>): Promise<T> {
  const fd = connectNotify(address, operation);
  try {
    return await send(fd);
  } finally {
    closeFd(fd, operation);
  }
}

function withNotifySocketSync<T>(address: string, operation: NotifyOperation, send: (fd: number) => T): T {
  const fd = connectNotify(address, operation);
  try {
    return send(fd);
  } finally {
    closeFd(fd, operation);
  }
}

function unsetIf(options: NotifyOptions | undefined): void {
  if (options?.unsetEnvironment === true) delete process.env['NOTIFY_SOCKET'];
}

const DEFAULT_TIMEOUT = 5000;

function checkTimeout(options: NotifyOptions | undefined): number {
  const timeout = options?.timeout ?? DEFAULT_TIMEOUT;
  if (typeof timeout !== 'number') throw invalidArgType('options.timeout', 'of type number', timeout);
  if (!Number.isInteger(timeout) || timeout < 0 || timeout > 0x7fff_ffff) throw outOfRange('options.timeout', 'an integer >= 0 and <= 2147483647', timeout);
  return timeout;
}

function isTimeout(error: unknown): boolean {
  return (error as { code?: unknown }).code === 'ETIMEDOUT';
}

/** Where a notification went, for its errors. */
interface Target {
  operation: NotifyOperation;
  socket: string;
}

function notifyTimeout(what: string, timeout: number, target: Target, cause: unknown): LiveUpdateError {
  const hint = `${what} not acknowledged within ${timeout} ms`;
  return errnoError('ETIMEDOUT', 'poll', { operation: target.operation, path: target.socket, hint, cause });
}

/** Runs `run`; a timeout becomes the error that says what was not acknowledged, any other failure is typed. */
async function naming<T>(what: string, timeout: number, target: Target, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw isTimeout(error) ? notifyTimeout(what, timeout, target, error) : translateError(error, { operation: target.operation, path: target.socket });
  }
}

function namingSync<T>(what: string, timeout: number, target: Target, run: () => T): T {
  try {
    return run();
  } catch (error) {
    throw isTimeout(error) ? notifyTimeout(what, timeout, target, error) : translateError(error, { operation: target.operation, path: target.socket });
  }
}

/** A clock for one timeout that covers several waits. */
function deadline(timeout: number): () => number {
  const end = performance.now() + timeout;
  return () => Math.max(0, Math.ceil(end - performance.now()));
}

// ---- public API -----------------------------------------------------------------

/**
 * Sends one sd_notify datagram to `$NOTIFY_SOCKET` (a path, or `@name` in
 * the abstract namespace), with `fds` attached as SCM_RIGHTS.
 *
 * Checked before anything is sent: keys (each at most once), FDNAME
 * (printable ASCII, no ':', at most 255), fds only with FDSTORE=1 (or
 * BARRIER=1), FDSTOREREMOVE=1 with FDNAME and without FDSTORE=1, FDPOLL only
 * with FDSTORE=1. Without `$NOTIFY_SOCKET` it sends nothing and resolves
 * `{ sent: false, reason }`, as libsystemd does.
 *
 * @throws NotifyTimeoutError (`ETIMEDOUT`) when the manager's socket does not
 *   take the datagram within `timeout` ms (default 5000); NotifySocketError
 *   (naming `$NOTIFY_SOCKET` and its value) when it cannot be reached.
 * @example notify({ FDSTORE: 1, FDNAME: 'luo', FDPOLL: 0 }, [session.fd])
 */
export async function notify(fields: NotifyFields, fds?: readonly number[], options?: NotifyOptions): Promise<NotifyResult> {
  try {
    const checked = checkNotifyFds(fds);
    const message = buildMessage(fields, checked);
    const timeout = checkTimeout(options);
    const socket = notifySocket('notify');
    if (socket === undefined) return NOT_SET;
    const target: Target = { operation: 'notify', socket };
    await naming('the notification', timeout, target, () => withNotifySocket(socket, 'notify', (fd) => sendFds(fd, checked, message, { timeout })));
    return { sent: true, socket, message };
  } finally {
    unsetIf(options);
  }
}

/** The synchronous form of {@link notify}: blocks for at most `timeout` ms. */
export function notifySync(fields: NotifyFields, fds?: readonly number[], options?: NotifyOptions): NotifyResult {
  try {
    const checked = checkNotifyFds(fds);
    const message = buildMessage(fields, checked);
    const timeout = checkTimeout(options);
    const socket = notifySocket('notify');
    if (socket === undefined) return NOT_SET;
    const target: Target = { operation: 'notify', socket };
    namingSync('the notification', timeout, target, () => withNotifySocketSync(socket, 'notify', (fd) => sendFdsSync(fd, checked, message, { timeout })));
    return { sent: true, socket, message };
  } finally {
    unsetIf(options);
  }
}

/**
 * Waits until the service manager has processed every notification sent
 * before it, as sd_notify_barrier does: sends `BARRIER=1` with the write end
 * of a fresh pipe, closes its own copy, and waits until the read end sees
 * EOF, which happens when the manager closes the fd it received.
 *
 * @throws NotifyTimeoutError (`ETIMEDOUT`) after `timeout` ms (default 5000),
 *   which covers both the send and the wait; NotifySocketError when
 *   `$NOTIFY_SOCKET` cannot be reached.
 */
export async function barrier(options?: BarrierOptions): Promise<NotifyResult> {
  try {
    const left = deadline(checkTimeout(options));
    const timeout = left();
    const socket = notifySocket('barrier');
    if (socket === undefined) return NOT_SET;
    const target: Target = { operation: 'barrier', socket };
    const [readEnd, writeEnd] = callSync({ operation: 'barrier' }, () => native.pipe());
    try {
      try {
        await naming('BARRIER=1', timeout, target, () => withNotifySocket(socket, 'barrier', (fd) => sendFds(fd, [writeEnd], 'BARRIER=1', { timeout: left() })));
      } finally {
        // Now only the manager holds the write end: its close is our EOF.
        closeFd(writeEnd, 'barrier');
      }
      await naming('BARRIER=1', timeout, target, () => waitForEof(readEnd, left()));
      return { sent: true, socket, message: 'BARRIER=1' };
    } finally {
      closeFd(readEnd, 'barrier');
    }
  } finally {
    unsetIf(options);
  }
}

/** Resolves when `fd` (a pipe's read end) is readable or hung up; rejects with ETIMEDOUT after `timeout` ms. */
async function waitForEof(fd: number, timeout: number): Promise<void> {
  const pending = native.waitReadableAsync(fd);
  const timer = setTimeout(() => pending.cancel(errnoNumber('ETIMEDOUT')), timeout);
  try {
    await pending;
  } finally {
    clearTimeout(timer);
  }
}

/** The synchronous form of {@link barrier}: blocks the thread for up to `timeout` ms. */
export function barrierSync(options?: BarrierOptions): NotifyResult {
  try {
    const left = deadline(checkTimeout(options));
    const timeout = left();
    const socket = notifySocket('barrier');
    if (socket === undefined) return NOT_SET;
    const target: Target = { operation: 'barrier', socket };
    const [readEnd, writeEnd] = callSync({ operation: 'barrier' }, () => native.pipe());
    try {
      try {
        namingSync('BARRIER=1', timeout, target, () => withNotifySocketSync(socket, 'barrier', (fd) => sendFdsSync(fd, [writeEnd], 'BARRIER=1', { timeout: left() })));
      } finally {
        closeFd(writeEnd, 'barrier');
      }
      namingSync('BARRIER=1', timeout, target, () => native.waitReadable(readEnd, left()));
      return { sent: true, socket, message: 'BARRIER=1' };
    } finally {
      closeFd(readEnd, 'barrier');
    }
  } finally {
    unsetIf(options);
  }
}

// ---- $LISTEN_FDS ------------------------------------------------------------------

/** The first fd the service manager passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/** Options of {@link listenFds}. */
export interface ListenFdsOptions {
  /** Delete LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES (and LISTEN_PIDFDID) from `process.env` afterwards. */
  unsetEnvironment?: boolean;
}

export { ListenFdsError } from './errors.js';

const LISTEN_VARS = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES', 'LISTEN_PIDFDID'] as const;

function listenCount(): number {
  const pid = process.env['LISTEN_PID'];
  // Meant for another process (inherited by a child): not ours to take.
  if (pid === undefined || pid.trim() !== String(process.pid)) return 0;
  const text = process.env['LISTEN_FDS'] ?? '0';
  if (!/^\d+$/.test(text.trim())) throw packageError('ERR_LIVEUPDATE_LISTEN_FDS', `LISTEN_FDS is not a count: ${JSON.stringify(text)}`, { operation: 'listenFds' });
  return Number(text.trim());
}

function listenNames(count: number): string[] {
  const text = process.env['LISTEN_FDNAMES'];
  if (text === undefined) return new Array<string>(count).fill('unknown');
  const names = text.split(':');
  if (names.length !== count) throw packageError('ERR_LIVEUPDATE_LISTEN_FDS', `LISTEN_FDNAMES has ${names.length} names for ${count} fds`, { operation: 'listenFds' });
  return names;
}

/**
 * The fds the service manager passed to this process (socket activation,
 * the fd store), by name: `LISTEN_FDNAMES`, or `'unknown'` for each when
 * unset. Only when `LISTEN_PID` is this process; otherwise an empty map.
 * Each fd (from 3 on) is set close-on-exec, as sd_listen_fds does. The
 * fds are the caller's; calling again returns the same numbers.
 *
 * Use {@link describeFd} / {@link isLuoSessionFd} to find LUO sessions among
 * them and `Session.fromFd(fd)` to wrap one.
 */
export function listenFds(options?: ListenFdsOptions): Map<string, number[]> {
  try {
    const count = listenCount();
    const names = count > 0 ? listenNames(count) : [];
    const out = new Map<string, number[]>();
    names.forEach((name, i) => {
      const fd = LISTEN_FDS_START + i;
      callSync({ operation: 'listenFds', fd }, () => native.setCloexec(fd, true));
      out.set(name, [...(out.get(name) ?? []), fd]);
    });
    return out;
  } finally {
    if (options?.unsetEnvironment === true) for (const name of LISTEN_VARS) delete process.env[name];
  }
}

/** What kind of file an fd is, from its `/proc/self/fd` link. */
export type FdKind = 'luo-session' | 'memfd' | 'socket' | 'pipe' | 'anon-inode' | 'file';

/** What {@link describeFd} learned about an fd. */
export interface FdDescription {
  /** The fd. */
  fd: number;
  /** Its kind. */
  kind: FdKind;
  /** The raw `/proc/self/fd/N` link. */
  link: string;
  /** For `'luo-session'`: the session's name. */
  sessionName?: string;
}

function kindOf(link: string): FdKind {
  if (link.startsWith(SESSION_LINK_PREFIX)) return 'luo-session';
  if (link.startsWith('/memfd:')) return 'memfd';
  if (link.startsWith('socket:[')) return 'socket';
  if (link.startsWith('pipe:[')) return 'pipe';
  if (link.startsWith('anon_inode:')) return 'anon-inode';
  return 'file';
}

/**
 * Describes an open fd by its `/proc/self/fd` link; a LUO session reads
 * `anon_inode:[luo_session] NAME`.
 *
 * @throws BadFileDescriptorError (`EBADF`) when the fd is not open.
 */
export function describeFd(fd: number): FdDescription {
  checkFd(fd);
  const link = readFdLink(fd, { operation: 'describeFd', fd });
  const kind = kindOf(link);
  if (kind !== 'luo-session') return { fd, kind, link };
  return { fd, kind, link, sessionName: link.slice(SESSION_LINK_PREFIX.length) };
}

/** Whether `fd` is open and is a LUO session (which `Session.fromFd` accepts). */
export function isLuoSessionFd(fd: number): boolean {
  checkFd(fd);
  try {
    return describeFd(fd).kind === 'luo-session';
  } catch {
    return false;
  }
}
