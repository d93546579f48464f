/// <reference types="node" preserve="true" />
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
export {
  sendFds,
  sendFdsSync,
  recvFds,
  recvFdsSync,
  socketPair,
  FdPassError,
  ControlTruncatedError,
  MessageTruncatedError,
  FramingError,
  StreamOutOfStepError,
  SocketBusyError,
  MAX_FDS_PER_MESSAGE,
  DEFAULT_MAX_BYTES,
  type SocketLike,
  type Framing,
  type SendOptions,
  type RecvOptions,
  type RecvResult,
  type FdPassErrorCode,
  type UnixSocketType,
} from './fdpass.js';
export {
  notify,
  notifySync,
  barrier,
  barrierSync,
  listenFds,
  describeFd,
  isLuoSessionFd,
  isValidFdName,
  ListenFdsError,
  MAX_FDNAME_LENGTH,
  LISTEN_FDS_START,
  type NotifyFields,
  type NotifyOptions,
  type BarrierOptions,
  type NotifyResult,
  type ListenFdsOptions,
  type FdKind,
  type FdDescription,
} from './systemd.js';
