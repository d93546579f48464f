/**
 * The binding's own promises, on a real LUO kernel (issue 2): the Promise
 * forms end to end, tokens at both ends of the u64 range, close-on-exec fds,
 * GET_NAME, state transitions, garbage collection never unpreserving a
 * session, Session.fromFd on fds passed over a socket in both kernels, the
 * kexec API's errors, failing calls that leak no fd, and batches of
 * retrieves: all or nothing, the failed token named, nothing lost.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import {
  BadFileDescriptorError,
  DeviceBusyError,
  kexec,
  KexecError,
  KexecImageRejectedError,
  KexecNotLoadedError,
  LiveUpdate,
  MAX_TOKEN,
  memfd,
  recvFdsSync,
  sendFdsSync,
  Session,
  SessionExistsError,
  SessionStateError,
  socketPair,
  status,
  TokenInUseError,
  TokenNotFoundError,
  UnsupportedFileError,
} from 'liveupdate';
import { defineCase, defineScenario, expectError, memfdWith, type StageContext } from 'liveupdate-conformance';

const ASYNC_SESSION = 'lu-api-async';
const GC_SESSION = 'lu-api-gc';
const FROM_FD_SESSION = 'lu-api-from-fd';
const ERRORS_SESSION = 'lu-api-errors';
const MANY_SESSION = 'lu-api-many';
const GC_TOKEN = 7n;

/** O_CLOEXEC as /proc/self/fdinfo shows it in `flags` (octal). */
function isCloexec(fd: number): boolean {
  const flags = /^flags:\s+(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0';
  return (parseInt(flags, 8) & 0o2000000) !== 0;
}

function sha256(fd: number): string {
  return createHash('sha256').update(fs.readFileSync(`/proc/self/fd/${fd}`)).digest('hex');
}

function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').sort();
}

async function asyncPreserve(ctx: StageContext): Promise<{ max: string; zero: string }> {
  const before = await status({ probe: true });
  ctx.check('status: available', before.available, before.reason);
  ctx.equal('status: liveupdate=', before.liveupdateParam, 'on');
  ctx.equal('status: GET_NAME works', before.getName, true);
  const luo = await LiveUpdate.open();
  const busy = await status({ probe: true });
  ctx.check('status: a held device is reported busy', !busy.available && busy.deviceOpenable === false && /EBUSY/.test(busy.reason ?? ''), busy.reason);
  const session = await luo.createSession(ASYNC_SESSION);
  ctx.equal('state', session.state, 'outgoing');
  ctx.equal('GET_NAME', await session.getName(), ASYNC_SESSION);
  ctx.check('session fd is close-on-exec', isCloexec(session.fd));
  const high = await memfd.create('lu-api-max');
  const low = await memfd.create('lu-api-zero');
  fs.writeSync(high, 'token 2^64-1', 0);
  fs.writeSync(low, 'token 0', 0);
  await session.preserve(high, MAX_TOKEN);
  await session.preserve(low, 0);
  await luo.close();
  ctx.keep(session, high, low);
  return { max: sha256(high), zero: sha256(low) };
}

async function asyncRetrieve(ctx: StageContext): Promise<void> {
  const before = ctx.previous as { max: string; zero: string };
  const luo = await LiveUpdate.open();
  const session = await luo.retrieveSession(ASYNC_SESSION);
  ctx.equal('state', session.state, 'incoming');
  ctx.equal('GET_NAME', await session.getName(), ASYNC_SESSION);
  const high = await session.retrieve(MAX_TOKEN);
  const low = await session.retrieve(0n);
  ctx.check('retrieved fds are close-on-exec', isCloexec(high) && isCloexec(low));
  ctx.equal('token 2^64-1 content', sha256(high), before.max);
  ctx.equal('token 0 content', sha256(low), before.zero);
  await session.finish();
  ctx.equal('state after finish', session.state, 'finished');
  await expectError(ctx, 'retrieve after finish is refused', () => session.retrieve(0n), SessionStateError, 'ERR_LIVEUPDATE_SESSION_STATE');
  await session.close();
  ctx.equal('state after close', session.state, 'closed');
  ctx.equal('fd after close', session.fd, -1);
  await luo.close();
  fs.closeSync(high);
  fs.closeSync(low);
}

/** v8's gc(), exposed at run time: the guest runs plain `node`. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

/** Creates a session and preserves a memfd, then lets go of every JS reference to both. */
function preserveAndDrop(): { sessionFd: number; sha: string } {
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync(GC_SESSION);
  const fd = memfdWith('lu-api-gc', 'dropped by JS, kept by the kernel');
  session.preserveSync(fd, GC_TOKEN);
  const sha = sha256(fd);
  luo.closeSync();
  fs.closeSync(fd);
  return { sessionFd: session.fd, sha };
}

async function gcDrop(ctx: StageContext): Promise<{ sha: string }> {
  const { sessionFd, sha } = preserveAndDrop();
  for (let round = 0; round < 3; round++) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const link = fs.readlinkSync(`/proc/self/fd/${sessionFd}`);
  ctx.equal('session fd still open after garbage collection', link, `anon_inode:[luo_session] ${GC_SESSION}`);
  return { sha };
}

function gcRetrieve(ctx: StageContext): void {
  const luo = LiveUpdate.openSync();
  const session = luo.retrieveSessionSync(GC_SESSION);
  const fd = session.retrieveSync(GC_TOKEN);
  ctx.equal('content', sha256(fd), (ctx.previous as { sha: string }).sha);
  session.finishSync();
  session.closeSync();
  luo.closeSync();
  fs.closeSync(fd);
}

/** Sends `fd` over a fresh socket pair and returns the received copy. */
function passOverSocket(fd: number): number {
  const [a, b] = socketPair('stream');
  try {
    sendFdsSync(a, [fd], 'session');
    const { fds } = recvFdsSync(b, { maxFds: 1 });
    const received = fds[0];
    if (received === undefined) throw new Error('no fd arrived');
    return received;
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
}

function fromFdOutgoing(ctx: StageContext): void {
  const luo = LiveUpdate.openSync();
  const original = luo.createSessionSync(FROM_FD_SESSION);
  const session = Session.fromFd(passOverSocket(original.fd));
  ctx.equal('fromFd: name', session.name, FROM_FD_SESSION);
  ctx.equal('fromFd: state of a created session', session.state, 'outgoing');
  const fd = memfdWith('lu-api-from-fd', 'preserved through a passed session fd');
  session.preserveSync(fd, 1n);
  // The received fd keeps the session alive when the original is closed.
  original.closeSync();
  luo.closeSync();
  ctx.keep(session, fd);
}

function fromFdIncoming(ctx: StageContext): void {
  const luo = LiveUpdate.openSync();
  const original = luo.retrieveSessionSync(FROM_FD_SESSION);
  const session = Session.fromFd(passOverSocket(original.fd));
  ctx.equal('fromFd: state of a retrieved session', session.state, 'incoming');
  const fd = session.retrieveSync(1n);
  ctx.equal('content', fs.readFileSync(`/proc/self/fd/${fd}`, 'utf8'), 'preserved through a passed session fd');
  session.finishSync();
  session.closeSync();
  original.closeSync();
  luo.closeSync();
  fs.closeSync(fd);
}

async function kexecApi(ctx: StageContext): Promise<void> {
  ctx.equal('nothing loaded at first', kexec.isLoadedSync(), false);
  await expectError(ctx, 'executeSync with nothing loaded', () => kexec.executeSync({ sync: false }), KexecNotLoadedError, 'EINVAL');
  await expectError(ctx, 'execute with nothing loaded', () => kexec.execute({ sync: false }), KexecNotLoadedError, 'EINVAL');
  await expectError(ctx, 'load of a missing file', () => kexec.loadSync({ kernel: '/nonexistent/bzImage', cmdline: '' }), KexecError, 'ENOENT');
  await expectError(ctx, 'load of a script, not a kernel', () => kexec.loadSync({ kernel: '/init', cmdline: '' }), KexecImageRejectedError, 'ENOEXEC');
  await kexec.load({ kernel: ctx.kernel, cmdline: 'console=ttyS0 liveupdate=on' });
  ctx.equal('loaded after load', await kexec.isLoaded(), true);
  await kexec.unload();
  ctx.equal('not loaded after unload', kexec.isLoadedSync(), false);
}

async function errorsLeakNothing(ctx: StageContext): Promise<void> {
  const before = openFds();
  const luo = LiveUpdate.openSync();
  await expectError(ctx, 'second open', () => LiveUpdate.openSync(), DeviceBusyError, 'EBUSY');
  const session = luo.createSessionSync(ERRORS_SESSION);
  await expectError(ctx, 'same name again', () => luo.createSessionSync(ERRORS_SESSION), SessionExistsError, 'EEXIST');
  const [socketA, socketB] = socketPair('stream');
  await expectError(ctx, 'a socket cannot be preserved', () => session.preserveSync(socketA, 1n), UnsupportedFileError, 'ENOENT');
  fs.closeSync(socketA);
  fs.closeSync(socketB);
  await expectError(ctx, 'a closed fd', () => session.preserveSync(socketA, 2n), BadFileDescriptorError, 'EBADF');
  const fd = memfdWith('lu-api-errors', 'x');
  const other = memfdWith('lu-api-other', 'y');
  session.preserveSync(fd, 3n);
  await expectError(ctx, 'token reused', () => session.preserveSync(other, 3n), TokenInUseError, 'EEXIST');
  await expectError(ctx, 'retrieve on an outgoing session', () => session.retrieveSync(3n), SessionStateError, 'EINVAL');
  await expectError(ctx, 'finish on an outgoing session', () => session.finishSync(), SessionStateError, 'EINVAL');
  session.closeSync();
  luo.closeSync();
  fs.closeSync(fd);
  fs.closeSync(other);
  ctx.equal('fds after failing calls', openFds(), before);
}

/** Tokens of the batch case: both ends of the u64 range and a hundred between. */
const MANY_TOKENS = [0n, MAX_TOKEN, ...Array.from({ length: 100 }, (_, i) => 1000n + BigInt(i) * 7919n)];
/** A token the batch case never preserves. */
const MISSING_TOKEN = 1n;

/** Checks that `fn` fails with `type` and `code` and names {@link MISSING_TOKEN} as its token (a Promise for a Promise's failure). */
function refusedNaming(ctx: StageContext, name: string, fn: () => unknown, type: new (...args: never[]) => Error, code: string): Promise<void> | void {
  const judge = (error: unknown): void => {
    const { code: got, token } = error as { code?: unknown; token?: unknown };
    void ctx.check(name, error instanceof type && got === code && token === MISSING_TOKEN, { expected: `${type.name} [${code}] token ${MISSING_TOKEN}`, actual: `${(error as Error).name} [${String(got)}] token ${String(token)}` });
  };
  let result: unknown;
  try {
    result = fn();
  } catch (error) {
    return judge(error);
  }
  const succeeded = (): void => void ctx.check(name, false, 'the batch succeeded');
  if (result instanceof Promise) return result.then(succeeded, judge);
  succeeded();
}

function preserveMany(ctx: StageContext): { shas: string[] } {
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync(MANY_SESSION);
  const fds = MANY_TOKENS.map((token, i) => {
    const fd = memfdWith(`lu-api-many-${i}`, `file ${i} under token ${token}`);
    session.preserveSync(fd, token);
    return fd;
  });
  const outgoing = luo.createSessionSync(`${MANY_SESSION}-outgoing`);
  refusedNaming(ctx, 'batch on an outgoing session', () => outgoing.retrieveManySync([MISSING_TOKEN]), SessionStateError, 'EINVAL');
  outgoing.closeSync();
  luo.closeSync();
  ctx.keep(session, ...fds);
  return { shas: fds.map(sha256) };
}

async function retrieveMany(ctx: StageContext): Promise<void> {
  const { shas } = ctx.previous as { shas: string[] };
  const before = openFds();
  const luo = LiveUpdate.openSync();
  const session = luo.retrieveSessionSync(MANY_SESSION);
  const fds = session.retrieveManySync(MANY_TOKENS);
  ctx.equal('sync: every file, in token order', fds.map(sha256), shas);
  ctx.check('sync: every fd close-on-exec', fds.every(isCloexec));
  const reversed = [...MANY_TOKENS].reverse();
  const again = await session.retrieveMany(reversed);
  ctx.equal('Promise: every file, in token order', again.map(sha256), [...shas].reverse());
  ctx.equal('new fds each time', new Set([...fds, ...again]).size, fds.length + again.length);
  [...fds, ...again].forEach((fd) => fs.closeSync(fd));
  const held = openFds();
  const half = MANY_TOKENS.slice(0, 50);
  refusedNaming(ctx, 'sync: a missing token fails the batch, named', () => session.retrieveManySync([...half, MISSING_TOKEN, ...half]), TokenNotFoundError, 'ENOENT');
  await refusedNaming(ctx, 'Promise: a missing token fails the batch, named', () => session.retrieveMany([...half, MISSING_TOKEN]), TokenNotFoundError, 'ENOENT');
  ctx.equal('failed batches leave no fd open', openFds(), held);
  const last = session.retrieveManySync(MANY_TOKENS);
  ctx.equal('nothing lost after the failures', last.map(sha256), shas);
  last.forEach((fd) => fs.closeSync(fd));
  session.finishSync();
  session.closeSync();
  luo.closeSync();
  ctx.equal('fds after the batches', openFds(), before);
}

export default defineScenario('api', [
  defineCase('promise-forms', [asyncPreserve, asyncRetrieve]),
  defineCase('gc-never-unpreserves', [gcDrop, gcRetrieve]),
  defineCase('from-fd-over-socket', [fromFdOutgoing, fromFdIncoming]),
  defineCase('kexec-api', [kexecApi]),
  defineCase('errors-leak-nothing', [errorsLeakNothing]),
  defineCase('retrieve-many', [preserveMany, retrieveMany]),
]);
