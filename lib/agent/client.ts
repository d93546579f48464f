/**
 * The agent's client: what a VMM (or any process holding state worth
 * keeping) uses instead of opening /dev/liveupdate itself. The agent
 * creates the session and passes its fd; the client preserves its own fds
 * into it with the usual Session API.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { agentError, isNativeSystemError, kernelError, LiveUpdateError, MessageTruncatedError, packageError, translateError, type AgentOperation, type ErrorContext } from '../errors.js';
import { recvFds, recvFdsSync, sendFds, sendFdsSync, type RecvResult } from '../fdpass.js';
import { native, type NativeReadableWatch } from '../native.js';
import { Session } from '../session.js';
import type { KernelPreflight } from '../kernel-image.js';
import { checkOptions, checkPath, invalidArgType, outOfRange } from '../validate.js';
import {
  ANNOUNCEMENTS_VERSION,
  classifyAgentMessage,
  DEFAULT_SOCKET,
  endOfTurn,
  fromWireError,
  HELLO_VERSION,
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSIONS,
  sentNow,
  type Announcement,
  type JsonValue,
  type SessionInfo,
  type UpdateCheck,
  type UpdateRequest,
} from './protocol.js';

/** How long a request waits for the agent's reply unless told otherwise: 30 s. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** Options of one request: its own timeout and signal. */
export interface RequestOptions {
  /**
   * Most ms to wait for the agent to take the request and answer (default:
   * the connection's `timeoutMs`). Past it the request fails with
   * {@link AgentTimeoutError} (`ETIMEDOUT`) and the connection is closed.
   */
  timeoutMs?: number;
  /** Cancels the request (Promise forms only): it rejects with an AbortError and the connection is closed. */
  signal?: AbortSignal;
}

/** Options of {@link AgentClient.connect}. */
export interface ConnectOptions {
  /** The agent's socket (default `/run/liveupdate/agent.sock`). */
  socket?: string;
  /** Cancels the connection and the hello (Promise form only). */
  signal?: AbortSignal;
  /** A name for this client in the agent's log. */
  name?: string;
  /** Every request's timeout unless the call gives its own, the hello's included (default 30000 ms). */
  timeoutMs?: number;
}

/** Options of {@link AgentClient.createSession}. */
export interface CreateSessionOptions {
  /** A small JSON value the agent keeps with the session and hands back after the kexec. */
  metadata?: JsonValue;
}

/** A session the agent handed over, with the metadata stored with it. */
export interface AgentSession {
  /** The session, incoming after a kexec, outgoing when re-attached. */
  session: Session;
  /** The metadata the client gave at `createSession` (null if none). */
  metadata: JsonValue;
}

/** Options of {@link AgentClient.sessions}: one page of the list (an agent that does not page sends it all). */
export interface SessionsOptions extends RequestOptions {
  /** Where the previous page ended (its `next`); absent for the first page. */
  cursor?: string;
  /** At most this many sessions in the page (1 to 10000; the agent also ends a page before its reply would exceed 64 KiB). */
  limit?: number;
}

/** What `sessions()` returns. */
export interface SessionsReport {
  /** The sessions this client's user may see (root: all), one page of them. */
  sessions: SessionInfo[];
  /** The cursor of the next page (pass it as `cursor`), or null after the last. */
  next: string | null;
  /** Live updates done by this chain of agents. */
  kexecCount: number;
  /** From the manifest: when the last update began and when the state was frozen (ms since the epoch), or null. */
  updateStartedAt: number | null;
  /** From the manifest: when the state was frozen for the kexec (ms since the epoch), or null. */
  frozenAt: number | null;
  /** When this agent opened the device in this kernel. */
  firstOpenAt: number | null;
  /** Why the agent refuses the previous kernel's manifest, or null. */
  refused: string | null;
}

/** Options of {@link AgentClient.update}. */
export interface UpdateOptions {
  /** Path of the next kernel image (read by the agent). */
  kernel: string;
  /** Path of its initramfs, if any. */
  initrd?: string;
  /** The next kernel's command line; it must keep `liveupdate=on` and KHO enabled. */
  cmdline: string;
  /** How long to wait for the clients to say ready (default 60000 ms). */
  timeoutMs?: number;
  /** Stop after the checks. */
  dryRun?: boolean;
  /** Root only, where the agent supports it: when `timeoutMs` ends, go on without the clients still not ready (their sessions are kept) instead of refusing. */
  proceedWithout?: boolean;
  /** Called when the agent starts the kexec, with the checks that passed. */
  onKexec?: (checks: UpdateCheck[]) => void;
  /**
   * Cancels the wait for the reply (the connection is closed; the agent
   * goes on with an update already past its checks). The reply itself is
   * awaited for `timeoutMs` plus the connection's request timeout: the
   * agent waits that long for the clients.
   */
  signal?: AbortSignal;
}

/** The result of a dry run. */
export interface UpdateReport {
  /** True when the update stopped after the checks, as asked. */
  dryRun: boolean;
  /** Each check the agent made, in order. */
  checks: UpdateCheck[];
  /** The kernel preflight's report (absent from agents before it, and when the image was not read). */
  kernel?: KernelPreflight;
}

/** What {@link AgentClient}'s `'prepare'` event carries: an update is coming. */
export interface PrepareEvent {
  /** When the agent stops waiting for this client's `ready` (wall clock). */
  deadline: Date;
  /** Milliseconds left until the deadline when the agent sent the announcement (not affected by wall-clock jumps). */
  deadlineMs: number;
  /** The kernel image the agent will load and kexec into (its path on the agent's host). */
  kernel: string;
}

/** What {@link AgentClient}'s `'resume'` event carries: the update announced by `prepare` will not happen. */
export interface ResumeEvent {
  /** Why: the refusal or failure's message (which clients were not ready, a load that failed, ...). */
  reason: string;
  /** The refusal or failure's code (`ERR_LIVEUPDATE_UPDATE_REFUSED`, an errno name), when it had one. */
  code?: string;
}

/** The events of a subscribed {@link AgentClient}, with their arguments. */
export interface AgentClientEvents {
  /** An update is coming: quiesce (stop the guest, save its state, preserve it), then call `ready()` before the deadline. */
  prepare: [event: PrepareEvent];
  /** The update will not happen (refused, or it failed): continue as before. */
  resume: [event: ResumeEvent];
  /** The connection ended: by `close()` (no argument), or lost or broken (the error says how). Emitted only once subscribed. */
  close: [error?: Error];
}

/**
 * The most replies a subscribed client holds that no request has taken:
 * requests run one at a time, and `update` alone has two replies.
 */
const MAX_UNTAKEN_REPLIES = 2;

type Body = Record<string, unknown>;

/** The syscall a bounded request was in when its time ran out. */
interface Step {
  syscall: 'sendmsg' | 'recvmsg';
}

function checkName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  return name;
}

/** A non-negative integer option (a timeout, a count), or `fallback` when absent. */
function checkInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > 0x7fff_ffff) throw outOfRange(name, 'an integer >= 0 and <= 2147483647', value);
  return value;
}

function checkSignal(signal: unknown, name: string): AbortSignal | undefined {
  if (signal === undefined || signal instanceof AbortSignal) return signal;
  throw invalidArgType(name, 'an instance of AbortSignal', signal);
}

/** The page a `sessions` request asks for. */
function pageOf(options: Partial<SessionsOptions>): Body {
  if (options.cursor !== undefined && typeof options.cursor !== 'string') throw invalidArgType('options.cursor', 'of type string', options.cursor);
  const limit = options.limit === undefined ? undefined : checkInteger(options.limit, 'options.limit', 0);
  if (limit !== undefined && (limit < 1 || limit > 10_000)) throw outOfRange('options.limit', 'an integer >= 1 and <= 10000', limit);
  return { cursor: options.cursor, limit };
}

/** A reply's fields without its envelope (`v`, `id`, `ok`): what a user is handed. */
function withoutEnvelope(body: Body): Body {
  const { v: _v, id: _id, ok: _ok, ...fields } = body;
  return fields;
}

/** A sessions reply with `next` (null from an agent that does not page). */
function withNext(body: Body): SessionsReport {
  return { ...withoutEnvelope(body), next: typeof body['next'] === 'string' ? body['next'] : null } as unknown as SessionsReport;
}

/** Closes the fds a reply brought that nobody takes. */
function closeAll(fds: readonly number[]): void {
  for (const fd of fds) fs.closeSync(fd);
}

/** The typed error of a failed connect: no agent (ENOENT, ECONNREFUSED), not permitted (EACCES), not the agent's kind of socket (EPROTOTYPE), ... */
function connectError(socket: string, error: unknown): unknown {
  return translateError(error, { operation: 'agent.connect', path: socket });
}

/** Why a request was stopped before its reply: its time ran out, or its caller's signal aborted it. */
type StopReason = 'timeout' | 'abort';

/** Requests of this process waiting for their replies, all clients together. */
let awaitingReplies = 0;

/** A reply's receive: at most one fd (a session's), at most a message's bytes. */
const RECEIVE_REPLY = { maxFds: 1, maxBytes: MAX_MESSAGE_BYTES } as const;

/**
 * What ends one request early: its timeout, or the caller's signal. The
 * wait for the reply is cancelled directly; an AbortSignal for the rare
 * step that needs one (a send the socket has no room for, a subscribed
 * client's reply) is made only then.
 */
class Stop {
  why: StopReason | null = null;
  readonly #clock: NodeJS.Timeout;
  readonly #caller: AbortSignal | undefined;
  readonly #onAbort = (): void => this.#stop('abort');
  #waiting: NativeReadableWatch | null = null;
  #controller: AbortController | null = null;

  constructor(timeoutMs: number, caller: AbortSignal | undefined) {
    this.#caller = caller;
    this.#clock = setTimeout(() => this.#stop('timeout'), timeoutMs);
    if (caller === undefined) return;
    if (caller.aborted) this.#stop('abort');
    else caller.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** A wait on `watch`, cancelled when the request stops: true once readable (false: cancelled, or failed). */
  waitFor(watch: NativeReadableWatch): Promise<boolean> {
    const readable = watch.wait();
    if (this.why !== null) watch.cancel();
    else this.#waiting = watch;
    return readable;
  }

  /** A signal that aborts when the request stops. */
  signal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.why !== null) this.#controller.abort(this.#reason());
    }
    return this.#controller.signal;
  }

  /** The error of a request stopped by its caller's signal (a timeout is said by the client, with its syscall). */
  error(): Error {
    return Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR', cause: this.#reason() });
  }

  /** The request is over: its clock and listener go. */
  end(): void {
    clearTimeout(this.#clock);
    this.#caller?.removeEventListener('abort', this.#onAbort);
    this.#waiting = null;
  }

  #reason(): unknown {
    return this.why === 'abort' ? this.#caller?.reason : undefined;
  }

  #stop(why: StopReason): void {
    if (this.why !== null) return;
    this.why = why;
    this.#waiting?.cancel();
    this.#controller?.abort(this.#reason());
  }
}

/**
 * A connection to the agent. Requests on one client run one after another;
 * each has a Promise form and a Sync form, as in node:fs. Every request is
 * bounded in time ({@link ConnectOptions.timeoutMs}, or the call's own
 * {@link RequestOptions}): a request past it fails with
 * {@link AgentTimeoutError} and the connection is closed, since a late
 * reply could be taken for the next one's. Usable with `await using`.
 *
 * **Announcements.** After {@link subscribe} the agent tells this client
 * when an update is coming, as events (an EventEmitter):
 *
 * - `'prepare'` ({@link PrepareEvent}: `deadline`, `deadlineMs`, `kernel`):
 *   quiesce (stop the guest, save its state into memfds, preserve them in
 *   your sessions), then call {@link ready}. The update waits for every
 *   subscribed client's `ready` (a `ready` said before the prepare does not
 *   count); a client that does not say it by the deadline, or whose
 *   connection ends first, makes the agent refuse the update (unless its
 *   policy lets the update go on without it) and is named in the
 *   refusal. Sessions are created before: the agent refuses new ones while
 *   an update runs.
 * - `'resume'` ({@link ResumeEvent}: `reason`, `code`): the update was
 *   refused or failed, nothing is loaded; continue (start the guest again).
 *   Sent only to clients that were told `prepare`.
 * - `'close'` (an error, or nothing after {@link close}): the connection
 *   ended; a client that still wants announcements connects and subscribes
 *   again (the agent kept its sessions: {@link attach}).
 *
 * Events and replies arrive in the order the agent sent them. A subscribed
 * client reads the connection all the time, so it keeps the process alive
 * until closed (as a socket does), and only the Promise forms can be used
 * on it (a Sync form throws `SocketBusyError`). An agent that speaks only
 * protocol version 1 has no announcements: `subscribe()` then rejects with
 * {@link AgentProtocolError} and the client goes on as before (say `ready`
 * before you ask for an update, or when your own signal says so).
 */
export class AgentClient extends EventEmitter<AgentClientEvents> {
  #fd: number;
  readonly #socket: string;
  readonly #timeoutMs: number;
  #nextId = 1;
  /** Settles once every request made so far has. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Requests made and not settled: the next one starts within its call when there is none. */
  #pending = 0;
  readonly #settled = (): void => {
    this.#pending--;
  };
  #hello: Body = {};
  /** The protocol version the hello chose: every later request is written in it. */
  #version = HELLO_VERSION;
  /** Subscribed: the loop reading every message, and what stops it. */
  #reading: AbortController | null = null;
  /** Replies the loop received that no request has taken yet (at most {@link MAX_UNTAKEN_REPLIES}). */
  readonly #replies: RecvResult[] = [];
  /** The connection's readiness watcher, made at its first wait for a reply and closed with it. */
  #watch: NativeReadableWatch | null = null;
  /** Wakes the request waiting for a reply (or for the connection's end). */
  #wake: (() => void) | null = null;
  /** Why the subscribed connection ended, once it has. */
  #ended: Error | null = null;

  private constructor(fd: number, socket: string, timeoutMs: number) {
    super();
    this.#fd = fd;
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
  }

  /** Connects to the agent and introduces this client (protocol `hello`). */
  static async connect(options?: ConnectOptions): Promise<AgentClient> {
    const opts = checkOptions<ConnectOptions>(options);
    const socket = checkPath(opts.socket ?? DEFAULT_SOCKET, 'options.socket');
    const timeoutMs = checkInteger(opts.timeoutMs, 'options.timeoutMs', DEFAULT_REQUEST_TIMEOUT_MS);
    const signal = checkSignal(opts.signal, 'options.signal');
    signal?.throwIfAborted();
    let fd: number;
    try {
      fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
    } catch (error) {
      throw connectError(socket, error);
    }
    const client = new AgentClient(fd, socket, timeoutMs);
    try {
      client.#greeted(await client.#request('hello', { versions: [...PROTOCOL_VERSIONS], client: opts.name }, signal === undefined ? {} : { signal }));
      return client;
    } catch (error) {
      client.closeSync();
      throw error;
    }
  }

  /** The synchronous form of {@link connect} (no signal). */
  static connectSync(options?: Omit<ConnectOptions, 'signal'>): AgentClient {
    const opts = checkOptions<ConnectOptions>(options);
    const socket = checkPath(opts.socket ?? DEFAULT_SOCKET, 'options.socket');
    const timeoutMs = checkInteger(opts.timeoutMs, 'options.timeoutMs', DEFAULT_REQUEST_TIMEOUT_MS);
    let fd: number;
    try {
      fd = native.unixConnect(native.SOCK_SEQPACKET, socket);
    } catch (error) {
      throw connectError(socket, error);
    }
    const client = new AgentClient(fd, socket, timeoutMs);
    try {
      client.#greeted(client.#requestSync('hello', { versions: [...PROTOCOL_VERSIONS], client: opts.name }));
      return client;
    } catch (error) {
      client.closeSync();
      throw error;
    }
  }

  /** The protocol version the agent and this client agreed on (2 and later: announcements). */
  get protocolVersion(): number {
    return this.#version;
  }

  /** Whether this client is subscribed to announcements (and its connection still open). */
  get subscribed(): boolean {
    return this.#reading !== null;
  }

  /** This connection's id in the agent's log and reports. */
  get clientId(): number {
    return Number(this.#hello['clientId']);
  }

  /** Who the agent sees at this end (SO_PEERCRED). */
  get peer(): {
    /** The process id. */
    pid: number;
    /** The user id. */
    uid: number;
    /** The group id. */
    gid: number;
  } {
    return this.#hello['peer'] as { pid: number; uid: number; gid: number };
  }

  /** How many live updates the agent's chain has done. */
  get kexecCount(): number {
    return Number(this.#hello['kexecCount']);
  }

  /**
   * Asks the agent for a new outgoing session. Resolves to a Session whose
   * fd this client holds (preserve into it as usual); the agent keeps its
   * own reference, so the session survives this client's crash (see
   * {@link attach}). `session.name` is the kernel's name (AGENT-PROTOCOL.md, "Names").
   */
  async createSession(name: string, options?: CreateSessionOptions & RequestOptions): Promise<Session> {
    const opts = checkOptions<CreateSessionOptions & RequestOptions>(options);
    return this.#sessionFrom(await this.#request('createSession', { name: checkName(name), metadata: opts.metadata ?? null }, opts, true), 'outgoing').session;
  }

  /** The synchronous form of {@link createSession}. */
  createSessionSync(name: string, options?: CreateSessionOptions & Omit<RequestOptions, 'signal'>): Session {
    const opts = checkOptions<CreateSessionOptions & RequestOptions>(options);
    return this.#sessionFrom(this.#requestSync('createSession', { name: checkName(name), metadata: opts.metadata ?? null }, opts, true), 'outgoing').session;
  }

  /** Before the kexec: takes up again an outgoing session of this user (after this client restarted). */
  async attach(name: string, options?: RequestOptions): Promise<AgentSession> {
    return this.#sessionFrom(await this.#request('attach', { name: checkName(name) }, options, true), 'outgoing');
  }

  /** The synchronous form of {@link attach}. */
  attachSync(name: string, options?: Omit<RequestOptions, 'signal'>): AgentSession {
    return this.#sessionFrom(this.#requestSync('attach', { name: checkName(name) }, options, true), 'outgoing');
  }

  /** After the kexec: this user's session of that name, with its metadata. */
  async retrieveSession(name: string, options?: RequestOptions): Promise<AgentSession> {
    return this.#sessionFrom(await this.#request('retrieveSession', { name: checkName(name) }, options, true), 'incoming');
  }

  /** The synchronous form of {@link retrieveSession}. */
  retrieveSessionSync(name: string, options?: Omit<RequestOptions, 'signal'>): AgentSession {
    return this.#sessionFrom(this.#requestSync('retrieveSession', { name: checkName(name) }, options, true), 'incoming');
  }

  /**
   * Lets the agent drop its reference. Before the kexec this unpreserves
   * the session once no process holds it any more (close yours too); after
   * it, the agent finishes the session.
   */
  async release(name: string, options?: RequestOptions): Promise<void> {
    await this.#request('release', { name: checkName(name) }, options);
  }

  /** The synchronous form of {@link release}. */
  releaseSync(name: string, options?: Omit<RequestOptions, 'signal'>): void {
    this.#requestSync('release', { name: checkName(name) }, options);
  }

  /**
   * Subscribes this connection to the agent's announcements: from the
   * reply on, the client emits `'prepare'` and `'resume'` (see the class's
   * description). Subscribing again does nothing. An agent that speaks only
   * protocol version 1 cannot: {@link AgentProtocolError}, before anything
   * is sent, and the connection stays usable.
   */
  async subscribe(options?: RequestOptions): Promise<void> {
    const opts = checkOptions<RequestOptions>(options);
    const limits = { timeoutMs: checkInteger(opts.timeoutMs, 'options.timeoutMs', this.#timeoutMs), signal: checkSignal(opts.signal, 'options.signal') };
    if (this.#version < ANNOUNCEMENTS_VERSION) {
      throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `the agent speaks protocol version ${this.#version}, which has no announcements (subscribe needs ${ANNOUNCEMENTS_VERSION}); update the agent`, { operation: 'agent.subscribe', path: this.#socket });
    }
    if (this.#reading !== null) return;
    const { id, bytes, operation } = this.#encode('subscribe', {});
    await this.#enqueue(async () => {
      if (this.#reading !== null) return;
      // The agent sends no announcement before this reply: everything after it is read by the loop.
      this.#decode(operation, id, await this.#exchange(operation, bytes, limits), false);
      this.#readAll();
    });
  }

  /** Tells the agent this client has preserved everything and is quiesced: an update may proceed. */
  async ready(options?: RequestOptions): Promise<void> {
    await this.#request('ready', {}, options);
  }

  /** The synchronous form of {@link ready}. */
  readySync(options?: Omit<RequestOptions, 'signal'>): void {
    this.#requestSync('ready', {}, options);
  }

  /** The sessions this client's user may see, with their states and the manifest's times: one page, `next` leads to the following one. */
  async sessions(options?: SessionsOptions): Promise<SessionsReport> {
    const opts = checkOptions<SessionsOptions>(options);
    return withNext(await this.#request('sessions', pageOf(opts), opts));
  }

  /** The synchronous form of {@link sessions}. */
  sessionsSync(options?: Omit<SessionsOptions, 'signal'>): SessionsReport {
    const opts = checkOptions<SessionsOptions>(options);
    return withNext(this.#requestSync('sessions', pageOf(opts), opts));
  }

  /**
   * Asks the agent to update: checks, kexec load, wait for every client to
   * say ready, kexec. Resolves only for a dry run; a refusal is an
   * UpdateRefusedError whose `details` name the failed checks or the clients
   * not ready. On success the machine kexecs and nothing returns.
   */
  async update(options: UpdateOptions): Promise<UpdateReport> {
    const opts = checkOptions<UpdateOptions>(options);
    if (typeof opts.cmdline !== 'string') throw invalidArgType('options.cmdline', 'of type string', opts.cmdline);
    const request: UpdateRequest = {
      kernel: checkPath(opts.kernel, 'options.kernel'),
      initrd: opts.initrd === undefined ? undefined : checkPath(opts.initrd, 'options.initrd'),
      cmdline: opts.cmdline,
      timeoutMs: checkInteger(opts.timeoutMs, 'options.timeoutMs', 60_000),
      dryRun: opts.dryRun === true,
      proceedWithout: opts.proceedWithout === true ? true : undefined,
    };
    const signal = checkSignal(opts.signal, 'options.signal');
    const { id, bytes } = this.#encode('update', { ...request });
    return this.#enqueue(async () => {
      // The agent waits up to timeoutMs for the clients before it answers.
      const first = await this.#exchange('agent.update', bytes, { timeoutMs: request.timeoutMs + this.#timeoutMs, signal });
      const body = withoutEnvelope(this.#decode('agent.update', id, first, false));
      if (body['phase'] !== 'kexec') return body as unknown as UpdateReport;
      opts.onKexec?.(body['checks'] as UpdateCheck[]);
      // Only a failed kexec answers again; a successful one ends this machine's run.
      return withoutEnvelope(this.#decode('agent.update', id, await this.#exchange('agent.update', null, { timeoutMs: this.#timeoutMs, signal }), false)) as unknown as UpdateReport;
    });
  }

  /** Closes the connection. The agent keeps this client's sessions (unless its policy says otherwise). */
  async close(): Promise<void> {
    await this.#queue.catch(() => {});
    this.closeSync();
  }

  /** The synchronous form of {@link close}. */
  closeSync(): void {
    this.#end(null);
  }

  /** Closes the connection at the end of an `await using` block (see {@link close}). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Closes the connection at the end of a `using` block (see {@link closeSync}). */
  [Symbol.dispose](): void {
    this.closeSync();
  }

  // ---- requests ----------------------------------------------------------------

  #sessionFrom(body: Body, state: 'outgoing' | 'incoming'): AgentSession {
    const fd = body['fd'] as number;
    return { session: new Session(fd, String(body['kernelName']), state), metadata: (body['metadata'] ?? null) as JsonValue };
  }

  /** Takes the hello's reply: the agent's answers and the version they agreed on. */
  #greeted(hello: Body): void {
    this.#hello = hello;
    const version = hello['version'];
    this.#version = typeof version === 'number' && PROTOCOL_VERSIONS.includes(version) ? version : HELLO_VERSION;
  }

  #encode(op: string, args: Body): { id: number; bytes: Buffer; operation: AgentOperation } {
    const operation = `agent.${op}` as AgentOperation;
    if (this.#fd < 0) throw this.#closedError(operation);
    const id = this.#nextId++;
    // The arguments written as they are, after the envelope (no copy of them into one object).
    const fields = JSON.stringify(args);
    const bytes = Buffer.from(`{"v":${this.#version},"id":${id},"op":${JSON.stringify(op)}${fields === '{}' ? '}' : `,${fields.slice(1)}`}`, 'utf8');
    if (bytes.length > MAX_MESSAGE_BYTES) throw outOfRange('the request', `at most ${MAX_MESSAGE_BYTES} bytes of JSON`, bytes.length);
    return { id, bytes, operation };
  }

  #enqueue<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#pending === 0 ? run() : this.#queue.then(run, run);
    this.#pending++;
    this.#queue = next.then(this.#settled, this.#settled);
    return next;
  }

  #request(op: string, args: Body, options?: RequestOptions, wantsFd = false): Promise<Body> {
    const opts = checkOptions<RequestOptions>(options);
    const limits = { timeoutMs: checkInteger(opts.timeoutMs, 'options.timeoutMs', this.#timeoutMs), signal: checkSignal(opts.signal, 'options.signal') };
    const { id, bytes, operation } = this.#encode(op, args);
    return this.#enqueue(async () => this.#decode(operation, id, await this.#exchange(operation, bytes, limits), wantsFd));
  }

  /**
   * Sends `bytes` (unless null: a second reply is awaited) and receives the
   * reply, within `timeoutMs`. A timeout or an abort closes the connection:
   * the reply may still come, and would be taken for the next request's.
   */
  async #exchange(operation: AgentOperation, bytes: Buffer | null, limits: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<RecvResult> {
    if (this.#fd < 0) throw this.#closedError(operation);
    const stop = new Stop(limits.timeoutMs, limits.signal);
    const step: Step = { syscall: 'sendmsg' };
    try {
      // Requests on a client run one at a time: nothing of this connection is queued before it.
      if (bytes !== null && !sentNow(this.#fd, [], bytes)) await sendFds(this.#fd, [], bytes, { signal: stop.signal() });
      step.syscall = 'recvmsg';
      if (this.#reading !== null) return await this.#nextReply(operation, stop.signal());
      return await this.#reply(operation, stop);
    } catch (error) {
      // The subscribed connection ended while this request waited: its reason, as the loop said it.
      if (error !== null && error === this.#ended) throw error;
      if (stop.why !== null) this.closeSync();
      if (stop.why === 'timeout') throw this.#timedOut(operation, step, limits.timeoutMs);
      throw this.#failed(operation, error);
    } finally {
      stop.end();
    }
  }

  /**
   * The reply, once it is there: the connection waits on the event loop for
   * it (its readiness watcher, kept from one request to the next, as the
   * agent waits for a request), then takes it within the call. A receive
   * left pending instead would make every other call on a socket of this
   * process look its socket up (the fd-passing layer's queues), which with
   * many clients at once was a tenth of each one's CPU time. A wait that
   * fails for a reason of its own leaves the error to say to the receive.
   */
  async #reply(operation: AgentOperation, stop: Stop): Promise<RecvResult> {
    // With other requests of this process waiting too, looked for once this turn is over (every request of the turn sent, the agent
    // answering meanwhile): one already there needs no watcher. A lone request waits at once (the turn would only add latency).
    awaitingReplies++;
    try {
      if (awaitingReplies > 1) {
        await endOfTurn();
        if (this.#fd < 0) throw this.#closedError(operation);
        if (native.readableNow(this.#fd)) return await recvFds(this.#fd, RECEIVE_REPLY);
      }
      return await this.#waitForReply(stop);
    } finally {
      awaitingReplies--;
    }
  }

  /** The reply, once the connection's readiness watcher says it is there (or the request stopped). */
  async #waitForReply(stop: Stop): Promise<RecvResult> {
    const readable = await stop.waitFor((this.#watch ??= new native.ReadableWatch(this.#fd)));
    if (readable) return await recvFds(this.#fd, RECEIVE_REPLY);
    if (stop.why !== null) throw stop.error();
    return await recvFds(this.#fd, { ...RECEIVE_REPLY, signal: stop.signal() });
  }

  #requestSync(op: string, args: Body, options?: Omit<RequestOptions, 'signal'>, wantsFd = false): Body {
    const timeoutMs = checkInteger(checkOptions<RequestOptions>(options).timeoutMs, 'options.timeoutMs', this.#timeoutMs);
    const { id, bytes, operation } = this.#encode(op, args);
    if (this.#reading !== null) {
      throw packageError('ERR_LIVEUPDATE_SOCKET_BUSY', 'a subscribed client reads its connection all the time; use the Promise form', { operation, path: this.#socket });
    }
    const deadline = Date.now() + timeoutMs;
    const step: Step = { syscall: 'sendmsg' };
    let message: RecvResult;
    try {
      sendFdsSync(this.#fd, [], bytes, { timeout: timeoutMs });
      step.syscall = 'recvmsg';
      // One packet is one message: once readable, the receive does not block.
      if (!native.waitReadable(this.#fd, Math.max(0, deadline - Date.now()))) throw Object.assign(new Error('ETIMEDOUT'), { code: 'ETIMEDOUT' });
      message = recvFdsSync(this.#fd, RECEIVE_REPLY);
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'ETIMEDOUT') throw this.#failed(operation, error);
      this.closeSync();
      throw this.#timedOut(operation, step, timeoutMs);
    }
    return this.#decode(operation, id, message, wantsFd);
  }

  // ---- announcements -------------------------------------------------------------

  /** Reads every message from here on: announcements become events, replies go to the request waiting for them. */
  #readAll(): void {
    const reading = new AbortController();
    this.#reading = reading;
    void (async () => {
      for (;;) {
        let message: RecvResult;
        try {
          message = await recvFds(this.#fd, { ...RECEIVE_REPLY, signal: reading.signal });
        } catch (error) {
          if (!reading.signal.aborted) this.#end(this.#failed('agent.subscribe', error) as Error);
          return;
        }
        const broken = this.#route(message);
        if (broken !== null) {
          this.#end(broken);
          return;
        }
      }
    })();
  }

  /** Hands one message on; answers the error that ends the connection, or null. */
  #route(message: RecvResult): Error | null {
    const context: ErrorContext = { operation: 'agent.subscribe', path: this.#socket };
    if (message.eof) return agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'the agent closed the connection', context);
    const kind = classifyAgentMessage(message.data);
    if (kind.kind === 'reply') {
      if (this.#replies.length === MAX_UNTAKEN_REPLIES) {
        closeAll(message.fds);
        return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the agent sent replies to requests this client did not make', context);
      }
      this.#replies.push(message);
      this.#wake?.();
      return null;
    }
    // Announcements carry no fds.
    closeAll(message.fds);
    if (kind.kind === 'invalid') return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `the agent sent ${kind.why}`, context);
    if (kind.kind === 'announcement') this.#announce(kind.announcement);
    return null;
  }

  /** Emits one announcement; a listener's exception is thrown again outside the loop (as from any emitter), and reading goes on. */
  #announce(announcement: Announcement): void {
    try {
      if (announcement.event === 'prepare') {
        this.emit('prepare', { deadline: new Date(announcement.deadline), deadlineMs: announcement.remainingMs, kernel: announcement.kernel });
      } else {
        this.emit('resume', { reason: announcement.reason, ...(announcement.code === undefined ? {} : { code: announcement.code }) });
      }
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  /** The next reply the loop received, waiting for it until `signal` or the connection's end. */
  async #nextReply(operation: AgentOperation, signal: AbortSignal): Promise<RecvResult> {
    for (;;) {
      const reply = this.#replies.shift();
      if (reply !== undefined) return reply;
      if (this.#ended !== null || this.#fd < 0) throw this.#ended ?? this.#closedError(operation);
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          signal.removeEventListener('abort', wake);
          this.#wake = null;
          resolve();
        };
        this.#wake = wake;
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Ends the connection once: stops the loop, closes the fd and any fd a reply brought, and says why to a waiting request and to `'close'`. */
  #end(error: Error | null): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    const reading = this.#reading;
    this.#reading = null;
    reading?.abort();
    for (const reply of this.#replies.splice(0)) closeAll(reply.fds);
    this.#watch?.close();
    this.#watch = null;
    fs.closeSync(fd);
    if (reading === null) return;
    this.#ended = error;
    this.#wake?.();
    this.emit('close', ...(error === null ? [] : [error]));
  }

  #closedError(operation: AgentOperation): LiveUpdateError {
    return agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'the client is closed', { operation, path: this.#socket });
  }

  #timedOut(operation: AgentOperation, step: Step, timeoutMs: number): LiveUpdateError {
    return kernelError({ errno: -110, code: 'ETIMEDOUT', syscall: step.syscall }, { operation, path: this.#socket, hint: `no reply within ${timeoutMs} ms` });
  }

  /** What a failed send or receive means for the request: a lost connection, a reply too large, ... */
  #failed(operation: AgentOperation, error: unknown): unknown {
    const context: ErrorContext = { operation, path: this.#socket, cause: error };
    if (error instanceof MessageTruncatedError) {
      return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `the agent's reply of ${error.length} bytes exceeds the protocol's limit of ${MAX_MESSAGE_BYTES} bytes; it was skipped`, context);
    }
    if (error instanceof LiveUpdateError && error.errno !== undefined && error.syscall !== undefined) {
      return kernelError({ errno: error.errno, code: error.code, syscall: error.syscall }, context);
    }
    if (isNativeSystemError(error)) return kernelError(error, context);
    if (error instanceof LiveUpdateError) return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `the agent's reply cannot be taken: ${error.message}`, context);
    return error;
  }

  /**
   * The reply's body (with `fd` when one came and was wanted), or the error
   * it carries. Stray fds are closed. The body is the parsed object itself,
   * its envelope (`v`, `id`, `ok`) still in it: what a user is handed is
   * taken out of it ({@link withoutEnvelope}).
   */
  #decode(operation: AgentOperation, id: number, { data, fds, eof }: RecvResult, wantsFd: boolean): Body {
    if (eof) throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'the agent closed the connection', { operation, path: this.#socket });
    let body: unknown;
    try {
      body = JSON.parse(data.toString('utf8'));
    } catch {
      throw this.#badReply(operation, fds, 'the agent sent a reply that is not JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw this.#badReply(operation, fds, 'the agent sent a reply that is not a JSON object');
    const reply = body as Body;
    if (reply['ok'] !== true) {
      closeAll(fds);
      throw fromWireError(reply['error'], operation);
    }
    if (reply['id'] !== id) throw this.#badReply(operation, fds, `the agent answered request ${String(reply['id'])} instead of ${id}`);
    if (!wantsFd) {
      closeAll(fds);
      return reply;
    }
    if (fds.length !== 1) throw this.#badReply(operation, fds, 'the agent sent no session fd');
    reply['fd'] = fds[0];
    return reply;
  }

  /** A reply this client cannot take: the fds it brought are closed. */
  #badReply(operation: AgentOperation, fds: readonly number[], text: string): LiveUpdateError {
    closeAll(fds);
    return agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', text, { operation, path: this.#socket });
  }
}
