/**
 * Typed errors. Every failure the kernel reports becomes a LiveUpdateError
 * (or a subclass), shaped like Node's own system errors (`code`, `errno`,
 * `syscall`, message `CODE: text, syscall ...`) and carrying LUO's context.
 *
 * The same errno means different things in different calls (ENOENT from
 * open means "no LUO here", from RETRIEVE_FD "no such token"), so the class
 * is chosen by the pair (operation, code).
 */
/** The public operation that failed; selects the error class with the errno. */
export type Operation =
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
  | 'kexec.load'
  | 'kexec.unload'
  | 'kexec.isLoaded'
  | 'kexec.execute';

/** What was being done when an error happened. */
export interface ErrorContext {
  /** The public operation. */
  operation: Operation;
  /** The session's name, where one applies. */
  sessionName?: string | undefined;
  /** The token, where one applies. */
  token?: bigint | undefined;
  /** The file descriptor passed in, where one applies. */
  fd?: number | undefined;
  /** The path involved (device, kernel image), where one applies. */
  path?: string | undefined;
  /** The ioctl request's name, for ioctl failures. */
  request?: string | undefined;
  /** Extra explanation appended to the message (for example from status()). */
  hint?: string | undefined;
}

/** The fields a native system error carries. @internal */
export interface NativeSystemError {
  errno: number;
  code: string;
  syscall: string;
}

/**
 * The base class of every error this package throws for a failed kernel
 * call, and of its own state errors (which have no errno).
 */
export class LiveUpdateError extends Error {
  /** Node-style code: the errno's name (`EBUSY`), or `ERR_LIVEUPDATE_*` for state errors. */
  readonly code: string;
  /** Negative errno as in Node's system errors; undefined when no syscall failed. */
  readonly errno: number | undefined;
  /** The syscall that failed (`open`, `ioctl`, `kexec_file_load`, ...). */
  readonly syscall: string | undefined;
  /** The public operation that failed. */
  readonly operation: Operation;
  /** The session involved, if any. */
  readonly sessionName: string | undefined;
  /** The token involved, if any. */
  readonly token: bigint | undefined;
  /** The fd passed in, if any. */
  readonly fd: number | undefined;
  /** The path involved, if any. */
  readonly path: string | undefined;

  /** @internal Use the subclasses; this is public for `instanceof` only. */
  constructor(message: string, code: string, context: ErrorContext, system?: NativeSystemError) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.errno = system?.errno;
    this.syscall = system?.syscall;
    this.operation = context.operation;
    this.sessionName = context.sessionName;
    this.token = context.token;
    this.fd = context.fd;
    this.path = context.path;
  }
}

/** `/dev/liveupdate` does not exist: the kernel lacks LUO or was booted without `liveupdate=on`. */
export class LiveUpdateUnavailableError extends LiveUpdateError {}
/** Another process (or this one) already has `/dev/liveupdate` open: it has one owner at a time. */
export class DeviceBusyError extends LiveUpdateError {}
/** The caller may not open the device (needs root or the device's permissions). */
export class PermissionDeniedError extends LiveUpdateError {}
/** The state handed over by the previous kernel failed to load (EIO on open). */
export class IncomingStateError extends LiveUpdateError {}
/** A live outgoing session already has that name. */
export class SessionExistsError extends LiveUpdateError {}
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
/** A kexec call failed; see the subclasses. */
export class KexecError extends LiveUpdateError {}
/** `kexec.execute` found no kernel loaded. */
export class KexecNotLoadedError extends KexecError {}
/** `kexec_file_load` refused the kernel image, initrd or command line. */
export class KexecImageRejectedError extends KexecError {}
/** The kexec was refused at the last step, e.g. a preserved file failed to freeze: the live update was rolled back. */
export class LiveUpdateAbortedError extends KexecError {}

type ErrorClass = new (message: string, code: string, context: ErrorContext, system?: NativeSystemError) => LiveUpdateError;

interface Meaning {
  readonly type: ErrorClass;
  /** The meaning; `system` is the errno's own text, for meanings that have nothing better. */
  readonly text: (context: ErrorContext, system: string) => string;
}

const session = (c: ErrorContext): string => (c.sessionName === undefined ? 'this session' : `session '${c.sessionName}'`);
const token = (c: ErrorContext): string => `token ${c.token ?? '?'}`;
const fdText = (c: ErrorContext): string => `fd ${c.fd ?? '?'}`;
const device = (c: ErrorContext): string => c.path ?? '/dev/liveupdate';

/** The table: `${operation}:${code}` → class and meaning. */
const MEANINGS: ReadonlyMap<string, Meaning> = new Map<string, Meaning>([
  ['open:ENOENT', { type: LiveUpdateUnavailableError, text: (c) => `${device(c)} does not exist: Live Update Orchestrator unavailable on this kernel` }],
  ['open:EBUSY', { type: DeviceBusyError, text: (c) => `another process owns ${device(c)} (it has one owner at a time)` }],
  ['open:EACCES', { type: PermissionDeniedError, text: (c) => `not permitted to open ${device(c)}` }],
  ['open:EPERM', { type: PermissionDeniedError, text: (c) => `not permitted to open ${device(c)}` }],
  ['open:EIO', { type: IncomingStateError, text: () => 'the live update state handed over by the previous kernel failed to load (for example a preserved file whose kind this kernel has no handler for); LUO stays unusable until the next reboot' }],
  ['createSession:EEXIST', { type: SessionExistsError, text: (c) => `a live session is already named '${c.sessionName}'` }],
  ['retrieveSession:ENOENT', { type: SessionNotFoundError, text: (c) => `no preserved session named '${c.sessionName}'` }],
  ['retrieveSession:EINVAL', { type: SessionAlreadyRetrievedError, text: (c) => `session '${c.sessionName}' was already retrieved` }],
  ['preserve:EEXIST', { type: TokenInUseError, text: (c) => `${token(c)} is already used in ${session(c)}` }],
  ['preserve:EBUSY', { type: FileAlreadyPreservedError, text: (c) => `the file of ${fdText(c)} is already preserved (in this or another session)` }],
  ['preserve:ENOENT', { type: UnsupportedFileError, text: (c) => `the file of ${fdText(c)} is of a kind this kernel cannot preserve` }],
  ['preserve:EOPNOTSUPP', { type: UnsupportedSealsError, text: (c) => `the file of ${fdText(c)} carries seals this kernel cannot preserve` }],
  ['preserve:EBADF', { type: BadFileDescriptorError, text: (c) => `${fdText(c)} is not an open file descriptor` }],
  ['preserve:ENOSPC', { type: SessionFullError, text: (c) => `${session(c)} cannot take more files` }],
  ['preserve:EFBIG', { type: FileTooLargeError, text: (c) => `the file of ${fdText(c)} is too large to preserve` }],
  ['preserve:EINVAL', { type: SessionStateError, text: (c) => `cannot preserve into ${session(c)}: it is an incoming session` }],
  ['retrieve:ENOENT', { type: TokenNotFoundError, text: (c) => `${session(c)} has no file under ${token(c)}` }],
  ['retrieve:EINVAL', { type: SessionStateError, text: (c) => `cannot retrieve from ${session(c)}: it is an outgoing session` }],
  ['finish:EINVAL', { type: SessionStateError, text: (c) => `cannot finish ${session(c)}: it is an outgoing session` }],
  ['finish:EBUSY', { type: FinishNotReadyError, text: (c) => `a file in ${session(c)} is not ready to finish; nothing was finished: retry later` }],
]);

/** What an errno means for an operation when neither table names it. */
const OPERATION_FALLBACK: ReadonlyMap<Operation, Meaning> = new Map<Operation, Meaning>([
  ['retrieve', { type: RetrieveFailedError, text: (c, system) => `the kernel could not restore the file under ${token(c)} of ${session(c)} (${system}); every retrieve of this token will fail the same way` }],
]);

/** Errnos whose meaning is the same whatever the operation. */
const ANY_OPERATION: ReadonlyMap<string, Meaning> = new Map<string, Meaning>([
  ['ENOTTY', { type: OperationNotSupportedError, text: (c) => `this kernel's Live Update Orchestrator lacks ${c.request ?? c.operation}` }],
  ['ENOMEM', { type: OutOfMemoryError, text: (c) => `the kernel ran out of memory during ${c.operation}` }],
  ['EBADF', { type: BadFileDescriptorError, text: (c) => `${fdText(c)} is not an open file descriptor` }],
]);

function kexecMeaning(context: ErrorContext, code: string): Meaning {
  if (context.operation === 'kexec.execute') {
    if (code === 'EINVAL') return { type: KexecNotLoadedError, text: () => 'no kernel is loaded (call kexec.load first)' };
    if (code === 'EPERM') return { type: KexecError, text: () => 'not permitted to reboot (needs CAP_SYS_BOOT)' };
    if (code === 'EBUSY') return { type: KexecError, text: () => 'another kexec is in progress' };
    return { type: LiveUpdateAbortedError, text: () => 'the kernel refused the kexec and rolled the live update back (a preserved file may have failed to freeze)' };
  }
  if (context.operation === 'kexec.load') {
    if (code === 'EPERM') return { type: KexecError, text: () => 'not permitted to load a kernel (needs CAP_SYS_BOOT, and kexec_load_disabled must be 0)' };
    if (code === 'ENOENT') return { type: KexecError, text: (c) => `${c.path ?? 'the kernel or initrd'} does not exist` };
    return { type: KexecImageRejectedError, text: () => 'the kernel refused the image, initrd or command line' };
  }
  return { type: KexecError, text: (c, system) => `${c.operation} failed: ${system}` };
}

/** The system's text of a native error ("no such file or directory"): its message is "CODE: text, syscall". */
function systemText(error: NativeSystemError & Error): string {
  const start = error.code.length + 2;
  const end = error.message.lastIndexOf(', ');
  return end > start ? error.message.slice(start, end) : error.message;
}

function meaningOf(context: ErrorContext, code: string): Meaning {
  if (context.operation.startsWith('kexec.')) return kexecMeaning(context, code);
  return (
    MEANINGS.get(`${context.operation}:${code}`) ??
    ANY_OPERATION.get(code) ??
    OPERATION_FALLBACK.get(context.operation) ?? { type: LiveUpdateError, text: (c, system) => `${c.operation} failed: ${system}` }
  );
}

function isNativeSystemError(error: unknown): error is NativeSystemError & Error {
  return (
    error instanceof Error &&
    typeof (error as Partial<NativeSystemError>).errno === 'number' &&
    typeof (error as Partial<NativeSystemError>).code === 'string'
  );
}

/**
 * Turns a system error from the native layer into the typed error for this
 * operation. Anything else (a TypeError from the binding) passes through.
 * @internal
 */
export function translateError(error: unknown, context: ErrorContext): unknown {
  if (!isNativeSystemError(error)) return error;
  const meaning = meaningOf(context, error.code);
  const where = context.request !== undefined ? ` ${context.request}` : context.path !== undefined ? ` '${context.path}'` : '';
  const hint = context.hint !== undefined ? `. ${context.hint}` : '';
  const message = `${error.code}: ${meaning.text(context, systemText(error))}, ${error.syscall}${where}${hint}`;
  return new meaning.type(message, error.code, context, error);
}

/** A refusal by this package before any syscall, because of the session's state. @internal */
export function sessionStateError(context: ErrorContext, why: string): SessionStateError {
  const message = `ERR_LIVEUPDATE_SESSION_STATE: ${why}`;
  return new SessionStateError(message, 'ERR_LIVEUPDATE_SESSION_STATE', context);
}

/**
 * Runs a synchronous native call, translating its failure. @internal
 */
export function callSync<T>(context: ErrorContext, call: () => T): T {
  try {
    return call();
  } catch (error) {
    throw translateError(error, context);
  }
}

/**
 * Awaits a native Promise, translating its failure. @internal
 */
export async function callAsync<T>(context: ErrorContext, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw translateError(error, context);
  }
}
