/**
 * What a user sees of a typed error, held fixed while its construction gets
 * cheaper: its own properties in order (as util.inspect lists them), which
 * are enumerable, and the native error kept as its cause.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { thrown } from './helpers/thrown.js';

/** A number no process here has open: the kernel answers EBADF. */
const NOT_OPEN = 1_000_000;

const shape = (error: object): Array<[string, boolean]> =>
  Object.getOwnPropertyNames(error).map((key) => [key, Object.getOwnPropertyDescriptor(error, key)!.enumerable === true]);

describe('a typed error from a failed syscall', () => {
  it('has its fields in the same order, enumerable, after the non-enumerable stack, message and cause', () => {
    const error = thrown(() => lu.memfd.getSealsSync(NOT_OPEN));
    expect(error).toBeInstanceOf(lu.BadFileDescriptorError);
    expect(shape(error)).toEqual([
      ['stack', false], ['message', false], ['cause', false],
      ['code', true], ['errno', true], ['syscall', true], ['operation', true], ['sessionName', true],
      ['token', true], ['fd', true], ['path', true], ['fix', true], ['name', true],
    ]);
    expect(error.message).toBe(`EBADF: fd ${NOT_OPEN} is not an open file descriptor, fcntl`);
    expect(error.stack!.split('\n')[0]).toBe(`BadFileDescriptorError: ${error.message}`);
  });

  it('keeps the native error as its cause, shaped like a Node system error', () => {
    const cause = thrown(() => lu.memfd.getSealsSync(NOT_OPEN)).cause as Error;
    expect(shape(cause)).toEqual([['stack', false], ['message', false], ['errno', true], ['code', true], ['syscall', true]]);
    expect(cause).toMatchObject({ message: 'EBADF: bad file descriptor, fcntl', errno: -9, code: 'EBADF', syscall: 'fcntl' });
    expect(cause.stack!.split('\n')[0]).toBe('Error: EBADF: bad file descriptor, fcntl');
  });

  it('shows util.inspect its fields in order, and its cause', () => {
    const text = inspect(thrown(() => lu.memfd.getSealsSync(NOT_OPEN)));
    const fields = ['code', 'errno', 'syscall', 'operation', 'sessionName', 'token', 'fd', 'path', 'fix'].map((k) => text.indexOf(`  ${k}: `));
    expect(fields.every((at) => at > 0)).toBe(true);
    expect([...fields].sort((a, b) => a - b)).toEqual(fields);
    expect(text).toContain('[cause]: Error: EBADF: bad file descriptor, fcntl');
  });
});
