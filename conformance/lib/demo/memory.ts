/**
 * The demo's guest memory: what a VMM-like client writes into its memfd
 * before the update and checks after it. Page 0 holds a running counter
 * (and its bitwise complement, so a torn or stale value shows); every other
 * page starts with a line naming its VM and page number, followed by a byte
 * ramp shifted by the VM's seed and the page number, so a page that moved,
 * a page of the other VM or a zeroed page all fail the comparison.
 */
import * as fs from 'node:fs';

/** Page size of the layout (the pattern's unit, not necessarily the kernel's). */
export const PAGE = 4096;
/** Bytes written or compared per system call. */
const CHUNK = 1 << 20;
/** A ramp long enough to take any 4 KiB window starting at a shift below 256. */
const RAMP = Buffer.from(Array.from({ length: PAGE + 256 }, (_, i) => i & 0xff));

/** The counter as read back from page 0. */
export interface Counter {
  readonly value: bigint;
  /** The complement stored beside it matches. */
  readonly intact: boolean;
}

/** The result of a byte-for-byte comparison. */
export interface Comparison {
  readonly bytes: number;
  /** Offset of the first byte that differs, or -1. */
  readonly firstMismatch: number;
  /** How many 1 MiB chunks differ somewhere. */
  readonly badChunks: number;
}

/** A stable one-byte seed per VM name, so each VM's pattern is its own. */
function seedOf(vm: string): number {
  let seed = 0;
  for (const byte of Buffer.from(vm)) seed = (seed * 31 + byte) & 0xff;
  return seed;
}

/** The expected bytes of the chunk at `offset` (a multiple of PAGE) of `vm`'s memory. Page 0 reads as zeros past its counter. */
function expectedChunk(vm: string, offset: number, length: number, into: Buffer): Buffer {
  const seed = seedOf(vm);
  const out = into.subarray(0, length);
  for (let at = 0; at < length; at += PAGE) {
    const page = (offset + at) / PAGE;
    if (page === 0) {
      out.fill(0, at, at + PAGE);
      out.write(`${vm}'s guest memory: counter at 0 (u64) and its complement at 8\n`, at + 16, 'latin1');
      continue;
    }
    RAMP.copy(out, at, (seed + page) & 0xff, ((seed + page) & 0xff) + PAGE);
    out.write(`${vm} page ${String(page).padStart(8, '0')}\n`, at, 'latin1');
  }
  return out;
}

/** Fills `fd` with `vm`'s pattern, `bytes` long (a multiple of PAGE); the counter starts at 0. */
export function fill(fd: number, vm: string, bytes: number): void {
  const buffer = Buffer.alloc(CHUNK);
  for (let offset = 0; offset < bytes; offset += CHUNK) {
    const length = Math.min(CHUNK, bytes - offset);
    fs.writeSync(fd, expectedChunk(vm, offset, length, buffer), 0, length, offset);
  }
}

/** Compares all of `fd` but the counter with `vm`'s pattern, byte for byte. */
export function compare(fd: number, vm: string, bytes: number): Comparison {
  const expected = Buffer.alloc(CHUNK);
  const actual = Buffer.alloc(CHUNK);
  let firstMismatch = -1;
  let badChunks = 0;
  for (let offset = 0; offset < bytes; offset += CHUNK) {
    const length = Math.min(CHUNK, bytes - offset);
    const want = expectedChunk(vm, offset, length, expected);
    const got = actual.subarray(0, fs.readSync(fd, actual, 0, length, offset));
    // The counter (16 bytes at 0) changes by design; compare it as the other bytes would read if it were zero.
    if (offset === 0) got.fill(0, 0, Math.min(16, got.length));
    if (got.length === length && got.equals(want)) continue;
    badChunks++;
    if (firstMismatch < 0) {
      let i = 0;
      while (i < got.length && got[i] === want[i]) i++;
      firstMismatch = offset + i;
    }
  }
  return { bytes, firstMismatch, badChunks };
}

/** Reads the counter from page 0. */
export function readCounter(fd: number): Counter {
  const bytes = Buffer.alloc(16);
  fs.readSync(fd, bytes, 0, 16, 0);
  const value = bytes.readBigUInt64LE(0);
  return { value, intact: (value ^ bytes.readBigUInt64LE(8)) === 0xffff_ffff_ffff_ffffn };
}

/** Writes the counter and its complement to page 0 in one write. */
export function writeCounter(fd: number, value: bigint): void {
  const bytes = Buffer.alloc(16);
  bytes.writeBigUInt64LE(value, 0);
  bytes.writeBigUInt64LE(value ^ 0xffff_ffff_ffff_ffffn, 8);
  fs.writeSync(fd, bytes, 0, 16, 0);
}
