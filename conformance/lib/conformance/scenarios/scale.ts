/**
 * Scale: 2000 sessions, and 1000 files in one session, created in the first
 * kernel and all retrieved in the second, so both the kernel's growing
 * bookkeeping and its handover of it are exercised.
 * @internal
 */
import * as fs from 'node:fs';
import { memfd, type Session } from 'liveupdate';
import type { JsonValue } from '../../vm/protocol.js';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { carried, conformanceCase, contentOf, PREFIX, withDevice } from '../support.js';

const SESSIONS = 2000;
const FILES = 1000;
const FILES_SESSION = `${PREFIX}scale-files`;
/** Tokens far from 0, so an off-by-one in token handling cannot match by luck. */
const TOKEN_BASE = 0x1_0000_0000n;

const sessionName = (i: number): string => `${PREFIX}scale-${String(i).padStart(4, '0')}`;
const fileText = (i: number): string => `file ${i} of ${FILES}`;

/** Creates 2000 sessions and keeps them for the kexec. */
async function createSessions(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const started = performance.now();
    const sessions: Session[] = [];
    for (let i = 0; i < SESSIONS; i++) sessions.push(luo.createSessionSync(sessionName(i)));
    const ms = Math.round(performance.now() - started);
    ctx.equal('distinct fds', new Set(sessions.map((s) => s.fd)).size, SESSIONS);
    ctx.equal('name of the last', sessions[SESSIONS - 1]?.getNameSync(), sessionName(SESSIONS - 1));
    ctx.report('create ms', ms);
    ctx.keep(sessions);
    return { sessions: SESSIONS, createMs: ms };
  });
}

/** Every one of the 2000 arrives; each is retrieved, finished and closed. */
async function retrieveSessions(ctx: StageContext): Promise<JsonValue> {
  const before = carried(ctx);
  return withDevice((luo) => {
    const started = performance.now();
    const names: string[] = [];
    for (let i = 0; i < SESSIONS; i++) {
      const session = luo.retrieveSessionSync(sessionName(i));
      if (i % 500 === 0) names.push(session.getNameSync());
      session.finishSync();
      session.closeSync();
    }
    const ms = Math.round(performance.now() - started);
    ctx.equal('names of every 500th', names, [0, 500, 1000, 1500].map(sessionName));
    ctx.report('retrieve ms', ms);
    return { sessions: before['sessions'] ?? null, retrieveMs: ms };
  });
}

/**
 * Preserves 1000 memfds in one session, then closes every memfd fd: the
 * kernel holds its own reference, so the files must survive anyway.
 */
async function preserveFiles(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(FILES_SESSION);
    const started = performance.now();
    for (let i = 0; i < FILES; i++) {
      const fd = memfd.createSync(`conf-scale-${i}`);
      fs.writeSync(fd, fileText(i));
      session.preserveSync(fd, TOKEN_BASE + BigInt(i));
      fs.closeSync(fd);
    }
    const ms = Math.round(performance.now() - started);
    ctx.report('preserve ms', ms);
    ctx.keep(session);
    return { files: FILES, preserveMs: ms };
  });
}

/** All 1000 arrive with their contents, retrieved in reverse order. */
async function retrieveFiles(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.retrieveSessionSync(FILES_SESSION);
    const started = performance.now();
    const wrong: number[] = [];
    for (let i = FILES - 1; i >= 0; i--) {
      const fd = session.retrieveSync(TOKEN_BASE + BigInt(i));
      if (contentOf(fd) !== fileText(i)) wrong.push(i);
      fs.closeSync(fd);
    }
    const ms = Math.round(performance.now() - started);
    ctx.equal('files with wrong contents', wrong.slice(0, 10), []);
    session.finishSync();
    session.closeSync();
    ctx.report('retrieve ms', ms);
    return { files: FILES, retrieveMs: ms };
  });
}

/** @internal */
export default defineScenario('scale', [
  conformanceCase('2000-sessions', ['luo'], [createSessions, retrieveSessions]),
  conformanceCase('1000-files-in-one-session', ['memfd'], [preserveFiles, retrieveFiles]),
]);
