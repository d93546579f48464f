/**
 * The first kernel scenarios (issue 3): a 64 MiB memfd of random bytes
 * survives a live update with its contents, size and file position; and a
 * session closed before the kexec (the abort path) does not exist after it.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { LiveUpdate, LiveUpdateError, memfd } from 'liveupdate';
import { defineCase, defineScenario, type StageContext } from 'liveupdate-conformance';
import { advancePosition, filePosition, fillRandom, sha256At } from './support.js';

const SIZE = 64 * 1024 * 1024;
/** An odd position, so a reset to 0 or a page boundary would show. */
const POSITION = 12_345_679;
const TOKEN = 1n;
const BIG_SESSION = 'lu-test-memfd-64m';
const ABORT_SESSION = 'lu-test-abort';

/** What stage 1 of the 64 MiB case hands to stage 2. */
type Preserved = {
  readonly sha256: string;
  readonly size: number;
  readonly position: number;
  /** SHA-256 of the 4 KiB after the position: what a plain read() must return next. */
  readonly nextSha256: string;
};

function preserveBig(ctx: StageContext): Preserved {
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync(BIG_SESSION);
  const fd = memfd.createSync('lu-test-64m');
  fs.ftruncateSync(fd, SIZE);
  const sha256 = fillRandom(fd, SIZE);
  advancePosition(fd, POSITION);
  ctx.equal('position before preserve', filePosition(fd), POSITION);
  session.preserveSync(fd, TOKEN);
  // The device may close; the session fd (and the memfd) must live until the kexec.
  luo.closeSync();
  ctx.keep(session, fd);
  return { sha256, size: SIZE, position: POSITION, nextSha256: sha256At(fd, POSITION, 4096) };
}

function retrieveBig(ctx: StageContext): Preserved & { state: string } {
  const before = ctx.previous as unknown as Preserved;
  const luo = LiveUpdate.openSync();
  const session = luo.retrieveSessionSync(BIG_SESSION);
  const fd = session.retrieveSync(TOKEN);
  const size = fs.fstatSync(fd).size;
  const sha256 = sha256At(fd, 0, size);
  const position = filePosition(fd);
  const next = Buffer.alloc(4096);
  fs.readSync(fd, next, 0, next.length, null);
  const nextSha256 = createHash('sha256').update(next).digest('hex');
  ctx.equal('size', size, before.size);
  ctx.equal('sha256', sha256, before.sha256);
  ctx.equal('position', position, before.position);
  ctx.equal('bytes read at the position', nextSha256, before.nextSha256);
  session.finishSync();
  const state = session.state;
  ctx.equal('session state after finish', state, 'finished');
  session.closeSync();
  fs.closeSync(fd);
  luo.closeSync();
  return { sha256, size, position, nextSha256, state };
}

function abortBeforeKexec(): { nameFreeAgain: boolean } {
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync(ABORT_SESSION);
  const fd = memfd.createSync('lu-test-abort');
  fs.writeSync(fd, 'preserved, then abandoned');
  session.preserveSync(fd, TOKEN);
  session.closeSync();
  // Closing the outgoing session frees its name (this throws otherwise).
  luo.createSessionSync(ABORT_SESSION).closeSync();
  luo.closeSync();
  fs.closeSync(fd);
  return { nameFreeAgain: true };
}

function abortedIsGone(ctx: StageContext): { error: string; code: string } {
  const luo = LiveUpdate.openSync();
  try {
    luo.retrieveSessionSync(ABORT_SESSION);
    ctx.check('closed session is gone', false, 'retrieveSession succeeded');
    return { error: 'none', code: 'none' };
  } catch (error) {
    if (!(error instanceof LiveUpdateError)) throw error;
    ctx.equal('error code', error.code, 'ENOENT');
    return { error: error.name, code: error.code };
  } finally {
    luo.closeSync();
  }
}

export default defineScenario('memfd', [
  defineCase('preserve-64MiB', [preserveBig, retrieveBig]),
  defineCase('abort-closed-session', [abortBeforeKexec, abortedIsGone]),
]);
