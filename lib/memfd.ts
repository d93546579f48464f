/**
 * memfd: anonymous memory-backed files, the kind of file LUO preserves today
 * (a VM's guest memory, a cache's data set), their seals, and punching holes
 * in them (a VM's balloon).
 */
import { callAsync, callNative, translateError, type ErrorContext } from './errors.js';
import { native } from './native.js';
import { checkBoolean, checkFd, checkOptions, invalidArgType, invalidArgValue, outOfRange } from './validate.js';

/** memfd_create flags (linux/memfd.h). */
const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const MFD_NOEXEC_SEAL = 0x8;

/** Prevents adding further seals. */
export const SEAL_SEAL = 0x1;
/** Prevents shrinking the file. */
export const SEAL_SHRINK = 0x2;
/** Prevents growing the file. */
export const SEAL_GROW = 0x4;
/** Prevents writes (fails while writable shared mappings exist). */
export const SEAL_WRITE = 0x8;
/** Prevents new writes and writable mappings; existing mappings keep writing. */
export const SEAL_FUTURE_WRITE = 0x10;
/** Prevents changing the file's exec mode bits (Linux 6.3+). */
export const SEAL_EXEC = 0x20;

const ALL_SEALS = SEAL_SEAL | SEAL_SHRINK | SEAL_GROW | SEAL_WRITE | SEAL_FUTURE_WRITE | SEAL_EXEC;

/** The kernel prefixes "memfd:" to names; the whole must fit NAME_MAX (255). */
const MAX_NAME_BYTES = 249;

/**
 * Options for {@link create}. There is no hugetlb option: LUO's memfd
 * handler preserves shmem memfds only, and `preserve` refuses an
 * `MFD_HUGETLB` one (UnsupportedFileError, `ENOENT`, saying so).
 */
export interface CreateOptions {
  /** Close-on-exec (default true: the fd is not inherited by child programs). */
  cloexec?: boolean;
  /** Allow seals to be added later (default false: the file is born with SEAL_SEAL). */
  allowSealing?: boolean;
  /** Make the file non-executable and seal that (MFD_NOEXEC_SEAL, Linux 6.3+; implies allowSealing). */
  noexecSeal?: boolean;
}

function checkName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  if (name.includes('\0')) throw invalidArgValue('name', 'must not contain a NUL character', name);
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) {
    throw invalidArgValue('name', `must be at most ${MAX_NAME_BYTES} bytes of UTF-8`, name);
  }
  return name;
}

function createFlags(options: unknown): number {
  const opts = checkOptions<CreateOptions>(options);
  let flags = checkBoolean(opts.cloexec, 'options.cloexec', true) ? MFD_CLOEXEC : 0;
  if (checkBoolean(opts.allowSealing, 'options.allowSealing', false)) flags |= MFD_ALLOW_SEALING;
  if (checkBoolean(opts.noexecSeal, 'options.noexecSeal', false)) flags |= MFD_NOEXEC_SEAL;
  return flags;
}

function checkSeals(seals: unknown): number {
  if (typeof seals !== 'number') throw invalidArgType('seals', 'of type number', seals);
  if (!Number.isInteger(seals) || seals < 0 || (seals & ~ALL_SEALS) !== 0) {
    throw outOfRange('seals', `a combination of the memfd.SEAL_* constants (0 to ${ALL_SEALS})`, seals);
  }
  return seals;
}

/**
 * Creates a memfd and returns its fd (the caller owns it and closes it with
 * fs.close). Close-on-exec unless `cloexec: false`.
 */
export async function create(name: string, options?: CreateOptions): Promise<number> {
  const flags = createFlags(options);
  return callAsync({ operation: 'memfd.create' }, () => native.memfdCreateAsync(checkName(name), flags));
}

/** The synchronous form of {@link create}. */
export function createSync(name: string, options?: CreateOptions): number {
  const flags = createFlags(options);
  return callNative({ operation: 'memfd.create' }, native.memfdCreate, checkName(name), flags);
}

function sealContext(operation: 'memfd.addSeals' | 'memfd.getSeals', fd: number): ErrorContext {
  return { operation, fd: checkFd(fd) };
}

/**
 * The context of an addSeals failure. EPERM has two causes, told apart by
 * F_GET_SEALS: the file carries SEAL_SEAL (a memfd created without
 * allowSealing is born with it), or the fd is not open for writing.
 */
function addSealsContext(fd: number, error: unknown): ErrorContext {
  const context = sealContext('memfd.addSeals', fd);
  if ((error as { code?: unknown }).code !== 'EPERM') return context;
  let sealed: boolean;
  try {
    sealed = (native.getSeals(fd) & SEAL_SEAL) !== 0;
  } catch {
    return context;
  }
  if (sealed) {
    context.hint = 'it carries SEAL_SEAL, which forbids new seals: a memfd created without allowSealing is born with it';
    context.fix = 'create the memfd with memfd.create(name, { allowSealing: true })';
  } else {
    context.hint = 'the fd is not open for writing, and adding seals needs a writable fd';
  }
  return context;
}

/**
 * Adds seals (a bitwise OR of the SEAL_* constants) to the file of `fd`.
 * A memfd created without `allowSealing` refuses (SealingNotAllowedError,
 * whose message says so).
 */
export async function addSeals(fd: number, seals: number): Promise<void> {
  sealContext('memfd.addSeals', fd);
  const checked = checkSeals(seals);
  try {
    await native.addSealsAsync(fd, checked);
  } catch (error) {
    throw translateError(error, addSealsContext(fd, error));
  }
}

/** The synchronous form of {@link addSeals}. */
export function addSealsSync(fd: number, seals: number): void {
  sealContext('memfd.addSeals', fd);
  const checked = checkSeals(seals);
  try {
    native.addSeals(fd, checked);
  } catch (error) {
    throw translateError(error, addSealsContext(fd, error));
  }
}

/** The seals on the file of `fd`, as a bitwise OR of the SEAL_* constants. */
export async function getSeals(fd: number): Promise<number> {
  const context = sealContext('memfd.getSeals', fd);
  return callAsync(context, () => native.getSealsAsync(fd));
}

/** The synchronous form of {@link getSeals}. */
export function getSealsSync(fd: number): number {
  const context = sealContext('memfd.getSeals', fd);
  return callNative(context, native.getSeals, fd);
}

function checkRange(offset: unknown, length: unknown): { offset: bigint; length: bigint } {
  if (typeof offset !== 'number') throw invalidArgType('offset', 'of type number', offset);
  if (!Number.isSafeInteger(offset) || offset < 0) throw outOfRange('offset', 'a non-negative safe integer', offset);
  if (typeof length !== 'number') throw invalidArgType('length', 'of type number', length);
  if (!Number.isSafeInteger(length) || length < 1) throw outOfRange('length', 'a positive safe integer', length);
  if (!Number.isSafeInteger(offset + length)) throw outOfRange('length', `at most ${Number.MAX_SAFE_INTEGER - offset} (offset + length must be a safe integer)`, length);
  return { offset: BigInt(offset), length: BigInt(length) };
}

/**
 * The context of a punchHole failure. EPERM has two causes, told apart by
 * F_GET_SEALS: a seal against writes, or LUO's freeze of a preserved memfd.
 */
function punchHoleContext(fd: number, error: unknown): ErrorContext {
  const context: ErrorContext = { operation: 'memfd.punchHole', fd };
  if ((error as { code?: unknown }).code !== 'EPERM') return context;
  let seals: number;
  try {
    seals = native.getSeals(fd);
  } catch {
    return context;
  }
  if ((seals & (SEAL_WRITE | SEAL_FUTURE_WRITE)) !== 0) {
    context.hint = 'it carries SEAL_WRITE or SEAL_FUTURE_WRITE, which forbid punching holes';
  } else {
    context.hint = 'it is preserved in an outgoing live update session, and LUO freezes a preserved memfd (its size and pages) until the kexec';
    context.fix = 'punch holes before preserving the memfd or after retrieving it; closing the session unpreserves it';
  }
  return context;
}

/**
 * Frees the pages of `length` bytes at `offset` in the memfd of `fd`
 * (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`): reads of the
 * range return zeros, the size stays, partial pages at the ends are zeroed.
 * This is how a VMM returns a guest's ballooned memory.
 *
 * LUO freezes a preserved memfd: while it is preserved in an outgoing
 * session this fails with FileFrozenError (`EPERM`), and the preserve has
 * already filled every hole with zeroed pages (LUO pins a page at every
 * offset), so the holes come back as zeros, not as holes, after the kexec.
 * After retrieve, holes can be punched again.
 */
export async function punchHole(fd: number, offset: number, length: number): Promise<void> {
  checkFd(fd);
  const range = checkRange(offset, length);
  try {
    await native.punchHoleAsync(fd, range.offset, range.length);
  } catch (error) {
    throw translateError(error, punchHoleContext(fd, error));
  }
}

/** The synchronous form of {@link punchHole}. */
export function punchHoleSync(fd: number, offset: number, length: number): void {
  checkFd(fd);
  const range = checkRange(offset, length);
  try {
    native.punchHole(fd, range.offset, range.length);
  } catch (error) {
    throw translateError(error, punchHoleContext(fd, error));
  }
}
