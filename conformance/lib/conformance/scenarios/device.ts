/**
 * Within one kernel: the device, sessions, their names, preserving memfds and
 * what cannot be preserved, and the calls each session direction refuses.
 * Every case leaves no outgoing session behind (nothing here crosses a kexec).
 * @internal
 */
import * as fs from 'node:fs';
import {
  BadFileDescriptorError,
  DeviceBusyError,
  FileAlreadyPreservedError,
  LiveUpdate,
  memfd,
  SessionExistsError,
  SessionStateError,
  socketPair,
  TokenInUseError,
  UnsupportedFileError,
} from 'liveupdate';
import type { JsonValue } from '../../vm/protocol.js';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { closeAll, conformanceCase, contentOf, expectError, memfdWith, PREFIX, withDevice } from '../support.js';

const name = (suffix: string): string => `${PREFIX}dev-${suffix}`;

/** open/close in both forms; the device is free again after close; sessions outlive it. */
async function openClose(ctx: StageContext): Promise<JsonValue> {
  const luo = await LiveUpdate.open();
  ctx.check('fd is open', luo.fd >= 0 && fs.fstatSync(luo.fd).isCharacterDevice(), luo.fd);
  ctx.equal('path', luo.path, '/dev/liveupdate');
  ctx.equal('closed before close', luo.closed, false);
  const session = await luo.createSession(name('open-close'));
  await luo.close();
  ctx.equal('closed after close', luo.closed, true);
  ctx.equal('fd after close', luo.fd, -1);
  await luo.close(); // a second close is a no-op
  // Closing the device ends no session: it still answers on its own fd.
  ctx.equal('session usable after the device closed', await session.getName(), name('open-close'));
  await session.close();
  const again = LiveUpdate.openSync();
  ctx.check('reopens after close', again.fd >= 0);
  again.closeSync();
  return null;
}

/** One owner at a time, in this process too; released on close. */
async function exclusiveOpen(ctx: StageContext): Promise<JsonValue> {
  const first = LiveUpdate.openSync();
  try {
    await expectError(ctx, 'second openSync', () => LiveUpdate.openSync(), DeviceBusyError, 'EBUSY');
    await expectError(ctx, 'second open (Promise)', () => LiveUpdate.open(), DeviceBusyError, 'EBUSY');
  } finally {
    first.closeSync();
  }
  const after = await LiveUpdate.open();
  ctx.check('opens once the owner closed it', after.fd >= 0);
  await after.close();
  return null;
}

/** A live name cannot be taken twice; closing the session frees it. */
async function duplicateName(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const first = luo.createSessionSync(name('dup'));
    await expectError(ctx, 'createSessionSync with a live name', () => luo.createSessionSync(name('dup')), SessionExistsError, 'EEXIST');
    await expectError(ctx, 'createSession (Promise) with a live name', () => luo.createSession(name('dup')), SessionExistsError, 'EEXIST');
    first.closeSync();
    const second = await luo.createSession(name('dup'));
    ctx.equal('the name is free after close', second.state, 'outgoing');
    second.closeSync();
    return null;
  });
}

/** Two sessions are two fds, two names, two independent sets of files. */
async function distinctSessions(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const a = luo.createSessionSync(name('distinct-a'));
    const b = luo.createSessionSync(name('distinct-b'));
    const fa = memfdWith('conf-a', 'a');
    const fb = memfdWith('conf-b', 'b');
    ctx.check('different fds', a.fd !== b.fd && a.fd >= 0 && b.fd >= 0, [a.fd, b.fd]);
    ctx.equal('name of a', a.getNameSync(), name('distinct-a'));
    ctx.equal('name of b', b.getNameSync(), name('distinct-b'));
    // The same token in two sessions does not collide: tokens are per session.
    a.preserveSync(fa, 1n);
    b.preserveSync(fb, 1n);
    a.closeSync();
    b.closeSync();
    closeAll(fa, fb);
    return null;
  });
}

/** One memfd; its bytes stay readable and writable while preserved. */
async function preserveOne(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = await luo.createSession(name('one'));
    const fd = memfdWith('conf-one', 'hello, live update');
    await session.preserve(fd, 1n);
    ctx.equal('content after preserve', contentOf(fd), 'hello, live update');
    fs.writeSync(fd, 'HELLO', 0);
    ctx.equal('written after preserve', contentOf(fd), 'HELLO, live update');
    await session.close();
    fs.closeSync(fd);
    return null;
  });
}

/** Several memfds in one session under distinct tokens, including 0 and the largest u64. */
async function preserveSeveral(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(name('several'));
    const tokens = [0n, 1n, 0xffff_ffff_ffff_ffffn];
    const fds = tokens.map((t) => memfdWith(`conf-several-${t}`, `token ${t}`));
    tokens.forEach((t, i) => session.preserveSync(fds[i] ?? -1, t));
    ctx.equal('contents', fds.map(contentOf), tokens.map((t) => `token ${t}`));
    session.closeSync();
    closeAll(...fds);
    return { preserved: tokens.length };
  });
}

/** Empty and non-empty memfds mixed over two sessions. */
async function preserveMixed(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const sessions = [luo.createSessionSync(name('mixed-1')), luo.createSessionSync(name('mixed-2'))];
    const fds: number[] = [];
    sessions.forEach((session, i) => {
      const empty = memfd.createSync(`conf-mixed-empty-${i}`);
      const full = memfdWith(`conf-mixed-data-${i}`, `data ${i}`);
      session.preserveSync(empty, 1n);
      session.preserveSync(full, 2n);
      fds.push(empty, full);
    });
    ctx.equal('sizes', fds.map((fd) => fs.fstatSync(fd).size), [0, 6, 0, 6]);
    for (const s of sessions) s.closeSync();
    closeAll(...fds);
    return null;
  });
}

/** Files no LUO handler takes: UnsupportedFileError (ENOENT), whatever the kind. */
async function unpreservable(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.createSessionSync(name('unsupported'));
    const other = luo.createSessionSync(name('unsupported-other'));
    fs.writeFileSync('/tmp/conf-linked-file', 'a file with a name');
    const sockets = socketPair('stream');
    const candidates: [string, number][] = [
      ['/dev/null', fs.openSync('/dev/null', 'r')],
      ['a Unix socket', sockets[0]],
      ['a tmpfs file with a name', fs.openSync('/tmp/conf-linked-file', 'r+')],
      ['a LUO session fd', other.fd],
    ];
    let token = 1n;
    for (const [what, fd] of candidates) {
      await expectError(ctx, `preserve ${what}`, () => session.preserveSync(fd, token++), UnsupportedFileError, 'ENOENT');
    }
    const fromPromise = candidates[0]?.[1] ?? -1;
    await expectError(ctx, 'preserve /dev/null (Promise)', () => session.preserve(fromPromise, token++), UnsupportedFileError, 'ENOENT');
    session.closeSync();
    other.closeSync();
    closeAll(...candidates.slice(0, 3).map(([, fd]) => fd), sockets[1]);
    fs.rmSync('/tmp/conf-linked-file');
    return null;
  });
}

/** An fd number that is not open: BadFileDescriptorError (EBADF). */
async function badFd(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.createSessionSync(name('bad-fd'));
    const closed = memfd.createSync('conf-closed');
    fs.closeSync(closed);
    await expectError(ctx, 'preserve a closed fd number', () => session.preserveSync(closed, 1n), BadFileDescriptorError, 'EBADF');
    await expectError(ctx, 'preserve a closed fd number (Promise)', () => session.preserve(closed, 1n), BadFileDescriptorError, 'EBADF');
    session.closeSync();
    return null;
  });
}

/**
 * A file is preserved once: again under another token, in another session,
 * or through another open file description of it, FileAlreadyPreservedError
 * (EBUSY); a used token with another file, TokenInUseError (EEXIST). Once
 * its session is closed the file is free again.
 */
async function sameFileTwice(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const first = luo.createSessionSync(name('twice-1'));
    const second = luo.createSessionSync(name('twice-2'));
    const fd = memfdWith('conf-twice', 'once only');
    const another = memfdWith('conf-twice-other', 'other');
    first.preserveSync(fd, 1n);
    await expectError(ctx, 'same session, new token', () => first.preserveSync(fd, 2n), FileAlreadyPreservedError, 'EBUSY');
    await expectError(ctx, 'another session', () => second.preserveSync(fd, 1n), FileAlreadyPreservedError, 'EBUSY');
    await expectError(ctx, 'another session (Promise)', () => second.preserve(fd, 1n), FileAlreadyPreservedError, 'EBUSY');
    // Reopening through /proc makes a new open file description of the same memfd.
    const reopened = fs.openSync(`/proc/self/fd/${fd}`, 'r+');
    await expectError(ctx, 'the same memfd reopened', () => second.preserveSync(reopened, 2n), FileAlreadyPreservedError, 'EBUSY');
    await expectError(ctx, 'used token, other file', () => first.preserveSync(another, 1n), TokenInUseError, 'EEXIST');
    first.closeSync();
    second.preserveSync(fd, 1n);
    ctx.check('preservable again once its session closed', true);
    second.closeSync();
    closeAll(fd, another, reopened);
    return null;
  });
}

/** Names of 1 to 63 bytes; empty and 64-byte names are refused before any syscall. */
async function sessionNames(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const max = `${PREFIX}${'n'.repeat(63 - PREFIX.length)}`;
    ctx.equal('63-byte name length', Buffer.byteLength(max), 63);
    const session = luo.createSessionSync(max);
    ctx.equal('63-byte name accepted', session.state, 'outgoing');
    session.closeSync();
    await expectError(ctx, 'empty name', () => luo.createSessionSync(''), TypeError, 'ERR_INVALID_ARG_VALUE');
    await expectError(ctx, '64-byte name', () => luo.createSessionSync(`${max}n`), TypeError, 'ERR_INVALID_ARG_VALUE');
    // 31 two-byte characters and one more byte: 63 bytes of UTF-8; one more character makes 65.
    const utf8 = `${'é'.repeat(31)}x`;
    await expectError(ctx, '65-byte UTF-8 name', () => luo.createSession(`${utf8}é`), TypeError, 'ERR_INVALID_ARG_VALUE');
    const wide = luo.createSessionSync(utf8);
    ctx.equal('63-byte UTF-8 name accepted', wide.state, 'outgoing');
    wide.closeSync();
    return null;
  });
}

/** GET_NAME returns the name as created, up to 63 bytes, in both forms. */
async function getName(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const names = [name('get-name'), `${PREFIX}${'g'.repeat(63 - PREFIX.length)}`, `${'ü'.repeat(31)}!`, `${PREFIX}with spaces/and:punct`];
    const got: string[] = [];
    for (const n of names) {
      const session = await luo.createSession(n);
      got.push(session.getNameSync());
      ctx.equal(`getName (Promise) of ${Buffer.byteLength(n)} bytes`, await session.getName(), n);
      await session.close();
    }
    ctx.equal('getNameSync', got, names);
    return null;
  });
}

/** RETRIEVE_FD and FINISH belong to incoming sessions: SessionStateError (EINVAL) on an outgoing one. */
async function outgoingRefuses(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.createSessionSync(name('outgoing-state'));
    const fd = memfdWith('conf-outgoing-state', 'x');
    session.preserveSync(fd, 1n);
    await expectError(ctx, 'retrieveSync on outgoing', () => session.retrieveSync(1n), SessionStateError, 'EINVAL');
    await expectError(ctx, 'retrieve (Promise) on outgoing', () => session.retrieve(1n), SessionStateError, 'EINVAL');
    await expectError(ctx, 'finishSync on outgoing', () => session.finishSync(), SessionStateError, 'EINVAL');
    await expectError(ctx, 'finish (Promise) on outgoing', () => session.finish(), SessionStateError, 'EINVAL');
    ctx.equal('still outgoing', session.state, 'outgoing');
    session.closeSync();
    fs.closeSync(fd);
    return null;
  });
}

/**
 * Preserving freezes the size: ftruncate, and a write past the end, fail with
 * EPERM (Node system errors from fs: shmem refuses any size change of a
 * frozen mapping with EPERM, in 7.2 and 7.3 alike); writes inside the size
 * still land; closing the session unpreserves the file and thaws it.
 */
async function sizeFrozen(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.createSessionSync(name('frozen'));
    const fd = memfd.createSync('conf-frozen');
    fs.ftruncateSync(fd, 65536);
    session.preserveSync(fd, 1n);
    await expectError(ctx, 'grow after preserve', () => fs.ftruncateSync(fd, 131072), Error, 'EPERM');
    await expectError(ctx, 'shrink after preserve', () => fs.ftruncateSync(fd, 4096), Error, 'EPERM');
    await expectError(ctx, 'write past the end after preserve', () => fs.writeSync(fd, 'beyond', 65536), Error, 'EPERM');
    ctx.equal('size unchanged', fs.fstatSync(fd).size, 65536);
    fs.writeSync(fd, 'inside the size', 1000);
    ctx.equal('write inside the size lands', contentOf(fd).slice(1000, 1015), 'inside the size');
    session.closeSync();
    fs.ftruncateSync(fd, 4096);
    ctx.equal('resizable after its session closed', fs.fstatSync(fd).size, 4096);
    fs.closeSync(fd);
    return null;
  });
}

/** @internal */
export default defineScenario('device', [
  conformanceCase('open-close', ['luo'], [openClose]),
  conformanceCase('exclusive-open', ['luo'], [exclusiveOpen]),
  conformanceCase('duplicate-session-name', ['luo'], [duplicateName]),
  conformanceCase('distinct-sessions', ['memfd'], [distinctSessions]),
  conformanceCase('preserve-one-memfd', ['memfd'], [preserveOne]),
  conformanceCase('preserve-several-memfds', ['memfd'], [preserveSeveral]),
  conformanceCase('preserve-mixed-across-sessions', ['memfd'], [preserveMixed]),
  conformanceCase('unpreservable-fds', ['luo'], [unpreservable]),
  conformanceCase('bad-fd', ['luo'], [badFd]),
  conformanceCase('same-file-twice', ['memfd'], [sameFileTwice]),
  conformanceCase('session-names', ['luo'], [sessionNames]),
  conformanceCase('get-name', ['luo'], [getName]),
  conformanceCase('outgoing-refuses-retrieve-finish', ['memfd'], [outgoingRefuses]),
  conformanceCase('size-frozen', ['memfd'], [sizeFrozen]),
]);
