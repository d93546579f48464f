/**
 * The agent's session table: the one owner of every session state change
 * (create, attach, claim, release, finish, let go at a client's exit, expire
 * unclaimed, adopt from the fd store or the manifest). Handlers check,
 * act through the table, and reply; nothing else writes an entry.
 * @internal
 */
import { agentError, SessionNotFoundError, type AgentOperation } from '../errors.js';
import type { LiveUpdate } from '../liveupdate.js';
import type { Session } from '../session.js';
import type { CheckedName } from './codec.js';
import type { Connection } from './connection.js';
import type { ManifestSession } from './manifest.js';
import type { Policy } from './policy.js';
import type { JsonValue, SessionInfo } from './protocol.js';

/** A session the agent knows. */
export interface Entry extends ManifestSession {
  state: SessionInfo['state'];
  /** The agent's own reference (null while waiting to be claimed, or once released). */
  session: Session | null;
  /** The connection holding it now (outgoing sessions), or null. */
  holder: Connection<Entry> | null;
  /** When its owner claimed it after the kexec. */
  claimedAt?: number | undefined;
}

/** Where the table is with respect to an update: what it still allows. */
export enum TablePhase {
  /** Everything. */
  Open = 'open',
  /** An update runs: no new sessions. */
  Updating = 'updating',
}

/** What the table needs from the agent. */
export interface TableContext {
  readonly policy: Policy;
  /** The device, or AgentUnavailableError for `operation`. */
  device(operation: AgentOperation): LiveUpdate;
  /** Logs one event. */
  event(name: string, fields: Record<string, JsonValue | undefined>): void;
  /** Called when an outgoing session is let go (to drop it from the fd store). */
  forgotten(entry: Entry): void;
}

function notFound(operation: AgentOperation, name: string, text: string): SessionNotFoundError {
  return new SessionNotFoundError(`ENOENT: ${text}`, 'ENOENT', { operation, sessionName: name }, { errno: -2, code: 'ENOENT', syscall: 'agent' });
}

/** The outgoing ids a manifest or the fd-store state keeps about a session. */
export function manifestSession({ kernelName, name, owner, metadata, createdAt }: ManifestSession): ManifestSession {
  return { kernelName, name, owner, metadata, createdAt };
}

/** Every session the agent knows, before the kexec (outgoing) and after it (incoming). */
export class SessionTable {
  readonly #outgoing = new Map<string, Entry>();
  readonly #incoming = new Map<string, Entry>();
  readonly #context: TableContext;
  #phase = TablePhase.Open;

  constructor(context: TableContext) {
    this.#context = context;
  }

  /** What the table allows now. */
  get phase(): TablePhase {
    return this.#phase;
  }

  /** Moves to `phase` (the update does, and back to Open when it ends). */
  enter(phase: TablePhase): void {
    this.#phase = phase;
  }

  /** Outgoing sessions. */
  get outgoing(): readonly Entry[] {
    return [...this.#outgoing.values()];
  }

  /** Sessions handed over by the previous kernel. */
  get incoming(): readonly Entry[] {
    return [...this.#incoming.values()];
  }

  /** Every entry, incoming first. */
  all(): Entry[] {
    return [...this.#incoming.values(), ...this.#outgoing.values()];
  }

  /** The sessions `uid` may see (root: all). */
  visibleTo(uid: number): Entry[] {
    return this.all().filter((e) => uid === 0 || e.owner === uid);
  }

  /** The manifest's sessions become incoming entries, waiting for their owners. */
  adoptIncoming(sessions: readonly ManifestSession[]): void {
    for (const s of sessions) this.#incoming.set(s.kernelName, { ...manifestSession(s), state: 'waiting', session: null, holder: null });
  }

  /** An outgoing session a previous run parked in the fd store. */
  adoptOutgoing(saved: ManifestSession, session: Session): void {
    this.#outgoing.set(saved.kernelName, { ...manifestSession(saved), state: 'outgoing', session, holder: null });
  }

  /** Creates an outgoing session for `c` through the device, within the policy's quotas. */
  async create(c: Connection<Entry>, s: CheckedName, metadata: JsonValue, metadataBytes: number): Promise<Entry> {
    const uid = c.peer.uid;
    const quota = this.#context.policy.quota;
    const context = { operation: 'agent.createSession' as const, sessionName: s.name };
    const owned = this.outgoing.filter((e) => e.owner === uid).length;
    if (uid !== 0 && metadataBytes > quota.metadataBytes) {
      throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `metadata of ${metadataBytes} bytes exceeds the quota (${quota.metadataBytes})`, context);
    }
    if (uid !== 0 && owned >= quota.sessions) throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `uid ${uid} already has ${owned} sessions (quota ${quota.sessions})`, context);
    if (this.#phase !== TablePhase.Open) throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'an update is in progress: no new sessions until it ends', context);
    const session = await this.#context.device('agent.createSession').createSession(s.kernelName);
    const entry: Entry = { kernelName: s.kernelName, name: s.name, owner: uid, metadata, createdAt: Date.now(), state: 'outgoing', session, holder: null };
    this.#outgoing.set(s.kernelName, entry);
    this.#hold(c, entry);
    this.#context.event('session-created', { client: c.id, pid: c.peer.pid, uid, name: s.name, kernelName: s.kernelName, metadataBytes });
    return entry;
  }

  /** `c` takes over its own outgoing session (after a client restart). */
  attach(c: Connection<Entry>, s: CheckedName): Entry {
    const entry = this.#own(c, this.#outgoing, s, 'agent.attach');
    if (entry.session === null) throw new Error('internal: an outgoing entry without a session');
    this.#hold(c, entry);
    this.#context.event('attached', { client: c.id, pid: c.peer.pid, uid: c.peer.uid, name: entry.name, kernelName: entry.kernelName });
    return entry;
  }

  /** `c` claims its own session handed over by the previous kernel. */
  async claim(c: Connection<Entry>, s: CheckedName, manifestKnown: boolean): Promise<Entry> {
    const device = this.#context.device('agent.retrieveSession');
    let entry: Entry;
    try {
      entry = this.#own(c, this.#incoming, s, 'agent.retrieveSession');
    } catch (error) {
      // No manifest entry (the manifest was lost): the kernel still knows the name, and the name is the caller's own.
      if (manifestKnown) throw error;
      entry = { kernelName: s.kernelName, name: s.name, owner: c.peer.uid, metadata: null, createdAt: 0, state: 'waiting', session: null, holder: null };
    }
    if (entry.state === 'finished') throw notFound('agent.retrieveSession', entry.name, `session '${entry.name}' was finished`);
    if (entry.session === null) {
      entry.session = await device.retrieveSession(entry.kernelName);
      entry.state = 'claimed';
      entry.claimedAt = Date.now();
      this.#incoming.set(entry.kernelName, entry);
    }
    return entry;
  }

  /** Ends `c`'s own session: an outgoing one is let go, an incoming one finished. Answers the state it is left in. */
  async release(c: Connection<Entry>, s: CheckedName): Promise<SessionInfo['state'] | 'released'> {
    const outgoing = this.#outgoing.get(s.kernelName);
    if (outgoing !== undefined && outgoing.owner === c.peer.uid) {
      this.#letGo(outgoing, 'release');
      return 'released';
    }
    const entry = this.#own(c, this.#incoming, s, 'agent.release');
    await this.finish(entry, 'release');
    return entry.state;
  }

  /** `c` is gone: its sessions stay (`keep`) or go with it (`release`). */
  dropHolder(c: Connection<Entry>): number {
    const kept = this.#context.policy.onClientExit === 'keep' ? c.holds.size : 0;
    for (const e of c.holds) {
      e.holder = null;
      if (this.#context.policy.onClientExit === 'release' && this.#phase === TablePhase.Open) this.#letGo(e, 'client-exit');
    }
    c.holds.clear();
    return kept;
  }

  /** Ends an incoming session: finished (files never retrieved are discarded) and the agent's reference closed. */
  async finish(e: Entry, why: string): Promise<void> {
    if (e.state === 'finished') return;
    const session = e.session ?? (await this.#context.device('agent.release').retrieveSession(e.kernelName));
    try {
      await session.finish();
    } catch (error) {
      // A claimed session's owner may have finished it through its own fd already.
      if (e.state !== 'claimed') throw error;
    } finally {
      await session.close();
      e.session = null;
      e.state = 'finished';
      this.#context.event('session-finished', { name: e.name, kernelName: e.kernelName, owner: e.owner, why });
    }
  }

  /** The policy's `unclaimed` rule, applied to every session still waiting. */
  async expireUnclaimed(action: 'keep' | 'finish'): Promise<void> {
    for (const e of this.#incoming.values()) {
      if (e.state !== 'waiting') continue;
      if (action === 'keep') this.#context.event('unclaimed-kept', { name: e.name, kernelName: e.kernelName, owner: e.owner });
      else await this.finish(e, 'unclaimed').catch((error: unknown) => this.#context.event('finish-failed', { name: e.name, message: (error as Error).message }));
    }
  }

  /** Closes every reference the agent holds (the sessions live on in whoever else holds them). */
  closeAll(): void {
    for (const e of this.all()) e.session?.closeSync();
  }

  #hold(c: Connection<Entry>, entry: Entry): void {
    if (entry.holder !== null && entry.holder !== c) entry.holder.holds.delete(entry);
    entry.holder = c;
    c.holds.add(entry);
    c.on('took-session');
  }

  #letGo(e: Entry, why: string): void {
    e.session?.closeSync();
    e.session = null;
    e.holder?.holds.delete(e);
    this.#outgoing.delete(e.kernelName);
    this.#context.forgotten(e);
    this.#context.event('session-released', { name: e.name, kernelName: e.kernelName, owner: e.owner, why });
  }

  /** The caller's own entry of that name, or SessionNotFoundError (another user's session is not even nameable). */
  #own(c: Connection<Entry>, table: Map<string, Entry>, s: CheckedName, operation: AgentOperation): Entry {
    const entry = table.get(s.kernelName);
    if (entry === undefined || entry.owner !== c.peer.uid) {
      const where = table === this.#outgoing ? 'outgoing session' : 'session handed over by the previous kernel';
      throw notFound(operation, s.name, `you have no ${where} named '${s.name}'`);
    }
    return entry;
  }
}

/** A session as `sessions` lists it. */
export function infoOf(e: Entry): SessionInfo {
  return { name: e.name, kernelName: e.kernelName, owner: e.owner, state: e.state, metadata: e.metadata, createdAt: e.createdAt, claimedAt: e.claimedAt, holder: e.holder?.id };
}
