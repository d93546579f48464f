/**
 * The agent's codec: a request's bytes become a checked request once, with
 * the peer (its names mapped into the peer's namespace, its metadata
 * measured), before any handler sees it; a reply becomes bytes only if it
 * fits in one message. Handlers never parse, and never check a name again.
 */
import { agentError, type AgentOperation } from '../errors.js';
import { invalidArgValue } from '../validate.js';
import { checkClientName, kernelName } from './names.js';
import { ANNOUNCEMENTS_VERSION, HELLO_VERSION, MAX_MESSAGE_BYTES, operationOf, parseRequest, type Announcement, type Envelope, type JsonValue, type SessionsRequest, type UpdateRequest } from './protocol.js';

/** The deepest nesting of metadata (objects and arrays) the agent stores: far below V8's own stringify limit. */
export const MAX_METADATA_DEPTH = 32;

/** The most bytes of JSON metadata one session may carry, for every user (root too): any session's entry then fits in a `sessions` page. */
export const MAX_METADATA_BYTES = 16384;

/** The longest kernel or initrd path an update may name, in bytes (PATH_MAX). */
export const MAX_PATH_BYTES = 4096;

/** The longest next command line an update may give, in bytes. */
export const MAX_CMDLINE_BYTES = 4096;

/** The longest text taken from a peer into one log field, in UTF-16 units (the rest is cut, with a note). */
export const MAX_LOGGED_TEXT = 256;

/** A session name as the codec checked it: what the client asked for and the kernel's name for it. */
export interface CheckedName {
  /** The name the client asked for. */
  readonly name: string;
  /** The kernel's name in the client's namespace. */
  readonly kernelName: string;
}

/** A request after the codec: names checked for this peer, metadata measured. */
export type CheckedRequest = { readonly v: number; readonly id: number; readonly operation: AgentOperation } & (
  | { readonly op: 'hello'; readonly versions: number[]; readonly client?: string | undefined }
  | { readonly op: 'createSession'; readonly session: CheckedName; readonly metadata: JsonValue; readonly metadataBytes: number }
  | { readonly op: 'attach' | 'retrieveSession' | 'release'; readonly session: CheckedName }
  | { readonly op: 'ready' | 'subscribe' }
  | ({ readonly op: 'sessions' } & SessionsRequest)
  | ({ readonly op: 'update' } & UpdateRequest)
);

/**
 * What decoding gave: a request, or an error to answer with. A `fatal`
 * error (the message itself breaks the protocol) drops the connection after
 * the answer; a bad argument (a name, metadata) is answered and the
 * connection stays, as a local call's TypeError would leave the caller.
 */
export type Decoded = {
  /** The request's id (0 when the message could not be parsed). */
  readonly id: number;
  /** The request's `op`, or `connect` when the message could not be parsed. */
  readonly op: string;
  /** The operation errors name. */
  readonly operation: AgentOperation;
} & ({ readonly ok: true; readonly request: CheckedRequest } | { readonly ok: false; readonly error: Error; readonly fatal: boolean });

/**
 * Decodes one message from a peer of `uid` on a connection that speaks
 * `version` (what its hello chose; the hello's own version before). Never
 * throws. An operation newer than the connection's version is unknown
 * there, as it is to an agent that never spoke that version.
 */
export function decodeRequest(data: Buffer, uid: number, version = HELLO_VERSION): Decoded {
  let envelope: Envelope;
  try {
    envelope = parseRequest(data);
  } catch (error) {
    return { id: 0, op: 'connect', operation: 'agent.connect', ok: false, error: error as Error, fatal: true };
  }
  const { id, op } = envelope;
  const operation = operationOf(op);
  if (op === 'subscribe' && version < ANNOUNCEMENTS_VERSION) {
    const error = agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `unknown operation 'subscribe' in protocol version ${version} (announcements need version ${ANNOUNCEMENTS_VERSION})`, { operation });
    return { id, op, operation, ok: false, error, fatal: true };
  }
  try {
    return { id, op, operation, ok: true, request: checkArguments(envelope, uid, operation) };
  } catch (error) {
    return { id, op, operation, ok: false, error: error as Error, fatal: false };
  }
}

/** The request checked for its peer: built anew where a name is mapped or metadata measured, else the parsed envelope itself (the codec's own object), with its operation. */
function checkArguments(r: Envelope, uid: number, operation: AgentOperation): CheckedRequest {
  switch (r.op) {
    case 'createSession':
      return { v: r.v, id: r.id, operation, op: r.op, session: checkName(r.name, uid), metadata: r.metadata, metadataBytes: measureMetadata(r.metadata) };
    case 'attach':
    case 'retrieveSession':
    case 'release':
      return { v: r.v, id: r.id, operation, op: r.op, session: checkName(r.name, uid) };
    case 'update':
      checkBytes(r.kernel, 'kernel', MAX_PATH_BYTES);
      if (r.initrd !== undefined) checkBytes(r.initrd, 'initrd', MAX_PATH_BYTES);
      checkBytes(r.cmdline, 'cmdline', MAX_CMDLINE_BYTES);
      return Object.assign(r, { operation });
    default:
      return Object.assign(r, { operation });
  }
}

function checkBytes(value: string, name: string, max: number): void {
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > max) throw invalidArgValue(name, `must be at most ${max} bytes (it is ${bytes})`, bounded(value, 40));
}

function checkName(requested: string, uid: number): CheckedName {
  const name = checkClientName(requested, uid);
  return { name, kernelName: kernelName(uid, name) };
}

/** The metadata's size as stored (bytes of JSON); refuses nesting deeper than {@link MAX_METADATA_DEPTH}. */
function measureMetadata(metadata: JsonValue): number {
  if (depthOf(metadata) > MAX_METADATA_DEPTH) throw invalidArgValue('metadata', `must nest at most ${MAX_METADATA_DEPTH} levels of objects and arrays`, '(too deep to show)');
  const bytes = Buffer.byteLength(JSON.stringify(metadata), 'utf8');
  if (bytes > MAX_METADATA_BYTES) throw invalidArgValue('metadata', `must be at most ${MAX_METADATA_BYTES} bytes of JSON (it is ${bytes})`, '(too large to show)');
  return bytes;
}

/** How deeply a JSON value nests (a scalar is 0), measured without recursion so that no depth can overflow the stack. */
export function depthOf(value: JsonValue): number {
  let deepest = 0;
  const stack: Array<[JsonValue, number]> = [[value, 0]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, depth] = top;
    if (typeof v !== 'object' || v === null) continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > MAX_METADATA_DEPTH) return deepest;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/** A reply that does not fit in one message: the handler's bug or a limit to document, never sent. */
export class ReplyTooLargeError extends Error {}

/**
 * The bytes of a reply in protocol `version`: `v`, `id`, `ok`, then the
 * body's fields, as one object would give them (the body is written as it
 * is, not copied into a new object); ReplyTooLargeError past
 * {@link MAX_MESSAGE_BYTES}.
 */
export function encodeReply(version: number, id: number, ok: boolean, body: Record<string, JsonValue | undefined>): Buffer {
  const fields = JSON.stringify(body);
  const text = `{"v":${version},"id":${id},"ok":${ok}${fields === '{}' ? '}' : `,${fields.slice(1)}`}`;
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > MAX_MESSAGE_BYTES) throw new ReplyTooLargeError(`a reply of ${bytes.length} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte message limit`);
  return bytes;
}

/**
 * The bytes of an announcement: `event` and no `id`, which is what tells it
 * from a reply. Always small (its only peer-sized field, the kernel path,
 * is bounded by the update's own checks).
 */
export function encodeAnnouncement(version: number, announcement: Announcement): Buffer {
  return Buffer.from(JSON.stringify({ v: version, ...announcement }), 'utf8');
}

/** How many bytes `value` adds to a reply as JSON. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
}

/** Peer-chosen text cut for the log (and for replies that echo it), so no peer sizes the agent's log lines. */
export function bounded(text: string, max = MAX_LOGGED_TEXT): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more)`;
}
