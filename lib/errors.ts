/**
 * The one error model. Every error this package throws or rejects with has a
 * `code`; every failure the kernel reports, from every entry point, is a
 * LiveUpdateError (or a subclass) shaped like Node's own system errors
 * (`code`, negative `errno`, `syscall`, message `CODE: text, syscall ...`)
 * and carrying the context it happened in.
 *
 * The same errno means different things in different calls (ENOENT from open
 * means "no LUO here", from RETRIEVE_FD "no such token"), so the class is
 * chosen by the pair (operation, errno) from ONE table, {@link kernelErrors}.
 * The errors the package raises itself, without a syscall, have `ERR_*` codes
 * listed in {@link packageErrors}. Every class takes the same constructor
 * arguments and one factory, {@link errorClassFor}, picks the class from
 * those two tables, so a code and its class cannot disagree: an error
 * rebuilt on the far side of the agent's socket is the one thrown here.
 * README.md's error tables are written from the two tables by
 * scripts/error-tables.mjs.
 */
import type { constants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import type { NotReadyClient, UpdateCheck } from './agent/protocol.js';
import type { KernelPreflight } from './kernel-image.js';

/** The public operation that failed; selects the error class with the errno. */
export type Operation =
  | 'load'
  | 'open'
  | 'createSession'
  | 'retrieveSession'
  | 'preserve'
  | 'retrieve'
  | 'finish'
  | 'getName'
  | 'close'
  | 'fromFd'
  | 'memfd.create'
  | 'memfd.addSeals'
  | 'memfd.getSeals'
  | 'memfd.punchHole'
  | 'kexec.load'
  | 'kexec.unload'
  | 'kexec.isLoaded'
  | 'kexec.execute'
  | 'kernel.read'
  | 'kernel.check'
  | 'sendFds'
  | 'recvFds'
  | 'socketPair'
  | 'notify'
  | 'barrier'
  | 'listenFds'
  | 'describeFd'
  | AgentOperation;

/** A request to the agent (`agent.createSession`, ...), the connection itself (`agent.connect`), or the agent's start (`agent.start`). */
export type AgentOperation =
  | 'agent.connect'
  | 'agent.hello'
  | 'agent.createSession'
  | 'agent.attach'
  | 'agent.retrieveSession'
  | 'agent.release'
  | 'agent.ready'
  | 'agent.subscribe'
  | 'agent.sessions'
  | 'agent.update'
  | 'agent.start';

/** Every operation, once: the type checker makes the list complete. */
const OPERATION_NAMES: Readonly<Record<Operation, true>> = {
  load: true,
  open: true,
  createSession: true,
  retrieveSession: true,
  preserve: true,
  retrieve: true,
  finish: true,
  getName: true,
  close: true,
  fromFd: true,
  'memfd.create': true,
  'memfd.addSeals': true,
  'memfd.getSeals': true,
  'memfd.punchHole': true,
  'kexec.load': true,
  'kexec.unload': true,
  'kexec.isLoaded': true,
  'kexec.execute': true,
  'kernel.read': true,
  'kernel.check': true,
  sendFds: true,
  recvFds: true,
  socketPair: true,
  notify: true,
  barrier: true,
  listenFds: true,
  describeFd: true,
  'agent.connect': true,
  'agent.hello': true,
  'agent.createSession': true,
  'agent.attach': true,
  'agent.retrieveSession': true,
  'agent.release': true,
  'agent.ready': true,
  'agent.subscribe': true,
  'agent.sessions': true,
  'agent.update': true,
  'agent.start': true,
};

const OPERATIONS = Object.keys(OPERATION_NAMES) as Operation[];

/** Whether `value` names an operation (what a peer claims is checked with it). @internal */
export function isOperation(value: unknown): value is Operation {
  return typeof value === 'string' && Object.hasOwn(OPERATION_NAMES, value);
}

/** What an {@link UpdateRefusedError} carries: every check made (the failed ones have `ok: false`) and the clients not ready. */
export interface UpdateRefusedDetails {
  /** The checks made, in order; empty when the update was refused before any (another update running). */
  checks: UpdateCheck[];
  /** Each client the update waited for that had not said ready when it gave up (holding sessions, or told `prepare`; `disconnected` when it left mid-prepare); empty otherwise. */
  notReady: NotReadyClient[];
  /** The kernel preflight's report, when the checks got as far as reading the target image. */
  kernel?: KernelPreflight;
}

/** What a {@link ManifestVersionError} about a newer manifest carries: the manifest's version. */
export interface ManifestVersionDetails {
  /** `[major, minor]` of the manifest the previous kernel's agent wrote. */
  version: [number, number];
}

/** What was being done when an error happened, and the fields some classes add. */
export interface ErrorContext {
  /** The public operation. */
  operation: Operation;
  /** The session's name, where one applies. */
  sessionName?: string | undefined;
  /** The token, where one applies. */
  token?: bigint | undefined;
  /** The file descriptor passed in, where one applies. */
  fd?: number | undefined;
  /** The path involved (device, kernel image, socket), where one applies. */
  path?: string | undefined;
  /** The ioctl request's name, for ioctl failures. */
  request?: string | undefined;
  /** Extra explanation appended to the message (for example from status()); a {@link LiveUpdateUnavailableError}'s `reason`. */
  hint?: string | undefined;
  /** What to do about it, where the package knows (also appended to the message). */
  fix?: string | undefined;
  /** The error this one wraps. */
  cause?: unknown;
  /** {@link FdPassError}: how many fds arrived with the message and were closed. */
  closedFds?: number | undefined;
  /** {@link MessageTruncatedError}: the message's real length in bytes. */
  length?: number | undefined;
  /** What an agent error adds ({@link UpdateRefusedDetails}, {@link ManifestVersionDetails}); each class keeps what it knows, checked. */
  details?: Readonly<Record<string, unknown>> | undefined;
}

/** The fields a native system error carries: all TypeScript reads of it. @internal */
export interface NativeSystemError {
  errno: number;
  code: string;
  syscall: string;
}

/** The cause of the typed error the addon is constructing for errorFromNative: its constructor links the two. */
let framing: Error | undefined;

/**
 * `error`'s stack as V8 writes it, over the frames of `framed`'s: the
 * header (`Name: message`, made when first read, as V8 makes it) and the
 * frame lines of `framed.stack`.
 */
function stackOver(error: object, framed: Error): string {
  const header = Error.prototype.toString.call(error);
  const stack: unknown = framed.stack;
  if (typeof stack !== 'string') return header;
  const own = Error.prototype.toString.call(framed);
  const at = stack.startsWith(`${own}\n`) ? own.length : stack.indexOf('\n    at ');
  return at < 0 ? header : header + stack.slice(at);
}

/**
 * The base class of every error this package throws for a failed kernel
 * call, and of its own errors (which have no errno).
 */
export class LiveUpdateError extends Error {
  // The fields are declared, not defined: the constructor's assignments make
  // them (in this order), where defined fields would be made twice.
  /** Node-style code: the errno's name (`EBUSY`), or `ERR_LIVEUPDATE_*` for the package's own errors. */
  declare readonly code: string;
  /** Negative errno as in Node's system errors; undefined when no syscall failed. */
  declare readonly errno: number | undefined;
  /** The syscall that failed (`open`, `ioctl`, `kexec_file_load`, ...). */
  declare readonly syscall: string | undefined;
  /** The public operation that failed. */
  declare readonly operation: Operation;
  /** The session involved, if any. */
  declare readonly sessionName: string | undefined;
  /** The token involved, if any. */
  declare readonly token: bigint | undefined;
  /** The fd passed in, if any. */
  declare readonly fd: number | undefined;
  /** The path involved, if any. */
  declare readonly path: string | undefined;
  /** What to do about it, where the package knows; undefined otherwise. */
  declare readonly fix: string | undefined;

  /**
   * @internal Every class takes these same arguments. Errors are made by
   * {@link createError} (and the helpers built on it), which picks the class
   * from the code; the constructors are public for `instanceof` only.
   */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    if (framing !== undefined && context.cause === framing) {
      CauseStack.frame(framing, this);
      framing = undefined;
    }
    this.code = code;
    this.errno = system?.errno;
    this.syscall = system?.syscall;
    this.operation = context.operation;
    this.sessionName = context.sessionName;
    this.token = context.token;
    this.fd = context.fd;
    this.path = context.path;
    this.fix = context.fix;
    this.name = new.target.name;
  }
}

/** `/dev/liveupdate` does not exist: `reason` and `fix` say why (from status()). */
export class LiveUpdateUnavailableError extends LiveUpdateError {
  /** Why LUO is unavailable, as status() diagnosed it. */
  readonly reason: string | undefined;

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    this.reason = context.hint;
  }
}
/** Another process (or this one) already has `/dev/liveupdate` open: it has one owner at a time. */
export class DeviceBusyError extends LiveUpdateError {}
/** The caller may not open the device (needs root or the device's permissions). */
export class PermissionDeniedError extends LiveUpdateError {}
/** The state handed over by the previous kernel failed to load (EIO on open). */
export class IncomingStateError extends LiveUpdateError {}
/** The path opened is not the LUO misc device (a regular file, `/dev/null`, ...). */
export class NotLiveUpdateDeviceError extends LiveUpdateError {}
/** The LiveUpdate object was closed: open the device again. */
export class DeviceClosedError extends LiveUpdateError {}
/** A live outgoing session already has that name. */
export class SessionExistsError extends LiveUpdateError {}
/** The session name does not fit the kernel's 64-byte field (NUL included). */
export class SessionNameTooLongError extends LiveUpdateError {}
/** No session of that name was preserved by the previous kernel (or it was already finished). */
export class SessionNotFoundError extends LiveUpdateError {}
/** The session was already retrieved in this kernel. */
export class SessionAlreadyRetrievedError extends LiveUpdateError {}
/** The token is already used in this session. */
export class TokenInUseError extends LiveUpdateError {}
/** The file is already preserved, in this or another session. */
export class FileAlreadyPreservedError extends LiveUpdateError {}
/** No LUO handler can preserve this kind of file (memfd is the one kind today). */
export class UnsupportedFileError extends LiveUpdateError {}
/** The file carries seals this kernel cannot preserve. */
export class UnsupportedSealsError extends LiveUpdateError {}
/** The fd is not open. */
export class BadFileDescriptorError extends LiveUpdateError {}
/** The session cannot take more files. */
export class SessionFullError extends LiveUpdateError {}
/** The file is too large to preserve. */
export class FileTooLargeError extends LiveUpdateError {}
/** The kernel ran out of memory. */
export class OutOfMemoryError extends LiveUpdateError {}
/** The incoming session has no file under that token (or it was discarded by finish). */
export class TokenNotFoundError extends LiveUpdateError {}
/**
 * The kernel could not restore the file preserved under the token. LUO keeps
 * the outcome: every later retrieve of that token fails the same way; the
 * session's other files are not affected.
 */
export class RetrieveFailedError extends LiveUpdateError {}
/**
 * A file in the session is not ready to be finished yet (code `EBUSY`).
 * Nothing was finished, the session stays incoming: call finish again later.
 */
export class FinishNotReadyError extends LiveUpdateError {}
/**
 * The session is in the wrong state for the call: preserve on an incoming
 * session, retrieve or finish on an outgoing one (kernel EINVAL), or any call
 * on a session this package already finished or closed (code
 * `ERR_LIVEUPDATE_SESSION_STATE`, refused before any syscall).
 */
export class SessionStateError extends LiveUpdateError {}
/** This kernel's LUO does not have the operation (ENOTTY). */
export class OperationNotSupportedError extends LiveUpdateError {}
/** The memfd refuses new seals: it carries F_SEAL_SEAL (created without `allowSealing`), or the fd is read-only. */
export class SealingNotAllowedError extends LiveUpdateError {}
/** The fd's file does not support seals (it is not a memfd). */
export class NotSealableError extends LiveUpdateError {}
/**
 * The memfd's pages cannot be changed now: it is preserved in an outgoing
 * session (LUO freezes a preserved memfd until the kexec, or until the
 * session is closed), or it is sealed against writes. The message says which.
 */
export class FileFrozenError extends LiveUpdateError {}
/** A kexec call failed; see the subclasses. */
export class KexecError extends LiveUpdateError {}
/** This kernel has no kexec (or no `kexec_file_load`): nothing can be loaded or executed. */
export class KexecUnsupportedError extends KexecError {}
/** `kexec.execute` found no kernel loaded. */
export class KexecNotLoadedError extends KexecError {}
/** `kexec_file_load` refused the kernel image, initrd or command line. */
export class KexecImageRejectedError extends KexecError {}
/** The kexec was refused at the last step, e.g. a preserved file failed to freeze: the live update was rolled back. */
export class LiveUpdateAbortedError extends KexecError {}
/** A kernel image cannot be read for the preflight: a link (`ELOOP`: not followed), not a regular file (`EINVAL`), missing, ... */
export class KernelImageError extends LiveUpdateError {}
/** The file is not an x86-64 bzImage `kexec_file_load` can load (no setup header, too old a boot protocol, truncated); the message says what is wrong. */
export class NotKernelImageError extends KernelImageError {}
/** A string field of an error's `details`, or undefined (details may have crossed the agent's socket). */
function detailText(context: ErrorContext, key: string): string | undefined {
  const value = context.details?.[key];
  return typeof value === 'string' ? value : undefined;
}
/** The two kernels hand over in different formats (Linux 7.2 changed it): the target would retrieve nothing. */
export class HandoverFormatError extends LiveUpdateError {
  /** The running kernel's release. */
  readonly running: string | undefined;
  /** The target kernel's release. */
  readonly target: string | undefined;

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    this.running = detailText(context, 'running');
    this.target = detailText(context, 'target');
  }
}
/** The target kernel was built without LUO (`missing` names the options off): it would retrieve nothing. */
export class KernelWithoutLiveUpdateError extends LiveUpdateError {
  /** The running kernel's release. */
  readonly running: string | undefined;
  /** The target kernel's release. */
  readonly target: string | undefined;
  /** The build options it lacks (`CONFIG_LIVEUPDATE`, ...); empty when its release predates LUO. */
  readonly missing: string[];

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    this.running = detailText(context, 'running');
    this.target = detailText(context, 'target');
    const missing = context.details?.['missing'];
    this.missing = Array.isArray(missing) ? missing.filter((m): m is string => typeof m === 'string') : [];
  }
}
/** The peer of a Unix socket closed it (EPIPE, ECONNRESET). */
export class PeerClosedError extends LiveUpdateError {}
/** `$NOTIFY_SOCKET` could not be reached; the message names the variable and its value. */
export class NotifySocketError extends LiveUpdateError {}
/** The service manager did not take a notification, or acknowledge `BARRIER=1`, in time. */
export class NotifyTimeoutError extends LiveUpdateError {}
/** The native addon is not built or cannot be loaded; `fix` says how to get it. */
export class AddonLoadError extends LiveUpdateError {}

/** Why a received message was refused, as the error's `code`. */
export type FdPassErrorCode =
  | 'ERR_LIVEUPDATE_FDS_TRUNCATED'
  | 'ERR_LIVEUPDATE_MESSAGE_TRUNCATED'
  | 'ERR_LIVEUPDATE_BAD_FRAME'
  | 'ERR_LIVEUPDATE_SHORT_FRAME'
  | 'ERR_LIVEUPDATE_OUT_OF_STEP'
  | 'ERR_LIVEUPDATE_SOCKET_BUSY';

/** A message that cannot be handed over or sent intact. Any fds that arrived with it are already closed. */
export class FdPassError extends LiveUpdateError {
  /** Which rule the message broke. */
  declare readonly code: FdPassErrorCode;
  /** How many fds arrived with it and were closed here. */
  readonly closedFds: number;

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    this.closedFds = context.closedFds ?? 0;
  }
}

/** Fds pass only over a Unix socket (`AF_UNIX`): the fd is another kind of socket (`EAFNOSUPPORT`: TCP, UDP, ...) or no socket at all (`ENOTSOCK`). A send refused so sent nothing. */
export class NotUnixSocketError extends LiveUpdateError {}

/** The kernel dropped fds (MSG_CTRUNC): more were sent than `maxFds`, or the receiver's fd limit was hit. */
export class ControlTruncatedError extends FdPassError {}

/** The message was longer than `maxBytes`; it was skipped (a frame is read to its end, so the stream stays in step). */
export class MessageTruncatedError extends FdPassError {
  /** The message's real length in bytes. */
  readonly length: number;

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    this.length = context.length ?? 0;
  }
}

/** Stream bytes that are not a frame of this package, fds in mid-frame, or EOF in mid-frame. */
export class FramingError extends FdPassError {}

/**
 * The stream stopped part way through a message in this direction (a
 * cancelled or failed send or receive, a bad frame): where the next message
 * starts is lost, so every later call in that direction is refused. Close
 * the socket.
 */
export class StreamOutOfStepError extends FdPassError {}

/** A synchronous call on a socket while a Promise call in the same direction is pending on it. */
export class SocketBusyError extends FdPassError {}

/** `$LISTEN_*` that do not add up: a count that is not a number, or names that do not match it. */
export class ListenFdsError extends LiveUpdateError {
  declare readonly code: 'ERR_LIVEUPDATE_LISTEN_FDS';
}

// ---- The agent (lib/agent) ------------------------------------------------------

/**
 * The agent's own error codes, with the errno each one is closest to (sent
 * as `errno`, so that code written for system errors still sees a number).
 */
export const AGENT_ERROR_CODES = {
  /** The policy does not allow this user this request: EACCES. */
  ERR_LIVEUPDATE_AGENT_PERMISSION: -13,
  /** Over the user's quota of sessions or metadata bytes: EDQUOT. */
  ERR_LIVEUPDATE_AGENT_QUOTA: -122,
  /** A message the protocol does not allow: EPROTO. */
  ERR_LIVEUPDATE_AGENT_PROTOCOL: -71,
  /** The agent closed the connection, or cannot reach the device: ECONNREFUSED. */
  ERR_LIVEUPDATE_AGENT_UNAVAILABLE: -111,
  /** A check failed or a client was not ready: nothing jumped. ECANCELED. */
  ERR_LIVEUPDATE_UPDATE_REFUSED: -125,
  /** A manifest of a newer major version: EOVERFLOW, a value this version cannot represent. */
  ERR_LIVEUPDATE_MANIFEST_VERSION: -75,
  /** The policy file cannot be used: EINVAL. */
  ERR_LIVEUPDATE_AGENT_POLICY: -22,
  /** The agent failed in a way it did not foresee (a bug): EIO. */
  ERR_LIVEUPDATE_AGENT_INTERNAL: -5,
  /** The agent's mode does not fit this host (standalone under systemd v261+, systemd mode without systemd or without an fd store): EOPNOTSUPP. */
  ERR_LIVEUPDATE_AGENT_MODE: -95,
} as const;

/** One of {@link AGENT_ERROR_CODES}. */
export type AgentErrorCode = keyof typeof AGENT_ERROR_CODES;

/** The base of the agent's errors: its own refusals (a code of {@link AGENT_ERROR_CODES}) and the system errors of reaching it. */
export class AgentError extends LiveUpdateError {
  /** What the agent adds; typed by each subclass (only {@link UpdateRefusedError} carries any: the others have undefined). */
  readonly details: unknown = undefined;
}
/** The policy does not let this user do that (connect, use that name, update), or the socket's mode does not let this process connect (`EACCES`). */
export class AgentPermissionError extends AgentError {
  declare readonly details: undefined;
}
/** The request would exceed the user's quota (sessions or metadata bytes). */
export class AgentQuotaError extends AgentPermissionError {}
/** A message broke the protocol (not JSON, too large, an unknown operation or version, bad arguments), or the socket is not of the agent's kind (`EPROTOTYPE`). */
export class AgentProtocolError extends AgentError {
  declare readonly details: undefined;
}
/** No agent answers at the socket (`ENOENT`, `ECONNREFUSED`), the connection was lost, or the agent cannot reach `/dev/liveupdate`. */
export class AgentUnavailableError extends AgentError {
  declare readonly details: undefined;
}
/** The agent did not answer a request within its timeout (`ETIMEDOUT`); the client closed the connection. */
export class AgentTimeoutError extends AgentUnavailableError {}
/** `update` stopped before the kexec: a check failed or a client was not ready. `details` says which. */
export class UpdateRefusedError extends AgentError {
  /** Every check made and the clients not ready (either list may be empty). */
  declare readonly details: UpdateRefusedDetails;

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    // Checked item by item: details may have crossed the agent's socket.
    const checks = context.details?.['checks'];
    const notReady = context.details?.['notReady'];
    const kernel = context.details?.['kernel'];
    const value: UpdateRefusedDetails = {
      checks: Array.isArray(checks) ? checks.filter(isUpdateCheck) : [],
      notReady: Array.isArray(notReady) ? notReady.filter(isNotReadyClient) : [],
      ...(isKernelPreflight(kernel) ? { kernel } : {}),
    };
    Object.defineProperty(this, 'details', { value, enumerable: true });
  }
}
/** The manifest handed over by the previous kernel has a newer major version (`details.version`), or cannot be read (no details): nothing was finished or discarded. */
export class ManifestVersionError extends AgentError {
  /** The newer manifest's version; undefined for a manifest that cannot be read. */
  declare readonly details: ManifestVersionDetails | undefined;

  /** @internal */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message, code, context, system);
    const version = context.details?.['version'];
    const valid = Array.isArray(version) && version.length === 2 && version.every((n) => Number.isInteger(n));
    Object.defineProperty(this, 'details', { value: valid ? { version: [version[0], version[1]] } : undefined, enumerable: true });
  }
}
/** The agent's policy file cannot be used (unknown field, unknown user name, bad value): the agent does not start. */
export class AgentPolicyError extends AgentError {
  declare readonly details: undefined;
}
/** `Agent.start` cannot listen: another agent listens on the socket, the path is not a socket (`EADDRINUSE`), or a syscall failed. */
export class AgentListenError extends AgentError {
  declare readonly details: undefined;
}
/** The agent failed in a way it did not foresee (a bug); its log has the details. */
export class AgentInternalError extends AgentError {
  declare readonly details: undefined;
}
/** The agent's mode does not fit the host: standalone where systemd v261+ is PID 1 (unless forced), systemd mode without systemd, or a unit without the fd store it needs. The agent does not start. */
export class AgentModeError extends AgentError {
  declare readonly details: undefined;
}

function isUpdateCheck(value: unknown): value is UpdateCheck {
  const check = value as Partial<UpdateCheck> | null;
  return typeof check === 'object' && check !== null && typeof check.name === 'string' && typeof check.ok === 'boolean' && (check.detail === undefined || typeof check.detail === 'string');
}

/** The shape of a kernel preflight report, as far as a reader relies on it (it may have crossed the socket). */
function isKernelPreflight(value: unknown): value is KernelPreflight {
  const report = value as Partial<KernelPreflight> | null;
  const strings = (list: unknown): boolean => Array.isArray(list) && list.every((s) => typeof s === 'string');
  return (
    typeof report === 'object' && report !== null &&
    (report.verdict === 'accept' || report.verdict === 'warn' || report.verdict === 'refuse') &&
    typeof report.running?.release === 'string' && typeof report.target?.release === 'string' &&
    strings(report.warnings) && Array.isArray(report.refusals)
  );
}

function isNotReadyClient(value: unknown): value is NotReadyClient {
  const client = value as Partial<NotReadyClient> | null;
  return typeof client === 'object' && client !== null && typeof client.id === 'number' && typeof client.pid === 'number' && typeof client.uid === 'number';
}

// ---- The tables --------------------------------------------------------------------

/** A class of this module as the tables name it: every one takes the same arguments. @internal */
export type ErrorClass = new (message: string, code: string, context: ErrorContext, system?: NativeSystemError) => LiveUpdateError;

let kernelErrorTable: readonly KernelErrorRule[] | undefined;

/** One row of {@link kernelErrors}. @internal */
export interface KernelErrorRule {
  readonly type: ErrorClass;
  /** The operations the row covers; `'*'`: any operation not matched by an earlier row. */
  readonly operations: readonly Operation[] | '*';
  /** The errno names the row covers; `'*'`: any errno not matched by an earlier row. */
  readonly codes: readonly string[] | '*';
  /** The meaning, for the README. */
  readonly meaning: string;
  /** The message text; `system` is the errno's own text, for rows that have nothing better. */
  readonly text: (context: ErrorContext, system: string) => string;
  /** What to do about it, when the caller does not say (the error's `fix`). */
  readonly fix?: string;
}

const session = (c: ErrorContext): string => (c.sessionName === undefined ? 'this session' : `session '${c.sessionName}'`);
const token = (c: ErrorContext): string => `token ${c.token ?? '?'}`;
const fdText = (c: ErrorContext): string => `fd ${c.fd ?? '?'}`;
const device = (c: ErrorContext): string => c.path ?? '/dev/liveupdate';
const agentSocket = (c: ErrorContext): string => c.path ?? "the agent's socket";
const KEXEC_OPS: readonly Operation[] = ['kexec.load', 'kexec.unload', 'kexec.isLoaded', 'kexec.execute'];
/** The requests a client makes on its connection to the agent (not the connect itself). */
const AGENT_REQUEST_OPS: readonly Operation[] = OPERATIONS.filter((op) => op.startsWith('agent.') && op !== 'agent.start' && op !== 'agent.connect');
const START_AGENT = 'start the agent (systemctl start liveupdate-agent.socket, or liveupdate agent), or name its socket (--socket PATH, options.socket)';

/**
 * The table: the first row whose operations and codes both match a failure
 * gives its class and message. Rows for one operation come before the rows
 * for any operation, and the last row catches everything. Built on the
 * first failure: a program that never fails never compiles or builds it,
 * which a fresh node under emulation pays for on every start.
 * @internal
 */
export function kernelErrors(): readonly KernelErrorRule[] {
  return (kernelErrorTable ??= [
    { type: LiveUpdateUnavailableError, operations: ['open'], codes: ['ENOENT'], meaning: 'no LUO device on this kernel; `reason` and `fix` say why and what to do (from `status()`)', text: (c) => `${device(c)} does not exist: Live Update Orchestrator unavailable on this kernel` },
    { type: DeviceBusyError, operations: ['open'], codes: ['EBUSY'], meaning: 'another process owns `/dev/liveupdate`; the message names it where `/proc` shows it', text: (c) => `another process owns ${device(c)} (it has one owner at a time)` },
    { type: PermissionDeniedError, operations: ['open'], codes: ['EACCES', 'EPERM'], meaning: 'not permitted to open the device', text: (c) => `not permitted to open ${device(c)}` },
    { type: IncomingStateError, operations: ['open'], codes: ['EIO'], meaning: 'the state handed over by the previous kernel failed to load (for example a file whose handler this kernel lacks); LUO stays unusable until the next reboot', text: () => 'the live update state handed over by the previous kernel failed to load (for example a preserved file whose kind this kernel has no handler for); LUO stays unusable until the next reboot' },
    { type: SessionExistsError, operations: ['createSession'], codes: ['EEXIST'], meaning: 'a live session has that name', text: (c) => `a live session is already named '${c.sessionName}'` },
    { type: SessionNameTooLongError, operations: ['createSession', 'retrieveSession'], codes: ['ENAMETOOLONG'], meaning: 'the name does not fit the kernel\'s 64-byte field (63 bytes and a NUL)', text: (c) => `session name '${c.sessionName}' is longer than 63 bytes` },
    { type: SessionNotFoundError, operations: ['retrieveSession'], codes: ['ENOENT'], meaning: 'no preserved session of that name', text: (c) => `no preserved session named '${c.sessionName}'` },
    { type: SessionAlreadyRetrievedError, operations: ['retrieveSession'], codes: ['EINVAL'], meaning: 'that session was already retrieved', text: (c) => `session '${c.sessionName}' was already retrieved` },
    { type: TokenInUseError, operations: ['preserve'], codes: ['EEXIST'], meaning: 'token already used in this session', text: (c) => `${token(c)} is already used in ${session(c)}` },
    { type: FileAlreadyPreservedError, operations: ['preserve'], codes: ['EBUSY'], meaning: 'that file is already preserved (in any session)', text: (c) => `the file of ${fdText(c)} is already preserved (in this or another session)` },
    { type: UnsupportedFileError, operations: ['preserve'], codes: ['ENOENT'], meaning: 'this kind of file cannot be preserved', text: (c) => `the file of ${fdText(c)} is of a kind this kernel cannot preserve` },
    { type: UnsupportedSealsError, operations: ['preserve'], codes: ['EOPNOTSUPP'], meaning: 'the file carries seals this kernel cannot preserve', text: (c) => `the file of ${fdText(c)} carries seals this kernel cannot preserve` },
    { type: SessionFullError, operations: ['preserve'], codes: ['ENOSPC'], meaning: 'session full', text: (c) => `${session(c)} cannot take more files` },
    { type: FileTooLargeError, operations: ['preserve'], codes: ['EFBIG'], meaning: 'file too large', text: (c) => `the file of ${fdText(c)} is too large to preserve` },
    { type: SessionStateError, operations: ['preserve'], codes: ['EINVAL'], meaning: 'preserve on an incoming session', text: (c) => `cannot preserve into ${session(c)}: it is an incoming session` },
    { type: TokenNotFoundError, operations: ['retrieve'], codes: ['ENOENT'], meaning: 'no file under that token', text: (c) => `${session(c)} has no file under ${token(c)}` },
    { type: SessionStateError, operations: ['retrieve'], codes: ['EINVAL'], meaning: 'retrieve on an outgoing session', text: (c) => `cannot retrieve from ${session(c)}: it is an outgoing session` },
    { type: SessionStateError, operations: ['finish'], codes: ['EINVAL'], meaning: 'finish on an outgoing session', text: (c) => `cannot finish ${session(c)}: it is an outgoing session` },
    { type: FinishNotReadyError, operations: ['finish'], codes: ['EBUSY'], meaning: 'a file is not ready to finish (its handler said no); nothing was finished: retry later', text: (c) => `a file in ${session(c)} is not ready to finish; nothing was finished: retry later` },
    { type: SealingNotAllowedError, operations: ['memfd.addSeals'], codes: ['EPERM'], meaning: 'the memfd carries `SEAL_SEAL` (created without `allowSealing`), or the fd is read-only', text: (c) => `the file of ${fdText(c)} accepts no new seals` },
    { type: NotSealableError, operations: ['memfd.addSeals', 'memfd.getSeals'], codes: ['EINVAL'], meaning: 'the file is not a memfd (it has no seals)', text: (c) => `the file of ${fdText(c)} does not support seals (it is not a memfd)` },
    { type: FileFrozenError, operations: ['memfd.punchHole'], codes: ['EPERM'], meaning: 'the memfd is preserved in an outgoing session (frozen until the kexec), or sealed against writes (`SEAL_WRITE`, `SEAL_FUTURE_WRITE`); the message says which', text: (c) => `the pages of the file of ${fdText(c)} are frozen: no hole can be punched` },
    { type: BadFileDescriptorError, operations: ['memfd.punchHole'], codes: ['EBADF'], meaning: 'the fd is not open, or not open for writing', text: (c) => `${fdText(c)} is not open for writing` },
    { type: KexecUnsupportedError, operations: KEXEC_OPS, codes: ['ENOSYS'], meaning: 'this kernel has no kexec (`CONFIG_KEXEC_CORE`), or no `kexec_file_load` (`CONFIG_KEXEC_FILE`)', text: (c) => (c.operation === 'kexec.execute' ? 'this kernel has no kexec (built without CONFIG_KEXEC_CORE): it cannot jump to another kernel' : 'this kernel has no kexec_file_load (built without CONFIG_KEXEC_FILE)') },
    { type: KexecNotLoadedError, operations: ['kexec.execute'], codes: ['EINVAL'], meaning: 'nothing loaded', text: () => 'no kernel is loaded (call kexec.load first)' },
    { type: KexecError, operations: ['kexec.execute'], codes: ['EPERM'], meaning: 'not permitted (needs `CAP_SYS_BOOT`)', text: () => 'not permitted to reboot (needs CAP_SYS_BOOT)' },
    { type: KexecError, operations: ['kexec.execute'], codes: ['EBUSY'], meaning: 'another kexec is in progress', text: () => 'another kexec is in progress' },
    { type: LiveUpdateAbortedError, operations: ['kexec.execute'], codes: '*', meaning: 'the kernel refused the jump and rolled the live update back (a preserved file failed to freeze)', text: () => 'the kernel refused the kexec and rolled the live update back (a preserved file may have failed to freeze)' },
    { type: KexecError, operations: ['kexec.load', 'kexec.unload'], codes: ['EPERM'], meaning: 'not permitted (needs `CAP_SYS_BOOT`, and `kexec_load_disabled` 0)', text: () => 'not permitted to load a kernel (needs CAP_SYS_BOOT, and kexec_load_disabled must be 0)' },
    { type: KexecError, operations: ['kexec.load'], codes: ['ENOENT'], meaning: 'the kernel or initrd file does not exist', text: (c) => `${c.path ?? 'the kernel or initrd'} does not exist` },
    { type: KexecImageRejectedError, operations: ['kexec.load'], codes: '*', meaning: 'the kernel refused the image, initrd or command line (`ENOEXEC`, `EINVAL`, `EKEYREJECTED`, ...)', text: () => 'the kernel refused the image, initrd or command line' },
    { type: KernelImageError, operations: ['kernel.read'], codes: ['ELOOP'], meaning: 'the kernel image is a symbolic link: not followed (the agent runs as root); name the file itself', text: (c) => `${c.path ?? 'the kernel image'} is a symbolic link, which is not followed: name the file itself` },
    { type: KernelImageError, operations: ['kernel.read'], codes: ['EINVAL'], meaning: 'the kernel image is not a regular file', text: (c) => `${c.path ?? 'the kernel image'} is not a regular file` },
    { type: KernelImageError, operations: ['kernel.read'], codes: '*', meaning: 'the kernel image cannot be read (`ENOENT`, `EACCES`, ...)', text: (c, system) => `cannot read ${c.path ?? 'the kernel image'}: ${system}` },
    { type: SessionNotFoundError, operations: ['agent.attach', 'agent.retrieveSession', 'agent.release'], codes: ['ENOENT'], meaning: "the agent has no session of yours by that name (another user's cannot even be named)", text: (c) => `you have no session named '${c.sessionName}'` },
    { type: AgentUnavailableError, operations: ['agent.connect'], codes: ['ENOENT'], meaning: 'no agent: its socket does not exist; `fix` says how to start one', text: (c) => `no agent: ${agentSocket(c)} does not exist`, fix: START_AGENT },
    { type: AgentUnavailableError, operations: ['agent.connect'], codes: ['ECONNREFUSED'], meaning: 'nobody listens at the socket (left by an agent that stopped, or not a socket)', text: (c) => `no agent listens at ${agentSocket(c)} (left by an agent that stopped, or not a socket)`, fix: START_AGENT },
    { type: AgentPermissionError, operations: ['agent.connect'], codes: ['EACCES', 'EPERM'], meaning: "the socket's mode (or a directory on its path) does not let this process connect", text: (c) => `not permitted to connect to ${agentSocket(c)}`, fix: "the socket must be writable by you and its directories searchable (the agent makes it 0666; a systemd socket unit needs SocketMode=0666); the agent's policy then decides who is served" },
    { type: AgentProtocolError, operations: ['agent.connect'], codes: ['EPROTOTYPE'], meaning: "the socket is of another type (stream, datagram): not the agent's `SOCK_SEQPACKET` socket", text: (c) => `${agentSocket(c)} is a socket of another type, not the agent's SOCK_SEQPACKET socket`, fix: "name the agent's socket (--socket PATH, options.socket); a systemd socket unit needs ListenSequentialPacket=" },
    { type: AgentUnavailableError, operations: ['agent.connect'], codes: '*', meaning: "any other failure to connect (`ENOTDIR`, `ENAMETOOLONG`, `EAGAIN`: the agent's backlog is full, ...)", text: (c, system) => `cannot connect to the agent at ${agentSocket(c)}: ${system}`, fix: START_AGENT },
    { type: AgentTimeoutError, operations: AGENT_REQUEST_OPS, codes: ['ETIMEDOUT'], meaning: "the agent did not answer within the request's timeout; the client closed the connection", text: (c) => `the agent at ${agentSocket(c)} did not answer ${c.operation} in time; the connection is closed`, fix: 'see whether the agent is stuck (its log, systemctl status liveupdate-agent); the timeoutMs option sets the limit' },
    { type: AgentUnavailableError, operations: AGENT_REQUEST_OPS, codes: ['EPIPE', 'ECONNRESET', 'ENOTCONN'], meaning: 'the connection to the agent was lost', text: (c) => `the connection to the agent at ${agentSocket(c)} was lost`, fix: 'connect again (an agent that restarted still has your sessions: attach to them)' },
    { type: AgentListenError, operations: ['agent.start'], codes: '*', meaning: 'the agent cannot listen: another agent listens on the socket, or the path is not a socket (`EADDRINUSE`), or a syscall failed', text: (c, system) => `the agent cannot listen at ${agentSocket(c)}: ${system}` },
    { type: NotUnixSocketError, operations: ['sendFds', 'recvFds'], codes: ['EAFNOSUPPORT', 'ENOTSOCK'], meaning: 'the fd is not a Unix socket (TCP, UDP, a pipe, a file): fds pass over `AF_UNIX` sockets only; a send refused so sent nothing', text: (c) => `${fdText(c)} is not a Unix socket: fds pass over AF_UNIX sockets only` },
    { type: PeerClosedError, operations: ['sendFds', 'recvFds'], codes: ['EPIPE', 'ECONNRESET'], meaning: 'the peer closed the socket', text: (c) => `the peer closed the socket (${fdText(c)})` },
    { type: NotifyTimeoutError, operations: ['notify', 'barrier'], codes: ['ETIMEDOUT'], meaning: 'the service manager did not take the notification, or acknowledge `BARRIER=1`, within `timeout`', text: (c) => `the service manager at NOTIFY_SOCKET=${c.path ?? ''} did not answer in time` },
    { type: NotifySocketError, operations: ['notify', 'barrier'], codes: '*', meaning: 'cannot reach `$NOTIFY_SOCKET`; the message names its value', text: (c, system) => `cannot send to NOTIFY_SOCKET=${c.path ?? ''}: ${system}` },
    { type: OperationNotSupportedError, operations: '*', codes: ['ENOTTY'], meaning: 'this kernel\'s LUO lacks the operation', text: (c) => `this kernel's Live Update Orchestrator lacks ${c.request ?? c.operation}` },
    { type: OutOfMemoryError, operations: '*', codes: ['ENOMEM'], meaning: 'out of memory', text: (c) => `the kernel ran out of memory during ${c.operation}` },
    { type: BadFileDescriptorError, operations: '*', codes: ['EBADF'], meaning: 'not an open fd', text: (c) => `${fdText(c)} is not an open file descriptor` },
    { type: KexecError, operations: KEXEC_OPS, codes: '*', meaning: 'any other kexec failure', text: (c, system) => `${c.operation} failed: ${system}` },
    { type: RetrieveFailedError, operations: ['retrieve'], codes: '*', meaning: 'the kernel could not restore the file (its handler\'s retrieve failed); every retrieve of that token fails the same way', text: (c, system) => `the kernel could not restore the file under ${token(c)} of ${session(c)} (${system}); every retrieve of this token will fail the same way` },
    { type: LiveUpdateError, operations: '*', codes: '*', meaning: 'any other failure: the errno\'s own text', text: (c, system) => `${c.operation} failed: ${system}` },
  ]);
}

let packageErrorTable: readonly PackageErrorRule[] | undefined;

/** One row of {@link packageErrors}. @internal */
export interface PackageErrorRule {
  readonly code: string;
  readonly type: ErrorClass | TypeErrorConstructor | RangeErrorConstructor;
  /** When it is thrown, for the README. */
  readonly meaning: string;
}

/**
 * The package's own errors: refused before (or instead of) a syscall, so
 * they have no errno (the agent's codes have the errno of
 * {@link AGENT_ERROR_CODES}). Argument errors are Node's own
 * TypeError/RangeError with Node's codes. Each code has one row.
 * @internal
 */
export function packageErrors(): readonly PackageErrorRule[] {
  return (packageErrorTable ??= [
    { code: 'ERR_INVALID_ARG_TYPE', type: TypeError, meaning: 'an argument has the wrong type, before any syscall' },
    { code: 'ERR_INVALID_ARG_VALUE', type: TypeError, meaning: "an argument's value is refused (a name with NUL, an fd that is not a LUO session for `Session.fromFd`), before any syscall" },
    { code: 'ERR_OUT_OF_RANGE', type: RangeError, meaning: 'a number out of range (a token, an fd, a count), before any syscall' },
    { code: 'ERR_LIVEUPDATE_SESSION_STATE', type: SessionStateError, meaning: 'a call on a session already finished or closed, or `closeSync()` while calls run' },
    { code: 'ERR_LIVEUPDATE_DEVICE_CLOSED', type: DeviceClosedError, meaning: 'a call on a `LiveUpdate` already closed' },
    { code: 'ERR_LIVEUPDATE_NOT_LUO_DEVICE', type: NotLiveUpdateDeviceError, meaning: '`open()` of a path that is not the `liveupdate` misc device (the fd is closed again)' },
    { code: 'ERR_LIVEUPDATE_KEXEC_RETURNED', type: KexecError, meaning: 'the kexec call returned without an error (it never should)' },
    { code: 'ERR_LIVEUPDATE_FDS_TRUNCATED', type: ControlTruncatedError, meaning: 'more fds than `maxFds` (the kernel sets `MSG_CTRUNC`), or the receiver hit its fd limit' },
    { code: 'ERR_LIVEUPDATE_MESSAGE_TRUNCATED', type: MessageTruncatedError, meaning: 'the message is longer than `maxBytes` (default 64 KiB); `error.length` is its size' },
    { code: 'ERR_LIVEUPDATE_BAD_FRAME', type: FramingError, meaning: 'stream bytes that are not a frame, or fds in mid-frame' },
    { code: 'ERR_LIVEUPDATE_SHORT_FRAME', type: FramingError, meaning: 'EOF in mid-frame' },
    { code: 'ERR_LIVEUPDATE_OUT_OF_STEP', type: StreamOutOfStepError, meaning: 'an earlier send or receive on this stream stopped mid-message; every later call in that direction is refused: close the socket' },
    { code: 'ERR_LIVEUPDATE_SOCKET_BUSY', type: SocketBusyError, meaning: 'a synchronous call while a Promise call in the same direction is pending on the socket' },
    { code: 'ERR_LIVEUPDATE_LISTEN_FDS', type: ListenFdsError, meaning: '`$LISTEN_FDS`/`$LISTEN_FDNAMES` that do not add up' },
    { code: 'ERR_LIVEUPDATE_ADDON_NOT_LOADED', type: AddonLoadError, meaning: 'the native addon is not built or does not load, or was built from other sources than the JavaScript (a stale prebuild: the message names the file and both source digests); `fix` says how (approve the install script, or `npm rebuild liveupdate`, with `--build-from-source` for a stale build)' },
    { code: 'ERR_LIVEUPDATE_NOT_BZIMAGE', type: NotKernelImageError, meaning: 'the kernel image is not an x86-64 bzImage `kexec_file_load` can load (no `HdrS` setup header, boot protocol before 2.12, truncated); found before any kexec syscall' },
    { code: 'ERR_LIVEUPDATE_HANDOVER_FORMAT', type: HandoverFormatError, meaning: 'the running and the target kernel hand over in different formats (across Linux 7.2\'s change): nothing would be retrieved; `running` and `target` name the releases' },
    { code: 'ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO', type: KernelWithoutLiveUpdateError, meaning: "the target kernel's build config lacks LUO (`missing` names the options): nothing would be retrieved" },
    { code: 'ERR_LIVEUPDATE_AGENT_PERMISSION', type: AgentPermissionError, meaning: "the agent's policy does not let this user connect or update (errno -13)" },
    { code: 'ERR_LIVEUPDATE_AGENT_QUOTA', type: AgentQuotaError, meaning: "an agent request over the user's quota: sessions, metadata bytes (errno -122)" },
    { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL', type: AgentProtocolError, meaning: 'a message to or from the agent broke its protocol (AGENT-PROTOCOL.md): not JSON, too large (a reply over 65536 bytes says its size), bad fields; the agent drops that connection (errno -71)' },
    { code: 'ERR_LIVEUPDATE_AGENT_UNAVAILABLE', type: AgentUnavailableError, meaning: 'the agent closed the connection, or cannot use `/dev/liveupdate` (errno -111); failures to reach it have the system codes above' },
    { code: 'ERR_LIVEUPDATE_UPDATE_REFUSED', type: UpdateRefusedError, meaning: '`update` stopped before the kexec: `details.checks` and `details.notReady` name the failed checks and the clients not ready (errno -125)' },
    { code: 'ERR_LIVEUPDATE_MANIFEST_VERSION', type: ManifestVersionError, meaning: "the previous kernel's agent manifest is of a newer major version (or unreadable): nothing was finished (errno -75)" },
    { code: 'ERR_LIVEUPDATE_AGENT_POLICY', type: AgentPolicyError, meaning: "the agent's policy file cannot be used; the message names the field (errno -22)" },
    { code: 'ERR_LIVEUPDATE_AGENT_INTERNAL', type: AgentInternalError, meaning: "the agent failed in a way it did not foresee (a bug): the message says what, the agent's log more (errno -5)" },
    { code: 'ERR_LIVEUPDATE_AGENT_MODE', type: AgentModeError, meaning: "the agent's mode does not fit the host: standalone under systemd v261+ without --force, systemd mode without systemd as PID 1 or without the unit's fd store (errno -95)" },
  ]);
}

/** The package codes that are Node's argument errors, not classes of this module. */
type ArgumentErrorClass = TypeErrorConstructor | RangeErrorConstructor;

let packageCodes: ReadonlyMap<string, PackageErrorRule> | undefined;

/** The row of {@link packageErrors} for a package code, if it is one. */
function packageRule(code: string): PackageErrorRule | undefined {
  packageCodes ??= new Map(packageErrors().map((r) => [r.code, r]));
  return packageCodes.get(code);
}

/** Node's errno table, read once: util.getSystemErrorMap() builds a new Map on every call. */
let systemErrors: ReadonlyMap<number, [string, string]> | undefined;

/** Node's name and text of `errno` (negative), `['ENOENT', 'no such file or directory']`, if its table has it. */
function knownErrno(errno: number): readonly [code: string, text: string] | undefined {
  systemErrors ??= getSystemErrorMap();
  return systemErrors.get(errno);
}

/** The errno's own text ("no such file or directory"), from Node's table, without reading any message. */
function systemText(system: NativeSystemError): string {
  return knownErrno(system.errno)?.[1] ?? system.code;
}

function covers<T extends string>(list: readonly T[] | '*', value: T): boolean {
  return list === '*' || list.includes(value);
}

/**
 * The rows already looked up, by operation then code: the table is fixed,
 * a search of it is not free, and two lookups of the (interned) names cost
 * less than one of a key built per failure.
 */
const ruleFound = new Map<string, Map<string, KernelErrorRule>>();
let rulesCached = 0;

/** The row of {@link kernelErrors} for a failure. @internal */
export function kernelErrorRule(operation: Operation, code: string): KernelErrorRule {
  let byCode = ruleFound.get(operation);
  let rule = byCode?.get(code);
  if (rule === undefined) {
    // The last row matches everything; `??` only satisfies the type checker.
    const table = kernelErrors();
    rule = table.find((r) => covers(r.operations, operation) && covers(r.codes, code)) ?? (table[table.length - 1] as KernelErrorRule);
    // Codes come from the kernel (a bounded set) or a peer: the cache holds known errno names only.
    if (code.length <= 32 && rulesCached < 4096 && isOperation(operation)) {
      if (byCode === undefined) ruleFound.set(operation, (byCode = new Map()));
      byCode.set(code, rule);
      rulesCached++;
    }
  }
  return rule;
}

/**
 * THE factory's choice: the class of an error with `code` in `operation`.
 * A package code (`ERR_*`) has its row of {@link packageErrors}; an errno
 * name the row of {@link kernelErrors} for (operation, errno); an `ERR_*`
 * code this version does not know (from a newer agent) is a plain
 * LiveUpdateError.
 * @internal
 */
export function errorClassFor(code: string, operation: Operation): ErrorClass | ArgumentErrorClass {
  const known = packageRule(code);
  if (known !== undefined) return known.type;
  if (code.startsWith('ERR_')) return LiveUpdateError;
  return kernelErrorRule(operation, code).type;
}

/**
 * Makes the error `code` stands for, of the class {@link errorClassFor}
 * gives: the one way errors are made, here and when the agent client
 * rebuilds one that crossed the socket. An argument code gives Node's
 * TypeError/RangeError with `code` set.
 * @internal
 */
export function createError(code: string, message: string, context: ErrorContext, system?: NativeSystemError): Error & { code: string } {
  const type = errorClassFor(code, context.operation);
  if (type === TypeError || type === RangeError) {
    return Object.assign(new type(message, context.cause === undefined ? undefined : { cause: context.cause }), { code });
  }
  return new (type as ErrorClass)(message, code, context, system);
}

/** Whether `error` has the shape the native layer gives a failed syscall. @internal */
export function isNativeSystemError(error: unknown): error is NativeSystemError & Error {
  return (
    error instanceof Error &&
    !(error instanceof LiveUpdateError) &&
    typeof (error as Partial<NativeSystemError>).errno === 'number' &&
    typeof (error as Partial<NativeSystemError>).code === 'string' &&
    typeof (error as Partial<NativeSystemError>).syscall === 'string'
  );
}

/** `text` as a sentence of its own: a capital first (a hint follows a full stop in a message). */
function sentence(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The typed error for a failed syscall `{ errno, code, syscall }` in `context`. @internal */
export function kernelError(system: NativeSystemError, context: ErrorContext): LiveUpdateError {
  return typedKernelError(system, context, context.cause);
}

/**
 * The arguments of a typed error's construction: its class (undefined for
 * a package code: {@link createError} chooses), then what every class takes.
 */
type ErrorPlan = [type: ErrorClass | undefined, message: string, code: string, context: ErrorContext, system: NativeSystemError];

/**
 * What {@link kernelError} makes, with its cause given apart: the context
 * copied once (the row's fix and the cause added), and the class taken
 * from the row already found (what createError chooses for an errno name).
 */
function kernelErrorPlan(system: NativeSystemError, context: ErrorContext, cause: unknown): ErrorPlan {
  const { errno, code, syscall } = system;
  const rule = kernelErrorRule(context.operation, code);
  // Every field written out: one hidden class for all, where a spread's copy follows each context's.
  const fixed: ErrorContext = {
    operation: context.operation,
    sessionName: context.sessionName,
    token: context.token,
    fd: context.fd,
    path: context.path,
    request: context.request,
    hint: context.hint,
    fix: context.fix ?? rule.fix,
    cause,
    closedFds: context.closedFds,
    length: context.length,
    details: context.details,
  };
  let message = `${code}: ${rule.text(context, systemText(system))}, ${syscall}`;
  if (context.request !== undefined) message += ` ${context.request}`;
  else if (context.path !== undefined) message += ` '${context.path}'`;
  if (context.hint !== undefined) message += `. ${sentence(context.hint)}`;
  if (fixed.fix !== undefined) message += `. Fix: ${fixed.fix}`;
  // Every package code starts with ERR_ (errors.test.ts holds the table to it): no table lookup for a kernel errno.
  const type = code.startsWith('ERR_') ? undefined : rule.type;
  return [type, message, code, fixed, { errno, code, syscall }];
}

/** {@link kernelError} with its cause given apart. */
function typedKernelError(system: NativeSystemError, context: ErrorContext, cause: unknown): LiveUpdateError {
  const [type, message, code, fixed, own] = kernelErrorPlan(system, context, cause);
  return type === undefined ? (createError(code, message, fixed, own) as LiveUpdateError) : new type(message, code, fixed, own);
}

/**
 * The typed error for errno `code` (`'EADDRINUSE'`) as if `syscall` had
 * failed with it: for a refusal whose errno is the truth without a failed
 * call (the agent's "another agent listens there": what bind would say).
 * @internal
 */
export function errnoError(code: keyof typeof constants.errno, syscall: string, context: ErrorContext): LiveUpdateError {
  return kernelError({ errno: -errnoNumber(code), code, syscall }, context);
}

/**
 * The number of errno `code` (`'ETIMEDOUT'`). node:os is loaded here, not
 * with this module: opening the device and starting the agent never need it.
 * @internal
 */
export function errnoNumber(code: keyof typeof constants.errno): number {
  return (require('node:os') as typeof import('node:os')).constants.errno[code];
}

/**
 * Turns a system error from the native layer (or from `node:fs`) into the
 * typed error for this operation, keeping the original as `cause`. Errors
 * that are not system errors (a TypeError, an error already typed) pass
 * through.
 * @internal
 */
export function translateError(error: unknown, context: ErrorContext): unknown {
  if (!isNativeSystemError(error)) return error;
  return typedKernelError(error, context, error);
}

/**
 * One of the package's own errors (an `ERR_LIVEUPDATE_*` code of
 * {@link packageErrors}): message `CODE: text`, plus `. Fix: ...` when the
 * context has a fix; the agent's codes carry their errno and syscall `agent`.
 * @internal
 */
export function packageError(code: string, text: string, context: ErrorContext): LiveUpdateError {
  const fix = context.fix !== undefined ? `. Fix: ${context.fix}` : '';
  const errno = (AGENT_ERROR_CODES as Readonly<Record<string, number>>)[code];
  const system = errno === undefined ? undefined : { errno, code, syscall: 'agent' };
  return createError(code, `${code}: ${text}${fix}`, context, system) as LiveUpdateError;
}

/** A refusal by this package before any syscall, because of the session's state. @internal */
export function sessionStateError(context: ErrorContext, why: string): SessionStateError {
  return packageError('ERR_LIVEUPDATE_SESSION_STATE', why, context) as SessionStateError;
}

/**
 * An agent refusal: message `CODE: text`, the code's errno, syscall
 * `agent`, and `details` (an update's checks and clients not ready) when
 * there are some. @internal
 */
export function agentError(code: AgentErrorCode, text: string, context: ErrorContext, details?: Readonly<Record<string, unknown>>): AgentError {
  return packageError(code, text, details === undefined ? context : { ...context, details }) as AgentError;
}

/** Error.prepareStackTrace as node set it: under a program's own, stacks are its text, and errors are made as before. */
const nodePrepareStackTrace = Error.prepareStackTrace;

/** Whether stacks are node's own text, and Error.stackTraceLimit can be set (frozen intrinsics forbid it): errorFromNative's conditions. */
function stacksAsNodeWrites(): boolean {
  return Error.prepareStackTrace === nodePrepareStackTrace && Object.getOwnPropertyDescriptor(Error, 'stackTraceLimit')?.writable === true;
}

/** The context of the synchronous native call running ({@link callSync}, {@link callNative}), for the errors the addon makes during it. */
let calling: ErrorContext | undefined;

/** {@link nativeCallState}'s slots (native/napi_util.h, CallStateSlot). */
const ARMED = 0;
const FAILURE = 1;

/**
 * What {@link callNative} shares with the addon (given with the factory,
 * native.setErrorFactory, as nativeCallState): `ARMED`, set just before the
 * call, makes the addon's synchronous function report a failure of its
 * syscall in `FAILURE` (`index << 12 | errno`, the syscall's index in
 * {@link reportedSyscalls}) and return, instead of making and throwing an
 * error.
 */
// Over an ArrayBuffer of its own: its memory is off V8's heap, so the address the addon keeps stays valid.
const callState = new Int32Array(new ArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT));

/** The syscalls the addon has reported failures of, by the index it gives them (it adds each on first use). */
const reportedSyscalls: string[] = [];

// Exported under other names, so that this module's own uses read its
// constants, not properties of its CommonJS exports (a failing call's
// functions run in the interpreter: a call that always throws never returns
// often enough to be optimized, and each property load there is generic).
export { callState as nativeCallState, reportedSyscalls as nativeSyscalls };

/**
 * Runs a synchronous native call, translating its failure. @internal
 */
export function callSync<T>(context: ErrorContext, call: () => T): T {
  const outer = calling;
  calling = context;
  try {
    return call();
  } catch (error) {
    throw translateError(error, context);
  } finally {
    calling = outer;
  }
}

/**
 * {@link callSync} of one function of the addon's, `fn(...args)`, at the
 * price of node's own errors: `fn` reports a failed syscall here instead
 * of throwing, and the typed error is made and thrown once, from
 * JavaScript. `fn` must be the binding's function itself: a JavaScript
 * function between would see the addon return undefined where it threw.
 * @internal
 */
export function callNative<A extends unknown[], R>(context: ErrorContext, fn: (...args: A) => R, ...args: A): R {
  const outer = arm(context);
  let result: R;
  try {
    result = fn(...args);
  } catch (error) {
    disarm(outer);
    throw translateError(error, context);
  }
  const failure = disarm(outer);
  if (failure === 0) return result;
  const error = reportedError(failure, context);
  // Captured here: the walk to the frames kept starts at this frame, not in
  // reportedError's (optimized, and so costly to walk).
  Error.captureStackTrace(error, callNative);
  throw error;
}

// callNative's arming and disarming (with the taking of the failure) are
// functions of their own, so that its failure is reached early in its
// bytecode: where a frame of baseline (Sparkplug) code is, V8 finds by
// reading the function's bytecode from its start up to the frame's call,
// and each walk of the stack for a failure (the capture, the thrower's
// position, the unwinding to a catch) reads callNative's once. A function
// called as often as callNative is runs as baseline code once a failure has
// deoptimized it.

/** Sets `context` as the one {@link callNative} runs in, and arms the addon's next call; returns the context it replaced. */
function arm(context: ErrorContext): ErrorContext | undefined {
  const outer = calling;
  calling = context;
  callState[ARMED] = 1;
  return outer;
}

/** Undoes {@link arm}, and takes the failure the addon reported (0 for none), leaving the slot clear for the next call. */
function disarm(outer: ErrorContext | undefined): number {
  calling = outer;
  callState[ARMED] = 0;
  const failure = callState[FAILURE]!;
  callState[FAILURE] = 0;
  return failure;
}

/**
 * The typed error for a failure the addon reported to {@link callNative}:
 * the one its factory would have planned. Made as node makes its own
 * errors: constructed without a stack capture (a limit that is not a
 * number), for callNative to capture once, below itself (the public
 * function's frame first, then the user's). Its cause, the system error,
 * shows the same frames under its own header.
 */
function reportedError(failure: number, context: ErrorContext): LiveUpdateError {
  const errno = -(failure & 0xfff);
  // The addon reports only errnos libuv names (node's table is libuv's), of syscalls it named.
  const syscall = reportedSyscalls[failure >>> 12] ?? '';
  const [code, text] = errnoNames(errno);
  const system = { errno, code, syscall };
  const message = `${code}: ${text}, ${syscall}`;
  let error: LiveUpdateError;
  if (stacksAsNodeWrites()) {
    const cause = uncapturedCause(message, system);
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = undefined as unknown as number;
    try {
      error = typedKernelError(system, context, cause);
    } finally {
      Error.stackTraceLimit = limit;
    }
    CauseStack.frame(cause, error);
  } else {
    error = typedKernelError(system, context, capturedCause(message, system));
  }
  return error;
}

/** {@link knownErrno}, or a name and text made of the number for one node does not know. */
function errnoNames(errno: number): readonly [code: string, text: string] {
  return knownErrno(errno) ?? [`E${-errno}`, `errno ${-errno}`];
}

/**
 * The system error the addon makes when `syscall` fails with `errno`
 * (negative), for a failure it reported as data (a batch's). @internal
 */
export function systemErrorOf(errno: number, syscall: string): Error & NativeSystemError {
  const [code, text] = errnoNames(errno);
  return Object.assign(new Error(`${code}: ${text}, ${syscall}`), { errno, code, syscall });
}

/** The system error as the addon makes it, its own stack captured below {@link callNative}: under a program's own Error.prepareStackTrace, or a frozen Error.stackTraceLimit. */
function capturedCause(message: string, system: NativeSystemError): Error & NativeSystemError {
  const cause = new Error(message) as Error & NativeSystemError;
  Error.captureStackTrace(cause, callNative);
  cause.errno = system.errno;
  cause.code = system.code;
  cause.syscall = system.syscall;
  return cause;
}

/**
 * The addon's error factory (native.setErrorFactory), asked for every
 * system error it makes. During a {@link callSync} it plans the typed error
 * translateError would make of the addon's, and the addon constructs it
 * (`new type(...rest)`) in place of the system error: ONE stack capture
 * where there were two (a capture is most of an error's cost), and one
 * call into the addon's error making less. Constructed by the addon, the typed error's frames are those below
 * the native call, where the system error's were; the system error kept as
 * its cause is made without a capture of its own ({@link uncapturedCause})
 * and shows the same frames under its own header when its stack is read.
 * Elsewhere (a Promise's completion, a direct call of the binding, a
 * program's own Error.prepareStackTrace) it returns undefined and the addon
 * makes the system error itself, as before.
 * @internal
 */
export function errorFromNative(errno: number, code: string, text: string, syscall: string): ErrorPlan | undefined {
  const context = calling;
  if (context === undefined || !stacksAsNodeWrites()) return undefined;
  const system = { errno, code, syscall };
  const cause = uncapturedCause(`${code}: ${text}, ${syscall}`, system);
  const plan = kernelErrorPlan(system, context, cause);
  if (plan[0] === undefined) return undefined;
  framing = cause;
  return plan;
}

/** A base class whose constructor returns the object it is given: its subclasses stamp their private fields on it. */
class Stamp {
  constructor(target: object) {
    return target;
  }
}

/**
 * The state of a system error made without a stack capture of its own
 * ({@link uncapturedCause}), held in private fields stamped on it: the
 * typed error whose frames its stack shows, until the stack is first read
 * (or set), then that stack.
 */
class CauseStack extends Stamp {
  #framed: Error | undefined;
  #stack: unknown;

  /** Links `cause` to the typed error whose frames it shows. */
  static frame(cause: Error, framed: Error): void {
    if (#framed in cause) (cause as unknown as CauseStack).#framed = framed;
  }

  /** One accessor pair for every such error (a pair each would give each its own hidden class). */
  static readonly accessor: PropertyDescriptor = {
    get(this: CauseStack): unknown {
      if (this.#framed !== undefined) {
        this.#stack = stackOver(this, this.#framed);
        this.#framed = undefined;
      }
      return this.#stack;
    },
    set(this: CauseStack, value: unknown): void {
      this.#framed = undefined;
      this.#stack = value;
    },
    enumerable: false,
    configurable: true,
  };
}

/**
 * The system error the addon would have made (an Error: own `stack` and
 * `message`, then `errno`, `code`, `syscall`), made without a stack
 * capture: its stack, when read, is its header over the frames of the typed
 * error it becomes the cause of (which start below the native call, as its
 * own would have).
 */
function uncapturedCause(message: string, system: NativeSystemError): Error & NativeSystemError {
  // Not a number: V8 captures nothing at all (0 would still capture, and
  // format an empty stack when defineProperty reads the old one).
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = undefined as unknown as number;
  let cause: Error;
  try {
    cause = new Error(message);
  } finally {
    Error.stackTraceLimit = limit;
  }
  new CauseStack(cause); // Stamps its private fields on the error.
  Object.defineProperty(cause, 'stack', CauseStack.accessor);
  const shaped = cause as Error & NativeSystemError;
  shaped.errno = system.errno;
  shaped.code = system.code;
  shaped.syscall = system.syscall;
  return shaped;
}

/**
 * Awaits a native Promise, translating its failure (a throw before it has one too); the context may depend on the failure. @internal
 */
export async function callAsync<T>(context: ErrorContext | ((error: unknown) => ErrorContext), call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw translateError(error, typeof context === 'function' ? context(error) : context);
  }
}
