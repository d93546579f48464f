/**
 * The agent: the one owner of /dev/liveupdate on a host, serving many
 * clients over a Unix socket (AGENT-PROTOCOL.md). It creates each client's
 * sessions and keeps its own reference to them, so a client that crashes
 * loses nothing; it runs the update (checks, kexec load, waiting for every
 * client to say ready, kexec), and after the kexec it hands each session
 * back to its owner only.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { agentError, LiveUpdateError, SessionNotFoundError, type AgentErrorCode, type AgentOperation } from '../errors.js';
import { FdPassError, recvFds, sendFds } from '../fdpass.js';
import * as kexec from '../kexec.js';
import * as memfd from '../memfd.js';
import { LiveUpdate } from '../liveupdate.js';
import { native } from '../native.js';
import { Session } from '../session.js';
import { kernelBoolParam, kernelParam } from '../diagnosis.js';
import { DEVICE_PATH } from '../status.js';
import { notify } from '../systemd.js';
import { readManifest, writeManifest, MANIFEST_FORMAT, MANIFEST_TOKEN, MANIFEST_VERSION, type Manifest, type ManifestSession } from './manifest.js';
import { AGENT_SESSION_NAME, checkClientName, kernelName } from './names.js';
import { boundedLogValue, DEFAULT_HELLO_TIMEOUT_MS, Listener, type ConnectionLimits } from './listener.js';
import { DEFAULT_POLICY, groupsOf, permits, type Peer, type Policy } from './policy.js';
import {
  MAX_MESSAGE_BYTES,
  MAX_REQUEST_FDS,
  operationOf,
  parseRequest,
  PROTOCOL_VERSIONS,
  toWireError,
  type Envelope,
  type JsonValue,
  type SessionInfo,
  type UpdateRequest,
} from './protocol.js';

/** One line of the agent's log: what happened, when, and to whom. */
export interface AgentEvent {
  /** ISO 8601 time. */
  time: string;
  /** `listening`, `connected`, `refused`, `session-created`, `ready`, `update-refused`, `kexec`, ... */
  event: string;
  [key: string]: JsonValue | undefined;
}

/** What the agent kept in systemd's fd store when it stopped, handed back through LISTEN_FDS at its next start. */
export interface RestoredState {
  /** The state memfd stored under {@link STATE_FDNAME}. */
  stateFd?: number | undefined;
  /** Every other stored fd by its FDNAME (the session fds). */
  fds: ReadonlyMap<string, number>;
}

/** Options of {@link Agent.start}. */
export interface AgentOptions {
  /** The socket path to create (default `/run/liveupdate/agent.sock`); ignored with `listenFd`. */
  socket?: string;
  /** A listening SOCK_SEQPACKET Unix socket to serve instead (socket activation). */
  listenFd?: number;
  /** Who may do what (default: root only; see {@link DEFAULT_POLICY}). */
  policy?: Policy;
  /** The LUO device (default `/dev/liveupdate`). */
  devicePath?: string;
  /** Receives one event per thing that happens (the CLI writes them as JSON lines). */
  log?: (event: AgentEvent) => void;
  /** A connection that has not said hello within this time is dropped (default 5000 ms). */
  helloTimeoutMs?: number;
  /** How many connections at once, per uid and in all (AGENT-PROTOCOL.md, "Limits"). */
  limits?: Partial<ConnectionLimits>;
  /** A response the client does not take within this time drops its connection (default 5000 ms). */
  sendTimeoutMs?: number;
  /** What a previous run of the agent parked in systemd's fd store. */
  restored?: RestoredState;
}

/** The FDNAME of the agent's state memfd in systemd's fd store. */
export const STATE_FDNAME = 'agent-state';

/** The FDNAME of the agent's own incoming session, parked when its manifest was refused. */
export const MANIFEST_FDNAME = 'agent-manifest';

/** A session the agent knows. */
interface Entry extends ManifestSession {
  state: SessionInfo['state'];
  /** The agent's own reference (null while waiting to be claimed, or once released). */
  session: Session | null;
  holder: Connection | null;
  claimedAt?: number | undefined;
}

/** One client connection. */
interface Connection {
  readonly id: number;
  readonly fd: number;
  readonly peer: Peer;
  hello: boolean;
  ready: boolean;
  /** Outgoing sessions this client created or re-attached to. */
  readonly holds: Set<Entry>;
  /** The receive in progress, cancelled on stop. */
  receiving?: AbortController;
}

/** A reply: the JSON fields besides v/id/ok and an fd to pass with it. */
interface Reply {
  body: Record<string, JsonValue | undefined>;
  fd?: number;
}

class DroppedConnection extends Error {}

/** The FDNAME under which a session's fd is parked in systemd's fd store. */
function fdNameOf(kernelName: string): string {
  return `luo-${createHash('sha256').update(kernelName).digest('hex').slice(0, 32)}`;
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed: nothing to release.
  }
}

/**
 * The agent. `Agent.start()` opens the device, reads the manifest the
 * previous kernel's agent left (if any), and serves the socket until
 * `stop()`.
 */
export class Agent {
  readonly #policy: Policy;
  readonly #log: (event: AgentEvent) => void;
  readonly #helloTimeoutMs: number;
  readonly #sendTimeoutMs: number;
  readonly #outgoing = new Map<string, Entry>();
  readonly #incoming = new Map<string, Entry>();
  readonly #connections = new Set<Connection>();
  #device: LiveUpdate | null = null;
  #deviceError: LiveUpdateError | null = null;
  /** A manifest this agent must not read (newer major version): every request is refused with it. */
  #manifestError: LiveUpdateError | null = null;
  /** The agent's incoming session held (never finished) while the manifest is refused. */
  #heldManifestSession: Session | null = null;
  #manifest: Manifest | null = null;
  #firstOpenAt: number | null = null;
  #listener: Listener<Peer> | null = null;
  #nextId = 1;
  #updating = false;
  #stopped = false;
  #unclaimedTimer: NodeJS.Timeout | null = null;

  private constructor(options: AgentOptions) {
    this.#policy = options.policy ?? DEFAULT_POLICY;
    this.#log = options.log ?? (() => {});
    this.#helloTimeoutMs = options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    this.#sendTimeoutMs = options.sendTimeoutMs ?? 5000;
  }

  /**
   * Starts an agent: opens the device (an agent without one still serves,
   * answering every request that needs it with AgentUnavailableError),
   * reads the previous kernel's manifest, takes back what the last run parked
   * in systemd's fd store, and listens.
   */
  static async start(options: AgentOptions = {}): Promise<Agent> {
    const agent = new Agent(options);
    // The socket first: one the agent must not use stops it before the device is opened.
    agent.#listener = await Listener.open(options);
    try {
      const parkedManifest = options.restored?.fds.get(MANIFEST_FDNAME);
      await agent.#openDevice(options.devicePath ?? DEVICE_PATH, parkedManifest);
      if (options.restored !== undefined) agent.#restore(options.restored);
    } catch (error) {
      agent.#listener.close();
      throw error;
    }
    agent.#listen(agent.#listener);
    agent.#scheduleUnclaimed();
    return agent;
  }

  /** The socket path the agent created, or null when it serves a socket it was given. */
  get socketPath(): string | null {
    return this.#listener?.socketPath ?? null;
  }

  /** Why the device is not usable, or null. */
  get deviceError(): LiveUpdateError | null {
    return this.#deviceError;
  }

  /** Why the previous kernel's manifest was refused, or null. */
  get manifestError(): LiveUpdateError | null {
    return this.#manifestError;
  }

  /** The manifest the previous kernel's agent handed over, or null on a first boot. */
  get manifest(): Manifest | null {
    return this.#manifest;
  }

  /** Every session the agent knows (what root sees with `sessions`). */
  sessions(): SessionInfo[] {
    return [...this.#incoming.values(), ...this.#outgoing.values()].map((e) => this.#info(e));
  }

  /** A one-line summary for systemd's STATUS=. */
  statusLine(): string {
    if (this.#manifestError !== null) return `refusing: ${this.#manifestError.message}`;
    if (this.#deviceError !== null) return `no device: ${this.#deviceError.message}`;
    const waiting = [...this.#incoming.values()].filter((e) => e.state === 'waiting').length;
    return `${this.#connections.size} client(s), ${this.#outgoing.size} outgoing session(s), ${waiting} waiting to be claimed`;
  }

  /**
   * Stops serving: closes the socket and every connection. With `park`, the
   * agent's references to outgoing sessions and its state go to systemd's
   * fd store first (FDSTORE=1), so that the next start gets them back
   * through LISTEN_FDS; otherwise they are closed, and each session lives on
   * only in the clients that hold it.
   */
  async stop(options: { park?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#unclaimedTimer !== null) clearTimeout(this.#unclaimedTimer);
    this.#listener?.close();
    for (const c of this.#connections) c.receiving?.abort();
    if (options.park === true) await this.#park();
    for (const e of this.#outgoing.values()) e.session?.closeSync();
    for (const e of this.#incoming.values()) e.session?.closeSync();
    if (this.#heldManifestSession !== null && options.park !== true) this.#heldManifestSession.closeSync();
    this.#device?.closeSync();
    this.#event('stopped', { parked: options.park === true });
  }

  // ---- start ------------------------------------------------------------------

  async #openDevice(devicePath: string, parkedManifest: number | undefined): Promise<void> {
    try {
      this.#device = await LiveUpdate.open(devicePath);
    } catch (error) {
      if (!(error instanceof LiveUpdateError)) throw error;
      this.#deviceError = error;
      this.#event('device-unavailable', { code: error.code, message: error.message });
      return;
    }
    this.#firstOpenAt = Date.now();
    await this.#readIncomingManifest(this.#device, parkedManifest);
  }

  /** Reads the manifest first thing after the kexec; a newer major version stops everything but `sessions`. */
  async #readIncomingManifest(device: LiveUpdate, parked: number | undefined): Promise<void> {
    let own: Session;
    try {
      // A run that refused the manifest parked the session it had retrieved: retrieving a token again is allowed.
      own = parked === undefined ? await device.retrieveSession(AGENT_SESSION_NAME) : Session.fromFd(parked);
    } catch (error) {
      if (error instanceof SessionNotFoundError) return; // First boot, or no update carried a manifest.
      throw error;
    }
    const fd = await own.retrieve(MANIFEST_TOKEN);
    try {
      this.#manifest = readManifest(fd);
    } catch (error) {
      if (!(error instanceof LiveUpdateError)) throw error;
      // Not finished: an agent that can read it must still find it (and the sessions it names).
      this.#manifestError = error;
      this.#heldManifestSession = own;
      this.#event('manifest-refused', { code: error.code, message: error.message });
      return;
    } finally {
      closeQuietly(fd);
    }
    await own.finish();
    await own.close();
    for (const s of this.#manifest.sessions) {
      this.#incoming.set(s.kernelName, { ...s, state: 'waiting', session: null, holder: null });
    }
    this.#event('manifest-read', {
      kexecCount: this.#manifest.kexecCount,
      sessions: this.#manifest.sessions.length,
      frozenAt: this.#manifest.frozenAt,
      firstOpenAt: this.#firstOpenAt,
      blackoutMs: this.#firstOpenAt === null ? null : this.#firstOpenAt - this.#manifest.frozenAt,
    });
  }

  /** Takes back the sessions a previous run parked in systemd's fd store. */
  #restore(restored: RestoredState): void {
    if (restored.stateFd === undefined) return;
    let saved: ManifestSession[] = [];
    try {
      saved = (JSON.parse(fs.readFileSync(`/proc/self/fd/${restored.stateFd}`, 'utf8')) as { sessions: ManifestSession[] }).sessions;
    } catch (error) {
      this.#event('restore-failed', { message: (error as Error).message });
    } finally {
      closeQuietly(restored.stateFd);
    }
    for (const s of saved) {
      const fd = restored.fds.get(fdNameOf(s.kernelName));
      if (fd === undefined) continue;
      const session = Session.fromFd(fd);
      if (session.state !== 'outgoing') {
        session.closeSync();
        continue;
      }
      this.#outgoing.set(s.kernelName, { ...s, state: 'outgoing', session, holder: null });
    }
    this.#event('restored', { sessions: this.#outgoing.size });
  }

  #listen(listener: Listener<Peer>): void {
    listener.accept({
      identify: (fd) => {
        const cred = native.peerCredentials(fd);
        return { ...cred, groups: groupsOf(cred.pid, cred.gid) };
      },
      refusal: (peer) =>
        permits(this.#policy.connect, peer) ? null : agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `uid ${peer.uid} may not use this agent (policy: connect)`, { operation: 'agent.connect' }),
      serve: (fd, peer) => this.#serve(fd, peer),
      event: (name, fields) => this.#event(name, fields),
    });
    this.#event('listening', {
      socket: listener.socketPath,
      device: this.#device !== null,
      kexecCount: this.#manifest?.kexecCount ?? 0,
      limits: { ...listener.limits, helloTimeoutMs: this.#helloTimeoutMs, openFiles: Listener.openFilesLimit() },
    });
  }

  // ---- one connection ---------------------------------------------------------

  async #serve(fd: number, peer: Peer): Promise<void> {
    const c: Connection = { id: this.#nextId++, fd, peer, hello: false, ready: false, holds: new Set() };
    this.#connections.add(c);
    this.#event('connected', this.#who(c));
    try {
      while (!this.#stopped) {
        const message = await this.#receive(c);
        if (message === null) break;
        await this.#answer(c, message);
      }
    } catch (error) {
      this.#event('dropped', { ...this.#who(c), reason: (error as Error).message });
    } finally {
      this.#disconnect(c);
    }
  }

  /** The next request's bytes, or null at EOF. A bad message is answered, then the connection dropped. */
  async #receive(c: Connection): Promise<Buffer | null> {
    c.receiving = new AbortController();
    const timer = c.hello ? null : setTimeout(() => c.receiving?.abort(), this.#helloTimeoutMs);
    try {
      const { data, fds, eof } = await recvFds(c.fd, { maxBytes: MAX_MESSAGE_BYTES, maxFds: MAX_REQUEST_FDS, signal: c.receiving.signal });
      fds.forEach(closeQuietly);
      return eof ? null : data;
    } catch (error) {
      if (error instanceof FdPassError) {
        await this.#refuse(c, 0, 'agent.connect', 'ERR_LIVEUPDATE_AGENT_PROTOCOL', error.message);
      }
      if (c.receiving.signal.aborted && !this.#stopped) {
        await this.#refuse(c, 0, 'agent.hello', 'ERR_LIVEUPDATE_AGENT_PROTOCOL', `no hello within ${this.#helloTimeoutMs} ms`);
      }
      throw error instanceof Error ? error : new Error(String(error));
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }

  /** Answers with an error, logs it, and drops the connection. */
  async #refuse(c: Connection, id: number, operation: AgentOperation, code: AgentErrorCode, text: string): Promise<never> {
    const error = agentError(code, text, { operation });
    this.#event('refused', { ...this.#who(c), op: operation, code, message: error.message });
    await this.#send(c, id, { ok: false, error: toWireError(error, operation) as unknown as JsonValue }).catch(() => {});
    throw new DroppedConnection(error.message);
  }

  async #answer(c: Connection, message: Buffer): Promise<void> {
    let request: Envelope;
    try {
      request = parseRequest(message);
    } catch (error) {
      await this.#refuse(c, 0, 'agent.connect', 'ERR_LIVEUPDATE_AGENT_PROTOCOL', (error as Error).message.replace(/^ERR_\w+: /, ''));
      return;
    }
    const operation = operationOf(request.op);
    if (!c.hello && request.op !== 'hello') {
      await this.#refuse(c, request.id, operation, 'ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the first request must be hello');
    }
    let reply: Reply;
    try {
      reply = await this.#handle(c, request);
    } catch (error) {
      if (error instanceof DroppedConnection) throw error;
      const wire = toWireError(error, operation);
      this.#event('request-failed', { ...this.#who(c), op: request.op, code: wire.code, message: wire.message });
      await this.#send(c, request.id, { ok: false, error: wire as unknown as JsonValue });
      if (request.op === 'hello') throw new DroppedConnection(wire.message);
      return;
    }
    await this.#send(c, request.id, { ok: true, ...reply.body }, reply.fd);
  }

  async #send(c: Connection, id: number, body: Record<string, JsonValue | undefined>, fd?: number): Promise<void> {
    const bytes = Buffer.from(JSON.stringify({ v: 1, id, ...body }), 'utf8');
    try {
      await sendFds(c.fd, fd === undefined ? [] : [fd], bytes, { signal: AbortSignal.timeout(this.#sendTimeoutMs) });
    } catch (error) {
      throw new DroppedConnection(`the reply could not be sent: ${(error as Error).message}`);
    }
  }

  #disconnect(c: Connection): void {
    this.#connections.delete(c);
    closeQuietly(c.fd);
    for (const e of c.holds) {
      e.holder = null;
      if (this.#policy.onClientExit === 'release' && !this.#updating) this.#releaseOutgoing(e, 'client-exit');
    }
    this.#event('disconnected', { ...this.#who(c), kept: this.#policy.onClientExit === 'keep' ? c.holds.size : 0 });
  }

  // ---- requests -----------------------------------------------------------------

  async #handle(c: Connection, r: Envelope): Promise<Reply> {
    if (r.op === 'hello') return this.#hello(c, r.versions, r.client);
    if (r.op === 'sessions') return { body: this.#sessionsReply(c) };
    if (this.#manifestError !== null) throw this.#manifestError;
    switch (r.op) {
      case 'createSession':
        return this.#createSession(c, r.name, r.metadata);
      case 'attach':
        return this.#attach(c, r.name);
      case 'retrieveSession':
        return this.#retrieveSession(c, r.name);
      case 'release':
        return this.#release(c, r.name);
      case 'ready':
        c.ready = true;
        this.#event('ready', { ...this.#who(c), sessions: c.holds.size });
        return { body: { sessions: c.holds.size } };
      case 'update':
        return this.#update(c, r.id, r);
    }
  }

  #hello(c: Connection, versions: number[], client: string | undefined): Reply {
    if (!permits(this.#policy.connect, c.peer)) {
      throw agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `uid ${c.peer.uid} may not use this agent (policy: connect)`, { operation: 'agent.hello' });
    }
    const version = Math.max(...versions.filter((v) => PROTOCOL_VERSIONS.includes(v)));
    if (!Number.isFinite(version)) {
      throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `no common protocol version (the agent speaks ${PROTOCOL_VERSIONS.join(', ')})`, { operation: 'agent.hello' });
    }
    c.hello = true;
    this.#event('hello', { ...this.#who(c), clientName: client ?? null });
    return {
      body: {
        version,
        clientId: c.id,
        peer: { pid: c.peer.pid, uid: c.peer.uid, gid: c.peer.gid },
        agentPid: process.pid,
        kexecCount: this.#manifest?.kexecCount ?? 0,
        device: this.#device !== null,
      },
    };
  }

  #requireDevice(operation: AgentOperation): LiveUpdate {
    if (this.#device !== null) return this.#device;
    const why = this.#deviceError?.message ?? 'the device is closed';
    throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', `the agent cannot use /dev/liveupdate: ${why}`, { operation });
  }

  async #createSession(c: Connection, requested: string, metadata: JsonValue): Promise<Reply> {
    const uid = c.peer.uid;
    const name = checkClientName(requested, uid);
    const metadataBytes = Buffer.byteLength(JSON.stringify(metadata), 'utf8');
    const owned = [...this.#outgoing.values()].filter((e) => e.owner === uid).length;
    if (uid !== 0 && metadataBytes > this.#policy.quota.metadataBytes) {
      throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `metadata of ${metadataBytes} bytes exceeds the quota (${this.#policy.quota.metadataBytes})`, { operation: 'agent.createSession', sessionName: name });
    }
    if (uid !== 0 && owned >= this.#policy.quota.sessions) {
      throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `uid ${uid} already has ${owned} sessions (quota ${this.#policy.quota.sessions})`, { operation: 'agent.createSession', sessionName: name });
    }
    if (this.#updating) {
      throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'an update is in progress: no new sessions until it ends', { operation: 'agent.createSession', sessionName: name });
    }
    const kn = kernelName(uid, name);
    const session = await this.#requireDevice('agent.createSession').createSession(kn);
    const entry: Entry = { kernelName: kn, name, owner: uid, metadata, createdAt: Date.now(), state: 'outgoing', session, holder: c };
    this.#outgoing.set(kn, entry);
    c.holds.add(entry);
    c.ready = false;
    this.#event('session-created', { ...this.#who(c), name, kernelName: kn, metadataBytes });
    return { body: { name, kernelName: kn }, fd: session.fd };
  }

  /** The caller's own entry of that name, or SessionNotFoundError (another user's session is not even nameable). */
  #own(c: Connection, table: Map<string, Entry>, requested: string, operation: AgentOperation): Entry {
    const name = checkClientName(requested, c.peer.uid);
    const entry = table.get(kernelName(c.peer.uid, name));
    if (entry === undefined || entry.owner !== c.peer.uid) {
      const where = table === this.#outgoing ? 'outgoing session' : 'session handed over by the previous kernel';
      throw new SessionNotFoundError(`ENOENT: you have no ${where} named '${name}'`, 'ENOENT', { operation, sessionName: name }, { errno: -2, code: 'ENOENT', syscall: 'agent' });
    }
    return entry;
  }

  #attach(c: Connection, requested: string): Reply {
    const entry = this.#own(c, this.#outgoing, requested, 'agent.attach');
    if (entry.session === null) throw new Error('internal: an outgoing entry without a session');
    if (entry.holder !== null && entry.holder !== c) entry.holder.holds.delete(entry);
    entry.holder = c;
    c.holds.add(entry);
    c.ready = false;
    this.#event('attached', { ...this.#who(c), name: entry.name, kernelName: entry.kernelName });
    return { body: { name: entry.name, kernelName: entry.kernelName, metadata: entry.metadata }, fd: entry.session.fd };
  }

  async #retrieveSession(c: Connection, requested: string): Promise<Reply> {
    const device = this.#requireDevice('agent.retrieveSession');
    let entry: Entry | undefined;
    try {
      entry = this.#own(c, this.#incoming, requested, 'agent.retrieveSession');
    } catch (error) {
      // No manifest entry (the manifest was lost): the kernel still knows the name, and the name is the caller's own.
      const name = checkClientName(requested, c.peer.uid);
      entry = { kernelName: kernelName(c.peer.uid, name), name, owner: c.peer.uid, metadata: null, createdAt: 0, state: 'waiting', session: null, holder: null };
      if (this.#manifest !== null) throw error;
    }
    if (entry.state === 'finished') throw new SessionNotFoundError(`ENOENT: session '${entry.name}' was finished`, 'ENOENT', { operation: 'agent.retrieveSession', sessionName: entry.name }, { errno: -2, code: 'ENOENT', syscall: 'agent' });
    if (entry.session === null) {
      entry.session = await device.retrieveSession(entry.kernelName);
      entry.state = 'claimed';
      entry.claimedAt = Date.now();
      this.#incoming.set(entry.kernelName, entry);
    }
    this.#event('claimed', { ...this.#who(c), name: entry.name, kernelName: entry.kernelName, claimedAt: entry.claimedAt ?? null, sinceFrozenMs: this.#manifest === null || entry.claimedAt === undefined ? null : entry.claimedAt - this.#manifest.frozenAt });
    return { body: { name: entry.name, kernelName: entry.kernelName, metadata: entry.metadata }, fd: entry.session.fd };
  }

  async #release(c: Connection, requested: string): Promise<Reply> {
    const name = checkClientName(requested, c.peer.uid);
    const kn = kernelName(c.peer.uid, name);
    const outgoing = this.#outgoing.get(kn);
    if (outgoing !== undefined && outgoing.owner === c.peer.uid) {
      this.#releaseOutgoing(outgoing, 'release');
      return { body: { name, state: 'released' } };
    }
    const entry = this.#own(c, this.#incoming, requested, 'agent.release');
    await this.#finishIncoming(entry, 'release');
    return { body: { name, state: entry.state } };
  }

  #releaseOutgoing(e: Entry, why: string): void {
    e.session?.closeSync();
    e.session = null;
    e.holder?.holds.delete(e);
    this.#outgoing.delete(e.kernelName);
    void notify({ FDSTOREREMOVE: 1, FDNAME: fdNameOf(e.kernelName) }).catch(() => {});
    this.#event('session-released', { name: e.name, kernelName: e.kernelName, owner: e.owner, why });
  }

  /** Ends an incoming session: finished (files never retrieved are discarded) and the agent's reference closed. */
  async #finishIncoming(e: Entry, why: string): Promise<void> {
    if (e.state === 'finished') return;
    const session = e.session ?? (await this.#requireDevice('agent.release').retrieveSession(e.kernelName));
    try {
      await session.finish();
    } catch (error) {
      // A claimed session's owner may have finished it through its own fd already.
      if (e.state !== 'claimed') throw error;
    } finally {
      await session.close();
      e.session = null;
      e.state = 'finished';
      this.#event('session-finished', { name: e.name, kernelName: e.kernelName, owner: e.owner, why });
    }
  }

  #sessionsReply(c: Connection): Record<string, JsonValue | undefined> {
    const visible = this.sessions().filter((s) => c.peer.uid === 0 || s.owner === c.peer.uid);
    const m = this.#manifest;
    return {
      sessions: visible as unknown as JsonValue,
      kexecCount: m?.kexecCount ?? 0,
      updateStartedAt: m?.updateStartedAt ?? null,
      frozenAt: m?.frozenAt ?? null,
      firstOpenAt: this.#firstOpenAt,
      refused: this.#manifestError?.message ?? null,
    };
  }

  #info(e: Entry): SessionInfo {
    return {
      name: e.name,
      kernelName: e.kernelName,
      owner: e.owner,
      state: e.state,
      metadata: e.metadata,
      createdAt: e.createdAt,
      claimedAt: e.claimedAt,
      holder: e.holder?.id,
    };
  }

  // ---- the update -------------------------------------------------------------------

  async #update(c: Connection, id: number, r: UpdateRequest): Promise<Reply> {
    const startedAt = Date.now();
    if (!permits(this.#policy.update, c.peer)) {
      throw agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `uid ${c.peer.uid} may not run an update (policy: update)`, { operation: 'agent.update' });
    }
    if (this.#updating) throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', 'another update is in progress', { operation: 'agent.update' });
    this.#updating = true;
    try {
      const checks = updateChecks(r, this.#device !== null);
      const failed = checks.filter((x) => !x.ok);
      if (failed.length > 0) return this.#refuseUpdate(c, `check failed: ${failed.map((x) => x.name).join(', ')}`, { checks });
      if (r.dryRun) return { body: { dryRun: true, checks: checks as unknown as JsonValue } };
      await kexec.load({ kernel: r.kernel, cmdline: r.cmdline, ...(r.initrd === undefined ? {} : { initrd: r.initrd }) });
      checks.push({ name: 'kexec load', ok: true });
      this.#event('kexec-loaded', { ...this.#who(c), kernel: r.kernel });
      const notReady = await this.#waitReady(r.timeoutMs);
      if (notReady.length > 0) {
        await kexec.unload();
        return this.#refuseUpdate(c, `${notReady.length} client(s) not ready within ${r.timeoutMs} ms: ${notReady.map((x) => `client ${x.id} (pid ${x.pid}, uid ${x.uid})`).join(', ')}`, { checks, notReady });
      }
      checks.push({ name: 'every client ready', ok: true });
      const own = await this.#sealManifest(r, startedAt);
      try {
        await this.#send(c, id, { ok: true, phase: 'kexec', checks: checks as unknown as JsonValue });
        this.#event('kexec', { ...this.#who(c), kernel: r.kernel, sessions: this.#outgoing.size });
        return await kexec.execute();
      } catch (error) {
        // No jump (the kexec failed, or the asker vanished): nothing of this attempt may stay behind.
        await own.close();
        await kexec.unload().catch(() => {});
        throw error;
      }
    } finally {
      this.#updating = false;
    }
  }

  #refuseUpdate(c: Connection, why: string, details: Record<string, unknown>): never {
    this.#event('update-refused', { ...this.#who(c), why });
    throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', `the update was refused: ${why}`, { operation: 'agent.update' }, details);
  }

  /** Waits until every client holding sessions said ready; returns those that did not. */
  async #waitReady(timeoutMs: number): Promise<Array<{ id: number; pid: number; uid: number }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const notReady = [...this.#connections].filter((x) => x.holds.size > 0 && !x.ready).map((x) => ({ id: x.id, pid: x.peer.pid, uid: x.peer.uid }));
      if (notReady.length === 0 || Date.now() >= deadline) return notReady;
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, deadline - Date.now())));
    }
  }

  /** Writes the manifest into the agent's own session, the last step before the kexec. */
  async #sealManifest(r: UpdateRequest, startedAt: number): Promise<Session> {
    const own = await this.#requireDevice('agent.update').createSession(AGENT_SESSION_NAME);
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      version: [MANIFEST_VERSION.major, MANIFEST_VERSION.minor],
      kexecCount: (this.#manifest?.kexecCount ?? 0) + 1,
      updateStartedAt: startedAt,
      frozenAt: Date.now(),
      next: { kernel: r.kernel, cmdline: r.cmdline },
      sessions: [...this.#outgoing.values()].map(({ kernelName: k, name, owner, metadata, createdAt }) => ({ kernelName: k, name, owner, metadata, createdAt })),
    };
    const fd = writeManifest(manifest);
    try {
      await own.preserve(fd, MANIFEST_TOKEN);
    } catch (error) {
      await own.close();
      throw error;
    } finally {
      closeQuietly(fd);
    }
    return own;
  }

  // ---- after the kexec: sessions nobody claims ------------------------------------

  #scheduleUnclaimed(): void {
    const rule = this.#policy.unclaimed;
    if (rule === null || this.#incoming.size === 0) return;
    this.#unclaimedTimer = setTimeout(() => void this.#expireUnclaimed(rule.action), rule.afterSeconds * 1000);
    this.#unclaimedTimer.unref();
  }

  async #expireUnclaimed(action: 'keep' | 'finish'): Promise<void> {
    for (const e of this.#incoming.values()) {
      if (e.state !== 'waiting') continue;
      if (action === 'keep') this.#event('unclaimed-kept', { name: e.name, kernelName: e.kernelName, owner: e.owner });
      else await this.#finishIncoming(e, 'unclaimed').catch((error: unknown) => this.#event('finish-failed', { name: e.name, message: (error as Error).message }));
    }
  }

  // ---- systemd's fd store ---------------------------------------------------------

  /** Parks every outgoing session's fd and the state describing them in systemd's fd store. */
  async #park(): Promise<void> {
    const entries = [...this.#outgoing.values()].filter((e) => e.session !== null);
    for (const e of entries) {
      await notify({ FDSTORE: 1, FDNAME: fdNameOf(e.kernelName), FDPOLL: 0 }, [e.session?.fd ?? -1]);
    }
    if (this.#heldManifestSession !== null) {
      await notify({ FDSTORE: 1, FDNAME: MANIFEST_FDNAME, FDPOLL: 0 }, [this.#heldManifestSession.fd]);
    }
    const state = writeManifestState(entries);
    try {
      await notify({ FDSTOREREMOVE: 1, FDNAME: STATE_FDNAME });
      await notify({ FDSTORE: 1, FDNAME: STATE_FDNAME, FDPOLL: 0 }, [state]);
    } finally {
      closeQuietly(state);
    }
    this.#event('parked', { sessions: entries.length });
  }

  // ---- logging ------------------------------------------------------------------------

  #who(c: Connection): Record<string, JsonValue> {
    return { client: c.id, pid: c.peer.pid, uid: c.peer.uid };
  }

  #event(event: string, fields: Record<string, JsonValue | undefined> = {}): void {
    const bounded = Object.fromEntries(Object.entries(fields).map(([key, value]) => [key, boundedLogValue(value)]));
    this.#log({ time: new Date().toISOString(), event, ...bounded });
  }
}

/** The state parked beside the session fds: what the manifest would say about each. */
function writeManifestState(entries: Entry[]): number {
  const fd = memfd.createSync('liveupdate-agent-state');
  const sessions = entries.map(({ kernelName: k, name, owner, metadata, createdAt }) => ({ kernelName: k, name, owner, metadata, createdAt }));
  fs.writeFileSync(`/proc/self/fd/${fd}`, JSON.stringify({ sessions }));
  return fd;
}

/** One check of an update, as reported. */
export interface UpdateCheck {
  /** What was checked (`kernel-readable`, `liveupdate-on`, ...). */
  name: string;
  /** Whether it passed. */
  ok: boolean;
  /** Why it failed, or what was found. */
  detail?: string;
}

/** The checks before anything is loaded: files readable, LUO and KHO kept on the next command line, the device owned. */
export function updateChecks(r: Pick<UpdateRequest, 'kernel' | 'initrd' | 'cmdline'>, haveDevice: boolean): UpdateCheck[] {
  const readable = (file: string): UpdateCheck => {
    try {
      fs.accessSync(file, fs.constants.R_OK);
      return { name: `readable: ${file}`, ok: true };
    } catch (error) {
      return { name: `readable: ${file}`, ok: false, detail: (error as Error).message };
    }
  };
  const liveupdate = kernelParam(r.cmdline, 'liveupdate');
  const kho = kernelParam(r.cmdline, 'kho');
  return [
    readable(r.kernel),
    ...(r.initrd === undefined ? [] : [readable(r.initrd)]),
    { name: 'liveupdate=on in the next command line', ok: kernelBoolParam(r.cmdline, 'liveupdate', false), detail: `liveupdate=${liveupdate ?? '(absent)'}` },
    {
      name: 'KHO not disabled in the next command line',
      // Absent, KHO is what the next kernel's CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT says: not knowable here.
      ok: kernelBoolParam(r.cmdline, 'kho', true),
      detail: kho === null ? 'kho= absent: the next kernel must enable KHO by default (CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT)' : `kho=${kho}`,
    },
    { name: 'the agent owns /dev/liveupdate', ok: haveDevice },
  ];
}
