import { describe, expect, it } from 'vitest';
import { checkFd, checkSessionName, MAX_TOKEN, toToken } from '../lib/validate.js';

describe('tokens', () => {
  it('accept bigints over the whole u64 range', () => {
    expect(toToken(0n)).toBe(0n);
    expect(toToken(1n)).toBe(1n);
    expect(toToken(MAX_TOKEN)).toBe(2n ** 64n - 1n);
  });

  it('accept non-negative safe integers as bigints', () => {
    expect(toToken(0)).toBe(0n);
    expect(toToken(Number.MAX_SAFE_INTEGER)).toBe(BigInt(Number.MAX_SAFE_INTEGER));
  });

  it.each([-1n, 2n ** 64n, -(2n ** 63n)])('reject %s with RangeError', (token) => {
    expect(() => toToken(token)).toThrow(RangeError);
    expect(() => toToken(token)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });

  it.each([-1, 1.5, Number.MAX_SAFE_INTEGER + 1, NaN, Infinity])('reject the number %s with RangeError', (token) => {
    expect(() => toToken(token)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
  });

  it.each(['1', null, undefined, {}, true])('reject %p with TypeError', (token) => {
    expect(() => toToken(token)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }));
  });
});

describe('session names', () => {
  it('accept 1 to 63 bytes of UTF-8', () => {
    expect(checkSessionName('a')).toBe('a');
    expect(checkSessionName('x'.repeat(63))).toHaveLength(63);
    // 21 three-byte characters: 63 bytes.
    expect(checkSessionName('€'.repeat(21))).toBe('€'.repeat(21));
  });

  it('count bytes, not characters', () => {
    // 22 three-byte characters are 66 bytes although only 22 characters.
    expect(() => checkSessionName('€'.repeat(22))).toThrow(/at most 63 bytes of UTF-8 \(it is 66\)/);
  });

  it.each([
    ['', /must not be empty/],
    ['x'.repeat(64), /at most 63 bytes/],
    ['a\0b', /NUL/],
    ['\ud800', /well-formed/],
  ])('reject %p', (name, message) => {
    expect(() => checkSessionName(name)).toThrow(message);
    expect(() => checkSessionName(name)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('reject non-strings with TypeError', () => {
    expect(() => checkSessionName(42)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }));
  });
});

describe('fds', () => {
  it.each([0, 3, 2 ** 31 - 1])('accept %d', (fd) => expect(checkFd(fd)).toBe(fd));
  it.each([-1, 1.5, 2 ** 31])('reject %d with RangeError', (fd) => {
    expect(() => checkFd(fd)).toThrow(RangeError);
  });
  it('reject a string with TypeError', () => expect(() => checkFd('3')).toThrow(TypeError));
});
