/**
 * Argument checks that run before any syscall. Failures are Node-style
 * TypeError/RangeError objects with Node's `ERR_*` codes, so that callers can
 * treat them as they treat Node core's own argument errors.
 */
import { inspect } from 'node:util';

/** Largest LUO token: tokens are unsigned 64-bit integers. */
export const MAX_TOKEN = 0xffff_ffff_ffff_ffffn;

/** Longest session name in bytes (the kernel's 64-byte field holds a NUL). */
export const MAX_SESSION_NAME_BYTES = 63;

/** A TypeError or RangeError carrying a Node-style `code`. */
export type ArgumentError = (TypeError | RangeError) & { code: string };

function withCode<E extends TypeError | RangeError>(error: E, code: string): E & { code: string } {
  return Object.assign(error, { code });
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return `type bigint (${value}n)`;
  if (typeof value === 'object' || typeof value === 'function') return `an instance of ${value.constructor?.name ?? 'Object'}`;
  return `type ${typeof value} (${inspect(value)})`;
}

/** `ERR_INVALID_ARG_TYPE`: the argument has the wrong type. */
export function invalidArgType(name: string, expected: string, actual: unknown): ArgumentError {
  return withCode(new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(actual)}`), 'ERR_INVALID_ARG_TYPE');
}

/** `ERR_OUT_OF_RANGE`: the argument's type is right but its value is not. */
export function outOfRange(name: string, range: string, actual: unknown): ArgumentError {
  return withCode(new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${inspect(actual)}`), 'ERR_OUT_OF_RANGE');
}

/** `ERR_INVALID_ARG_VALUE`: the argument's value is unacceptable. */
export function invalidArgValue(name: string, reason: string, actual: unknown): ArgumentError {
  const shown = inspect(actual, { maxStringLength: 80 });
  return withCode(new TypeError(`The argument '${name}' ${reason}. Received ${shown}`), 'ERR_INVALID_ARG_VALUE');
}

/**
 * A LUO token as a bigint: a bigint in [0, 2^64 - 1] or a non-negative safe
 * integer number. Anything else throws before the kernel is asked.
 */
export function toToken(token: unknown, name = 'token'): bigint {
  if (typeof token === 'bigint') {
    if (token < 0n || token > MAX_TOKEN) throw outOfRange(name, '>= 0n and <= 2n ** 64n - 1n', token);
    return token;
  }
  if (typeof token === 'number') {
    if (!Number.isSafeInteger(token) || token < 0) {
      throw outOfRange(name, 'a non-negative safe integer (use a bigint for larger tokens)', token);
    }
    return BigInt(token);
  }
  throw invalidArgType(name, 'of type bigint or number', token);
}

/** A file descriptor: an integer in [0, 2^31 - 1]. */
export function checkFd(fd: unknown, name = 'fd'): number {
  if (typeof fd !== 'number') throw invalidArgType(name, 'of type number', fd);
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fff_ffff) throw outOfRange(name, 'an integer >= 0 and <= 2147483647', fd);
  return fd;
}

/** A session name: 1 to 63 bytes of UTF-8 with no NUL. */
export function checkSessionName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  if (name.length === 0) throw invalidArgValue('name', 'must not be empty', name);
  if (name.includes('\0')) throw invalidArgValue('name', 'must not contain a NUL character', name);
  if (!name.isWellFormed()) throw invalidArgValue('name', 'must be well-formed Unicode (no lone surrogates)', name);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_SESSION_NAME_BYTES) {
    throw invalidArgValue('name', `must be at most ${MAX_SESSION_NAME_BYTES} bytes of UTF-8 (it is ${bytes})`, name);
  }
  return name;
}

/** A path: a non-empty string without NUL. */
export function checkPath(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  if (value.length === 0) throw invalidArgValue(name, 'must not be empty', value);
  if (value.includes('\0')) throw invalidArgValue(name, 'must not contain a NUL character', value);
  return value;
}

/** An optional boolean option: undefined means the default. */
export function checkBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value);
  return value;
}

/** An options object, or undefined for all defaults. */
export function checkOptions<T extends object>(value: unknown, name = 'options'): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object') throw invalidArgType(name, 'of type object', value);
  return value as Partial<T>;
}
