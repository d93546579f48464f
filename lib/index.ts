/// <reference types="node" preserve="true" />
/**
 * liveupdate: the Node.js binding of Linux's Live Update Orchestrator.
 *
 * Every call that enters the kernel comes in two forms, as in node:fs:
 * `name()` returns a Promise and runs on the libuv thread pool, `nameSync()`
 * blocks. Failures are typed LiveUpdateError subclasses shaped like Node's
 * system errors; every error has a `code`.
 */
// Only re-exports belong here: dist/index.js is not tsc's output for this file but is
// written by scripts/write-esm-wrapper.mjs from these exports, each a getter that loads
// its module on first read, so that require('liveupdate') loads only what is used.
export { LiveUpdate } from './liveupdate.js';
export { Session, type SessionState } from './session.js';
export { status, statusSync, type Status, type StatusOptions, type AgentInfo } from './status.js';
export { DEVICE_PATH } from './device.js';
export { FIRST_LUO_RELEASE, readKernelLog, type Diagnosis, type DiagnosisId, type DeviceOwner } from './diagnosis.js';
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
  RetrieveFailedError,
  FinishNotReadyError,
  SessionStateError,
  OperationNotSupportedError,
  SealingNotAllowedError,
  NotSealableError,
  FileFrozenError,
  KexecError,
  KexecUnsupportedError,
  KexecNotLoadedError,
  KexecImageRejectedError,
  LiveUpdateAbortedError,
  KernelImageError,
  NotKernelImageError,
  HandoverFormatError,
  KernelWithoutLiveUpdateError,
  NotifySocketError,
  NotifyTimeoutError,
  AddonLoadError,
  AgentError,
  AgentPermissionError,
  AgentQuotaError,
  AgentProtocolError,
  AgentUnavailableError,
  AgentTimeoutError,
  UpdateRefusedError,
  ManifestVersionError,
  AgentPolicyError,
  AgentListenError,
  AgentInternalError,
  AgentModeError,
  AGENT_ERROR_CODES,
  type UpdateRefusedDetails,
  type ManifestVersionDetails,
  type AgentErrorCode,
  type AgentOperation,
  type ErrorContext,
  type Operation,
} from './errors.js';
export { MAX_TOKEN, MAX_SESSION_NAME_BYTES } from './validate.js';
export * as memfd from './memfd.js';
export * as kexec from './kexec.js';
export * as kernel from './kernel-image.js';
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
  NotUnixSocketError,
  PeerClosedError,
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
export { Agent, STATE_FDNAME, type AgentOptions, type AgentEvent, type RestoredState, type UpdateCheck, type AgentMode, type ModeDecision, type ModeFacts } from './agent/server.js';
export { DEFAULT_CONNECTION_LIMITS, type ConnectionLimits } from './agent/listener.js';
export {
  AgentClient,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type RequestOptions,
  type SessionsOptions,
  type ConnectOptions,
  type CreateSessionOptions,
  type AgentSession,
  type SessionsReport,
  type UpdateOptions,
  type UpdateReport,
  type AgentClientEvents,
  type PrepareEvent,
  type ResumeEvent,
} from './agent/client.js';
export { DEFAULT_SOCKET as AGENT_SOCKET, UPDATE_CHECK_NAMES, type SessionInfo, type JsonValue, type UpdateCheckName, type NotReadyClient } from './agent/protocol.js';
export { parsePolicy, readPolicy, DEFAULT_POLICY, type Policy, type PolicyFile, type Principals, type PreflightPolicy } from './agent/policy.js';
export { MANIFEST_FORMAT, MANIFEST_VERSION, parseManifest, type Manifest, type ManifestSession } from './agent/manifest.js';
export { AGENT_SESSION_NAME, kernelName as agentKernelName } from './agent/names.js';
