/**
 * fault/*: the file lifecycle's failure paths, through the public API, on a
 * kernel with the test-only file handler (vm/luo-test-handler,
 * CONFIG_LIVEUPDATE_TEST_HANDLER): a freeze that fails at the kexec, a file
 * that cannot finish yet, a retrieve that fails, preserves refused for lack
 * of room, memory or size, and the calls of a normal update. Each case
 * asserts our typed error and the calls the kernel made to the handler. On
 * a kernel without the handler they are not applicable.
 *
 * freeze-fails makes a kexec fail in stage 1: every file preserved by then,
 * the other cases' too, is frozen and unfrozen once more than usual, as on
 * any host where an update is aborted.
 * @internal
 */
import * as fs from 'node:fs';
import { constants } from 'node:os';
import {
  FileAlreadyPreservedError,
  FileTooLargeError,
  FinishNotReadyError,
  kexec,
  LiveUpdate,
  LiveUpdateAbortedError,
  OutOfMemoryError,
  RetrieveFailedError,
  SessionFullError,
  SessionNotFoundError,
  type Session,
} from 'liveupdate';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { clearFaults, handlerCalls, openTestFile, phases, setFault, testFileId, type FaultOp, type TestFile } from '../luo-test.js';
import { conformanceCase, expectError, PREFIX, type ErrorClass } from '../support.js';

const { EBUSY, EFBIG, EIO, ENOMEM, ENOSPC } = constants.errno;

/** File name → id, as a stage hands it to the next. */
type Ids = Record<string, number>;

function idsOf(files: Readonly<Record<string, TestFile>>): Ids {
  return Object.fromEntries(Object.entries(files).map(([name, file]) => [name, file.id]));
}

const sessionName = (what: string): string => `${PREFIX}fault-${what}`;

/** The name of the file whose id `fd` has: which file came back. */
function nameOf(ids: Ids, fd: number): string {
  const id = testFileId(fd);
  return Object.keys(ids).find((name) => ids[name] === id) ?? `unknown id ${id}`;
}

async function retrieveSessions(names: readonly string[]): Promise<Session[]> {
  const luo = await LiveUpdate.open();
  try {
    const sessions: Session[] = [];
    for (const name of names) sessions.push(await luo.retrieveSession(name));
    return sessions;
  } finally {
    await luo.close();
  }
}

// freeze-fails: B's freeze fails at the kexec; A (frozen before it, in an
// earlier session) is unfrozen, C is never frozen; all stay preserved, and
// the runner's own kexec, with the fault cleared, carries them across.

const FREEZE_SESSIONS = [sessionName('freeze-1'), sessionName('freeze-2')] as const;

async function freezeFails(ctx: StageContext): Promise<Ids> {
  const files = { A: openTestFile(), B: openTestFile(), C: openTestFile() };
  const ids = idsOf(files);
  const luo = await LiveUpdate.open();
  const first = await luo.createSession(FREEZE_SESSIONS[0]);
  const second = await luo.createSession(FREEZE_SESSIONS[1]);
  await first.preserve(files.A.fd, 1n);
  await second.preserve(files.B.fd, 2n);
  await second.preserve(files.C.fd, 3n);
  await luo.close();
  setFault(files.B.fd, 'freeze', EIO);
  // No initrd: the kexec is refused before anything would need one.
  await kexec.load({ kernel: ctx.nextKernel ?? ctx.kernel, cmdline: 'console=ttyS0 liveupdate=on' });
  await expectError(ctx, 'kexec.execute: the failed freeze aborts the update', () => kexec.execute(), LiveUpdateAbortedError, 'EIO');
  await kexec.unload();
  ctx.equal('calls: A frozen, B failed, A unfrozen, C never frozen', handlerCalls('calls', ids), [
    'preserve A 0', 'preserve B 0', 'preserve C 0', 'freeze A 0', `freeze B -${EIO}`, 'unfreeze A 0',
  ]);
  ctx.equal('both sessions still outgoing', [first.state, second.state], ['outgoing', 'outgoing']);
  await expectError(ctx, 'A is still preserved', () => second.preserve(files.A.fd, 4n), FileAlreadyPreservedError, 'EBUSY');
  clearFaults(files.B.fd);
  ctx.keep(first, second, files);
  return ids;
}

async function freezeRetried(ctx: StageContext): Promise<void> {
  const ids = ctx.previous as Ids;
  ctx.equal('previous kernel: the aborted freeze, then the kexec that carried all', handlerCalls('previous', ids), [
    'preserve A 0', 'preserve B 0', 'preserve C 0', 'freeze A 0', `freeze B -${EIO}`, 'unfreeze A 0',
    'freeze A 0', 'freeze B 0', 'freeze C 0',
  ]);
  const [first, second] = await retrieveSessions(FREEZE_SESSIONS);
  if (first === undefined || second === undefined) return;
  const fds = [await first.retrieve(1n), await second.retrieve(2n), await second.retrieve(3n)];
  ctx.equal('A, B and C came back', fds.map((fd) => nameOf(ids, fd)), ['A', 'B', 'C']);
  for (const session of [first, second]) await session.finish();
  for (const session of [first, second]) await session.close();
  for (const fd of fds) fs.closeSync(fd);
}

// can-finish-says-no: E carries a can_finish fault. finish is refused with
// EBUSY, finishes nothing (G can still be retrieved), and succeeds once the
// fault is cleared on the retrieved E.

const FINISH_SESSION = sessionName('finish');

/** Stage 1 of a two-file case: both in one session (tokens 1 and 2), the first with a fault that travels to the next kernel. */
async function preserveWithFault(ctx: StageContext, session: string, [first, second]: [string, string], op: FaultOp, errno: number): Promise<Ids> {
  const files = { [first]: openTestFile(), [second]: openTestFile() };
  const faulty = files[first] as TestFile;
  const luo = await LiveUpdate.open();
  const outgoing = await luo.createSession(session);
  await outgoing.preserve(faulty.fd, 1n);
  await outgoing.preserve((files[second] as TestFile).fd, 2n);
  await luo.close();
  setFault(faulty.fd, op, errno);
  ctx.keep(outgoing, files);
  return idsOf(files);
}

async function finishRefused(ctx: StageContext): Promise<void> {
  const ids = ctx.previous as Ids;
  const [session] = await retrieveSessions([FINISH_SESSION]);
  if (session === undefined) return;
  const e = await session.retrieve(1n);
  const refused = await expectError(ctx, 'finish: not ready', () => session.finish(), FinishNotReadyError, 'EBUSY');
  ctx.check('the error says to retry', /retry/.test(refused.message), refused.message);
  ctx.equal('the session is still incoming', session.state, 'incoming');
  const g = await session.retrieve(2n);
  ctx.equal('nothing was finished: G still retrieves', nameOf(ids, g), 'G');
  clearFaults(e);
  await session.finish();
  ctx.equal('finish succeeds once E is ready', session.state, 'finished');
  ctx.equal('calls: no finish before every can_finish said yes', phases(handlerCalls('calls', ids)), [
    'retrieve E 0', `can_finish E -${EBUSY}`, 'retrieve G 0', 'can_finish E,G 0', 'finish E,G 0',
  ]);
  await session.close();
  fs.closeSync(e);
  fs.closeSync(g);
}

// retrieve-fails: H's retrieve fails with EIO, and again the same way (LUO
// keeps the outcome: the handler is asked once); I retrieves fine.

const RETRIEVE_SESSION = sessionName('retrieve');

async function retrieveFails(ctx: StageContext): Promise<void> {
  const ids = ctx.previous as Ids;
  const [session] = await retrieveSessions([RETRIEVE_SESSION]);
  if (session === undefined) return;
  const once = await expectError(ctx, 'retrieve H fails', () => session.retrieve(1n), RetrieveFailedError, 'EIO');
  const twice = await expectError(ctx, 'retrieve H again fails the same way', () => session.retrieve(1n), RetrieveFailedError, 'EIO');
  ctx.equal('both failures read the same', twice.message, once.message);
  const i = await session.retrieve(2n);
  ctx.equal('I retrieves', nameOf(ids, i), 'I');
  await session.finish();
  ctx.equal('calls: the handler was asked once for H', phases(handlerCalls('calls', ids)), [
    `retrieve H -${EIO}`, 'retrieve I 0', 'can_finish H,I 0', 'finish H,I 0',
  ]);
  await session.close();
  fs.closeSync(i);
}

// preserve-fails: ENOSPC, ENOMEM and EFBIG from the handler reach the caller
// as their classes; the refused file is not preserved and its token is free.

async function preserveFails(ctx: StageContext): Promise<void> {
  const files = { D: openTestFile() };
  const luo = await LiveUpdate.open();
  const session = await luo.createSession(sessionName('preserve'));
  const refusals: Array<[number, string, ErrorClass]> = [
    [ENOSPC, 'ENOSPC', SessionFullError],
    [ENOMEM, 'ENOMEM', OutOfMemoryError],
    [EFBIG, 'EFBIG', FileTooLargeError],
  ];
  for (const [errno, code, type] of refusals) {
    setFault(files.D.fd, 'preserve', errno);
    await expectError(ctx, `preserve refused with ${code}`, () => session.preserve(files.D.fd, 1n), type, code);
  }
  clearFaults(files.D.fd);
  await session.preserve(files.D.fd, 1n); // the refused file, under the same token
  await session.close();
  await luo.close();
  fs.closeSync(files.D.fd);
  ctx.equal('calls: three refusals, then preserve and unpreserve', handlerCalls('calls', idsOf(files)), [
    `preserve D -${ENOSPC}`, `preserve D -${ENOMEM}`, `preserve D -${EFBIG}`, 'preserve D 0', 'unpreserve D 0',
  ]);
}

// normal-update: the whole sequence: preserve, (unpreserve of a session
// closed before the kexec), freeze; then retrieve in any order, can_finish,
// finish.

const NORMAL_SESSION = sessionName('normal');
const CLOSED_SESSION = sessionName('closed');

async function normalPreserve(ctx: StageContext): Promise<Ids> {
  const files = { A: openTestFile(), B: openTestFile(), C: openTestFile() };
  const luo = await LiveUpdate.open();
  const kept = await luo.createSession(NORMAL_SESSION);
  const closed = await luo.createSession(CLOSED_SESSION);
  await kept.preserve(files.A.fd, 1n);
  await kept.preserve(files.B.fd, 2n);
  await closed.preserve(files.C.fd, 1n);
  await closed.close();
  await luo.close();
  const ids = idsOf(files);
  ctx.equal('calls before the kexec', phases(handlerCalls('calls', ids)), ['preserve A,B,C 0', 'unpreserve C 0']);
  ctx.keep(kept, files);
  return ids;
}

async function normalRetrieve(ctx: StageContext): Promise<void> {
  const ids = ctx.previous as Ids;
  ctx.equal('previous kernel: preserve, unpreserve of the closed session, freeze', phases(handlerCalls('previous', ids)), [
    'preserve A,B,C 0', 'unpreserve C 0', 'freeze A,B 0',
  ]);
  const luo = await LiveUpdate.open();
  await expectError(ctx, 'the closed session is gone', () => luo.retrieveSession(CLOSED_SESSION), SessionNotFoundError, 'ENOENT');
  const session = await luo.retrieveSession(NORMAL_SESSION);
  await luo.close();
  const b = await session.retrieve(2n);
  const a = await session.retrieve(1n);
  ctx.equal('B then A came back', [nameOf(ids, b), nameOf(ids, a)], ['B', 'A']);
  await session.finish();
  await session.close();
  ctx.equal('calls after the kexec', phases(handlerCalls('calls', ids)), ['retrieve A,B 0', 'can_finish A,B 0', 'finish A,B 0']);
  fs.closeSync(a);
  fs.closeSync(b);
}

const HANDLER: ['test-handler'] = ['test-handler'];

export default defineScenario('fault', [
  conformanceCase('freeze-fails', HANDLER, [freezeFails, freezeRetried]),
  conformanceCase('can-finish-says-no', HANDLER, [(ctx) => preserveWithFault(ctx, FINISH_SESSION, ['E', 'G'], 'can_finish', EBUSY), finishRefused]),
  conformanceCase('retrieve-fails', HANDLER, [(ctx) => preserveWithFault(ctx, RETRIEVE_SESSION, ['H', 'I'], 'retrieve', EIO), retrieveFails]),
  conformanceCase('preserve-fails', HANDLER, [preserveFails]),
  conformanceCase('normal-update', HANDLER, [normalPreserve, normalRetrieve]),
]);
