/**
 * The agent's session table: the one owner of every session state change
 * (create, attach, claim, release, finish, let go at a client's exit, expire
 * unclaimed, adopt from the fd store or the manifest). Handlers check,
 * act through the table, and reply; nothing else writes an entry.
 */
import { agentError, SessionNotFoundError, type AgentOperation } from '../errors.js';
import type { Session } from '../session.js';
import type { CheckedName } from './codec.js';
import type { Connection } from './connection.js';
import type { AgentHost } from './host.js';
import type { ManifestSession } from './manifest.js';
import type { Policy } from './policy.js';
import type { JsonValue, SessionInfo } from './protocol.js';

/**
 * Whether the agent holds as many sessions as its store can keep: `held` counts every session in the store and every create in progress.
 * (Here rather than in systemd-host.ts, which a standalone agent never loads.)
 */
export function storeFull(held: number, max: number | null): boolean {
  return max !== null && held >= max;
}

/** A session the agent knows. */
export interface Entry extends ManifestSession {
  /** Where the session is in its life (as `sessions` reports it). */
  state: SessionInfo['state'];
  /** The agent's own reference (null while waiting to be claimed, or once released). */
  session: Session | null;
  /** The connection holding it now (outgoing sessions), or null. */
  holder: Connection<Entry> | null;
  /** When its owner claimed it after the kexec. */
  claimedAt?: number | undefined;
}

/** Where the table is with respect to an update and the agent's stop: what it still allows. */
export enum TablePhase {
  /** Everything. */
  Open = 'open',
  /** An update runs: no new sessions. */
  Updating = 'updating',
  /** The manifest is being written: no session changes at all (the manifest and the table must agree). */
  Sealing = 'sealing',
  /** The agent is stopping (and parking): no session changes; a client's exit lets nothing go. */
  Stopping = 'stopping',
}

/** What the table needs from the agent. */
export interface TableContext {
  /** The agent's policy (quotas, onClientExit). */
  readonly policy: Policy;
  /** The device, where sessions wait, and how many fit there. */
  readonly host: Pick<AgentHost, 'withDevice' | 'keep' | 'storeMax' | 'incomingInStore' | 'retrievesByName'>;
  /** Logs one event. */
  event(name: string, fields: Record<string, JsonValue | undefined>): void;
  /** Called when the agent drops its reference to a session (to drop it from the fd store). */
  forgotten(entry: Entry): void;
}

function notFound(operation: AgentOperation, name: string, text: string): SessionNotFoundError {
  return new SessionNotFoundError(`ENOENT: ${text}`, 'ENOENT', { operation, sessionName: name }, { errno: -2, code: 'ENOENT', syscall: 'agent' });
}

/** The fields a manifest or the fd-store state keeps about a session. */
export function manifestSession({ kernelName, name, owner, metadata, createdAt }: ManifestSession): ManifestSession {
  return { kernelName, name, owner, metadata, createdAt };
}

/** The order of `sessions` pages: incoming before outgoing, each by kernel name; a cursor is the last key of a page. */
function pageKey(e: Entry): string {
  return `${e.state === 'outgoing' || e.state === 'released' ? 'o' : 'i'}:${e.kernelName}`;
}

/**
 * Every session the agent knows, before the kexec (outgoing) and after it
 * (incoming). Operations on one kernel name run one at a time (a claim and
 * the unclaimed timer, two creates of one name, never overlap); quota is
 * reserved before any ioctl is awaited.
 */
export class SessionTable {
  readonly #outgoing = new Map<string, Entry>();
  readonly #incoming = new Map<string, Entry>();
  readonly #context: TableContext;
  /** The operation in progress on each kernel name (the next one waits for it). */
  readonly #busy = new Map<string, Promise<unknown>>();
  /** Creates in progress, by uid: counted against the quota before the ioctl is awaited. */
  readonly #reserved = new Map<number, number>();
  /** Outgoing sessions whose client left during an update under `onClientExit: "release"`: let go when the update ends without a jump. */
  readonly #orphans = new Set<Entry>();
  #phase = TablePhase.Open;

  constructor(context: TableContext) {
    this.#context = context;
  }

  /** What the table allows now. */
  get phase(): TablePhase {
    return this.#phase;
  }

  /** Outgoing sessions (released ones that may still be alive included). */
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

  /** The sessions `uid` may see (root: all), in page order, after `cursor`. */
  visibleTo(uid: number, cursor?: string): Entry[] {
    return this.all()
      .filter((e) => (uid === 0 || e.owner === uid) && (cursor === undefined || pageKey(e) > cursor))
      .sort((a, b) => (pageKey(a) < pageKey(b) ? -1 : 1));
  }

  /** The cursor that resumes a listing after `e`. */
  cursorAfter(e: Entry): string {
    return pageKey(e);
  }

  // ---- the update's phases ---------------------------------------------------

  /** An update begins: no new sessions. Refused (UpdateRefusedError) while another runs or the agent stops. */
  beginUpdate(): void {
    if (this.#phase !== TablePhase.Open) throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', this.#phase === TablePhase.Stopping ? 'the agent is stopping' : 'another update is in progress', { operation: 'agent.update' });
    this.#phase = TablePhase.Updating;
  }

  /**
   * The manifest is about to be written: waits for every operation in
   * progress, forgets released sessions that have ended, and refuses every
   * change from now on. Answers the sessions the manifest must carry.
   */
  async beginSealing(): Promise<ManifestSession[]> {
    this.#phase = TablePhase.Sealing;
    await this.#settled();
    for (const e of this.outgoing) if (e.state === 'released') await this.#forgetIfEnded(e);
    return this.outgoing.map(manifestSession);
  }

  /** The update ended without a jump: sessions whose client left meanwhile under `release` go now. */
  endUpdate(): void {
    if (this.#phase === TablePhase.Stopping) return;
    this.#phase = TablePhase.Open;
    for (const e of this.#orphans) if (e.holder === null) this.#letGo(e, 'client-exit');
    this.#orphans.clear();
  }

  /** The agent stops: no change from now on, and a client's exit lets nothing go (its sessions are parked or closed with the agent). */
  beginStopping(): void {
    this.#phase = TablePhase.Stopping;
  }

  // ---- adopting what a previous run or kernel left -----------------------------

  /** A session handed back after the kexec through the fd store (PID 1 retrieved it): waiting for its owner, the agent holding it. */
  adoptHandedBack(saved: ManifestSession, session: Session): void {
    this.#incoming.set(saved.kernelName, { ...manifestSession(saved), state: 'waiting', session, holder: null });
  }

  /** The manifest's sessions become incoming entries, waiting for their owners. */
  adoptIncoming(sessions: readonly ManifestSession[]): void {
    for (const s of sessions) this.#incoming.set(s.kernelName, { ...manifestSession(s), state: 'waiting', session: null, holder: null });
  }

  /** An outgoing session a previous run parked in the fd store, or (without a session) one it had released. */
  adoptOutgoing(saved: ManifestSession, session: Session | null): void {
    this.#outgoing.set(saved.kernelName, { ...manifestSession(saved), state: session === null ? 'released' : 'outgoing', session, holder: null });
  }

  // ---- requests -------------------------------------------------------------------

  /** Creates an outgoing session for `c` through the device, within the policy's quotas; the quota is reserved before the ioctl. */
  async create(c: Connection<Entry>, s: CheckedName, metadata: JsonValue, metadataBytes: number): Promise<Entry> {
    const uid = c.peer.uid;
    const context = { operation: 'agent.createSession' as const, sessionName: s.name };
    this.#mutable(context.operation, s.name);
    if (this.#phase !== TablePhase.Open) throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'an update is in progress: no new sessions until it ends', context);
    const { quota } = this.#context.policy;
    const { storeMax } = this.#context.host;
    if (uid !== 0 && metadataBytes > quota.metadataBytes) {
      throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `metadata of ${metadataBytes} bytes exceeds the quota (${quota.metadataBytes})`, context);
    }
    if (uid !== 0 && this.#held(uid) >= quota.sessions) await this.#forgetEnded(uid);
    const held = this.#held(uid);
    if (uid !== 0 && held >= quota.sessions) throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `uid ${uid} already has ${held} sessions (quota ${quota.sessions})`, context);
    const references = this.#inStore() + this.#reservedTotal();
    if (storeFull(references, storeMax)) {
      throw agentError('ERR_LIVEUPDATE_AGENT_QUOTA', `the agent holds ${references} sessions, as many as its fd store can keep (${storeMax}: FileDescriptorStoreMax= or the policy's fdStoreMax, less the agent's own 2)`, context);
    }
    this.#reserved.set(uid, (this.#reserved.get(uid) ?? 0) + 1);
    try {
      return await this.#serial(s.kernelName, async () => {
        const replaced = this.#outgoing.get(s.kernelName);
        // A released session of this name that is still alive makes the kernel say EEXIST, as for any live one.
        const session = await this.#context.host.withDevice('agent.createSession', (device) => device.createSession(s.kernelName));
        await this.#context.host.keep(s.kernelName, session).catch((error: unknown) => this.#context.event('park-failed', { kernelName: s.kernelName, message: (error as Error).message }));
        if (replaced !== undefined) this.#outgoing.delete(s.kernelName);
        const entry: Entry = { kernelName: s.kernelName, name: s.name, owner: uid, metadata, createdAt: Date.now(), state: 'outgoing', session, holder: null };
        this.#outgoing.set(s.kernelName, entry);
        this.#hold(c, entry);
        this.#context.event('session-created', { client: c.id, pid: c.peer.pid, uid, name: s.name, kernelName: s.kernelName, metadataBytes });
        return entry;
      });
    } finally {
      this.#reserved.set(uid, (this.#reserved.get(uid) ?? 1) - 1);
    }
  }

  /** `c` takes over its own outgoing session (after a client restart). */
  attach(c: Connection<Entry>, s: CheckedName): Entry {
    this.#mutable('agent.attach', s.name);
    const entry = this.#own(c, this.#outgoing, s, 'agent.attach');
    if (entry.session === null) throw notFound('agent.attach', s.name, `session '${s.name}' was released: the agent no longer holds it`);
    this.#hold(c, entry);
    this.#context.event('attached', { client: c.id, pid: c.peer.pid, uid: c.peer.uid, name: entry.name, kernelName: entry.kernelName });
    return entry;
  }

  /** `c` claims its own session handed over by the previous kernel (two claims of one name get the same session). */
  async claim(c: Connection<Entry>, s: CheckedName, manifestKnown: boolean): Promise<Entry> {
    this.#mutable('agent.retrieveSession', s.name);
    const { host } = this.#context;
    let entry: Entry;
    try {
      entry = this.#own(c, this.#incoming, s, 'agent.retrieveSession');
    } catch (error) {
      // No manifest entry (the manifest was lost): the kernel still knows the name, and the name is the caller's own.
      // (Not under systemd: PID 1 retrieved every session it kept; any other is not the agent's to take.)
      if (manifestKnown || !host.retrievesByName) throw error;
      entry = { kernelName: s.kernelName, name: s.name, owner: c.peer.uid, metadata: null, createdAt: 0, state: 'waiting', session: null, holder: null };
    }
    return this.#serial(entry.kernelName, async () => {
      const current = this.#incoming.get(entry.kernelName) ?? entry;
      if (current.state === 'finished') throw notFound('agent.retrieveSession', current.name, `session '${current.name}' was finished`);
      if (current.state === 'waiting') {
        if (current.session === null && !host.retrievesByName) throw notFound('agent.retrieveSession', current.name, `session '${current.name}' was not handed back after the kexec`);
        current.session ??= await this.#retrieve('agent.retrieveSession', current.kernelName);
        current.state = 'claimed';
        current.claimedAt = Date.now();
        this.#incoming.set(current.kernelName, current);
      }
      return current;
    });
  }

  /**
   * Ends `c`'s own session. An outgoing one is released: the agent closes
   * its reference; the kernel session lives on while the client still holds
   * its fd, so it stays `released` (counted against the quota, carried in
   * the manifest) until the agent sees its name free again. An incoming one
   * is finished. Answers the state it is left in.
   */
  async release(c: Connection<Entry>, s: CheckedName): Promise<SessionInfo['state']> {
    this.#mutable('agent.release', s.name);
    const outgoing = this.#outgoing.get(s.kernelName);
    if (outgoing !== undefined && outgoing.owner === c.peer.uid) {
      if (outgoing.state === 'outgoing') this.#letGo(outgoing, 'release');
      return outgoing.state;
    }
    const entry = this.#own(c, this.#incoming, s, 'agent.release');
    await this.finish(entry, 'release');
    return entry.state;
  }

  /** `c` is gone: its sessions stay (`keep`) or go with it (`release`; during an update, when it ends without a jump). Answers how many stay. */
  dropHolder(c: Connection<Entry>): number {
    const release = this.#context.policy.onClientExit === 'release' && this.#phase !== TablePhase.Stopping;
    const held = [...c.holds];
    c.holds.clear();
    for (const e of held) {
      e.holder = null;
      if (!release) continue;
      if (this.#phase === TablePhase.Open) this.#letGo(e, 'client-exit');
      else this.#orphans.add(e);
    }
    return release ? 0 : held.length;
  }

  /**
   * The incoming session `kernelName` from the device, retrieved within the
   * call. RETRIEVE_SESSION waits on nothing a client does: the kernel takes
   * the incoming list's lock and the session's own, which nobody holds
   * before the session is retrieved (and LUO's global lock for reading: only
   * the kexec takes it for writing). So each claim skips a round trip through
   * the thread pool, when every client claims at once after a kexec (about a
   * tenth of the agent's CPU time in a claim phase of 100 clients, measured
   * under emulation).
   */
  #retrieve(operation: 'agent.retrieveSession' | 'agent.release', kernelName: string): Promise<Session> {
    return this.#context.host.withDevice(operation, async (device) => device.retrieveSessionSync(kernelName));
  }

  /** Ends an incoming session: finished (files never retrieved are discarded) and the agent's reference closed. */
  finish(e: Entry, why: string): Promise<void> {
    return this.#serial(e.kernelName, () => this.#finishNow(e, why));
  }

  async #finishNow(e: Entry, why: string): Promise<void> {
    if (e.state === 'finished') return;
    const { host } = this.#context;
    if (e.session === null && !host.retrievesByName) {
      e.state = 'finished';
      return;
    }
    const session = e.session ?? (await this.#retrieve('agent.release', e.kernelName));
    try {
      await session.finish();
    } catch (error) {
      // A claimed session's owner may have finished it through its own fd already.
      if (e.state !== 'claimed') throw error;
    } finally {
      await session.close();
      e.session = null;
      e.state = 'finished';
      this.#context.forgotten(e);
      this.#context.event('session-finished', { name: e.name, kernelName: e.kernelName, owner: e.owner, why });
    }
  }

  /** The policy's `unclaimed` rule, applied to every session still waiting (a claim in progress goes first). */
  async expireUnclaimed(action: 'keep' | 'finish'): Promise<void> {
    for (const e of this.#incoming.values()) {
      if (e.state !== 'waiting') continue;
      if (action === 'keep') this.#context.event('unclaimed-kept', { name: e.name, kernelName: e.kernelName, owner: e.owner });
      else {
        await this.#serial(e.kernelName, async () => {
          if (e.state === 'waiting') await this.#finishNow(e, 'unclaimed');
        }).catch((error: unknown) => this.#context.event('finish-failed', { name: e.name, message: (error as Error).message }));
      }
    }
  }

  /** Closes every reference the agent holds (the sessions live on in whoever else holds them). */
  closeAll(): void {
    for (const e of this.all()) e.session?.closeSync();
  }

  // ---- inside -------------------------------------------------------------------------

  /** Sessions `uid` holds against its quota: outgoing ones (released ones not yet seen ended included) and creates in progress. */
  #held(uid: number): number {
    return this.outgoing.filter((e) => e.owner === uid).length + (this.#reserved.get(uid) ?? 0);
  }

  /** Sessions the agent keeps in its fd store: every outgoing one it holds, and under systemd the incoming ones not finished. */
  #inStore(): number {
    const incoming = this.#context.host.incomingInStore ? this.incoming.filter((e) => e.session !== null).length : 0;
    return this.outgoing.filter((e) => e.session !== null).length + incoming;
  }

  #reservedTotal(): number {
    return [...this.#reserved.values()].reduce((a, b) => a + b, 0);
  }

  /** Refuses a change while the manifest is sealed or the agent stops. */
  #mutable(operation: AgentOperation, name: string): void {
    if (this.#phase === TablePhase.Sealing || this.#phase === TablePhase.Stopping) {
      const why = this.#phase === TablePhase.Sealing ? 'the manifest for the kexec is being sealed' : 'the agent is stopping';
      throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', `${why}: no session changes now`, { operation, sessionName: name });
    }
  }

  /** Runs `work` once every earlier operation on `kernelName` has ended. */
  #serial<T>(kernelName: string, work: () => Promise<T>): Promise<T> {
    const before = this.#busy.get(kernelName);
    // Nothing in progress on the name (every claim of a burst): the work starts now, not a turn of Promises later.
    const run = before === undefined ? work() : before.then(work);
    const over = (): void => {
      if (this.#busy.get(kernelName) === done) this.#busy.delete(kernelName);
    };
    // Settles (never rejects) once `work` has, and then leaves the table if no later operation queued behind it.
    const done: Promise<void> = run.then(over, over);
    this.#busy.set(kernelName, done);
    return run;
  }

  /** Resolves when no operation is in progress. */
  async #settled(): Promise<void> {
    while (this.#busy.size > 0) await Promise.all(this.#busy.values());
  }

  /** Forgets `uid`'s released sessions whose kernel session has ended. */
  async #forgetEnded(uid: number): Promise<void> {
    for (const e of this.outgoing) if (e.owner === uid && e.state === 'released') await this.#forgetIfEnded(e);
  }

  /**
   * Whether a released session still lives is knowable only from its name:
   * creating it again fails with EEXIST while any process holds it. When the
   * create succeeds the old one has ended: the probe is closed (its name is
   * free again) and the entry forgotten.
   */
  async #forgetIfEnded(e: Entry): Promise<void> {
    await this.#serial(e.kernelName, async () => {
      let probe: Session;
      try {
        probe = await this.#context.host.withDevice('agent.createSession', (device) => device.createSession(e.kernelName));
      } catch {
        return; // Still held (EEXIST), or the device cannot tell: it stays counted.
      }
      probe.closeSync();
      if (this.#outgoing.get(e.kernelName) === e) this.#outgoing.delete(e.kernelName);
      this.#context.event('session-ended', { name: e.name, kernelName: e.kernelName, owner: e.owner });
    });
  }

  #hold(c: Connection<Entry>, entry: Entry): void {
    if (entry.holder !== null && entry.holder !== c) entry.holder.holds.delete(entry);
    entry.holder = c;
    c.holds.add(entry);
    c.on('took-session');
  }

  /** The agent drops its reference to an outgoing session; the entry stays, `released`, until the session is seen ended. */
  #letGo(e: Entry, why: string): void {
    e.session?.closeSync();
    e.session = null;
    e.state = 'released';
    e.holder?.holds.delete(e);
    e.holder = null;
    this.#orphans.delete(e);
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
