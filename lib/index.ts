/**
 * liveupdate: the Node.js binding of Linux's Live Update Orchestrator.
 *
 * Every call that enters the kernel comes in two forms, as in node:fs:
 * `name()` returns a Promise and runs on the libuv thread pool, `nameSync()`
 * blocks. Failures are typed LiveUpdateError subclasses shaped like Node's
 * system errors.
 */
export { LiveUpdate } from './liveupdate.js';
export { Session, type SessionState } from './session.js';
export { status, statusSync, DEVICE_PATH, type Status, type StatusOptions } from './status.js';
export {
  LiveUpdateError,
  LiveUpdateUnavailableError,
  DeviceBusyError,
  PermissionDeniedError,
  IncomingStateError,
  SessionExistsError,
  SessionNotFoundError,
  SessionAlreadyRetrievedError,
  TokenInUseError,
  FileAlreadyPreservedError,
  UnsupportedFileError,
  UnsupportedSealsError,
  BadFileDescriptorError,
  SessionFullError,
  FileTooLargeError,
  OutOfMemoryError,
  TokenNotFoundError,
  RetrieveFailedError,
  FinishNotReadyError,
  SessionStateError,
  OperationNotSupportedError,
  KexecError,
  KexecNotLoadedError,
  KexecImageRejectedError,
  LiveUpdateAbortedError,
  type ErrorContext,
  type Operation,
} from './errors.js';
export { MAX_TOKEN, MAX_SESSION_NAME_BYTES } from './validate.js';
export * as memfd from './memfd.js';
export * as kexec from './kexec.js';
export * from './fdpass.js';
export * from './systemd.js';
