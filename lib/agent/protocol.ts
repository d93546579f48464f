/**
 * The agent's wire protocol (AGENT-PROTOCOL.md is its contract): one JSON
 * object per SOCK_SEQPACKET message, fds beside it as SCM_RIGHTS, sent and
 * received with this package's sendFds/recvFds. This module parses and
 * checks what a peer sent, and turns errors into their wire form and back.
 * @internal
 */
import * as errors from '../errors.js';
import { agentError, LiveUpdateError, type AgentOperation, type ErrorContext, type NativeSystemError } from '../errors.js';

/** The protocol versions this package speaks; `hello` picks the highest both sides know. */
export const PROTOCOL_VERSIONS: readonly number[] = [1];

/** The largest message either side accepts, in bytes (longer ones are refused and the connection dropped). */
export const MAX_MESSAGE_BYTES = 65536;

/** The most fds a request may carry (v1 requests carry none). */
export const MAX_REQUEST_FDS = 0;

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
  | ({ op: 'sessions' } & SessionsRequest)
  | ({ op: 'update' } & UpdateRequest);

/** A request with its envelope. */
export type Envelope = Request & { v: number; id: number };

/** An error as it travels: enough for the client to rebuild the same class. */
export interface WireError {
  /** The class's name (`SessionExistsError`); the client falls back to LiveUpdateError for one it does not know. */
  class: string;
  code: string;
  errno?: number | undefined;
  syscall?: string | undefined;
  message: string;
  operation?: string | undefined;
  sessionName?: string | undefined;
  details?: JsonValue | undefined;
}

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

/** The agent-side name of a request's operation. */
export function operationOf(op: string): AgentOperation {
  const known: readonly string[] = ['hello', 'createSession', 'attach', 'retrieveSession', 'release', 'ready', 'sessions', 'update'];
  return (known.includes(op) ? `agent.${op}` : 'agent.connect') as AgentOperation;
}

/**
 * Parses one request message, or throws an AgentProtocolError that says
 * what is wrong with it. Nothing here trusts a length or count the peer
 * claims: the message's size was bounded when it was received.
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
  const envelope = { v, id };
  switch (op) {
    case 'hello': {
      const versions = body['versions'];
      if (!Array.isArray(versions) || versions.length > 16 || !versions.every((x) => Number.isInteger(x))) {
        throw protocolError(operation, "'versions' must be an array of at most 16 integers");
      }
      return { ...envelope, op, versions: versions as number[], client: field<string | undefined>(body, 'client', 'string', operation, true) };
    }
    case 'createSession':
      return { ...envelope, op, name: field(body, 'name', 'string', operation), metadata: (body['metadata'] ?? null) as JsonValue };
    case 'attach':
    case 'retrieveSession':
    case 'release':
      return { ...envelope, op, name: field(body, 'name', 'string', operation) };
    case 'ready':
      return { ...envelope, op };
    case 'sessions': {
      const limit = field<number | undefined>(body, 'limit', 'number', operation, true);
      if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 10_000)) throw protocolError(operation, "'limit' must be an integer from 1 to 10000");
      return { ...envelope, op, cursor: field<string | undefined>(body, 'cursor', 'string', operation, true), limit };
    }
    case 'update': {
      const timeoutMs = field<number>(body, 'timeoutMs', 'number', operation);
      if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 86_400_000) throw protocolError(operation, "'timeoutMs' must be an integer from 0 to 86400000");
      return {
        ...envelope,
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

/** The wire form of an error thrown while serving a request. */
export function toWireError(error: unknown, operation: AgentOperation): WireError {
  if (error instanceof LiveUpdateError) {
    return {
      class: error.constructor.name,
      code: error.code,
      errno: error.errno,
      syscall: error.syscall,
      message: error.message,
      operation: error.operation,
      sessionName: error.sessionName,
      details: error instanceof errors.AgentError ? (error.details as JsonValue | undefined) : undefined,
    };
  }
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  // Argument errors (ERR_INVALID_ARG_VALUE: a bad name) keep their code.
  return { class: error instanceof TypeError || error instanceof RangeError ? error.constructor.name : 'LiveUpdateError', code: typeof code === 'string' ? code : 'ERR_LIVEUPDATE_AGENT', message, operation };
}

type ErrorClass = new (message: string, code: string, context: ErrorContext, system?: NativeSystemError) => LiveUpdateError;

/** Every error class of the package by name: what a client may rebuild (nothing else is instantiated). */
const CLASSES: ReadonlyMap<string, ErrorClass> = new Map(
  Object.entries(errors as Record<string, unknown>).filter((entry): entry is [string, ErrorClass] => {
    const value = entry[1];
    return typeof value === 'function' && (value === LiveUpdateError || value.prototype instanceof LiveUpdateError) && value.name === entry[0];
  }),
);

/** Rebuilds, in the client, the error the agent sent: the same class as a local call would throw. */
export function fromWireError(wire: unknown, operation: AgentOperation): Error {
  if (!isObject(wire) || typeof wire['message'] !== 'string' || typeof wire['code'] !== 'string') {
    return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the agent sent an error without a code or message', { operation });
  }
  const code = wire['code'];
  const message = wire['message'];
  if (wire['class'] === 'TypeError' || wire['class'] === 'RangeError') {
    const error = wire['class'] === 'TypeError' ? new TypeError(message) : new RangeError(message);
    return Object.assign(error, { code });
  }
  const type = CLASSES.get(String(wire['class'])) ?? LiveUpdateError;
  const errno = typeof wire['errno'] === 'number' ? wire['errno'] : undefined;
  const syscall = typeof wire['syscall'] === 'string' ? wire['syscall'] : 'agent';
  const remoteOperation = typeof wire['operation'] === 'string' ? (wire['operation'] as AgentOperation) : operation;
  const sessionName = typeof wire['sessionName'] === 'string' ? wire['sessionName'] : undefined;
  const system = errno === undefined ? undefined : { errno, code, syscall };
  const error = new type(message, code, { operation: remoteOperation, sessionName }, system);
  if (error instanceof errors.AgentError) error.details = wire['details'];
  return error;
}
