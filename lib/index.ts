/**
 * liveupdate: the Node.js binding of Linux's Live Update Orchestrator.
 *
 * Every call that enters the kernel comes in two forms, as in node:fs:
 * `name()` returns a Promise and runs on the libuv thread pool, `nameSync()`
 * blocks. Failures are typed LiveUpdateError subclasses shaped like Node's
 * system errors; every error has a `code`.
 */
export { LiveUpdate } from './liveupdate.js';
export { Session, type SessionState } from './session.js';
export { status, statusSync, DEVICE_PATH, type Status, type StatusOptions } from './status.js';
export { FIRST_LUO_RELEASE, type Diagnosis, type DiagnosisId, type DeviceOwner } from './diagnosis.js';
export {
  LiveUpdateError,
  LiveUpdateUnavailableError,
  DeviceBusyError,
  PermissionDeniedError,
  IncomingStateError,
  NotLiveUpdateDeviceError,
  DeviceClosedError,
  SessionExistsError,
  SessionNameTooLongError,
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
  SessionStateError,
  OperationNotSupportedError,
  SealingNotAllowedError,
  NotSealableError,
  KexecError,
  KexecUnsupportedError,
  KexecNotLoadedError,
  KexecImageRejectedError,
  LiveUpdateAbortedError,
  NotifySocketError,
  NotifyTimeoutError,
  AddonLoadError,
  type ErrorContext,
  type Operation,
} from './errors.js';
export { MAX_TOKEN, MAX_SESSION_NAME_BYTES } from './validate.js';
export * as memfd from './memfd.js';
export * as kexec from './kexec.js';
export * from './fdpass.js';
export * from './systemd.js';
