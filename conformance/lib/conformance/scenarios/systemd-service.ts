/**
 * A service of the systemd guest image that keeps a file across `systemctl
 * kexec` with the library's public API only, the way the README's "On a
 * systemd host" section shows. Started by a unit of scenarios/systemd.ts as
 * `node systemd-service.js ROLE`:
 *
 * - `own-session`: creates a session of its own, preserves a memfd into it,
 *   stores the session fd in its fd store; after the kexec it gets the
 *   session back through listenFds(), retrieves the memfd and finishes.
 * - `luo-session`: its unit has `LUOSession=`: systemd makes the session and
 *   passes it; the service preserves a memfd into it, and retrieves it after
 *   the kexec.
 * - `memfd`: stores a plain memfd in its fd store, no session of its own.
 *
 * Each writes what it found to /run/lu-services/ROLE.json, then tells
 * systemd it is ready (so `systemctl start` returns once the file is there)
 * and keeps running until the shutdown stops it.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { describeFd, LiveUpdate, listenFds, memfd, notifySync, Session } from 'liveupdate';
import { sha256At } from '../support.js';

/** The FDNAME each role stores under (and the LUOSession= name of the luo-session unit). */
export const FDNAMES = { 'own-session': 'lu-own-session', 'luo-session': 'lu-named', memfd: 'lu-memfd' } as const;
/** Where the services write what they found. */
export const RESULTS_DIR = '/run/lu-services';
/** The token every preserved memfd has. */
const TOKEN = 1;
/** Bytes in each pattern file. */
export const PATTERN_BYTES = 64 * 1024;

type Role = keyof typeof FDNAMES;

/** The role's known contents: "<role> " repeated to {@link PATTERN_BYTES} bytes. */
export function pattern(role: string): Buffer {
  return Buffer.alloc(PATTERN_BYTES, `${role} `);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A memfd holding the role's pattern. */
function patternMemfd(role: Role): { fd: number; sha256: string } {
  const fd = memfd.createSync(`lu-${role}`);
  const bytes = pattern(role);
  fs.writeSync(fd, bytes, 0, bytes.length, 0);
  return { fd, sha256: sha256(bytes) };
}

/** The size and SHA-256 of the whole file of `fd`. */
function contents(fd: number): { size: number; sha256: string } {
  const size = fs.fstatSync(fd).size;
  return { size, sha256: sha256At(fd, 0, size) };
}

/** Retrieves the memfd of an incoming session, reads it, finishes the session. */
function retrieveAndFinish(session: Session): Record<string, unknown> {
  const stateBefore = session.state;
  const fd = session.retrieveSync(TOKEN);
  const found = contents(fd);
  fs.closeSync(fd);
  session.finishSync();
  return { phase: 'after', sessionState: stateBefore, ...found, finished: session.state === 'finished' };
}

function ownSession(stored: number | undefined): Record<string, unknown> {
  if (stored !== undefined) return { ...retrieveAndFinish(Session.fromFd(stored)), kind: describeFd(stored).kind };
  // The device only for the create: systemd-shutdown opens it at the very last
  // moment, and a LUOSession= unit starting meanwhile needs it too.
  const device = LiveUpdate.openSync();
  const session = device.createSessionSync(FDNAMES['own-session']);
  device.closeSync();
  const file = patternMemfd('own-session');
  session.preserveSync(file.fd, TOKEN);
  fs.closeSync(file.fd);
  // FDPOLL=0: a session fd is not a socket whose hang-up should drop it from the store.
  notifySync({ FDSTORE: 1, FDNAME: FDNAMES['own-session'], FDPOLL: 0 }, [session.fd]);
  session.closeSync(); // the store holds it now
  return { phase: 'before', sessionState: 'outgoing', sha256: file.sha256 };
}

function luoSession(passed: number | undefined): Record<string, unknown> {
  if (passed === undefined) throw new Error(`systemd passed no fd named ${FDNAMES['luo-session']} (LUOSession=)`);
  const session = Session.fromFd(passed);
  if (session.state === 'incoming') return { ...retrieveAndFinish(session), name: session.name };
  const file = patternMemfd('luo-session');
  session.preserveSync(file.fd, TOKEN);
  fs.closeSync(file.fd);
  // systemd keeps the session it made: nothing to store.
  return { phase: 'before', sessionState: session.state, sha256: file.sha256, name: session.name };
}

function plainMemfd(stored: number | undefined): Record<string, unknown> {
  // A restored memfd has lost its name (its link reads "/ (deleted)"); it
  // still answers F_GET_SEALS (shmem), which any file of the root would refuse.
  if (stored !== undefined) return { phase: 'after', link: describeFd(stored).link, seals: memfd.getSealsSync(stored), ...contents(stored) };
  const file = patternMemfd('memfd');
  notifySync({ FDSTORE: 1, FDNAME: FDNAMES.memfd, FDPOLL: 0 }, [file.fd]);
  fs.closeSync(file.fd);
  return { phase: 'before', sha256: file.sha256 };
}

function main(): void {
  const role = process.argv[2] as Role;
  if (!(role in FDNAMES)) throw new Error(`unknown role ${String(role)}`);
  const fds = listenFds({ unsetEnvironment: true });
  const mine = fds.get(FDNAMES[role])?.[0];
  const received = [...fds.keys()];
  let result: Record<string, unknown>;
  try {
    const act = role === 'own-session' ? ownSession : role === 'luo-session' ? luoSession : plainMemfd;
    result = { ok: true, received, ...act(mine) };
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    result = { ok: false, received, error: { name: e.name, message: e.message, code: e.code ?? null } };
  }
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(`${RESULTS_DIR}/${role}.json`, JSON.stringify(result));
  notifySync({ READY: 1 });
  // A service runs until it is stopped (the shutdown before the kexec).
  setInterval(() => {}, 1 << 30);
}

if (require.main === module) main();
