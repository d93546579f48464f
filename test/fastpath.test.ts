/**
 * The guarantees the fast paths must keep. Fd passing reads the caller's
 * fds array itself (no copy) and receives a record straight into the
 * caller's buffer; a typed error is planned by the TypeScript layer and
 * constructed by the addon during the call, with one stack capture, its
 * cause made without one. Each test fails if its fast path drops the
 * guarantee it names.
 */
import * as fs from 'node:fs';
import { types } from 'node:util';
import { describe, expect, it } from 'vitest';
import { callSync, errorFromNative } from '../lib/errors.js';
import { ControlTruncatedError, MessageTruncatedError, recvFds, recvFdsSync, sendFds, sendFdsSync, socketPair } from '../lib/fdpass.js';
import * as lu from '../lib/index.js';
import { loadNative } from '../lib/native.js';
import { openFds } from './helpers/fds.js';
import { thrown } from './helpers/thrown.js';

/** A number no process here has open: the kernel answers EBADF. */
const NOT_OPEN = 1_000_000;

/** The frame lines of a stack (its header dropped). */
const frames = (stack: unknown): string[] => String(stack).split('\n').filter((line) => line.startsWith('    at '));

/** The inode of the file an fd names. */
const ino = (fd: number): bigint => fs.fstatSync(fd, { bigint: true }).ino;

describe('fd passing reads the caller\'s fds array itself, within the call', () => {
  it('an element that reads as a valid fd when checked and as -1 when sent is refused with a RangeError before any syscall: nothing is sent', () => {
    const [a, b] = socketPair('seqpacket');
    const file = lu.memfd.createSync('fastpath');
    try {
      let reads = 0;
      const fds: number[] = [];
      Object.defineProperty(fds, 0, { get: () => (reads++ === 0 ? file : -1), enumerable: true });
      const error = thrown(() => sendFdsSync(a, fds, 'x'));
      expect(error).toBeInstanceOf(RangeError);
      expect(error.code).toBe('ERR_OUT_OF_RANGE');
      expect(reads).toBe(2); // Checked by the TypeScript layer, read again by the addon.
      expect(loadNative().readableNow(b)).toBe(false); // Nothing was sent.
    } finally {
      for (const fd of [a, b, file]) fs.closeSync(fd);
    }
  });

  it('a Promise send that must wait sends the files it was given, though the caller empties its array and closes its fd at once', async () => {
    const [a, b] = socketPair('seqpacket');
    const file = lu.memfd.createSync('fastpath-wait');
    const expected = ino(file);
    let filled = 0;
    for (;;) {
      try {
        sendFdsSync(a, [], 'filler', { timeout: 0 });
        filled++;
      } catch (error) {
        expect((error as { code?: unknown }).code).toBe('ETIMEDOUT');
        break;
      }
    }
    const fds = [file];
    const sent = sendFds(a, fds, 'the file');
    fds.length = 0;
    fs.closeSync(file);
    const reuser = fs.openSync('/dev/null', 'r'); // Likely takes the number the caller closed.
    for (let i = 0; i < filled; i++) recvFdsSync(b);
    await sent;
    const got = recvFdsSync(b);
    fs.closeSync(reuser);
    try {
      expect(got.data.toString()).toBe('the file');
      expect(got.fds).toHaveLength(1);
      expect(ino(got.fds[0]!)).toBe(expected);
    } finally {
      for (const fd of [a, b, ...got.fds]) fs.closeSync(fd);
    }
  });
});

describe('a record received straight into the caller\'s buffer', () => {
  it('each result owns its bytes: a later receive, short or long, changes no earlier one', async () => {
    const [a, b] = socketPair('seqpacket');
    try {
      const short = 'a'.repeat(10);
      const long = 'b'.repeat(1000);
      sendFdsSync(a, [], short);
      sendFdsSync(a, [], long);
      sendFdsSync(a, [], 'c'.repeat(1000));
      await sendFds(a, [], 'd'.repeat(10));
      const first = recvFdsSync(b);
      const second = recvFdsSync(b);
      const third = await recvFds(b);
      const fourth = recvFdsSync(b);
      expect(first.data.toString()).toBe(short);
      expect(second.data.toString()).toBe(long);
      expect(third.data.toString()).toBe('c'.repeat(1000));
      expect(fourth.data.toString()).toBe('d'.repeat(10));
      expect(first.data.buffer === second.data.buffer && first.data.byteOffset === second.data.byteOffset).toBe(false);
    } finally {
      for (const fd of [a, b]) fs.closeSync(fd);
    }
  });

  it('a record longer than maxBytes is a MessageTruncatedError with its real length, and the fds it carried are closed', () => {
    const [a, b] = socketPair('seqpacket');
    const file = lu.memfd.createSync('fastpath-trunc');
    try {
      const before = openFds();
      sendFdsSync(a, [file, file], Buffer.alloc(100, 7));
      const error = thrown(() => recvFdsSync(b, { maxBytes: 10 }));
      expect(error).toBeInstanceOf(MessageTruncatedError);
      expect(error).toMatchObject({ length: 100, closedFds: 2 });
      expect(openFds()).toEqual(before);
    } finally {
      for (const fd of [a, b, file]) fs.closeSync(fd);
    }
  });

  it('more fds than maxFds is a ControlTruncatedError, every one that arrived closed, in both forms', async () => {
    const [a, b] = socketPair('seqpacket');
    const file = lu.memfd.createSync('fastpath-ctrunc');
    try {
      const before = openFds();
      sendFdsSync(a, [file, file, file], 'three');
      expect(thrown(() => recvFdsSync(b, { maxFds: 1 }))).toBeInstanceOf(ControlTruncatedError);
      expect(openFds()).toEqual(before);
      sendFdsSync(a, [file, file, file], 'three');
      await expect(recvFds(b, { maxFds: 2 })).rejects.toBeInstanceOf(ControlTruncatedError);
      expect(openFds()).toEqual(before);
      // The socket goes on: the next message arrives whole.
      sendFdsSync(a, [file], 'one');
      const got = recvFdsSync(b, { maxFds: 1 });
      expect(got.fds).toHaveLength(1);
      fs.closeSync(got.fds[0]!);
    } finally {
      for (const fd of [a, b, file]) fs.closeSync(fd);
    }
  });
});

describe('a typed error made during the call, with one stack capture', () => {
  it('its stack starts at the call, in this file, and its cause shows the very same frames under the system error\'s header', () => {
    const error = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    const cause = error.cause as Error;
    expect(error).toBeInstanceOf(lu.BadFileDescriptorError);
    const own = frames(error.stack);
    expect(own.length).toBeGreaterThan(0);
    expect(own.some((line) => line.includes('fastpath.test.ts'))).toBe(true);
    // No frame of the error's own making (the factory, the constructors) tops it.
    expect(own.some((line) => /errorFromNative|kernelErrorPlan|typedKernelError|new \w+Error/.test(line))).toBe(false);
    expect(String(cause.stack).split('\n')[0]).toBe('Error: EBADF: bad file descriptor, fcntl');
    expect(frames(cause.stack)).toEqual(own);
    expect(cause).toBeInstanceOf(Error);
    expect(cause.constructor).toBe(Error);
  });

  it('its cause is a native Error still: util.types says so, and structuredClone (postMessage) keeps its message and stack', () => {
    const cause = thrown(() => lu.memfd.getSealsSync(NOT_OPEN)).cause as Error;
    expect(types.isNativeError(cause)).toBe(true);
    const copy = structuredClone(cause);
    expect(copy).toBeInstanceOf(Error);
    expect(copy.message).toBe('EBADF: bad file descriptor, fcntl');
    expect(copy.stack).toBe(cause.stack);
  });

  it('follows Error.stackTraceLimit, as a captured stack does', () => {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 2;
    try {
      const error = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
      expect(frames(error.stack)).toHaveLength(2);
      expect(frames((error.cause as Error).stack)).toHaveLength(2);
    } finally {
      Error.stackTraceLimit = limit;
    }
  });

  it('stacks set by a program are kept, the typed error\'s and the cause\'s', () => {
    const error = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    const cause = error.cause as Error;
    error.stack = 'mine';
    cause.stack = 'its';
    expect([error.stack, cause.stack]).toEqual(['mine', 'its']);
  });

  it('under a program\'s own Error.prepareStackTrace, both stacks are that function\'s, as before', () => {
    const prepare = Error.prepareStackTrace;
    Error.prepareStackTrace = (error: Error) => `custom ${error.name}`;
    try {
      const error = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
      expect(error).toBeInstanceOf(lu.BadFileDescriptorError);
      expect(error.stack).toBe('custom BadFileDescriptorError');
      expect((error.cause as Error).stack).toBe('custom Error');
      expect(types.isNativeError(error.cause)).toBe(true);
    } finally {
      Error.prepareStackTrace = prepare;
    }
  });

  it('a direct call of the binding still throws the system error itself, a native Error of the same shape', () => {
    const error = thrown(() => loadNative().getSeals(NOT_OPEN));
    expect(error.constructor).toBe(Error);
    expect(types.isNativeError(error)).toBe(true);
    expect(Object.getOwnPropertyNames(error)).toEqual(['stack', 'message', 'errno', 'code', 'syscall']);
    expect(error).toMatchObject({ message: 'EBADF: bad file descriptor, fcntl', errno: -9, code: 'EBADF', syscall: 'fcntl' });
    expect(frames(error.stack).some((line) => line.includes('fastpath.test.ts'))).toBe(true);
  });

  it('a failure in a nested call is typed with that call\'s context, and one after it with the outer call\'s', () => {
    const native = loadNative();
    const errors: unknown[] = [];
    callSync({ operation: 'memfd.addSeals', fd: 1 }, () => {
      try {
        callSync({ operation: 'memfd.getSeals', fd: 2 }, () => native.getSeals(NOT_OPEN));
      } catch (error) {
        errors.push(error);
      }
      try {
        native.getSeals(NOT_OPEN);
      } catch (error) {
        errors.push(error);
      }
    });
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatchObject({ operation: 'memfd.getSeals', fd: 2, code: 'EBADF' });
    expect(errors[1]).toMatchObject({ operation: 'memfd.addSeals', fd: 1, code: 'EBADF' });
    expect(errors.every((e) => e instanceof lu.BadFileDescriptorError)).toBe(true);
  });

  it('a factory that throws changes nothing a caller sees: the addon makes the system error, the call still throws the typed error, nothing is left pending', () => {
    const native = loadNative();
    native.setErrorFactory!(() => {
      throw new Error('a broken factory');
    });
    try {
      const error = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
      expect(error).toBeInstanceOf(lu.BadFileDescriptorError);
      expect(error.message).toBe(`EBADF: fd ${NOT_OPEN} is not an open file descriptor, fcntl`);
      expect(types.isNativeError(error.cause)).toBe(true);
      // The next call is unaffected by a leftover exception.
      const fd = lu.memfd.createSync('fastpath-after');
      expect(lu.memfd.getSealsSync(fd)).toBeTypeOf('number');
      fs.closeSync(fd);
    } finally {
      native.setErrorFactory!(errorFromNative);
    }
  });

  it('a factory that is not a function is refused with a TypeError', () => {
    expect(() => loadNative().setErrorFactory!(42 as never)).toThrow(TypeError);
    // The registered one is kept.
    expect(thrown(() => lu.memfd.getSealsSync(NOT_OPEN)).cause).not.toBeUndefined();
  });
});
