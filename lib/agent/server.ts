/**
 * The agent: the one owner of /dev/liveupdate on a host, serving many
 * clients over a Unix socket (AGENT-PROTOCOL.md). It creates each client's
 * sessions and keeps its own reference to them, so a client that crashes
 * loses nothing; it runs the update (checks, kexec load, waiting for every
 * client to say ready, kexec), and after the kexec it hands each session
 * back to its owner only.
 *
 * This module serves connections: it reads a request, lets the codec check
 * it, dispatches it to a handler that checks, acts through the session
 * table and replies. The rooms beside it: `codec` (messages), `connection`
 * (the per-connection state machine), `sessions` (the session table),
 * `update` (the update), `fdstore` (parking in systemd's fd store),
 * `listen` (the socket and the accept loop).
 */
import { agentError, LiveUpdateError, type AgentErrorCode, type AgentOperation } from '../errors.js';
import { FdPassError, recvFds, sendFds } from '../fdpass.js';
import { onFirstUse } from '../lazy.js';
import { native } from '../native.js';
import type { Session } from '../session.js';
import { DEVICE_PATH } from '../device.js';
import { Announcements } from './announcements.js';
import { bounded, decodeRequest, encodeReply, jsonBytes, ReplyTooLargeError, type CheckedName, type CheckedRequest } from './codec.js';
import { Connection, ConnectionState, Notifier } from './connection.js';
import { closeQuietly, MANIFEST_FDNAME, park, restore, unpark, type RestoredState } from './fdstore.js';
import { kernelSystem, KexecUnderway, StandaloneHost, type AgentHost } from './host.js';
import { boundedLogValue, DEFAULT_HELLO_TIMEOUT_MS, Listener, readableNow, watchReadable, type ConnectionLimits } from './listener.js';
import type { Manifest } from './manifest.js';
import { decideMode, gatherModeFacts, type AgentMode, type ModeDecision, type ModeFacts } from './mode.js';
import { DEFAULT_POLICY, permits, type Peer, type Policy } from './policy.js';
import { endOfTurn, MAX_MESSAGE_BYTES, MAX_REQUEST_FDS, PROTOCOL_VERSIONS, sentNow, toWireError, type JsonValue, type SessionInfo } from './protocol.js';
import { infoOf, SessionTable, type Entry } from './sessions.js';
import type * as SystemdHostModule from './systemd-host.js';
import type * as UpdateModule from './update.js';

export { MANIFEST_FDNAME, STATE_FDNAME, type RestoredState } from './fdstore.js';
export type { AgentMode, ModeDecision, ModeFacts } from './mode.js';
export type { UpdateCheck } from './protocol.js';

/** One line of the agent's log: what happened, when, and to whom. */
export interface AgentEvent {
  /** ISO 8601 time. */
  time: string;
  /** `listening`, `connected`, `refused`, `session-created`, `ready`, `update-refused`, `kexec`, ... */
  event: string;
  [key: string]: JsonValue | undefined;
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
  /** How many connections at once, per uid and in all (default: the policy's `limits`; AGENT-PROTOCOL.md, "Limits"). */
  limits?: Partial<ConnectionLimits>;
  /** A response the client does not take within this time drops its connection (default 5000 ms). */
  sendTimeoutMs?: number;
  /** What a previous run of the agent parked in systemd's fd store. */
  restored?: RestoredState;
  /**
   * `systemd` or `standalone` (AGENT-PROTOCOL.md, "Modes"); default: systemd
   * where PID 1 is systemd v261+ and the kernel has LUO, else standalone.
   */
  mode?: AgentMode | undefined;
  /** Run standalone even where systemd v261+ is PID 1 (refused otherwise). */
  force?: boolean | undefined;
  /** What the mode is decided from (default: this host's PID 1 and device). */
  modeFacts?: ModeFacts | undefined;
  /** @internal Called once, when the agent first serves more than one connection at once: a burst of clients begins (the CLI then tunes the heap, {@link tuneHeapForConnections}, and compiles to baseline code, {@link compileToBaselineFromNowOn}). */
  onBurst?: (() => void) | undefined;
  /** @internal The host to serve on instead of the one the mode gives (the simulator's: `liveupdate/simulator`); it has its own mode. */
  host?: ((storeMax: number | null) => AgentHost) | undefined;
}

/**
 * Tunes this process's V8 heap for a daemon of many small, long-lived
 * connections: a young generation that keeps its first size (in a burst of
 * clients V8 grows it to 32 MiB, never given back) and heuristics that
 * favour size. The `liveupdate agent` process calls it when a burst of
 * clients begins (AgentOptions.onBurst), not at its start: node:v8 and the
 * streams it loads cost its first answer tens of milliseconds under
 * emulation. An application that embeds the agent decides for itself. With 1000 clients at once on
 * the host, the agent's resident memory went from 107 to 72 MiB, its CPU
 * time the same (BENCHMARKS.md).
 * @internal
 */
export function tuneHeapForConnections(): void {
  // node:v8 loads here, with the daemon, not with the library.
  const v8 = require('node:v8') as typeof import('node:v8');
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  v8.setFlagsFromString('--optimize-for-size');
}

/**
 * From here on, every function V8 compiles goes straight to baseline code
 * (Sparkplug) instead of being interpreted first. The `liveupdate agent`
 * process calls it when a burst of clients begins (AgentOptions.onBurst):
 * the claim path first runs when every client comes back at once after a
 * kexec, and interpreted it cost a tenth more CPU for a hundred claims on
 * the host (more under emulation). Not sooner: compiled so, the start and
 * a lone client's requests take longer (a function run once is compiled
 * for nothing), a quarter of the start in the guest.
 * @internal
 */
export function compileToBaselineFromNowOn(): void {
  (require('node:v8') as typeof import('node:v8')).setFlagsFromString('--always-sparkplug');
}

/** A reply: the JSON fields besides v/id/ok, an fd to pass with it, and what to do once it is sent. */
interface Reply {
  body: Record<string, JsonValue | undefined>;
  fd?: number | undefined;
  afterSent?: (() => void) | undefined;
}

type Client = Connection<Entry>;

// What only an update or a host under systemd needs loads on first use: the agent's start,
// part of every blackout, compiles less (require caches, so each is loaded once).
/** The systemd host (its fd store, the sessions it hands back). */
function systemdHostModule(): typeof SystemdHostModule {
  return onFirstUse('agent/systemd-host', () => require('./systemd-host.js') as typeof SystemdHostModule);
}

/** The update (its checks, the kernel's preflight, the kexec). */
function updateModule(): typeof UpdateModule {
  return onFirstUse('agent/update', () => require('./update.js') as typeof UpdateModule);
}

/** The host the mode decided for this machine gives. */
async function hostOf(options: AgentOptions, policy: Policy, devicePath: string): Promise<AgentHost> {
  const decision = decideMode(options.modeFacts ?? (await gatherModeFacts(devicePath)), { mode: options.mode, force: options.force });
  return decision.mode === 'systemd' ? systemdHostModule().SystemdHost.create(decision, policy.fdStoreMax, devicePath) : new StandaloneHost(decision, policy.fdStoreMax, kernelSystem(devicePath));
}

/** The bytes of session entries in one `sessions` reply: the message limit less room for the other fields. */
const SESSIONS_PAGE_BYTES = MAX_MESSAGE_BYTES - 4096;

class DroppedConnection extends Error {}

/** A reply that could not be sent: the connection goes. */
function notSent(error: unknown): DroppedConnection {
  return new DroppedConnection(`the reply could not be sent: ${(error as Error).message}`);
}

/** A request's receive: at most a message's bytes, no fd (one a peer sends along anyway is closed). */
const RECEIVE_REQUEST = { maxBytes: MAX_MESSAGE_BYTES, maxFds: MAX_REQUEST_FDS } as const;

const NO_FDS: readonly number[] = [];

let isoSecond = Number.NaN;
let isoPrefix = '';

/**
 * `ms` (since the epoch) as an event's line gives it: ISO 8601 to the
 * millisecond, as Date's toISOString writes it. The part up to the second
 * is formatted once per second and the milliseconds added to it, where a
 * burst of clients logs many lines (under emulation each a millisecond or
 * more apart, so a text kept per millisecond was made again for nearly
 * every line).
 * @internal
 */
export function isoTime(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, -4);
  }
  const millis = ms - second * 1000;
  return `${isoPrefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
}

/** Milliseconds on the monotonic clock: process.hrtime, which node has loaded already (the global `performance` loads node:perf_hooks on first use, tens of milliseconds of the agent's first connection under emulation). */
function monotonicMs(): number {
  const [seconds, nanoseconds] = process.hrtime();
  return seconds * 1000 + nanoseconds / 1e6;
}

/** The time now, as {@link isoTime} writes it. */
function isoNow(): string {
  return isoTime(Date.now());
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
  readonly #table: SessionTable;
  readonly #connections = new Set<Client>();
  readonly #changes = new Notifier();
  readonly #host: AgentHost;
  readonly #announcements: Announcements;
  /** Told once when a burst of clients begins (see AgentOptions.onBurst). */
  #onBurst: (() => void) | undefined;
  /** A manifest this agent must not read (newer major version): every request is refused with it. */
  #manifestError: LiveUpdateError | null = null;
  /** The agent's incoming session held (never finished) while the manifest is refused. */
  #heldManifestSession: Session | null = null;
  #manifest: Manifest | null = null;
  #firstOpenAt: number | null = null;
  #listener: Listener<Peer> | null = null;
  #nextId = 1;
  #stopped = false;
  #unclaimedTimer: NodeJS.Timeout | null = null;
  /** Connections that have not said hello yet, with their deadlines ({@link monotonicMs}), oldest first. */
  readonly #helloDeadlines = new Map<Client, number>();
  /** Connections let go for saying no hello in time: told why before they are dropped. */
  readonly #lateHellos = new WeakSet<Client>();
  #helloTimer: NodeJS.Timeout | null = null;
  /**
   * Aborted by stop(): an update in progress ends. Made by the first update
   * (#stopSignal): an AbortController loads a module of node's own,
   * which an agent that never updates (the one of a new kernel) never needs.
   */
  #stopping: AbortController | undefined;
  /** The update in progress, awaited by stop(). */
  #running: Promise<unknown> | null = null;

  private constructor(options: AgentOptions, host: AgentHost) {
    this.#host = host;
    this.#policy = options.policy ?? DEFAULT_POLICY;
    this.#log = options.log ?? (() => {});
    this.#helloTimeoutMs = options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    this.#sendTimeoutMs = options.sendTimeoutMs ?? 5000;
    this.#onBurst = options.onBurst;
    this.#table = new SessionTable({
      policy: this.#policy,
      host,
      event: (name, fields) => this.#event(name, fields),
      forgotten: (entry) => unpark(entry.kernelName),
    });
    this.#announcements = new Announcements({
      connections: () => this.#connections,
      sendTimeoutMs: this.#sendTimeoutMs,
      event: (name, fields) => this.#event(name, fields),
    });
  }

  /**
   * Starts an agent: decides its mode (its first event says which and why;
   * a mode that does not fit the host is AgentModeError), gets the device
   * ready (an agent without one still serves, answering every request that
   * needs it with AgentUnavailableError), reads the previous kernel's
   * manifest, takes back what the last run parked in systemd's fd store, and
   * listens.
   */
  static async start(options: AgentOptions = {}): Promise<Agent> {
    const devicePath = options.devicePath ?? DEVICE_PATH;
    const policy = options.policy ?? DEFAULT_POLICY;
    const host = options.host?.(policy.fdStoreMax) ?? (await hostOf(options, policy, devicePath));
    const decision = host.decision;
    const agent = new Agent(options, host);
    agent.#event('mode', { mode: decision.mode, reason: decision.reason, forced: decision.forced });
    // The socket first: one the agent must not use stops it before the device is opened.
    const listener = await Listener.open<Peer>({ ...options, limits: options.limits ?? agent.#policy.limits });
    agent.#listener = listener;
    try {
      await agent.#openDevice(options.restored?.fds.get(MANIFEST_FDNAME));
      if (options.restored !== undefined) agent.#restore(options.restored);
    } catch (error) {
      listener.close();
      host.close();
      throw error;
    }
    agent.#listen(listener);
    agent.#scheduleUnclaimed();
    return agent;
  }

  /** The socket path the agent created, or null when it serves a socket it was given. */
  get socketPath(): string | null {
    return this.#listener?.socketPath ?? null;
  }

  /** Why the device is not usable, or null. */
  get deviceError(): LiveUpdateError | null {
    return this.#host.deviceError;
  }

  /** The agent's mode, and why. */
  get mode(): ModeDecision {
    return this.#host.decision;
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
    return this.#table.all().map(infoOf);
  }

  /** A one-line summary for systemd's STATUS=. */
  statusLine(): string {
    if (this.#manifestError !== null) return `refusing: ${this.#manifestError.message}`;
    const deviceError = this.#host.deviceError;
    if (deviceError !== null) return `no device: ${deviceError.message}`;
    const waiting = this.#table.incoming.filter((e) => e.state === 'waiting').length;
    return `${this.#connections.size} client(s), ${this.#table.outgoing.length} outgoing session(s), ${waiting} waiting to be claimed`;
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
    if (this.#helloTimer !== null) clearTimeout(this.#helloTimer);
    this.#listener?.close();
    // An update in progress ends first (unloading what it loaded); then nothing changes any more.
    this.#stopping?.abort();
    await this.#running?.catch(() => {});
    this.#table.beginStopping();
    for (const c of this.#connections) c.stopReading?.();
    if (options.park === true) {
      const held = this.#heldManifestSession === null ? [] : [{ fdName: MANIFEST_FDNAME, fd: this.#heldManifestSession.fd }];
      const parked = await park(this.#table.outgoing, [...held, ...this.#host.parkedFds()]);
      for (const failure of parked.failures) this.#event('park-failed', failure);
      this.#event('parked', { sessions: parked.sessions, failed: parked.failures.length });
    }
    this.#table.closeAll();
    if (this.#heldManifestSession !== null && options.park !== true) this.#heldManifestSession.closeSync();
    this.#host.close();
    this.#event('stopped', { parked: options.park === true });
  }

  // ---- start ------------------------------------------------------------------

  async #openDevice(parkedManifest: number | undefined): Promise<void> {
    await this.#host.open();
    const error = this.#host.deviceError;
    if (error !== null) {
      this.#event('device-unavailable', { code: error.code, message: error.message });
      return;
    }
    this.#firstOpenAt = Date.now();
    await this.#readIncomingManifest(parkedManifest);
  }

  /** Reads the manifest first thing after the kexec; a newer major version stops everything but `sessions`. */
  async #readIncomingManifest(parked: number | undefined): Promise<void> {
    const incoming = await this.#host.incomingManifest(parked);
    if (incoming.kind === 'none') return;
    if (incoming.kind === 'refused') {
      this.#manifestError = incoming.error;
      this.#heldManifestSession = incoming.session;
      this.#event('manifest-refused', { code: incoming.error.code, message: incoming.error.message });
      return;
    }
    const manifest = incoming.manifest;
    this.#manifest = manifest;
    // Under systemd only the sessions PID 1 hands back are there to claim (#restore adopts them).
    if (this.#host.retrievesByName) this.#table.adoptIncoming(manifest.sessions);
    this.#event('manifest-read', {
      kexecCount: manifest.kexecCount,
      sessions: manifest.sessions.length,
      frozenAt: manifest.frozenAt,
      firstOpenAt: this.#firstOpenAt,
      blackoutMs: this.#firstOpenAt === null ? null : this.#firstOpenAt - manifest.frozenAt,
    });
  }

  /** Takes back the sessions a previous run parked in systemd's fd store. */
  #restore(restored: RestoredState): void {
    const found = restore(restored);
    if (found.failure !== null) this.#event('restore-failed', { message: found.failure });
    for (const { saved, session } of found.sessions) this.#table.adoptOutgoing(saved, session);
    for (const saved of found.released) this.#table.adoptOutgoing(saved, null);
    // After the kexec under systemd: PID 1 retrieved the sessions and hands them back, matched to the manifest by FDNAME.
    const handed = systemdHostModule().describeHandedBack(this.#manifest?.sessions ?? [], found.incoming.map((i) => ({ ...i, kernelName: i.session.name })));
    for (const { saved, session } of handed.described) this.#table.adoptHandedBack(saved, session);
    if (!this.#host.retrievesByName && handed.missing.length > 0) {
      this.#event('not-handed-back', { sessions: handed.missing.map((s) => s.kernelName) });
    }
    this.#event('restored', { sessions: this.#table.outgoing.length, handedBack: found.incoming.length });
  }

  #listen(listener: Listener<Peer>): void {
    listener.accept({
      // pid, uid, gid (SO_PEERCRED) and the groups (SO_PEERGROUPS), as the kernel recorded them at connect.
      identify: (fd) => native.peerCredentials(fd),
      refusal: (peer) =>
        permits(this.#policy.connect, peer) ? null : agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `uid ${peer.uid} may not use this agent (policy: connect)`, { operation: 'agent.connect' }),
      serve: (fd, peer) => this.#serve(fd, peer),
      event: (name, fields) => this.#event(name, fields),
    });
    this.#event('listening', {
      socket: listener.socketPath,
      mode: this.#host.decision.mode,
      device: this.#host.deviceError === null,
      kexecCount: this.#manifest?.kexecCount ?? 0,
      limits: { ...listener.limits, helloTimeoutMs: this.#helloTimeoutMs, openFiles: Listener.openFilesLimit() },
    });
  }

  // ---- one connection ---------------------------------------------------------

  async #serve(fd: number, peer: Peer): Promise<void> {
    const c: Client = new Connection(this.#nextId++, fd, peer, this.#changes);
    this.#connections.add(c);
    if (this.#connections.size > 1 && this.#onBurst !== undefined) {
      const burst = this.#onBurst;
      this.#onBurst = undefined;
      burst();
    }
    this.#clientEvent('connected', c);
    this.#awaitHello(c);
    try {
      // A connection the agent let go (an announcement it did not take) is closing: nothing more is read.
      while (!this.#stopped && c.state !== ConnectionState.Closing) {
        const message = await this.#receive(c);
        if (message === null) break;
        await this.#answer(c, message);
      }
    } catch (error) {
      this.#clientEvent('dropped', c, { reason: (error as Error).message });
    } finally {
      this.#disconnect(c);
    }
  }

  /**
   * The next request's bytes, or null at EOF. A quiet connection waits on
   * the event loop holding nothing but its readiness watcher, kept from one
   * request to the next; the message is taken once it is there. A bad
   * message is answered, then the connection dropped; so is a connection
   * let go while it waits (closing, stopping, no hello in time).
   */
  async #receive(c: Client): Promise<Buffer | null> {
    // Among other clients, a greeted client's next request is looked for once the turn that answered it is over: in a burst it has
    // often come by then. A lone client's is looked for at once (the turn would only add its own latency).
    if (c.greeted && this.#connections.size > 1) {
      await endOfTurn();
      // Let go meanwhile (the agent stopping, an announcement not taken): nothing more is read, as from a wait cancelled.
      if (this.#stopped || c.state === ConnectionState.Closing) throw new DroppedConnection('the connection was let go while it waited for a request');
    }
    // A request already there (the hello, sent with the connect; a client's next one) is taken without a watcher.
    if (readableNow(c.fd)) return this.#take(c);
    const watch = (c.watch ??= watchReadable(c.fd));
    const readable = watch.wait();
    c.stopReading = () => watch.cancel();
    try {
      if (!(await readable)) {
        if (this.#lateHellos.has(c) && !this.#stopped) {
          await this.#refuse(c, 0, 'agent.hello', 'ERR_LIVEUPDATE_AGENT_PROTOCOL', `no hello within ${this.#helloTimeoutMs} ms`);
        }
        throw new DroppedConnection('the connection was let go while it waited for a request');
      }
      return await this.#take(c);
    } finally {
      c.stopReading = undefined;
    }
  }

  // ---- the hello's deadline: one timer for every connection ----------------------

  /**
   * `c` must say hello within the hello timeout. Every connection has the
   * same timeout, so the connections waiting for theirs, in the order they
   * came, are in the order of their deadlines: one timer, for the oldest,
   * serves them all (a timer per connection was a tenth of a connection's cost
   * in a burst of clients).
   */
  #awaitHello(c: Client): void {
    this.#helloDeadlines.set(c, monotonicMs() + this.#helloTimeoutMs);
    if (this.#helloTimer === null) this.#helloTimer = setTimeout(this.#expireHellos, this.#helloTimeoutMs);
  }

  /** `c` said hello, or went: its deadline is gone. */
  #helloDone(c: Client): void {
    this.#helloDeadlines.delete(c);
  }

  /** Lets go of every connection past its deadline that still waits for its hello; the timer then serves the next deadline. */
  readonly #expireHellos = (): void => {
    this.#helloTimer = null;
    const now = monotonicMs();
    for (const [c, deadline] of this.#helloDeadlines) {
      if (deadline > now) {
        if (!this.#stopped) this.#helloTimer = setTimeout(this.#expireHellos, deadline - now);
        return;
      }
      this.#helloDeadlines.delete(c);
      // One not waiting (its first request is being answered) is greeted or dropped by that answer.
      if (c.stopReading === undefined) continue;
      this.#lateHellos.add(c);
      c.stopReading();
    }
  };

  // ---- requests and replies ----------------------------------------------------------

  /**
   * The message waiting on `c` (its bytes, or null at EOF); one the codec
   * cannot take is answered, then the connection dropped. The Promise form,
   * though the message is there (the socket is readable, and only the agent
   * reads it): it takes the message within the call all the same, and fds a
   * peer sent along (a request takes none) are closed on the closer's
   * thread, where a peer's file whose last close blocks holds nobody.
   */
  async #take(c: Client): Promise<Buffer | null> {
    try {
      const { data, fds, eof } = await recvFds(c.fd, RECEIVE_REQUEST);
      if (fds.length > 0) fds.forEach(closeQuietly);
      return eof ? null : data;
    } catch (error) {
      if (error instanceof FdPassError) {
        await this.#refuse(c, 0, 'agent.connect', 'ERR_LIVEUPDATE_AGENT_PROTOCOL', error.message);
      }
      throw error instanceof Error ? error : new Error(String(error));
    }
  }

  /** Answers with an error, logs it, and drops the connection. */
  async #refuse(c: Client, id: number, operation: AgentOperation, code: AgentErrorCode, text: string): Promise<never> {
    const error = agentError(code, bounded(text), { operation });
    this.#clientEvent('refused', c, { op: operation, code, message: error.message });
    try {
      await this.#send(c, id, false, { error: toWireError(error, operation) as unknown as JsonValue });
    } catch {
      // Dropped all the same.
    }
    throw new DroppedConnection(error.message);
  }

  async #answer(c: Client, message: Buffer): Promise<void> {
    const decoded = decodeRequest(message, c.peer.uid, c.version);
    if (!decoded.ok && decoded.fatal) {
      await this.#refuse(c, decoded.id, decoded.operation, 'ERR_LIVEUPDATE_AGENT_PROTOCOL', decoded.error.message.replace(/^ERR_\w+: /, ''));
    }
    const { id, op, operation } = decoded;
    if (!c.greeted && op !== 'hello') {
      await this.#refuse(c, id, operation, 'ERR_LIVEUPDATE_AGENT_PROTOCOL', 'the first request must be hello');
    }
    let reply: Reply;
    try {
      if (!decoded.ok) throw decoded.error;
      // A request answered within the call (hello, ready) is not awaited: no Promise is made for it.
      const handled = this.#handle(c, decoded.request);
      reply = handled instanceof Promise ? await handled : handled;
    } catch (error) {
      if (error instanceof DroppedConnection) throw error;
      const wire = toWireError(error, operation);
      this.#clientEvent('request-failed', c, { op, code: wire.code, message: wire.message });
      await this.#send(c, id, false, { error: wire as unknown as JsonValue });
      if (op === 'hello') throw new DroppedConnection(wire.message);
      return;
    }
    const sending = this.#send(c, id, true, reply.body, reply.fd);
    if (sending !== undefined) await sending;
    reply.afterSent?.();
  }

  /**
   * Sends a reply: within the call when the socket has room (undefined:
   * nothing to await), else a Promise of its send, bounded by the send
   * timeout. A reply that cannot be sent drops the connection.
   */
  #send(c: Client, id: number, ok: boolean, body: Record<string, JsonValue | undefined>, fd?: number | undefined): Promise<void> | undefined {
    let bytes: Buffer;
    try {
      bytes = encodeReply(c.version, id, ok, body);
    } catch (error) {
      if (!(error instanceof ReplyTooLargeError)) throw error;
      // Never sent: the client gets a refusal it can read instead of a message it would drop.
      this.#clientEvent('reply-too-large', c, { message: error.message });
      const refusal = agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', error.message, { operation: 'agent.connect' });
      bytes = encodeReply(c.version, id, false, { error: toWireError(refusal, 'agent.connect') as unknown as JsonValue });
      fd = undefined;
    }
    const fds = fd === undefined ? NO_FDS : [fd];
    try {
      // An announcement still queued goes first: the reply waits its turn behind it.
      if (c.unsentAnnouncements === 0 && sentNow(c.fd, fds, bytes)) return undefined;
    } catch (error) {
      throw notSent(error);
    }
    return sendFds(c.fd, fds, bytes, { timeout: this.#sendTimeoutMs }).catch((error: unknown) => {
      throw notSent(error);
    });
  }

  #disconnect(c: Client): void {
    this.#connections.delete(c);
    this.#helloDone(c);
    c.watch?.close();
    closeQuietly(c.fd);
    c.on('close');
    const kept = this.#table.dropHolder(c);
    this.#clientEvent('disconnected', c, { kept });
  }

  // ---- requests -----------------------------------------------------------------

  #handle(c: Client, r: CheckedRequest): Reply | Promise<Reply> {
    if (r.op === 'hello') return this.#hello(c, r.versions, r.client);
    if (r.op === 'sessions') return { body: this.#sessionsReply(c, r.cursor, r.limit) };
    if (this.#manifestError !== null) throw this.#manifestError;
    switch (r.op) {
      case 'createSession':
        return this.#create(c, r);
      case 'attach': {
        const entry = this.#table.attach(c, r.session);
        return { body: { name: entry.name, kernelName: entry.kernelName, metadata: entry.metadata }, fd: entry.session?.fd };
      }
      case 'retrieveSession':
        return this.#claim(c, r.session);
      case 'release':
        return this.#release(c, r.session);
      case 'ready':
        c.on('ready');
        this.#clientEvent('ready', c, { sessions: c.holds.size });
        return { body: { sessions: c.holds.size } };
      case 'subscribe':
        // Subscribed once the reply is sent: no announcement comes before it.
        this.#clientEvent('subscribed', c);
        return { body: { subscribed: true }, afterSent: () => this.#announcements.subscribe(c) };
      case 'update':
        return this.#update(c, r);
    }
  }

  async #create(c: Client, r: Extract<CheckedRequest, { op: 'createSession' }>): Promise<Reply> {
    const entry = await this.#table.create(c, r.session, r.metadata, r.metadataBytes);
    return { body: { name: entry.name, kernelName: entry.kernelName }, fd: entry.session?.fd };
  }

  async #release(c: Client, name: CheckedName): Promise<Reply> {
    return { body: { name: name.name, state: await this.#table.release(c, name) } };
  }

  #hello(c: Client, versions: number[], client: string | undefined): Reply {
    if (c.greeted) throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', 'this connection already said hello', { operation: 'agent.hello' });
    const version = Math.max(...versions.filter((v) => PROTOCOL_VERSIONS.includes(v)));
    if (!Number.isFinite(version)) {
      throw agentError('ERR_LIVEUPDATE_AGENT_PROTOCOL', `no common protocol version (the agent speaks ${PROTOCOL_VERSIONS.join(', ')})`, { operation: 'agent.hello' });
    }
    c.on('hello');
    this.#helloDone(c);
    c.version = version;
    this.#clientEvent('hello', c, { clientName: client ?? null, version });
    return {
      body: {
        version,
        clientId: c.id,
        peer: { pid: c.peer.pid, uid: c.peer.uid, gid: c.peer.gid },
        agentPid: process.pid,
        kexecCount: this.#manifest?.kexecCount ?? 0,
        device: this.#host.deviceError === null,
      },
    };
  }

  async #claim(c: Client, name: CheckedName): Promise<Reply> {
    const entry = await this.#table.claim(c, name, this.#manifest !== null);
    const since = this.#manifest === null || entry.claimedAt === undefined ? null : entry.claimedAt - this.#manifest.frozenAt;
    this.#clientEvent('claimed', c, { name: entry.name, kernelName: entry.kernelName, claimedAt: entry.claimedAt ?? null, sinceFrozenMs: since });
    return { body: { name: entry.name, kernelName: entry.kernelName, metadata: entry.metadata }, fd: entry.session?.fd };
  }

  /**
   * One page of the sessions `c` may see: at most `limit`, and no more than
   * fit in one reply (every entry is bounded: names, metadata), with the
   * cursor of the next page or null. One user's sessions cannot make
   * another's reply fail: each reply is cut to fit.
   */
  #sessionsReply(c: Client, cursor: string | undefined, limit: number | undefined): Record<string, JsonValue | undefined> {
    const m = this.#manifest;
    const page: SessionInfo[] = [];
    let used = 0;
    let next: string | null = null;
    let last: Entry | undefined;
    for (const e of this.#table.visibleTo(c.peer.uid, cursor)) {
      const info = infoOf(e);
      const bytes = jsonBytes(info) + 1;
      if (page.length === (limit ?? Infinity) || used + bytes > SESSIONS_PAGE_BYTES) {
        next = last === undefined ? null : this.#table.cursorAfter(last);
        break;
      }
      page.push(info);
      used += bytes;
      last = e;
    }
    return {
      sessions: page as unknown as JsonValue,
      next,
      kexecCount: m?.kexecCount ?? 0,
      updateStartedAt: m?.updateStartedAt ?? null,
      frozenAt: m?.frozenAt ?? null,
      firstOpenAt: this.#firstOpenAt,
      refused: this.#manifestError?.message ?? null,
    };
  }

  /** The signal stop() aborts; aborted already once the agent stopped. */
  #stopSignal(): AbortSignal {
    this.#stopping ??= new AbortController();
    if (this.#stopped) this.#stopping.abort();
    return this.#stopping.signal;
  }

  async #update(c: Client, r: Extract<CheckedRequest, { op: 'update' }>): Promise<Reply> {
    if (!permits(this.#policy.update, c.peer)) {
      throw agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `uid ${c.peer.uid} may not run an update (policy: update)`, { operation: 'agent.update' });
    }
    const body = await this.#whileUpdating(updateModule().runUpdate(
      {
        table: this.#table,
        policy: this.#policy,
        asker: c.peer,
        signal: this.#stopSignal(),
        host: this.#host,
        previous: this.#manifest,
        connections: () => this.#connections,
        changes: this.#changes,
        who: this.#who(c),
        event: (name, fields) => this.#event(name, fields),
        announce: async (report) => {
          await this.#send(c, r.id, true, report);
        },
        prepare: (prepare) => this.#announcements.prepare(prepare, c),
      },
      r,
    ));
    return { body };
  }

  /** Runs `update`, known to stop() until it ends. A kexec under way (systemd's) gets no reply: the agent is stopping for it. */
  async #whileUpdating<T>(update: Promise<T>): Promise<T> {
    this.#running = update;
    try {
      return await update;
    } catch (error) {
      throw error instanceof KexecUnderway ? new DroppedConnection(error.message) : error;
    } finally {
      this.#running = null;
    }
  }

  // ---- after the kexec: sessions nobody claims ------------------------------------

  #scheduleUnclaimed(): void {
    const rule = this.#policy.unclaimed;
    if (rule === null || this.#table.incoming.length === 0) return;
    // The policy bounds afterSeconds to what one timer can wait (MAX_POLICY_SECONDS).
    this.#unclaimedTimer = setTimeout(() => void this.#table.expireUnclaimed(rule.action), rule.afterSeconds * 1000);
    this.#unclaimedTimer.unref();
  }

  // ---- logging ------------------------------------------------------------------------

  #who(c: Client): Record<string, JsonValue> {
    return { client: c.id, pid: c.peer.pid, uid: c.peer.uid };
  }

  /** Logs one event of client `c`: its id, pid and uid, then `fields` (as {@link #event}), in one object made once. */
  #clientEvent(event: string, c: Client, fields?: Record<string, JsonValue | undefined>): void {
    const line: AgentEvent = { time: isoNow(), event, client: c.id, pid: c.peer.pid, uid: c.peer.uid };
    if (fields !== undefined) for (const key of Object.keys(fields)) line[key] = boundedLogValue(fields[key]);
    this.#log(line);
  }

  /** Logs one event; every text field is cut and cleaned (boundedLogValue), so no peer sizes or forges a log line. */
  #event(event: string, fields: Record<string, JsonValue | undefined> = {}): void {
    // Built in place: several lines per client, each once (no entries arrays, no second object).
    const line: AgentEvent = { time: isoNow(), event };
    for (const key of Object.keys(fields)) line[key] = boundedLogValue(fields[key]);
    this.#log(line);
  }
}
