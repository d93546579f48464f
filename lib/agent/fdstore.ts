/**
 * The agent's parking in systemd's fd store: on a stop under systemd its
 * references to outgoing sessions (and the state describing them) go to
 * the store, and the next start takes them back from LISTEN_FDS.
 * @internal
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as memfd from '../memfd.js';
import { Session } from '../session.js';
import { notify } from '../systemd.js';
import type { ManifestSession } from './manifest.js';
import { manifestSession, type Entry } from './sessions.js';

/** The FDNAME of the agent's state memfd in systemd's fd store. */
export const STATE_FDNAME = 'agent-state';

/** The FDNAME of the agent's own incoming session, parked when its manifest was refused. */
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

/** Parks every outgoing session's fd, the refused manifest's session if any, and the state describing them; answers how many sessions. */
export async function park(entries: readonly Entry[], heldManifest: Session | null): Promise<number> {
  const parked = entries.filter((e) => e.session !== null);
  for (const e of parked) {
    await notify({ FDSTORE: 1, FDNAME: fdNameOf(e.kernelName), FDPOLL: 0 }, [e.session?.fd ?? -1]);
  }
  if (heldManifest !== null) await notify({ FDSTORE: 1, FDNAME: MANIFEST_FDNAME, FDPOLL: 0 }, [heldManifest.fd]);
  const state = writeState(parked.map(manifestSession));
  try {
    await notify({ FDSTOREREMOVE: 1, FDNAME: STATE_FDNAME });
    await notify({ FDSTORE: 1, FDNAME: STATE_FDNAME, FDPOLL: 0 }, [state]);
  } finally {
    closeQuietly(state);
  }
  return parked.length;
}

/** The state parked beside the session fds: what the manifest would say about each. */
function writeState(sessions: ManifestSession[]): number {
  const fd = memfd.createSync('liveupdate-agent-state');
  fs.writeFileSync(`/proc/self/fd/${fd}`, JSON.stringify({ sessions }));
  return fd;
}

/** What a restore found: the outgoing sessions to adopt, and what went wrong on the way. */
export interface Restored {
  /** Each parked session with its state. */
  sessions: Array<{ saved: ManifestSession; session: Session }>;
  /** Why the state could not be read, or null. */
  failure: string | null;
}

/** Takes back what a previous run parked: the session fds the state describes. */
export function restore(restored: RestoredState): Restored {
  if (restored.stateFd === undefined) return { sessions: [], failure: null };
  let saved: ManifestSession[] = [];
  let failure: string | null = null;
  try {
    saved = (JSON.parse(fs.readFileSync(`/proc/self/fd/${restored.stateFd}`, 'utf8')) as { sessions: ManifestSession[] }).sessions;
  } catch (error) {
    failure = (error as Error).message;
  } finally {
    closeQuietly(restored.stateFd);
  }
  const sessions: Restored['sessions'] = [];
  for (const s of saved) {
    const fd = restored.fds.get(fdNameOf(s.kernelName));
    if (fd === undefined) continue;
    const session = Session.fromFd(fd);
    if (session.state !== 'outgoing') {
      session.closeSync();
      continue;
    }
    sessions.push({ saved: s, session });
  }
  return { sessions, failure };
}
