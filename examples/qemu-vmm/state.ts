/**
 * The state memfd's layout: QEMU's migration stream from offset 0, then a
 * trailer of ours that says how long the stream is, its SHA-256, and what
 * the guest looked like when it stopped. QEMU reads the stream up to its
 * end marker and never the trailer; the orchestrator reads the trailer
 * first, so that a memfd cut short is found before QEMU reads a byte.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { StateTruncatedError } from './errors.js';
import type { SaveMethod } from './qemu.js';

/** What the trailer records. */
export interface StateTrailer {
  /** Bytes of QEMU's stream, from offset 0. */
  stateBytes: number;
  /** SHA-256 of those bytes. */
  sha256: string;
  /** How RAM was kept out of the stream (the loading QEMU must do the same). */
  method: SaveMethod;
  /** The QEMU that saved it. */
  qemu: string;
  /** The RAM memfd's size. */
  ramBytes: number;
  /** The guest's counter when it stopped. */
  countAtStop: number;
  /** The guest's boot count when it stopped. */
  boots: number;
  /** SHA-256 of the RAM the guest never touches (taken before it first ran). */
  untouchedSha256: string;
}

const MAGIC = Buffer.from('LUVMSTAT');
/** The largest trailer read: a trailer claiming more is damage, not a reason to allocate. */
const MAX_TRAILER_BYTES = 4096;
const TAIL_BYTES = 4 + MAGIC.length;

/** SHA-256 of the first `length` bytes of `fd`. */
export function digestPrefix(fd: number, length: number): string {
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(1 << 20);
  for (let done = 0; done < length; ) {
    const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, length - done), done);
    if (n === 0) break;
    hash.update(chunk.subarray(0, n));
    done += n;
  }
  return hash.digest('hex');
}

/** Appends the trailer after the stream (at `trailer.stateBytes`). */
export function writeTrailer(fd: number, trailer: StateTrailer): void {
  const json = Buffer.from(JSON.stringify(trailer));
  const tail = Buffer.alloc(TAIL_BYTES);
  tail.writeUInt32LE(json.length, 0);
  MAGIC.copy(tail, 4);
  const bytes = Buffer.concat([json, tail]);
  fs.writeSync(fd, bytes, 0, bytes.length, trailer.stateBytes);
}

/**
 * Reads and checks the trailer: present, consistent with the memfd's size,
 * and the stream's SHA-256 as recorded.
 * @throws {@link StateTruncatedError} otherwise.
 */
export function readTrailer(fd: number): StateTrailer {
  const size = fs.fstatSync(fd).size;
  if (size < TAIL_BYTES) throw new StateTruncatedError(`${size} bytes, too small to hold even the trailer`);
  const tail = Buffer.alloc(TAIL_BYTES);
  fs.readSync(fd, tail, 0, TAIL_BYTES, size - TAIL_BYTES);
  if (!tail.subarray(4).equals(MAGIC)) throw new StateTruncatedError(`${size} bytes without the trailer at its end (cut short, or not a saved state)`);
  const length = tail.readUInt32LE(0);
  if (length > MAX_TRAILER_BYTES || length + TAIL_BYTES > size) throw new StateTruncatedError(`a trailer claiming ${length} bytes in ${size}`);
  const json = Buffer.alloc(length);
  fs.readSync(fd, json, 0, length, size - TAIL_BYTES - length);
  let trailer: StateTrailer;
  try {
    trailer = JSON.parse(json.toString('utf8')) as StateTrailer;
  } catch {
    throw new StateTruncatedError('a trailer that is not JSON');
  }
  if (!Number.isSafeInteger(trailer.stateBytes) || trailer.stateBytes + length + TAIL_BYTES !== size) {
    throw new StateTruncatedError(`${size} bytes, but the trailer says ${String(trailer.stateBytes)} bytes of state before it`);
  }
  if (digestPrefix(fd, trailer.stateBytes) !== trailer.sha256) throw new StateTruncatedError('the state does not match its SHA-256');
  return trailer;
}
