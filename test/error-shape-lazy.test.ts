/**
 * A typed error made at node's price (callNative: the addon reports the
 * failed syscall instead of throwing, the typed error is built and thrown
 * once in JavaScript, its cause made without a stack capture of its own and
 * its stack shown from the typed error's frames when first read) is the
 * error the addon's own factory makes: same class, fields, message, cause,
 * inspect and JSON output, and its stacks read right after crossing
 * structuredClone or a Worker, where the cause's stack is read only then.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inspect, types } from 'node:util';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { callSync, type ErrorContext } from '../lib/errors.js';
import * as lu from '../lib/index.js';
import { closeFd, loadNative } from '../lib/native.js';
import { thrown } from './helpers/thrown.js';

/** A number no process here has open: the kernel answers EBADF. */
const NOT_OPEN = 1_000_000;

const DIST = path.join(__dirname, '..', 'dist', 'index.js');

/** The frame lines of a stack (its header dropped). */
const frames = (stack: unknown): string[] => String(stack).split('\n').filter((line) => line.startsWith('    at '));

/** Own properties in order, with whether each is enumerable. */
const shape = (error: object): Array<[string, boolean]> =>
  Object.getOwnPropertyNames(error).map((key) => [key, Object.getOwnPropertyDescriptor(error, key)!.enumerable === true]);

/** A stack's text with its frame lines dropped: what does not depend on where the error was made. */
const withoutFrames = (text: string): string => text.split('\n').filter((line) => !line.trimStart().startsWith('at ')).join('\n');

/** The error the addon's factory makes for getSeals of a number not open: the path every call took before callNative. */
function factoryMade(): Error & Record<string, unknown> {
  const context: ErrorContext = { operation: 'memfd.getSeals', fd: NOT_OPEN };
  return thrown(() => callSync(context, () => loadNative().getSeals(NOT_OPEN)));
}

describe('a typed error made at node\'s price', () => {
  it('is the error the addon\'s factory makes: class, own properties in order, fields, message, cause', () => {
    const fast = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    const made = factoryMade();
    expect(fast).toBeInstanceOf(lu.BadFileDescriptorError);
    expect(fast.constructor).toBe(made.constructor);
    expect(shape(fast)).toEqual(shape(made));
    expect(fast.message).toBe(`EBADF: fd ${NOT_OPEN} is not an open file descriptor, fcntl`);
    expect(fast).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'fcntl', operation: 'memfd.getSeals', fd: NOT_OPEN, name: 'BadFileDescriptorError' });
    const cause = fast.cause as Error;
    expect(types.isNativeError(cause)).toBe(true);
    expect(cause.constructor).toBe(Error);
    expect(shape(cause)).toEqual(shape(made.cause as Error));
    expect(cause).toMatchObject({ message: 'EBADF: bad file descriptor, fcntl', errno: -9, code: 'EBADF', syscall: 'fcntl' });
  });

  it('gives the same JSON and the same util.inspect text but for the frame lines', () => {
    const fast = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    const made = factoryMade();
    expect(JSON.stringify(fast)).toBe(JSON.stringify(made));
    expect(JSON.parse(JSON.stringify(fast))).toEqual({
      code: 'EBADF', errno: -9, syscall: 'fcntl', operation: 'memfd.getSeals', fd: NOT_OPEN, name: 'BadFileDescriptorError',
    });
    expect(withoutFrames(inspect(fast))).toBe(withoutFrames(inspect(made)));
    expect(inspect(fast)).toContain('[cause]: Error: EBADF: bad file descriptor, fcntl');
  });

  it('its stack starts at the public function, then the caller here; the cause shows the same frames, read first or second', () => {
    const fast = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    // The cause's stack read before the error's own: it is made from the error's frames when first read.
    const causeStack = String((fast.cause as Error).stack);
    const own = frames(fast.stack);
    expect(own[0]).toMatch(/getSealsSync/);
    expect(own[1]).toContain('error-shape-lazy.test.ts');
    expect(String(fast.stack).split('\n')[0]).toBe(`BadFileDescriptorError: ${fast.message}`);
    expect(causeStack.split('\n')[0]).toBe('Error: EBADF: bad file descriptor, fcntl');
    expect(frames(causeStack)).toEqual(own);
  });

  it('keeps its stacks through structuredClone, the cause\'s read only by the clone', () => {
    const fast = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    const copy = structuredClone(fast.cause) as Error;
    expect(copy.message).toBe('EBADF: bad file descriptor, fcntl');
    expect(copy.stack).toBe((fast.cause as Error).stack);
    expect(frames(copy.stack)).toEqual(frames(fast.stack));
    const whole = structuredClone(fast) as Error;
    expect(whole.message).toBe(fast.message);
    expect(whole.stack).toBe(fast.stack);
  });

  it('is made the same way in a Worker (its own addon state), and crosses postMessage with its stacks', async () => {
    const body = `
      const { parentPort, workerData } = require('node:worker_threads');
      const lu = require(workerData.dist);
      function failing() { return lu.memfd.getSealsSync(${NOT_OPEN}); }
      try {
        failing();
      } catch (error) {
        parentPort.postMessage({ error, cause: error.cause, typed: error instanceof lu.BadFileDescriptorError, stack: error.stack, causeStack: error.cause.stack });
      }`;
    const got = await new Promise<{ error: Error; cause: Error; typed: boolean; stack: string; causeStack: string }>((resolve, reject) => {
      const worker = new Worker(body, { eval: true, workerData: { dist: DIST } });
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the Worker exited (${code}) without an answer`)));
    });
    expect(got.typed).toBe(true);
    expect(got.error.message).toBe(`EBADF: fd ${NOT_OPEN} is not an open file descriptor, fcntl`);
    expect(got.error.stack).toBe(got.stack);
    expect(got.cause.stack).toBe(got.causeStack);
    expect(frames(got.stack)[1]).toMatch(/failing/);
    expect(frames(got.causeStack)).toEqual(frames(got.stack));
  });

  it('follows a frozen Error.stackTraceLimit: made with captures of its own, the same fields and frames', () => {
    const descriptor = Object.getOwnPropertyDescriptor(Error, 'stackTraceLimit')!;
    Object.defineProperty(Error, 'stackTraceLimit', { ...descriptor, writable: false });
    try {
      const fast = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
      expect(fast).toBeInstanceOf(lu.BadFileDescriptorError);
      expect(shape(fast)).toEqual(shape(factoryMade()));
      expect(types.isNativeError(fast.cause)).toBe(true);
      expect(frames(fast.stack)[0]).toMatch(/getSealsSync/);
      expect(frames((fast.cause as Error).stack)).toEqual(frames(fast.stack));
    } finally {
      Object.defineProperty(Error, 'stackTraceLimit', descriptor);
    }
  });

  it('reports each call\'s own syscall, and leaves nothing behind: the next call succeeds, a direct call of the binding throws the system error', () => {
    expect(thrown(() => closeFd(NOT_OPEN))).toMatchObject({ code: 'EBADF', syscall: 'close', operation: 'close', fd: NOT_OPEN });
    expect(thrown(() => lu.memfd.getSealsSync(NOT_OPEN))).toMatchObject({ code: 'EBADF', syscall: 'fcntl' });
    expect(thrown(() => closeFd(NOT_OPEN)).message).toMatch(/^EBADF: .*, close$/);
    expect((thrown(() => closeFd(NOT_OPEN)).cause as Error).message).toBe('EBADF: bad file descriptor, close');
    const fd = lu.memfd.createSync('error-shape-lazy');
    try {
      expect(lu.memfd.getSealsSync(fd)).toBeTypeOf('number');
      const direct = thrown(() => loadNative().getSeals(NOT_OPEN));
      expect(direct.constructor).toBe(Error);
      expect(direct).toMatchObject({ code: 'EBADF', syscall: 'fcntl' });
    } finally {
      fs.closeSync(fd);
    }
  });
});
