/**
 * memfd.punchHole on the host (any Linux with memfds; no LUO needed): a hole
 * frees pages and reads as zeros with the size and the bytes around it kept;
 * bad arguments are refused before any syscall and leak nothing; the kernel's
 * refusals are typed. Telling a hugetlb memfd apart (for preserve's refusal)
 * works on the host too. What LUO itself does (the freeze of a preserved
 * memfd, its refusal of hugetlb) is test/kernel/vmm-facts.test.ts.
 */
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import nodeGypBuild from 'node-gyp-build';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { isHugetlbFile } from '../lib/fdlink.js';
import { expectNoFdLeak } from './helpers/fds.js';
import { ERRNO } from './helpers/errno.js';

const { memfd } = lu;
const PAGE = 4096;
const SIZE = 16 * PAGE;
/** st_blocks units. */
const BLOCK = 512;

const opened: number[] = [];
afterEach(() => {
  for (const fd of opened.splice(0)) fs.closeSync(fd);
});

/** A memfd of SIZE random bytes (every page allocated), and those bytes. */
function filledMemfd(options?: lu.memfd.CreateOptions): { fd: number; bytes: Buffer } {
  const fd = memfd.createSync('punch', options);
  opened.push(fd);
  const bytes = randomFillSync(Buffer.alloc(SIZE));
  fs.writeSync(fd, bytes, 0, SIZE, 0);
  return { fd, bytes };
}

function contents(fd: number): Buffer {
  const out = Buffer.alloc(fs.fstatSync(fd).size);
  fs.readSync(fd, out, 0, out.length, 0);
  return out;
}

/** What the file must read as after punching [offset, offset + length): the bytes with that range zeroed. */
function withHole(bytes: Buffer, offset: number, length: number): Buffer {
  const expected = Buffer.from(bytes);
  expected.fill(0, offset, offset + length);
  return expected;
}

describe('memfd.punchHole', () => {
  it('frees the pages of the range: reads return zeros there, the size and the bytes around it stay', async () => {
    const { fd, bytes } = filledMemfd();
    expect(fs.fstatSync(fd).blocks * BLOCK).toBe(SIZE);
    memfd.punchHoleSync(fd, 2 * PAGE, 3 * PAGE);
    expect(fs.fstatSync(fd).blocks * BLOCK).toBe(SIZE - 3 * PAGE);
    await memfd.punchHole(fd, 8 * PAGE, PAGE);
    expect(fs.fstatSync(fd).blocks * BLOCK).toBe(SIZE - 4 * PAGE);
    expect(fs.fstatSync(fd).size).toBe(SIZE);
    expect(contents(fd).equals(withHole(withHole(bytes, 2 * PAGE, 3 * PAGE), 8 * PAGE, PAGE))).toBe(true);
  });

  it('zeroes the partial pages at the ends of an unaligned range and frees only whole pages', () => {
    const { fd, bytes } = filledMemfd();
    memfd.punchHoleSync(fd, PAGE + 100, 2 * PAGE);
    expect(fs.fstatSync(fd).blocks * BLOCK).toBe(SIZE - PAGE);
    expect(contents(fd).equals(withHole(bytes, PAGE + 100, 2 * PAGE))).toBe(true);
  });

  it('keeps the size when the range runs past the end of the file', () => {
    const { fd, bytes } = filledMemfd();
    memfd.punchHoleSync(fd, SIZE - PAGE, 10 * PAGE);
    expect(fs.fstatSync(fd).size).toBe(SIZE);
    expect(contents(fd).equals(withHole(bytes, SIZE - PAGE, PAGE))).toBe(true);
  });

  it('refuses a memfd sealed against writes: FileFrozenError (EPERM) naming the seal, in both forms', async () => {
    const { fd, bytes } = filledMemfd({ allowSealing: true });
    memfd.addSealsSync(fd, memfd.SEAL_WRITE);
    const expected = {
      name: 'FileFrozenError',
      code: 'EPERM',
      errno: -ERRNO.EPERM,
      syscall: 'fallocate',
      operation: 'memfd.punchHole',
      fd,
      message: `EPERM: the pages of the file of fd ${fd} are frozen: no hole can be punched, fallocate. It carries SEAL_WRITE or SEAL_FUTURE_WRITE, which forbid punching holes`,
    };
    expect(() => memfd.punchHoleSync(fd, 0, PAGE)).toThrow(expect.objectContaining(expected));
    await expect(memfd.punchHole(fd, 0, PAGE)).rejects.toThrow(expect.objectContaining(expected));
    await expect(memfd.punchHole(fd, 0, PAGE)).rejects.toBeInstanceOf(lu.FileFrozenError);
    expect(contents(fd).equals(bytes)).toBe(true);
  });

  it('refuses an fd not open for writing: BadFileDescriptorError (EBADF) saying so', () => {
    const { fd } = filledMemfd();
    const readOnly = fs.openSync(`/proc/self/fd/${fd}`, 'r');
    opened.push(readOnly);
    expect(() => memfd.punchHoleSync(readOnly, 0, PAGE)).toThrow(
      expect.objectContaining({ name: 'BadFileDescriptorError', code: 'EBADF', message: `EBADF: fd ${readOnly} is not open for writing, fallocate` }),
    );
  });

  describe('arguments are refused before any syscall, and nothing leaks', () => {
    // A closed fd: were the kernel asked, it would answer EBADF.
    const closedFd = (): number => {
      const fd = memfd.createSync('closed');
      fs.closeSync(fd);
      return fd;
    };

    it.each([
      ['fd', () => ['3' as unknown as number, 0, PAGE] as const, 'ERR_INVALID_ARG_TYPE', TypeError],
      ['fd', () => [-1, 0, PAGE] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['offset', (fd: number) => [fd, 0n as unknown as number, PAGE] as const, 'ERR_INVALID_ARG_TYPE', TypeError],
      ['offset', (fd: number) => [fd, -1, PAGE] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['offset', (fd: number) => [fd, 1.5, PAGE] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['offset', (fd: number) => [fd, NaN, PAGE] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['offset', (fd: number) => [fd, 2 ** 53, PAGE] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['length', (fd: number) => [fd, 0, undefined as unknown as number] as const, 'ERR_INVALID_ARG_TYPE', TypeError],
      ['length', (fd: number) => [fd, 0, 0] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['length', (fd: number) => [fd, 0, -PAGE] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['length', (fd: number) => [fd, 0, Infinity] as const, 'ERR_OUT_OF_RANGE', RangeError],
      ['length', (fd: number) => [fd, Number.MAX_SAFE_INTEGER, 1] as const, 'ERR_OUT_OF_RANGE', RangeError],
    ])('a bad %s: %s', async (name, args, code, type) => {
      const [fd, offset, length] = args(closedFd());
      await expectNoFdLeak(async () => {
        expect(() => memfd.punchHoleSync(fd, offset, length)).toThrow(type);
        expect(() => memfd.punchHoleSync(fd, offset, length)).toThrow(expect.objectContaining({ code, message: expect.stringContaining(`"${name}"`) }));
        await expect(memfd.punchHole(fd, offset, length)).rejects.toThrow(expect.objectContaining({ code }));
      });
    });

    it('the addon refuses offsets its C type cannot hold, for a caller past the TypeScript layer', () => {
      const addon = nodeGypBuild(path.resolve(__dirname, '..')) as { punchHole(fd: number, offset: bigint, length: bigint): number };
      const fd = closedFd();
      expect(() => addon.punchHole(fd, 2n ** 63n, 1n)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect(() => addon.punchHole(fd, 0n, -1n)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect(() => addon.punchHole(fd, 0 as unknown as bigint, 1n)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    });
  });
});

describe('telling a hugetlb memfd apart (for the refusal of its preserve)', () => {
  const MFD_CLOEXEC = 0x1;
  const MFD_HUGETLB = 0x4;

  it('is true for an MFD_HUGETLB memfd, false for a plain memfd, a socket and a closed fd', () => {
    const addon = nodeGypBuild(path.resolve(__dirname, '..')) as { memfdCreate(name: string, flags: number): number };
    const huge = addon.memfdCreate('huge', MFD_CLOEXEC | MFD_HUGETLB);
    opened.push(huge);
    const plain = memfd.createSync('plain');
    opened.push(plain);
    expect(isHugetlbFile(huge)).toBe(true);
    expect(isHugetlbFile(plain)).toBe(false);
    const sockets = lu.socketPair();
    opened.push(...sockets);
    expect(isHugetlbFile(sockets[0])).toBe(false);
    const closed = memfd.createSync('closed');
    fs.closeSync(closed);
    expect(isHugetlbFile(closed)).toBe(false);
  });
});
