/**
 * The agent's wire protocol (AGENT-PROTOCOL.md is its contract): one JSON
 * object per SOCK_SEQPACKET message, fds beside it as SCM_RIGHTS, sent and
 * received with this package's sendFds/recvFds. This module parses and
 * checks what a peer sent, and turns errors into their wire form and back.
 * @internal
 */
import * as errors from '../errors.js';
import { agentError, createError, isNativeSystemError, isOperation, LiveUpdateError, translateError, type AgentOperation, type ErrorContext } from '../errors.js';
import { sendFdsSync } from '../fdpass.js';

/** The protocol versions this package speaks; `hello` picks the highest both sides know. */
export const PROTOCOL_VERSIONS: readonly number[] = [1, 2];

/** The version a `hello` is written in: the lowest, so that an agent that speaks only it still answers (the reply names the version chosen). */
export const HELLO_VERSION = 1;

/** The first version with `subscribe` and the agent's announcements (`prepare`, `resume`). */
export const ANNOUNCEMENTS_VERSION = 2;

/**
 * The largest message either side sends or accepts, in bytes: a longer
 * request is refused and its connection dropped; a longer reply is an
 * AgentProtocolError that says its size.
 */
export const MAX_MESSAGE_BYTES = 65536;

/** The most fds a request may carry (v1 requests carry none). */
export const MAX_REQUEST_FDS = 0;

/**
 * Sends one message now if the socket takes it now: true when sent, false
 * when the socket has no room for it (the caller then waits, bounded, with
 * the Promise form). A message of either side is small and its peer reads
 * as it goes, so it almost always goes at once, within the turn that made
 * it. Other errors (the peer gone) throw. A seqpacket message is sent whole
 * or not at all, so nothing is left half sent.
 */
export function sentNow(fd: number, fds: readonly number[], bytes: Uint8Array): boolean {
  try {
    sendFdsSync(fd, fds, bytes, { timeout: 0 });
    return true;
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ETIMEDOUT') return false;
    throw error;
  }
}

let turnEnd: Promise<void> | null = null;

/**
 * Resolves once this turn of the event loop is over (one setImmediate for
 * every caller in the turn). A peer's next message, looked for then rather
 * than at once, has often come meanwhile in a burst: the rest of the turn
 * served other peers while the peer wrote it, and a message already there
 * is taken without a poll watcher (a copy of the socket and half a dozen
 * syscalls), which was a tenth of either side's CPU per request under
 * emulation.
 */
export function endOfTurn(): Promise<void> {
  turnEnd ??= new Promise((resolve) => {
    setImmediate(() => {
      turnEnd = null;
      resolve();
    });
  });
  return turnEnd;
}

/** Where the agent listens unless told otherwise. */
export const DEFAULT_SOCKET = '/run/liveupdate/agent.sock';

/** A JSON value as the protocol carries it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The options of an `update` request. */
export interface UpdateRequest {
  /** The next kernel image, a path the agent opens. */
  kernel: string;
  /** Its initramfs, if any. */
  initrd?: string | undefined;
  /** Its command line. */
  cmdline: string;
  /** How long to wait for clients to say ready, in milliseconds. */
  timeoutMs: number;
  /** Stop after the checks. */
  dryRun: boolean;
  /** Root only: when `timeoutMs` ends, go on without the clients still not ready (their sessions are kept), instead of refusing. */
  proceedWithout?: boolean | undefined;
}

/** The options of a `sessions` request: one page of the list. */
export interface SessionsRequest {
  /** Where the previous page ended (its `next`), or absent for the first page. */
  cursor?: string | undefined;
  /** At most this many sessions in the page (1 to 10000; the page also ends before the reply would exceed the message size). */
  limit?: number | undefined;
}

/** Every request, by its `op`. */
export type Request =
  | { op: 'hello'; versions: number[]; client?: string | undefined }
  | { op: 'createSession'; name: string; metadata: JsonValue }
  | { op: 'attach'; name: string }
  | { op: 'retrieveSession'; name: string }
  | { op: 'release'; name: string }
  | { op: 'ready' }
  | { op: 'subscribe' }
  | ({ op: 'sessions' } & SessionsRequest)
  | ({ op: 'update' } & UpdateRequest);

/** A request with its envelope. */
export type Envelope = Request & { v: number; id: number };

/**
 * An error as it travels: enough for the client to rebuild the same error,
 * field for field. `class` is the class's name, for readers in other
 * languages; the client takes the class from `code` and `operation`, as a
 * local call would, so the two cannot disagree.
 */
export interface WireError {
  /** The class's name (`SessionExistsError`). */
  class: string;
  /** The error's code: an errno name or an `ERR_*` code. */
  code: string;
  /** The negative errno, for system errors and the agent's own codes. */
  errno?: number | undefined;
  /** The syscall that failed (`agent` for the agent's own refusals). */
  syscall?: string | undefined;
  /** The whole message, `CODE: text, syscall ...`. */
  message: string;
  /** The operation that failed: an `agent.*` request, or the library call the agent made for it. */
  operation?: string | undefined;
  /** The session involved, if any. */
  sessionName?: string | undefined;
  /** What an agent error adds: an update's refusal `{ checks, notReady }`, a newer manifest's `{ version }`. */
  details?: JsonValue | undefined;
  /** The token involved, as a decimal string (it is a 64-bit integer). */
  token?: string | undefined;
  /** The fd involved, a number in the agent's process. */
  fd?: number | undefined;
  /** The path involved. */
  path?: string | undefined;
  /** What to do about it. */
  fix?: string | undefined;
  /** LiveUpdateUnavailableError: why the device is missing. */
  reason?: string | undefined;
  /** FdPassError: fds that arrived with a message and were closed. */
  closedFds?: number | undefined;
  /** MessageTruncatedError: the message's real length. */
  length?: number | undefined;
}

/** The names of an update's checks, in the order they are made (AGENT-PROTOCOL.md, *Update*). */
export type UpdateCheckName =
  /** The kernel image is readable (`detail`: the path, or why not). */
  | 'kernel-readable'
  /** The initramfs is readable (only with `initrd`). */
  | 'initrd-readable'
  /** The next command line turns `liveupdate=` on. */
  | 'liveupdate-on'
  /** The next command line does not turn KHO off (`kho=` absent relies on the next kernel's default). */
  | 'kho-not-disabled'
  /** The kernel image is an x86-64 bzImage (`detail`: its release, or the typed error's message). */
  | 'kernel-image'
  /** The running and the next kernel hand over in the same format (`kernel.preflight`). */
  | 'kernel-format'
  /** The next kernel has LUO, by its build config; passes with a warning when that cannot be told. */
  | 'kernel-luo'
  /** The agent owns `/dev/liveupdate`. */
  | 'device-owned'
  /** `kexec_file_load` took the kernel (not in a dry run). */
  | 'kexec-loaded'
  /** The policy's `kernels` allows the kernel image (`detail`: its real path). */
  | 'kernel-allowed'
  /** The policy's `kernels` allows the initramfs. */
  | 'initrd-allowed'
  /** No session handed over by the previous kernel still waits to be claimed (the next kexec would drop it), or root said `proceedWithout`. */
  | 'no-unclaimed-sessions'
  /** Every client holding sessions said ready in time (or root went on without them). */
  | 'clients-ready';

/** Every {@link UpdateCheckName}, in order. */
export const UPDATE_CHECK_NAMES: readonly UpdateCheckName[] = [
  'kernel-readable',
  'initrd-readable',
  'liveupdate-on',
  'kho-not-disabled',
  'kernel-image',
  'kernel-format',
  'kernel-luo',
  'device-owned',
  'kernel-allowed',
  'initrd-allowed',
  'no-unclaimed-sessions',
  'kexec-loaded',
  'clients-ready',
];

/** One check of an update, as reported. */
export interface UpdateCheck {
  /** What was checked. */
  name: UpdateCheckName;
  /** Whether it passed. */
  ok: boolean;
  /** What was found, or why it failed. */
  detail?: string;
}

/** A client that had not said ready when an update gave up waiting. */
export interface NotReadyClient {
  /** Its connection's id (the agent's log names it too). */
  id: number;
  /** Its process id. */
  pid: number;
  /** Its user id. */
  uid: number;
  /** True when it was told `prepare` and its connection ended before it said ready. */
  disconnected?: boolean | undefined;
}

/**
 * What the agent tells a subscribed client unasked (version 2): a message
 * with `event` and no `id`, so that it cannot be taken for a reply.
 */
export type Announcement =
  /** An update is coming: quiesce, preserve, say `ready` before `deadline` (ms since the epoch; `remainingMs` from when it was sent). `kernel`: the image the agent loads. */
  | { event: 'prepare'; deadline: number; remainingMs: number; kernel: string }
  /** The update announced by `prepare` will not happen (refused or failed): continue. `code`: the error's code. */
  | { event: 'resume'; reason: string; code?: string | undefined };

/** A session as `sessions` lists it. */
export interface SessionInfo {
  /** The name the owner asked for. */
  name: string;
  /** The kernel's name for it (see AGENT-PROTOCOL.md, "Names"). */
  kernelName: string;
  /** The owner's uid. */
  owner: number;
  /** `outgoing` (before the kexec), `released` (outgoing, released, possibly still held by its client), `waiting` (after it, not claimed yet), `claimed`, `finished`. */
  state: 'outgoing' | 'released' | 'waiting' | 'claimed' | 'finished';
  /** The owner's metadata. */
  metadata: JsonValue;
  /** When it was created (ms since the epoch). */
  createdAt: number;
  /** When its owner claimed it after the kexec. */
  claimedAt?: number | undefined;
  /** The client connection that holds it now (before the kexec), if any. */
  holder?: number | undefined;
}

function protocolError(operation: AgentOperation, text: string): errors.AgentError {
  return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', text, { operation });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field<T>(body: Record<string, unknown>, key: string, type: 'string' | 'number' | 'boolean', op: AgentOperation, optional = false): T {
  const value = body[key];
  if (value === undefined && optional) return undefined as T;
  if (typeof value !== type) throw protocolError(op, `'${key}' must be a ${type}`);
  return value as T;
}

/** The requests the agent knows, by `op`. */
const KNOWN_OPS: ReadonlySet<string> = new Set(['hello', 'createSession', 'attach', 'retrieveSession', 'release', 'ready', 'subscribe', 'sessions', 'update']);

/** The agent-side name of a request's operation. */
export function operationOf(op: string): AgentOperation {
  return (KNOWN_OPS.has(op) ? `agent.${op}` : 'agent.connect') as AgentOperation;
}

/**
 * Parses one request message, or throws an AgentProtocolError that says
 * what is wrong with it. Nothing here trusts a length or count the peer
 * claims: the message's size was bounded when it was received. Each request
 * is built once, field by field (no copies of the peer's object).
 */
export function parseRequest(data: Buffer): Envelope {
  let body: unknown;
  try {
    body = JSON.parse(data.toString('utf8'));
  } catch {
    throw protocolError('agent.connect', 'the message is not JSON');
  }
  if (!isObject(body)) throw protocolError('agent.connect', 'the message is not a JSON object');
  const { v, id, op } = body;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffff_ffff) {
    throw protocolError('agent.connect', "'id' must be an integer from 0 to 2^32-1");
  }
  if (typeof op !== 'string') throw protocolError('agent.connect', "'op' must be a string");
  const operation = operationOf(op);
  if (typeof v !== 'number' || !PROTOCOL_VERSIONS.includes(v)) throw protocolError(operation, `protocol version ${String(v)} is not spoken here`);
  switch (op) {
    case 'hello': {
      const versions = body['versions'];
      if (!Array.isArray(versions) || versions.length > 16 || !versions.every((x) => Number.isInteger(x))) {
        throw protocolError(operation, "'versions' must be an array of at most 16 integers");
      }
      return { v, id, op, versions: versions as number[], client: field<string | undefined>(body, 'client', 'string', operation, true) };
    }
    case 'createSession':
      return { v, id, op, name: field(body, 'name', 'string', operation), metadata: (body['metadata'] ?? null) as JsonValue };
    case 'attach':
    case 'retrieveSession':
    case 'release':
      return { v, id, op, name: field(body, 'name', 'string', operation) };
    case 'ready':
    case 'subscribe':
      return { v, id, op };
    case 'sessions': {
      const limit = field<number | undefined>(body, 'limit', 'number', operation, true);
      if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 10_000)) throw protocolError(operation, "'limit' must be an integer from 1 to 10000");
      return { v, id, op, cursor: field<string | undefined>(body, 'cursor', 'string', operation, true), limit };
    }
    case 'update': {
      const timeoutMs = field<number>(body, 'timeoutMs', 'number', operation);
      if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 86_400_000) throw protocolError(operation, "'timeoutMs' must be an integer from 0 to 86400000");
      return {
        v,
        id,
        op,
        kernel: field(body, 'kernel', 'string', operation),
        initrd: field<string | undefined>(body, 'initrd', 'string', operation, true),
        cmdline: field(body, 'cmdline', 'string', operation),
        timeoutMs,
        dryRun: field<boolean | undefined>(body, 'dryRun', 'boolean', operation, true) === true,
        proceedWithout: field<boolean | undefined>(body, 'proceedWithout', 'boolean', operation, true) === true,
      };
    }
    default:
      throw protocolError(operation, `unknown operation '${op}'`);
  }
}

/** The wire form of an error thrown while serving a request: every field of it. */
export function toWireError(error: unknown, operation: AgentOperation): WireError {
  const typed = isNativeSystemError(error) ? translateError(error, { operation }) : error;
  if (typed instanceof LiveUpdateError) {
    return {
      class: typed.name,
      code: typed.code,
      errno: typed.errno,
      syscall: typed.syscall,
      message: typed.message,
      operation: typed.operation,
      sessionName: typed.sessionName,
      details: typed instanceof errors.AgentError ? (typed.details as JsonValue | undefined) : undefined,
      token: typed.token?.toString(),
      fd: typed.fd,
      path: typed.path,
      fix: typed.fix,
      reason: typed instanceof errors.LiveUpdateUnavailableError ? typed.reason : undefined,
      closedFds: typed instanceof errors.FdPassError ? typed.closedFds : undefined,
      length: typed instanceof errors.MessageTruncatedError ? typed.length : undefined,
    };
  }
  const code = (typed as { code?: unknown } | null)?.code;
  // Argument errors (ERR_INVALID_ARG_VALUE: a bad name) keep their class and code.
  if ((typed instanceof TypeError || typed instanceof RangeError) && (code === 'ERR_INVALID_ARG_TYPE' || code === 'ERR_INVALID_ARG_VALUE' || code === 'ERR_OUT_OF_RANGE')) {
    return { class: typed.name, code, message: typed.message, operation };
  }
  // Anything else is a fault of the agent's own: said as one, not passed off as a refusal.
  const why = typed instanceof Error ? typed.message : String(typed);
  return toWireError(agentError('ERR_LIVEUPDATE_AGENT_INTERNAL', why, { operation }), operation);
}

function optional<T>(value: unknown, type: 'string' | 'number'): T | undefined {
  return typeof value === type ? (value as T) : undefined;
}

/**
 * Rebuilds, in the client, the error the agent sent: the class the code
 * (and operation) select, as a local call would throw, with the same code,
 * errno, syscall, message and fields. Nothing the peer names is
 * instantiated: `class` is not read.
 */
export function fromWireError(wire: unknown, operation: AgentOperation): Error {
  if (!isObject(wire) || typeof wire['message'] !== 'string' || typeof wire['code'] !== 'string') {
    return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the agent sent an error without a code or message', { operation });
  }
  const code = wire['code'];
  const errno = Number.isInteger(wire['errno']) ? (wire['errno'] as number) : undefined;
  const token = typeof wire['token'] === 'string' && /^\d{1,20}$/.test(wire['token']) ? BigInt(wire['token']) : undefined;
  const context: ErrorContext = {
    operation: isOperation(wire['operation']) ? wire['operation'] : operation,
    sessionName: optional(wire['sessionName'], 'string'),
    token,
    fd: optional(wire['fd'], 'number'),
    path: optional(wire['path'], 'string'),
    fix: optional(wire['fix'], 'string'),
    hint: optional(wire['reason'], 'string'),
    closedFds: optional(wire['closedFds'], 'number'),
    length: optional(wire['length'], 'number'),
    details: isObject(wire['details']) ? wire['details'] : undefined,
  };
  const system = errno === undefined ? undefined : { errno, code, syscall: optional<string>(wire['syscall'], 'string') ?? 'agent' };
  return createError(code, wire['message'], context, system);
}

/** What one message from the agent is, as the client tells them apart (version 2). */
export type AgentMessage =
  /** A reply to the client's request: it has an `id` and no `event`. */
  | { kind: 'reply' }
  /** An announcement: an `event` and no `id`. */
  | { kind: 'announcement'; announcement: Announcement }
  /** An announcement of a kind this client does not know: skipped (a later agent may add kinds). */
  | { kind: 'unknown-event'; event: string }
  /** Neither: the agent broke the protocol. */
  | { kind: 'invalid'; why: string };

/** Whether `value` is a finite number of at least 0. */
function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/**
 * Tells a reply from an announcement, and checks an announcement's fields.
 * A reply is only classified here; the request waiting for it reads it.
 */
export function classifyAgentMessage(data: Buffer): AgentMessage {
  let body: unknown;
  try {
    body = JSON.parse(data.toString('utf8'));
  } catch {
    return { kind: 'invalid', why: 'a message that is not JSON' };
  }
  if (!isObject(body)) return { kind: 'invalid', why: 'a message that is not a JSON object' };
  const hasId = Object.hasOwn(body, 'id');
  const event = body['event'];
  if (hasId && event === undefined) return { kind: 'reply' };
  if (hasId || typeof event !== 'string') return { kind: 'invalid', why: "a message with both or neither of 'id' and 'event'" };
  switch (event) {
    case 'prepare': {
      const { deadline, remainingMs, kernel } = body;
      if (!isTime(deadline) || !isTime(remainingMs) || typeof kernel !== 'string') return { kind: 'invalid', why: "a 'prepare' without a deadline, remainingMs and kernel" };
      return { kind: 'announcement', announcement: { event, deadline, remainingMs, kernel } };
    }
    case 'resume': {
      const { reason, code } = body;
      if (typeof reason !== 'string' || (code !== undefined && typeof code !== 'string')) return { kind: 'invalid', why: "a 'resume' without a reason" };
      return { kind: 'announcement', announcement: { event, reason, ...(code === undefined ? {} : { code }) } };
    }
    default:
      return { kind: 'unknown-event', event };
  }
}
