/**
 * The agent's parking in systemd's fd store: on a stop under systemd its
 * references to outgoing sessions (and the state describing them) go to
 * the store, and the next start takes them back from LISTEN_FDS.
 * @internal
 */
import * as fs from 'node:fs';
import * as memfd from '../memfd.js';
import { Session } from '../session.js';
import { barrier, notify } from '../systemd.js';
import type { ManifestSession } from './manifest.js';
import { manifestSession, type Entry } from './sessions.js';

/** The FDNAME of the agent's state memfd in systemd's fd store. */
export const STATE_FDNAME = 'agent-state';

/** The FDNAME of the agent's manifest in the fd store: the sealed memfd of a kexec under way (systemd mode), or its own incoming session parked when the manifest was refused. */
export const MANIFEST_FDNAME = 'agent-manifest';

/** What the agent kept in systemd's fd store when it stopped, handed back through LISTEN_FDS at its next start. */
export interface RestoredState {
  /** The state memfd stored under {@link STATE_FDNAME}. */
  stateFd?: number | undefined;
  /** Every other stored fd by its FDNAME (the session fds). */
  fds: ReadonlyMap<string, number>;
}

/** The FDNAME under which a session's fd is parked in systemd's fd store. */
export function fdNameOf(kernelName: string): string {
  // node:crypto loads here, not with the agent: only systemd's fd store needs the hash.
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  return `luo-${createHash('sha256').update(kernelName).digest('hex').slice(0, 32)}`;
}

/** Closes an fd that may already be closed. */
export function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed: nothing to release.
  }
}

/** Drops a session's parked fd from the store (it was released): best effort, the store may not exist. */
export function unpark(kernelName: string): void {
  void notify({ FDSTOREREMOVE: 1, FDNAME: fdNameOf(kernelName) }).catch(() => {});
}

/** What parking did: the sessions handed to the store, and each fd the store could not be sent. */
export interface Parked {
  /** Sessions sent to the store. */
  sessions: number;
  /** What failed, one by one (the others were still parked). */
  failures: Array<{ fdName: string; kernelName: string | null; message: string }>;
}

/**
 * Parks every outgoing session the agent holds and the state describing
 * them, and `replacing` (each stored anew under its name: the refused
 * manifest's session, the sealed manifest of a kexec under way). A failure
 * to send one fd does not stop the others: each is reported. A session
 * already in the store is not stored twice (systemd keeps one copy of a
 * file). (systemd drops fds past FileDescriptorStoreMax= without telling
 * the sender: the agent's store limit keeps it below.)
 */
export async function park(entries: readonly Entry[], replacing: ReadonlyArray<{ fdName: string; fd: number }>): Promise<Parked> {
  const result: Parked = { sessions: 0, failures: [] };
  const store = async (fdName: string, fd: number, kernelName: string | null): Promise<boolean> => {
    try {
      await notify({ FDSTORE: 1, FDNAME: fdName, FDPOLL: 0 }, [fd]);
      return true;
    } catch (error) {
      result.failures.push({ fdName, kernelName, message: (error as Error).message });
      return false;
    }
  };
  const replace = async (fdName: string, fd: number): Promise<void> => {
    await notify({ FDSTOREREMOVE: 1, FDNAME: fdName }).catch(() => {});
    await store(fdName, fd, null);
  };
  const parked: Entry[] = [];
  for (const e of entries) {
    if (e.session !== null && (await store(fdNameOf(e.kernelName), e.session.fd, e.kernelName))) parked.push(e);
  }
  result.sessions = parked.length;
  for (const { fdName, fd } of replacing) await replace(fdName, fd);
  // Released sessions have no fd to park, but may still be alive: the state keeps them, for the manifest.
  const released = entries.filter((e) => e.state === 'released').map((e) => ({ ...manifestSession(e), released: true }));
  const state = writeState([...parked.map(manifestSession), ...released]);
  try {
    await replace(STATE_FDNAME, state);
  } finally {
    closeQuietly(state);
  }
  // Everything sent is in the store before the agent exits (the manager reads its socket before it sees the exit).
  await barrier().catch(() => {});
  return result;
}

/** This boot's id: a state memfd of another boot (handed back by systemd after a kexec) describes the previous kernel's sessions. */
function bootId(): string {
  return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

/** The state parked beside the session fds: what the manifest would say about each, and the boot it was written in. */
function writeState(sessions: Array<ManifestSession & { released?: boolean }>): number {
  const fd = memfd.createSync('liveupdate-agent-state');
  fs.writeFileSync(`/proc/self/fd/${fd}`, JSON.stringify({ bootId: bootId(), sessions }));
  return fd;
}

/** What a restore found: the outgoing sessions to adopt, and what went wrong on the way. */
export interface Restored {
  /** Each parked session with its state. */
  sessions: Array<{ saved: ManifestSession; session: Session }>;
  /** Sessions handed back after a kexec (systemd retrieved them from its store): never closed here, which would finish them. */
  incoming: Array<{ fdName: string; session: Session }>;
  /** Sessions released before the stop, perhaps still held by their clients. */
  released: ManifestSession[];
  /** Why the state could not be read, or null. */
  failure: string | null;
}

/**
 * Takes back what a previous run parked: every parked session fd, described
 * by the state memfd when it can be read. A session the state does not
 * describe (the state missing, corrupt, or older than the fd) is kept all
 * the same, described by its kernel name alone: its owner from the name's
 * namespace, no metadata. Nothing parked is dropped, and every problem is
 * reported.
 */
export function restore(restored: RestoredState): Restored {
  const described = new Map<string, ManifestSession>();
  const released: ManifestSession[] = [];
  const problems: string[] = [];
  if (restored.stateFd === undefined) problems.push(`no ${STATE_FDNAME} in the fd store`);
  else {
    try {
      // Written before a kexec, it describes sessions that are now incoming (the manifest does): nothing of it applies.
      for (const s of readState(restored.stateFd, bootId())) {
        if (s.released === true) released.push(manifestSession(s));
        else described.set(fdNameOf(s.kernelName), manifestSession(s));
      }
    } catch (error) {
      problems.push(`${STATE_FDNAME} cannot be read: ${(error as Error).message}`);
    } finally {
      closeQuietly(restored.stateFd);
    }
  }
  const sessions: Restored['sessions'] = [];
  const incoming: Restored['incoming'] = [];
  for (const [fdName, fd] of restored.fds) {
    if (!fdName.startsWith('luo-')) continue;
    let session: Session;
    try {
      session = Session.fromFd(fd);
    } catch (error) {
      problems.push(`${fdName}: ${(error as Error).message}`);
      closeQuietly(fd);
      continue;
    }
    if (session.state === 'incoming') {
      incoming.push({ fdName, session });
      continue;
    }
    if (session.state !== 'outgoing') {
      problems.push(`${fdName}: session '${session.name}' is ${session.state}, not outgoing`);
      session.closeSync();
      continue;
    }
    const saved = described.get(fdName);
    if (saved === undefined && restored.stateFd !== undefined) problems.push(`${fdName}: session '${session.name}' is not in ${STATE_FDNAME}`);
    sessions.push({ saved: saved?.kernelName === session.name ? saved : undescribed(session.name), session });
  }
  return { sessions, incoming, released, failure: problems.length === 0 ? null : problems.join('; ') };
}

/** The sessions the state memfd describes (none when written in another boot); throws if it is not what {@link writeState} wrote. */
function readState(fd: number, boot: string): Array<ManifestSession & { released?: boolean }> {
  const state = JSON.parse(fs.readFileSync(`/proc/self/fd/${fd}`, 'utf8')) as { sessions?: unknown; bootId?: unknown };
  if (!Array.isArray(state.sessions)) throw new Error('no sessions array');
  if (typeof state.bootId === 'string' && state.bootId !== boot) return [];
  return state.sessions.filter((s): s is ManifestSession & { released?: boolean } => typeof s === 'object' && s !== null && typeof (s as ManifestSession).kernelName === 'string' && typeof (s as ManifestSession).owner === 'number');
}

/** A session known by its kernel name only: the owner is the uid of its namespace (`u<uid>.` or `u<uid>~`), else root. */
export function undescribed(kernelName: string): ManifestSession {
  const match = /^u(\d+)([.~])(.*)$/.exec(kernelName);
  const owner = match === null ? 0 : Number(match[1]);
  const name = match === null ? kernelName : match[2] === '.' ? (match[3] ?? kernelName) : kernelName;
  return { kernelName, name, owner, metadata: null, createdAt: 0 };
}
