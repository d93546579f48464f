/**
 * What the conformance scenarios share, in the guest: cases gated on what the
 * kernel has, expected failures checked by error class and code, the device
 * opened and always closed, and small memfd helpers.
 *
 * Everything here goes through the package's public API only (the same
 * entry point users import), so the suite proves the API as much as the kernel.
 * @internal
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { LiveUpdate, memfd, statusSync, UnsupportedFileError } from 'liveupdate';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, type Case, type StageContext, type StageFunction } from '../vm/scenario.js';
import { LUO_TEST_DEVICE } from './luo-test.js';

/** Every session the suite creates starts with this, so it never meets another user's sessions. */
export const PREFIX = 'conf-';

/**
 * What a case needs from the kernel. `test-handler` is the test-only file
 * handler (vm/luo-test-handler): a kernel may well lack it.
 */
export type Requirement = 'luo' | 'memfd' | 'test-handler';

/**
 * Checks named like this mean "the kernel lacks what the case needs"; the
 * host reports such cases as skipped, with the check's detail as the reason.
 */
export const REQUIRES_CHECK = 'requires ';

/**
 * Checks named like this mean "the case applies only to kernels with
 * something optional"; the host reports it skipped as not applicable, which
 * does not fail the run.
 */
export const APPLIES_CHECK = 'applies only with ';

/** Requirements whose absence makes a case not applicable rather than the kernel lacking. */
const OPTIONAL: ReadonlySet<Requirement> = new Set<Requirement>(['test-handler']);

/**
 * Checks named like this record a deviation: the kernel did something other
 * than its documented promise. Detail: `{ promised, observed }`.
 */
export const DEVIATION_CHECK = 'deviation: ';

/** Reports named like this are behaviour the documentation promises nothing about. */
export const OBSERVED_REPORT = 'observed: ';

/** The constructor of an error a call is expected to throw. */
export type ErrorClass = abstract new (...args: never[]) => Error;

/** A missing requirement and why it is missing. */
interface Missing {
  readonly what: Requirement;
  readonly reason: string;
}

/** Per stage (each stage is a fresh process), what was learnt about the kernel. */
const known = new Map<Requirement, string | null>();

/**
 * Defines a case whose stages run only if the kernel has what it needs;
 * otherwise the stage records a failed `requires ...` check with the reason
 * (the host turns that into a skip) and does nothing else.
 */
export function conformanceCase(name: string, requires: readonly Requirement[], stages: readonly StageFunction[]): Case {
  return defineCase(
    name,
    stages.map((stage) => async (ctx: StageContext) => {
      const missing = missingRequirement(requires);
      if (missing !== undefined) {
        ctx.check(`${OPTIONAL.has(missing.what) ? APPLIES_CHECK : REQUIRES_CHECK}${missing.what}`, false, missing.reason);
        return null;
      }
      return stage(ctx);
    }),
  );
}

function missingRequirement(requires: readonly Requirement[]): Missing | undefined {
  // Nothing is preservable without the device, so check that first.
  const all: Requirement[] = requires.includes('luo') || requires.length === 0 ? [...requires] : ['luo', ...requires];
  for (const what of all) {
    const reason = lacks(what);
    if (reason !== null) return { what, reason };
  }
  return undefined;
}

/** Why the kernel lacks `what`, or null when it has it (learnt once per stage). */
export function lacks(what: Requirement): string | null {
  let reason = known.get(what);
  if (reason === undefined) {
    reason = what === 'luo' ? probeDevice() : what === 'memfd' ? probeMemfd() : probeTestHandler();
    known.set(what, reason);
  }
  return reason;
}

/** Null when /dev/liveupdate exists; else status()'s reason (which reads the kernel log too). */
function probeDevice(): string | null {
  const s = statusSync({ probe: false });
  if (s.deviceExists) return null;
  return `no /dev/liveupdate: ${s.reason ?? 'the device node is missing'}`;
}

/** Null when a memfd can be preserved; else why not. */
function probeMemfd(): string | null {
  const luo = LiveUpdate.openSync();
  const fd = memfd.createSync('conf-probe');
  try {
    const session = luo.createSessionSync(`${PREFIX}probe-memfd`);
    try {
      session.preserveSync(fd, 1n);
      return null;
    } catch (error) {
      if (error instanceof UnsupportedFileError) {
        return `no memfd support: preserving a memfd fails with UnsupportedFileError (${error.code}); the kernel lacks CONFIG_LIVEUPDATE_MEMFD`;
      }
      return `preserving a memfd fails: ${describeError(error)}`;
    } finally {
      session.closeSync();
    }
  } finally {
    fs.closeSync(fd);
    luo.closeSync();
  }
}

/** Null when the kernel has the test file handler's device; else why not. */
function probeTestHandler(): string | null {
  if (fs.existsSync(LUO_TEST_DEVICE)) return null;
  return `no ${LUO_TEST_DEVICE}: the kernel was built without the test-only file handler (CONFIG_LIVEUPDATE_TEST_HANDLER, vm/luo-test-handler)`;
}

/**
 * Checks a documented promise: `observed` equal (as JSON) to `promised`
 * passes the check `name`; anything else is recorded as a deviation, not a
 * failure. Returns whether the promise was kept.
 */
export function expectPromise(ctx: StageContext, name: string, observed: JsonValue, promised: JsonValue): boolean {
  if (isDeepStrictEqual(observed, promised)) return ctx.check(name, true);
  ctx.check(`${DEVIATION_CHECK}${name}`, false, { promised, observed });
  return false;
}

/** Records what the kernel did where its documentation promises nothing: reported, not judged. */
export function observe(ctx: StageContext, name: string, value: JsonValue): void {
  ctx.report(`${OBSERVED_REPORT}${name}`, value);
}

/** Opens the device, runs `fn`, and closes the device whatever happens (it has one owner). */
export async function withDevice<T>(fn: (luo: LiveUpdate) => T | Promise<T>): Promise<T> {
  const luo = LiveUpdate.openSync();
  try {
    return await fn(luo);
  } finally {
    luo.closeSync();
  }
}

/** An error as a case reports it. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return `${error.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${error.message}`;
}

/** What an expected failure looked like. */
export interface Failure {
  readonly error: string;
  readonly code: string | null;
  /** The error's message ('' when nothing or a non-Error was thrown). */
  readonly message: string;
}

/**
 * Records a check that `fn` throws (or, if it returns a Promise, rejects
 * with) an instance of `type` whose `code` is `code`. Returns what was thrown.
 */
export async function expectError(
  ctx: StageContext,
  name: string,
  fn: () => unknown,
  type: ErrorClass,
  code: string,
): Promise<Failure> {
  let thrown: unknown;
  let threw = false;
  try {
    await fn();
  } catch (error) {
    threw = true;
    thrown = error;
  }
  const got = threw ? failureOf(thrown) : { error: 'none (the call succeeded)', code: null, message: '' };
  const ok = threw && thrown instanceof type && got.code === code;
  ctx.check(name, ok, { expected: `${type.name} [${code}]`, actual: threw ? describeError(thrown) : got.error });
  return got;
}

function failureOf(error: unknown): Failure {
  const code = (error as { code?: unknown } | null)?.code;
  return {
    error: error instanceof Error ? error.name : typeof error,
    code: typeof code === 'string' ? code : null,
    message: error instanceof Error ? error.message : '',
  };
}

/** A memfd holding `text` (file position left at 0). */
export function memfdWith(name: string, text: string | Buffer, options?: memfd.CreateOptions): number {
  const fd = memfd.createSync(name, options);
  const bytes = typeof text === 'string' ? Buffer.from(text) : text;
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done, done);
  return fd;
}

/** The whole content of the file of `fd` as UTF-8, read positionally (the position stays put). */
export function contentOf(fd: number): string {
  const size = fs.fstatSync(fd).size;
  const buffer = Buffer.alloc(size);
  for (let done = 0; done < size; ) {
    const n = fs.readSync(fd, buffer, done, size - done, done);
    if (n === 0) break;
    done += n;
  }
  return buffer.toString('utf8');
}

/** Closes fds, ignoring ones already closed. */
export function closeAll(...fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      // Already closed by the case: nothing to release.
    }
  }
}

/** The previous stage's value as a record. */
export function carried(ctx: StageContext): Record<string, JsonValue> {
  const value = ctx.previous;
  if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${ctx.caseName}: stage ${ctx.stage} got no value from stage ${ctx.stage - 1}`);
  }
  return value;
}

/** SHA-256 of `length` bytes from `offset`, read positionally (the file position stays put). */
export function sha256At(fd: number, offset: number, length: number): string {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(2 ** 20);
  for (let done = 0; done < length; ) {
    const n = fs.readSync(fd, buffer, 0, Math.min(buffer.length, length - done), offset + done);
    if (n === 0) break;
    hash.update(buffer.subarray(0, n));
    done += n;
  }
  return hash.digest('hex');
}
