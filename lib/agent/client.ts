/**
 * The agent's client: what a VMM (or any process holding state worth
 * keeping) uses instead of opening /dev/liveupdate itself. The agent
 * creates the session and passes its fd; the client preserves its own fds
 * into it with the usual Session API.
 */
import * as fs from 'node:fs';
import { agentError, LiveUpdateError, type AgentOperation } from '../errors.js';
import { recvFds, recvFdsSync, sendFds, sendFdsSync, type RecvResult } from '../fdpass.js';
import { native } from '../native.js';
import { Session } from '../session.js';
import { checkOptions, checkPath, invalidArgType } from '../validate.js';
import { DEFAULT_SOCKET, fromWireError, MAX_MESSAGE_BYTES, PROTOCOL_VERSIONS, type JsonValue, type SessionInfo, type UpdateRequest } from './protocol.js';
import type { UpdateCheck } from './server.js';

/** Options of {@link AgentClient.connect}. */
export interface ConnectOptions {
  /** The agent's socket (default `/run/liveupdate/agent.sock`). */
  socket?: string;
  /** Cancels the connection and the hello (Promise form only). */
  signal?: AbortSignal;
  /** A name for this client in the agent's log. */
  name?: string;
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

/** What `sessions()` returns. */
export interface SessionsReport {
  /** The sessions this client's user may see (root: all). */
  sessions: SessionInfo[];
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
  /** Called when the agent starts the kexec, with the checks that passed. */
  onKexec?: (checks: UpdateCheck[]) => void;
}

/** The result of a dry run. */
export interface UpdateReport {
  /** True when the update stopped after the checks, as asked. */
  dryRun: boolean;
  /** Each check the agent made, in order. */
  checks: UpdateCheck[];
}

type Body = Record<string, unknown>;

function unavailable(operation: AgentOperation, text: string, cause?: unknown): LiveUpdateError {
  const error = agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', text, { operation });
  if (cause !== undefined) Object.defineProperty(error, 'cause', { value: cause, configurable: true, writable: true });
  return error;
}

function connectError(socket: string, error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN') {
    return unavailable('agent.connect', `no agent answers at ${socket} (${String(code)})`, error);
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `not permitted to connect to ${socket} (${String(code)})`, { operation: 'agent.connect' });
  }
  return error;
}

function checkName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  return name;
}

/**
 * A connection to the agent. Requests on one client run one after another;
 * each has a Promise form and a Sync form, as in node:fs.
 */
export class AgentClient {
  #fd: number;
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();
  #hello: Body = {};

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Connects to the agent and introduces this client (protocol `hello`). */
  static async connect(options?: ConnectOptions): Promise<AgentClient> {
    const opts = checkOptions<ConnectOptions>(options);
    const socket = checkPath(opts.socket ?? DEFAULT_SOCKET, 'options.socket');
    opts.signal?.throwIfAborted();
    let fd: number;
    try {
      fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
    } catch (error) {
      throw connectError(socket, error);
    }
    const client = new AgentClient(fd);
    const onAbort = (): void => client.closeSync();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      client.#hello = await client.#request('hello', { versions: [...PROTOCOL_VERSIONS], client: opts.name });
      opts.signal?.throwIfAborted();
      return client;
    } catch (error) {
      client.closeSync();
      opts.signal?.throwIfAborted();
      throw error;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The synchronous form of {@link connect} (no signal). */
  static connectSync(options?: Omit<ConnectOptions, 'signal'>): AgentClient {
    const opts = checkOptions<ConnectOptions>(options);
    const socket = checkPath(opts.socket ?? DEFAULT_SOCKET, 'options.socket');
    let fd: number;
    try {
      fd = native.unixConnect(native.SOCK_SEQPACKET, socket);
    } catch (error) {
      throw connectError(socket, error);
    }
    const client = new AgentClient(fd);
    try {
      client.#hello = client.#requestSync('hello', { versions: [...PROTOCOL_VERSIONS], client: opts.name });
      return client;
    } catch (error) {
      client.closeSync();
      throw error;
    }
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
  async createSession(name: string, options?: CreateSessionOptions): Promise<Session> {
    const metadata = checkOptions<CreateSessionOptions>(options).metadata ?? null;
    return this.#sessionFrom(await this.#request('createSession', { name: checkName(name), metadata }, true), 'outgoing').session;
  }

  /** The synchronous form of {@link createSession}. */
  createSessionSync(name: string, options?: CreateSessionOptions): Session {
    const metadata = checkOptions<CreateSessionOptions>(options).metadata ?? null;
    return this.#sessionFrom(this.#requestSync('createSession', { name: checkName(name), metadata }, true), 'outgoing').session;
  }

  /** Before the kexec: takes up again an outgoing session of this user (after this client restarted). */
  async attach(name: string): Promise<AgentSession> {
    return this.#sessionFrom(await this.#request('attach', { name: checkName(name) }, true), 'outgoing');
  }

  /** The synchronous form of {@link attach}. */
  attachSync(name: string): AgentSession {
    return this.#sessionFrom(this.#requestSync('attach', { name: checkName(name) }, true), 'outgoing');
  }

  /** After the kexec: this user's session of that name, with its metadata. */
  async retrieveSession(name: string): Promise<AgentSession> {
    return this.#sessionFrom(await this.#request('retrieveSession', { name: checkName(name) }, true), 'incoming');
  }

  /** The synchronous form of {@link retrieveSession}. */
  retrieveSessionSync(name: string): AgentSession {
    return this.#sessionFrom(this.#requestSync('retrieveSession', { name: checkName(name) }, true), 'incoming');
  }

  /**
   * Lets the agent drop its reference. Before the kexec this unpreserves
   * the session once no process holds it any more (close yours too); after
   * it, the agent finishes the session.
   */
  async release(name: string): Promise<void> {
    await this.#request('release', { name: checkName(name) });
  }

  /** The synchronous form of {@link release}. */
  releaseSync(name: string): void {
    this.#requestSync('release', { name: checkName(name) });
  }

  /** Tells the agent this client has preserved everything and is quiesced: an update may proceed. */
  async ready(): Promise<void> {
    await this.#request('ready', {});
  }

  /** The synchronous form of {@link ready}. */
  readySync(): void {
    this.#requestSync('ready', {});
  }

  /** The sessions this client's user may see, with their states and the manifest's times. */
  async sessions(): Promise<SessionsReport> {
    return (await this.#request('sessions', {})) as unknown as SessionsReport;
  }

  /** The synchronous form of {@link sessions}. */
  sessionsSync(): SessionsReport {
    return this.#requestSync('sessions', {}) as unknown as SessionsReport;
  }

  /**
   * Asks the agent to update: checks, kexec load, wait for every client to
   * say ready, kexec. Resolves only for a dry run; a refusal is an
   * UpdateRefusedError whose `details` name the failed check or the clients
   * not ready. On success the machine kexecs and nothing returns.
   */
  async update(options: UpdateOptions): Promise<UpdateReport> {
    const request: Omit<UpdateRequest, never> = {
      kernel: checkPath(options.kernel, 'options.kernel'),
      initrd: options.initrd === undefined ? undefined : checkPath(options.initrd, 'options.initrd'),
      cmdline: options.cmdline,
      timeoutMs: options.timeoutMs ?? 60_000,
      dryRun: options.dryRun === true,
    };
    const { id, bytes } = this.#encode('update', { ...request });
    return this.#enqueue(async () => {
      await this.#sendRequest('agent.update', bytes);
      const body = await this.#receive('agent.update', id, false);
      if (body['phase'] !== 'kexec') return body as unknown as UpdateReport;
      options.onKexec?.(body['checks'] as UpdateCheck[]);
      // Only a failed kexec answers again; a successful one ends this machine's run.
      return (await this.#receive('agent.update', id, false)) as unknown as UpdateReport;
    });
  }

  /** Closes the connection. The agent keeps this client's sessions (unless its policy says otherwise). */
  async close(): Promise<void> {
    await this.#queue.catch(() => {});
    this.closeSync();
  }

  /** The synchronous form of {@link close}. */
  closeSync(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    fs.closeSync(fd);
  }

  // ---- requests ----------------------------------------------------------------

  #sessionFrom(body: Body, state: 'outgoing' | 'incoming'): AgentSession {
    const fd = body['fd'] as number;
    return { session: new Session(fd, String(body['kernelName']), state), metadata: (body['metadata'] ?? null) as JsonValue };
  }

  #encode(op: string, args: Body): { id: number; bytes: Buffer; operation: AgentOperation } {
    if (this.#fd < 0) throw unavailable(`agent.${op}` as AgentOperation, 'the client is closed');
    const id = this.#nextId++;
    const bytes = Buffer.from(JSON.stringify({ v: 1, id, op, ...args }), 'utf8');
    if (bytes.length > MAX_MESSAGE_BYTES) throw new RangeError(`the request is ${bytes.length} bytes (at most ${MAX_MESSAGE_BYTES})`);
    return { id, bytes, operation: `agent.${op}` as AgentOperation };
  }

  #enqueue<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => {});
    return next;
  }

  #request(op: string, args: Body, wantsFd = false): Promise<Body> {
    const { id, bytes, operation } = this.#encode(op, args);
    return this.#enqueue(async () => {
      await this.#sendRequest(operation, bytes);
      return this.#receive(operation, id, wantsFd);
    });
  }

  async #sendRequest(operation: AgentOperation, bytes: Buffer): Promise<void> {
    try {
      await sendFds(this.#fd, [], bytes);
    } catch (error) {
      throw unavailable(operation, `the request could not be sent: ${(error as Error).message}`, error);
    }
  }

  async #receive(operation: AgentOperation, id: number, wantsFd: boolean): Promise<Body> {
    let message: RecvResult;
    try {
      message = await recvFds(this.#fd, { maxFds: 1, maxBytes: MAX_MESSAGE_BYTES });
    } catch (error) {
      throw unavailable(operation, `no answer: ${(error as Error).message}`, error);
    }
    return this.#decode(operation, id, message, wantsFd);
  }

  #requestSync(op: string, args: Body, wantsFd = false): Body {
    const { id, bytes, operation } = this.#encode(op, args);
    let message: RecvResult;
    try {
      sendFdsSync(this.#fd, [], bytes);
      message = recvFdsSync(this.#fd, { maxFds: 1, maxBytes: MAX_MESSAGE_BYTES });
    } catch (error) {
      throw unavailable(operation, `no answer: ${(error as Error).message}`, error);
    }
    return this.#decode(operation, id, message, wantsFd);
  }

  /** The reply's body (with `fd` when one came and was wanted), or the error it carries. Stray fds are closed. */
  #decode(operation: AgentOperation, id: number, { data, fds, eof }: RecvResult, wantsFd: boolean): Body {
    const closeAll = (): void => fds.forEach((fd) => fs.closeSync(fd));
    if (eof) throw unavailable(operation, 'the agent closed the connection');
    let body: Body;
    try {
      body = JSON.parse(data.toString('utf8')) as Body;
    } catch {
      closeAll();
      throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the agent sent a reply that is not JSON', { operation });
    }
    if (body['ok'] !== true) {
      closeAll();
      throw fromWireError(body['error'], operation);
    }
    if (body['id'] !== id) {
      closeAll();
      throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `the agent answered request ${String(body['id'])} instead of ${id}`, { operation });
    }
    if (wantsFd && fds.length !== 1) {
      closeAll();
      throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the agent sent no session fd', { operation });
    }
    if (!wantsFd) closeAll();
    const { v: _v, id: _id, ok: _ok, ...result } = body;
    return wantsFd ? { ...result, fd: fds[0] } : result;
  }
}
