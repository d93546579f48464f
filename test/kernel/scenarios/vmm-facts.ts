/**
 * What a VMM author needs to know about LUO and guest memory, measured on the
 * kernel (README "Facts for VMM authors"): a hugetlb memfd is refused; a
 * preserved memfd refuses hole punching (ballooning) until the kexec, its
 * holes come back as zeroed pages, and after retrieve holes can be punched
 * again; what a preserve costs per GiB, written and untouched.
 */
import * as fs from 'node:fs';
import { LiveUpdate, LiveUpdateError, memfd, type Session } from 'liveupdate';
import { defineCase, defineScenario, libraryBinding, type JsonValue, type LibraryBinding, type StageContext } from 'liveupdate-conformance';
import { asJson, fillRandom, sha256At } from './support.js';

const MiB = 1024 * 1024;
/** st_blocks counts 512-byte units. */
const BLOCK = 512;
const MFD_CLOEXEC = 0x1;
const MFD_HUGETLB = 0x4;

/** What a refusal looked like, as JSON. */
type Refusal = { name: string; code: string; message: string };

function refusal(error: unknown): Refusal {
  if (!(error instanceof LiveUpdateError)) throw error;
  return { name: error.name, code: error.code, message: error.message };
}

/** The error `call` throws, or a failed check when it does not throw. */
function refusalOf(ctx: StageContext, what: string, call: () => void): Refusal | null {
  try {
    call();
  } catch (error) {
    return refusal(error);
  }
  ctx.check(`${what} is refused`, false, 'it succeeded');
  return null;
}

function meminfo(field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return match?.[1] === undefined ? -1 : Number(match[1]);
}

// ---- hugetlb ---------------------------------------------------------------------

/** The addon's memfd_create with raw flags: the API offers no MFD_HUGETLB, since LUO refuses it. */
function hugetlbMemfd(name: string): number {
  const addon = libraryBinding() as LibraryBinding & { memfdCreate(name: string, flags: number): number };
  return addon.memfdCreate(name, MFD_CLOEXEC | MFD_HUGETLB);
}

async function preserveHugetlb(ctx: StageContext): Promise<JsonValue> {
  // The boot reserves them (hugepages=): the refusal is not for want of pages.
  const hugePagesTotal = meminfo('HugePages_Total');
  const hugePageKiB = meminfo('Hugepagesize');
  ctx.check('huge pages reserved', hugePagesTotal > 0, hugePagesTotal);
  const fd = hugetlbMemfd('lu-test-hugetlb');
  fs.ftruncateSync(fd, 2 * MiB);
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync('lu-test-hugetlb');
  const sync = refusalOf(ctx, 'preserveSync of a hugetlb memfd', () => session.preserveSync(fd, 1n));
  let asyncRefusal: Refusal | null = null;
  try {
    await session.preserve(fd, 2n);
    ctx.check('preserve of a hugetlb memfd is refused', false, 'it succeeded');
  } catch (error) {
    asyncRefusal = refusal(error);
  }
  // The refusal leaves the session usable: a plain memfd still goes in.
  const plain = memfd.createSync('lu-test-plain');
  session.preserveSync(plain, 3n);
  session.closeSync();
  luo.closeSync();
  fs.closeSync(plain);
  fs.closeSync(fd);
  return asJson({ hugePagesTotal, hugePageKiB, size: 2 * MiB, sync, async: asyncRefusal, plainPreservedAfter: true });
}

// ---- hole punching (ballooning) ---------------------------------------------------

const BALLOON = { size: 8 * MiB, before: { offset: 1 * MiB, length: 2 * MiB }, after: { offset: 5 * MiB, length: 1 * MiB } };
const BALLOON_SESSION = 'lu-test-balloon';

/** What stage 1 hands to stage 2: the file's bytes and pages as preserved. */
type Ballooned = {
  size: number;
  sha256: string;
  /** SHA-256 of the bytes before and after the hole stage 2 punches. */
  headSha256: string;
  tailSha256: string;
  seals: number;
  blocks: { written: number; afterPunch: number; afterPreserve: number };
  whilePreserved: Refusal | null;
};

function sha256OfZeros(length: number): string {
  const fd = memfd.createSync('lu-test-zeros');
  try {
    fs.ftruncateSync(fd, length);
    return sha256At(fd, 0, length);
  } finally {
    fs.closeSync(fd);
  }
}

function punchThenPreserve(ctx: StageContext): JsonValue {
  const { size, before, after } = BALLOON;
  const fd = memfd.createSync('lu-test-balloon');
  fs.ftruncateSync(fd, size);
  fillRandom(fd, size);
  const written = fs.fstatSync(fd).blocks;
  memfd.punchHoleSync(fd, before.offset, before.length);
  const afterPunch = fs.fstatSync(fd).blocks;
  ctx.equal('punched range reads as zeros', sha256At(fd, before.offset, before.length), sha256OfZeros(before.length));
  const seals = memfd.getSealsSync(fd);
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync(BALLOON_SESSION);
  session.preserveSync(fd, 1n);
  const afterPreserve = fs.fstatSync(fd).blocks;
  const whilePreserved = refusalOf(ctx, 'punchHole on a preserved memfd', () => memfd.punchHoleSync(fd, after.offset, after.length));
  ctx.equal('seals unchanged by preserve', memfd.getSealsSync(fd), seals);
  luo.closeSync();
  ctx.keep(session, fd);
  const preserved: Ballooned = {
    size,
    sha256: sha256At(fd, 0, size),
    headSha256: sha256At(fd, 0, after.offset),
    tailSha256: sha256At(fd, after.offset + after.length, size - after.offset - after.length),
    seals,
    blocks: { written, afterPunch, afterPreserve },
    whilePreserved,
  };
  return asJson(preserved);
}

function retrieveThenPunch(ctx: StageContext): JsonValue {
  const before = ctx.previous as unknown as Ballooned;
  const { after } = BALLOON;
  const luo = LiveUpdate.openSync();
  const session = luo.retrieveSessionSync(BALLOON_SESSION);
  const fd = session.retrieveSync(1n);
  const size = fs.fstatSync(fd).size;
  const retrieved = fs.fstatSync(fd).blocks;
  ctx.equal('size', size, before.size);
  ctx.equal('sha256', sha256At(fd, 0, size), before.sha256);
  ctx.equal('seals', memfd.getSealsSync(fd), before.seals);
  memfd.punchHoleSync(fd, after.offset, after.length);
  const afterPunch = fs.fstatSync(fd).blocks;
  ctx.equal('hole punched after retrieve reads as zeros', sha256At(fd, after.offset, after.length), sha256OfZeros(after.length));
  ctx.equal('bytes before the hole', sha256At(fd, 0, after.offset), before.headSha256);
  ctx.equal('bytes after the hole', sha256At(fd, after.offset + after.length, size - after.offset - after.length), before.tailSha256);
  session.finishSync();
  session.closeSync();
  luo.closeSync();
  fs.closeSync(fd);
  return asJson({ size, blocks: { retrieved, afterPunch } });
}

// ---- preserve time ------------------------------------------------------------------

const TIMED_SIZES_MiB = [128, 512];
const ROUNDS = 3;

/** Milliseconds to preserve a `sizeMiB` memfd, written (every page touched) or untouched (never written: all holes). */
function timePreserve(luo: LiveUpdate, sizeMiB: number, written: boolean): { ms: number; blocksAfter: number } {
  const size = sizeMiB * MiB;
  const fd = memfd.createSync('lu-test-timed');
  let session: Session | undefined;
  try {
    fs.ftruncateSync(fd, size);
    if (written) {
      const chunk = Buffer.alloc(MiB, 0x5a);
      for (let offset = 0; offset < size; offset += MiB) fs.writeSync(fd, chunk, 0, MiB, offset);
    }
    session = luo.createSessionSync('lu-test-timed');
    const start = process.hrtime.bigint();
    session.preserveSync(fd, 1n);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    return { ms, blocksAfter: fs.fstatSync(fd).blocks };
  } finally {
    session?.closeSync();
    fs.closeSync(fd);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

function preserveTimes(ctx: StageContext): JsonValue {
  const luo = LiveUpdate.openSync();
  const rounds: Record<string, number[]> = {};
  const filled: Record<string, boolean> = {};
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const sizeMiB of TIMED_SIZES_MiB) {
        for (const written of [true, false]) {
          const key = `${written ? 'written' : 'untouched'}-${sizeMiB}MiB`;
          const { ms, blocksAfter } = timePreserve(luo, sizeMiB, written);
          (rounds[key] ??= []).push(Math.round(ms * 10) / 10);
          filled[key] = (filled[key] ?? true) && blocksAfter * BLOCK === sizeMiB * MiB;
        }
      }
    }
  } finally {
    luo.closeSync();
  }
  const medianMs = Object.fromEntries(Object.entries(rounds).map(([key, ms]) => [key, median(ms)]));
  ctx.report('preserve ms (median)', medianMs);
  return asJson({ sizesMiB: TIMED_SIZES_MiB, rounds, medianMs, everyPageAllocatedAfterPreserve: filled });
}

export default defineScenario('vmm-facts', [
  defineCase('hugetlb-memfd', [preserveHugetlb]),
  defineCase('punch-hole', [punchThenPreserve, retrieveThenPunch]),
  defineCase('preserve-time', [preserveTimes]),
]);
