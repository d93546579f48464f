/**
 * Across one kexec: what arrives, in what state, and what the incoming
 * sessions refuse. Stage 1 preserves and keeps its sessions open until the
 * kexec; stage 2 retrieves in the next kernel.
 * @internal
 */
import { createHash, randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import {
  LiveUpdate,
  LiveUpdateError,
  MAX_TOKEN,
  memfd,
  recvFdsSync,
  sendFdsSync,
  Session,
  SessionAlreadyRetrievedError,
  SessionNotFoundError,
  SessionStateError,
  socketPair,
  TokenNotFoundError,
} from 'liveupdate';
import type { JsonValue } from '../../vm/protocol.js';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { carried, closeAll, conformanceCase, contentOf, expectError, expectPromise, memfdWith, observe, PREFIX, withDevice } from '../support.js';

const name = (suffix: string): string => `${PREFIX}kx-${suffix}`;

/** Preserves `files` (token → content) in a new session named `session` and keeps it for the kexec. */
function preserveTexts(ctx: StageContext, luo: LiveUpdate, session: string, files: Readonly<Record<string, string>>): Session {
  const s = luo.createSessionSync(session);
  for (const [token, text] of Object.entries(files)) {
    const fd = memfdWith(`conf-${session}-${token}`, text);
    s.preserveSync(fd, BigInt(token));
    ctx.keep(fd);
  }
  ctx.keep(s);
  return s;
}

// --- the simple case, in the Promise forms -----------------------------------

const SIMPLE_SIZE = 1024 * 1024;

async function simplePreserve(ctx: StageContext): Promise<JsonValue> {
  const luo = await LiveUpdate.open();
  try {
    const session = await luo.createSession(name('simple'));
    const fd = await memfd.create('conf-simple');
    const bytes = randomFillSync(Buffer.alloc(SIMPLE_SIZE));
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
    await session.preserve(fd, 42n);
    ctx.keep(session, fd);
    return { sha256: createHash('sha256').update(bytes).digest('hex'), size: SIMPLE_SIZE };
  } finally {
    await luo.close();
  }
}

async function simpleRetrieve(ctx: StageContext): Promise<JsonValue> {
  const before = carried(ctx);
  const luo = await LiveUpdate.open();
  try {
    const session = await luo.retrieveSession(name('simple'));
    ctx.equal('state', session.state, 'incoming');
    const fd = await session.retrieve(42n);
    ctx.equal('size', fs.fstatSync(fd).size, before['size']);
    ctx.equal('sha256', sha256Of(fd), before['sha256']);
    await session.finish();
    ctx.equal('state after finish', session.state, 'finished');
    await session.close();
    fs.closeSync(fd);
    return null;
  } finally {
    await luo.close();
  }
}

// --- several sessions: empty, one file, two files ----------------------------

const SEVERAL = { empty: {}, one: { 1: 'only file' }, two: { 1: 'first of two', 2: 'second of two' } } as const;

async function severalPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    for (const [suffix, files] of Object.entries(SEVERAL)) preserveTexts(ctx, luo, name(`several-${suffix}`), files);
    return null;
  });
}

async function severalRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    for (const [suffix, files] of Object.entries(SEVERAL)) {
      const session = luo.retrieveSessionSync(name(`several-${suffix}`));
      const got: Record<string, string> = {};
      for (const token of Object.keys(files)) got[token] = readAndClose(session.retrieveSync(BigInt(token)));
      ctx.equal(`contents of ${suffix}`, got, files);
      if (suffix === 'empty') {
        await expectError(ctx, 'retrieve from the empty session', () => session.retrieveSync(1n), TokenNotFoundError, 'ENOENT');
      }
      session.finishSync();
      session.closeSync();
    }
    return null;
  });
}

// --- retrieval in any order ---------------------------------------------------

const ORDER_SESSIONS = ['a', 'b', 'c'];
const ORDER_TOKENS = [1, 2, 3, 4];
const orderText = (s: string, t: number): string => `session ${s} token ${t}`;

async function orderPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    for (const s of ORDER_SESSIONS) {
      preserveTexts(ctx, luo, name(`order-${s}`), Object.fromEntries(ORDER_TOKENS.map((t) => [String(t), orderText(s, t)])));
    }
    return null;
  });
}

async function orderRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    // Sessions in reverse creation order, tokens shuffled.
    for (const s of [...ORDER_SESSIONS].reverse()) {
      const session = luo.retrieveSessionSync(name(`order-${s}`));
      for (const t of [3, 1, 4, 2]) ctx.equal(`session ${s} token ${t}`, readAndClose(session.retrieveSync(t)), orderText(s, t));
      session.finishSync();
      session.closeSync();
    }
    return null;
  });
}

// --- finish discards what was not retrieved ------------------------------------

const FINISH_FILES = { 1: 'retrieved before finish', 2: 'never retrieved', 3: 'never retrieved either' };

async function finishPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => (preserveTexts(ctx, luo, name('finish'), FINISH_FILES), null));
}

/**
 * Finish with tokens 2 and 3 never retrieved: they are gone. The package
 * refuses calls on a finished Session before the kernel sees them, so the
 * kernel's own answer is asked through a second Session on a duplicate of
 * the session fd (passed over a socket pair, as another process would get it).
 */
async function finishRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('finish'));
    const fd = session.retrieveSync(1n);
    const twin = Session.fromFd(duplicate(session.fd));
    ctx.equal('the duplicate is the same incoming session', [twin.state, twin.name], ['incoming', name('finish')]);
    session.finishSync();
    ctx.equal('retrieved fd still valid after finish', contentOf(fd), FINISH_FILES[1]);
    await expectError(ctx, 'kernel: unretrieved token 2 after finish', () => twin.retrieveSync(2n), TokenNotFoundError, 'ENOENT');
    await expectError(ctx, 'kernel: unretrieved token 3 after finish', () => twin.retrieveSync(3n), TokenNotFoundError, 'ENOENT');
    await expectError(ctx, 'kernel: retrieved token 1 after finish', () => twin.retrieveSync(1n), TokenNotFoundError, 'ENOENT');
    await expectError(ctx, 'package: retrieve on a finished Session', () => session.retrieveSync(2n), SessionStateError, 'ERR_LIVEUPDATE_SESSION_STATE');
    await expectError(ctx, 'retrieveSession while its fds are open', () => luo.retrieveSessionSync(name('finish')), SessionAlreadyRetrievedError, 'EINVAL');
    session.closeSync();
    twin.closeSync();
    await expectError(ctx, 'retrieveSession after close', () => luo.retrieveSessionSync(name('finish')), SessionNotFoundError, 'ENOENT');
    fs.closeSync(fd);
    return null;
  });
}

/** A second fd for the same open file, the way another process would receive it. */
function duplicate(fd: number): number {
  const [a, b] = socketPair('seqpacket');
  try {
    sendFdsSync(a, [fd], 'session');
    const [received] = recvFdsSync(b).fds;
    if (received === undefined) throw new Error('no fd came over the socket pair');
    return received;
  } finally {
    closeAll(a, b);
  }
}

// --- closing an incoming session without finish --------------------------------

const CLOSE_FILES = { 1: 'retrieved, then the session closed', 2: 'never retrieved' };

async function closePreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => (preserveTexts(ctx, luo, name('close'), CLOSE_FILES), null));
}

async function closeRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('close'));
    const fd = session.retrieveSync(1n);
    session.closeSync(); // no finish: closing finishes it
    await expectError(ctx, 'retrieveSession after close', () => luo.retrieveSessionSync(name('close')), SessionNotFoundError, 'ENOENT');
    await expectError(ctx, 'retrieveSession (Promise) after close', () => luo.retrieveSession(name('close')), SessionNotFoundError, 'ENOENT');
    ctx.equal('retrieved fd still readable', contentOf(fd), CLOSE_FILES[1]);
    fs.writeSync(fd, 'R', 0);
    ctx.equal('retrieved fd still writable', contentOf(fd), `R${CLOSE_FILES[1].slice(1)}`);
    fs.closeSync(fd);
    return null;
  });
}

// --- the same token twice; unknown tokens; a session twice; unknown sessions ------

async function sameTokenPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => (preserveTexts(ctx, luo, name('same-token'), { 5: 'one file, two fds' }), null));
}

async function sameTokenRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('same-token'));
    const first = session.retrieveSync(5n);
    const second = await session.retrieve(5n);
    ctx.check('two different fds', first !== second, [first, second]);
    const [a, b] = [fs.fstatSync(first), fs.fstatSync(second)];
    ctx.check('the same file (device and inode)', a.dev === b.dev && a.ino === b.ino, [a.ino, b.ino]);
    fs.writeSync(first, 'ONE', 0);
    ctx.equal('a write through one fd shows through the other', contentOf(second), 'ONE file, two fds');
    session.finishSync();
    session.closeSync();
    closeAll(first, second);
    return null;
  });
}

async function unknownTokenPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => (preserveTexts(ctx, luo, name('unknown-token'), { 10: 'the known token' }), null));
}

async function unknownTokenRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('unknown-token'));
    await expectError(ctx, 'token 11', () => session.retrieveSync(11n), TokenNotFoundError, 'ENOENT');
    await expectError(ctx, 'token 0', () => session.retrieve(0n), TokenNotFoundError, 'ENOENT');
    await expectError(ctx, 'token 2^64-1', () => session.retrieveSync(MAX_TOKEN), TokenNotFoundError, 'ENOENT');
    ctx.equal('the known token still arrives', readAndClose(session.retrieveSync(10n)), 'the known token');
    session.finishSync();
    session.closeSync();
    return null;
  });
}

async function twicePreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => (preserveTexts(ctx, luo, name('twice'), {}), null));
}

async function twiceRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('twice'));
    await expectError(ctx, 'retrieveSessionSync again', () => luo.retrieveSessionSync(name('twice')), SessionAlreadyRetrievedError, 'EINVAL');
    await expectError(ctx, 'retrieveSession (Promise) again', () => luo.retrieveSession(name('twice')), SessionAlreadyRetrievedError, 'EINVAL');
    session.finishSync();
    session.closeSync();
    return null;
  });
}

/** A name never preserved: SessionNotFoundError (ENOENT), on a cold boot and after a kexec. */
async function unknownSession(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    await expectError(ctx, `retrieveSession in stage ${ctx.stage}`, () => luo.retrieveSessionSync(name('never-created')), SessionNotFoundError, 'ENOENT');
    return null;
  });
}

// --- a session closed before the kexec ------------------------------------------

async function closedBeforePreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(name('closed'));
    const fd = memfdWith('conf-closed', 'abandoned');
    session.preserveSync(fd, 1n);
    session.closeSync();
    // Its name is free at once; this second session is closed too.
    luo.createSessionSync(name('closed')).closeSync();
    fs.closeSync(fd);
    ctx.check('closed before the kexec', session.state === 'closed');
    return null;
  });
}

async function closedBeforeRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    await expectError(ctx, 'retrieveSession', () => luo.retrieveSessionSync(name('closed')), SessionNotFoundError, 'ENOENT');
    return null;
  });
}

// --- seals -------------------------------------------------------------------------

const { SEAL_SEAL, SEAL_SHRINK, SEAL_GROW, SEAL_WRITE, SEAL_FUTURE_WRITE } = memfd;

/** token → how the memfd is made and sealed. */
const SEALED: Record<string, { seals: number; options: memfd.CreateOptions; text: string }> = {
  1: { seals: SEAL_SHRINK | SEAL_GROW, options: { allowSealing: true }, text: 'fixed size' },
  2: { seals: SEAL_WRITE | SEAL_SEAL, options: { allowSealing: true }, text: 'read only, sealed for good' },
  3: { seals: SEAL_FUTURE_WRITE, options: { allowSealing: true }, text: 'no new writes' },
  4: { seals: 0, options: {}, text: 'born sealed against sealing' },
};

async function sealsPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(name('seals'));
    const seals: Record<string, number> = {};
    for (const [token, spec] of Object.entries(SEALED)) {
      const fd = memfdWith(`conf-seals-${token}`, spec.text, spec.options);
      if (spec.seals !== 0) memfd.addSealsSync(fd, spec.seals);
      seals[token] = memfd.getSealsSync(fd);
      session.preserveSync(fd, BigInt(token));
      ctx.keep(fd);
    }
    ctx.keep(session);
    return seals;
  });
}

async function sealsRetrieve(ctx: StageContext): Promise<JsonValue> {
  const before = carried(ctx);
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('seals'));
    const fds: Record<string, number> = {};
    const seals: Record<string, number> = {};
    for (const token of Object.keys(SEALED)) {
      const fd = session.retrieveSync(BigInt(token));
      fds[token] = fd;
      seals[token] = await memfd.getSeals(fd);
      ctx.equal(`content of ${token}`, contentOf(fd), SEALED[token]?.text);
    }
    ctx.equal('seals', seals, before);
    // The seals act, not only read back.
    await expectError(ctx, 'SEAL_GROW: ftruncate', () => fs.ftruncateSync(fds['1'] ?? -1, 1 << 20), Error, 'EPERM');
    await expectError(ctx, 'SEAL_WRITE: write', () => fs.writeSync(fds['2'] ?? -1, 'x', 0), Error, 'EPERM');
    await expectError(ctx, 'SEAL_SEAL: addSeals', () => memfd.addSealsSync(fds['2'] ?? -1, SEAL_GROW), LiveUpdateError, 'EPERM');
    await expectError(ctx, 'SEAL_FUTURE_WRITE: write', () => fs.writeSync(fds['3'] ?? -1, 'x', 0), Error, 'EPERM');
    session.finishSync();
    session.closeSync();
    closeAll(...Object.values(fds));
    return seals;
  });
}

// --- a MFD_NOEXEC_SEAL memfd ------------------------------------------------------------

const { SEAL_EXEC } = memfd;

/**
 * memfd_luo documents that the seals come back as they were: F_SEAL_EXEC
 * alone, the file writable as before. 7.2 and 7.3 deviate: they re-create the
 * file with memfd's default mode 0777 (LUO does not keep the mode) and then
 * re-apply F_SEAL_EXEC, which on an executable file implies the write seals
 * (memfd's W^X rule), so the memfd arrives write-sealed and read-only.
 */
const NOEXEC_PROMISED = { seals: SEAL_EXEC, writable: true };

async function noexecPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(name('noexec'));
    const fd = memfdWith('conf-noexec', 'never executable', { noexecSeal: true });
    const before = { seals: memfd.getSealsSync(fd), mode: fs.fstatSync(fd).mode & 0o777 };
    ctx.equal('before: seals', before.seals, SEAL_EXEC);
    ctx.equal('before: mode', before.mode, 0o666);
    session.preserveSync(fd, 1n);
    ctx.keep(session, fd);
    return before;
  });
}

async function noexecRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('noexec'));
    const fd = session.retrieveSync(1n);
    const seals = memfd.getSealsSync(fd);
    ctx.equal('content', contentOf(fd), 'never executable');
    expectPromise(ctx, 'seals come back as they were', seals, NOEXEC_PROMISED.seals);
    expectPromise(ctx, 'the memfd is writable as before', writable(fd), NOEXEC_PROMISED.writable);
    // The documentation says nothing of the mode.
    observe(ctx, 'mode after the kexec', `0${(fs.fstatSync(fd).mode & 0o777).toString(8)}`);
    session.finishSync();
    session.closeSync();
    fs.closeSync(fd);
    return { seals };
  });
}

/** Whether a one-byte write at 0 lands (it writes back the byte that is there). */
function writable(fd: number): boolean {
  const byte = Buffer.alloc(1);
  fs.readSync(fd, byte, 0, 1, 0);
  try {
    fs.writeSync(fd, byte, 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}

// --- writes after preserve, file position, size no longer frozen -------------------------

const POSITIONED_SIZE = 65536;

async function afterPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(name('after'));
    const fd = memfd.createSync('conf-after');
    fs.ftruncateSync(fd, POSITIONED_SIZE);
    fs.writeSync(fd, 'written before preserve', 0);
    advance(fd, 1000);
    session.preserveSync(fd, 1n);
    fs.writeSync(fd, 'written after preserve', 100);
    // The kernel records the position at the kexec, not at preserve: move it on.
    advance(fd, 2345);
    ctx.keep(session, fd);
    return { position: position(fd) };
  });
}

async function afterRetrieve(ctx: StageContext): Promise<JsonValue> {
  const before = carried(ctx);
  return withDevice((luo) => {
    const session = luo.retrieveSessionSync(name('after'));
    const fd = session.retrieveSync(1n);
    const text = contentOf(fd);
    ctx.equal('written before preserve', text.slice(0, 23), 'written before preserve');
    ctx.equal('written after preserve', text.slice(100, 122), 'written after preserve');
    ctx.equal('file position at the kexec', position(fd), before['position']);
    ctx.equal('size', fs.fstatSync(fd).size, POSITIONED_SIZE);
    fs.ftruncateSync(fd, POSITIONED_SIZE * 2);
    ctx.equal('size no longer frozen', fs.fstatSync(fd).size, POSITIONED_SIZE * 2);
    session.finishSync();
    session.closeSync();
    fs.closeSync(fd);
    return null;
  });
}

// --- preserve on an incoming session ---------------------------------------------------

async function incomingPreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => (preserveTexts(ctx, luo, name('incoming'), { 1: 'incoming' }), null));
}

async function incomingRefuses(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(name('incoming'));
    const fd = memfdWith('conf-incoming-new', 'new');
    await expectError(ctx, 'preserveSync on incoming', () => session.preserveSync(fd, 2n), SessionStateError, 'EINVAL');
    await expectError(ctx, 'preserve (Promise) on incoming', () => session.preserve(fd, 2n), SessionStateError, 'EINVAL');
    session.finishSync();
    await expectError(ctx, 'preserve on a finished Session', () => session.preserveSync(fd, 2n), SessionStateError, 'ERR_LIVEUPDATE_SESSION_STATE');
    session.closeSync();
    fs.closeSync(fd);
    return null;
  });
}

// --- a 63-byte UTF-8 name, and GET_NAME on an incoming session ------------------------

/** 5 + 28 × 2 + 2 = 63 bytes of UTF-8: the longest name. */
const LONG_NAME = `${PREFIX}${'ñ'.repeat(28)}!!`;

async function longNamePreserve(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    ctx.equal('name bytes', Buffer.byteLength(LONG_NAME), 63);
    const session = preserveTexts(ctx, luo, LONG_NAME, { 1: 'long name' });
    return { bytes: Buffer.byteLength(LONG_NAME), name: session.getNameSync() };
  });
}

async function longNameRetrieve(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    const session = await luo.retrieveSession(LONG_NAME);
    ctx.equal('getName on the incoming session', await session.getName(), LONG_NAME);
    ctx.equal('content', readAndClose(session.retrieveSync(1n)), 'long name');
    await session.finish();
    ctx.equal('getName after finish', session.getNameSync(), LONG_NAME);
    await session.close();
    return null;
  });
}

// --- a memfd of 256 MiB --------------------------------------------------------------------

const BIG_SIZE = 256 * 1024 * 1024;
const CHUNK = 4 * 1024 * 1024;

/** Free memory the 256 MiB case wants first: the memfd, and room for node and the next initrd. */
const BIG_HEADROOM_MIB = 640;

/**
 * Refuses to start without the memory for it: running the guest out of
 * memory would kill node, which is pid 1, and lose every later stage.
 */
function checkMemory(): void {
  const match = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  const available = Math.round(Number(match?.[1] ?? 0) / 1024);
  if (available < BIG_HEADROOM_MIB) {
    throw new Error(`the guest has ${available} MiB available; this case needs ${BIG_HEADROOM_MIB} (give it more with --memory)`);
  }
}

async function bigPreserve(ctx: StageContext): Promise<JsonValue> {
  checkMemory();
  const luo = await LiveUpdate.open();
  try {
    const session = await luo.createSession(name('256MiB'));
    const fd = await memfd.create('conf-256MiB');
    fs.ftruncateSync(fd, BIG_SIZE);
    let started = performance.now();
    const sha256 = fillPages(fd, BIG_SIZE);
    const fillMs = Math.round(performance.now() - started);
    started = performance.now();
    await session.preserve(fd, 256n); // pins every page: on the thread pool
    const preserveMs = Math.round(performance.now() - started);
    ctx.keep(session, fd);
    ctx.report('timings', { fillMs, preserveMs });
    return { sha256, size: BIG_SIZE, fillMs, preserveMs };
  } finally {
    await luo.close();
  }
}

async function bigRetrieve(ctx: StageContext): Promise<JsonValue> {
  const before = carried(ctx);
  const luo = await LiveUpdate.open();
  try {
    const session = await luo.retrieveSession(name('256MiB'));
    let started = performance.now();
    const fd = await session.retrieve(256n);
    const retrieveMs = Math.round(performance.now() - started);
    ctx.equal('size', fs.fstatSync(fd).size, BIG_SIZE);
    started = performance.now();
    ctx.equal('sha256', sha256Of(fd), before['sha256']);
    const hashMs = Math.round(performance.now() - started);
    ctx.report('timings', { retrieveMs, hashMs });
    await session.finish();
    await session.close();
    fs.closeSync(fd);
    return { retrieveMs, hashMs };
  } finally {
    await luo.close();
  }
}

// --- helpers ------------------------------------------------------------------------

/**
 * Fills the file with distinct pages, cheaply: one random block repeated,
 * each 4 KiB page stamped with its index and a per-run nonce, so a page that
 * arrives in the wrong place or stale changes the hash. (Random bytes for all
 * 256 MiB cost more under emulation than the rest of the case.) Returns the
 * SHA-256 of what was written.
 */
function fillPages(fd: number, size: number): string {
  const hash = createHash('sha256');
  const chunk = randomFillSync(Buffer.allocUnsafe(CHUNK));
  const nonce = randomFillSync(Buffer.allocUnsafe(8));
  for (let offset = 0; offset < size; offset += CHUNK) {
    const length = Math.min(CHUNK, size - offset);
    for (let page = 0; page < length; page += 4096) {
      chunk.writeBigUInt64LE(BigInt(offset + page), page);
      nonce.copy(chunk, page + 8);
    }
    const part = chunk.subarray(0, length);
    for (let done = 0; done < length; ) done += fs.writeSync(fd, part, done, length - done, offset + done);
    hash.update(part);
  }
  return hash.digest('hex');
}

/** SHA-256 of the whole file, read positionally. */
function sha256Of(fd: number): string {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(CHUNK);
  for (let offset = 0; ; ) {
    const n = fs.readSync(fd, buffer, 0, buffer.length, offset);
    if (n === 0) break;
    hash.update(buffer.subarray(0, n));
    offset += n;
  }
  return hash.digest('hex');
}

function readAndClose(fd: number): string {
  try {
    return contentOf(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Moves the file position forward by reading (Node cannot lseek). */
function advance(fd: number, count: number): void {
  const buffer = Buffer.alloc(count);
  for (let done = 0; done < count; ) {
    const n = fs.readSync(fd, buffer, done, count - done, null);
    if (n === 0) throw new Error(`end of file after ${done} of ${count} bytes`);
    done += n;
  }
}

/** The file position, from /proc/self/fdinfo. */
function position(fd: number): number {
  const match = /^pos:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return Number(match?.[1] ?? NaN);
}

/** @internal */
export default defineScenario('kexec', [
  conformanceCase('simple', ['memfd'], [simplePreserve, simpleRetrieve]),
  conformanceCase('several-sessions', ['memfd'], [severalPreserve, severalRetrieve]),
  conformanceCase('retrieve-in-any-order', ['memfd'], [orderPreserve, orderRetrieve]),
  conformanceCase('finish-discards-unretrieved', ['memfd'], [finishPreserve, finishRetrieve]),
  conformanceCase('close-without-finish', ['memfd'], [closePreserve, closeRetrieve]),
  conformanceCase('same-token-twice', ['memfd'], [sameTokenPreserve, sameTokenRetrieve]),
  conformanceCase('unknown-token', ['memfd'], [unknownTokenPreserve, unknownTokenRetrieve]),
  conformanceCase('session-retrieved-twice', ['luo'], [twicePreserve, twiceRetrieve]),
  conformanceCase('unknown-session', ['luo'], [unknownSession, unknownSession]),
  conformanceCase('closed-session-absent', ['memfd'], [closedBeforePreserve, closedBeforeRetrieve]),
  conformanceCase('seals-restored', ['memfd'], [sealsPreserve, sealsRetrieve]),
  conformanceCase('noexec-seal-memfd', ['memfd'], [noexecPreserve, noexecRetrieve]),
  conformanceCase('writes-and-position-after-preserve', ['memfd'], [afterPreserve, afterRetrieve]),
  conformanceCase('incoming-refuses-preserve', ['memfd'], [incomingPreserve, incomingRefuses]),
  conformanceCase('long-name-get-name', ['memfd'], [longNamePreserve, longNameRetrieve]),
  conformanceCase('memfd-256MiB', ['memfd'], [bigPreserve, bigRetrieve]),
]);
