/**
 * Helpers the kernel scenarios share: filling and hashing memfds, and the
 * file position, which Node cannot lseek but /proc reports. (The library's
 * addon, for what its API does not offer, is liveupdate-conformance's
 * libraryBinding.)
 */
import { createHash, randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import type { JsonValue } from 'liveupdate-conformance';

export { sha256At } from 'liveupdate-conformance';

const CHUNK = 1024 * 1024;

/** Writes `size` random bytes at offset 0 with positional writes (the file position stays put); returns their SHA-256. */
export function fillRandom(fd: number, size: number): string {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(CHUNK);
  for (let offset = 0; offset < size; offset += CHUNK) {
    const chunk = buffer.subarray(0, Math.min(CHUNK, size - offset));
    randomFillSync(chunk);
    writeAll(fd, chunk, offset);
    hash.update(chunk);
  }
  return hash.digest('hex');
}

/** Moves the file position forward by reading `count` bytes from it. */
export function advancePosition(fd: number, count: number): void {
  const buffer = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(count, 1)));
  for (let done = 0; done < count; ) {
    const n = fs.readSync(fd, buffer, 0, Math.min(buffer.length, count - done), null);
    if (n === 0) throw new Error(`end of file after ${done} of ${count} bytes`);
    done += n;
  }
}

/** The file position of `fd`, from /proc/self/fdinfo. */
export function filePosition(fd: number): number {
  const match = /^pos:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (match?.[1] === undefined) throw new Error(`no pos in /proc/self/fdinfo/${fd}`);
  return Number(match[1]);
}

function writeAll(fd: number, chunk: Buffer, offset: number): void {
  for (let done = 0; done < chunk.length; ) {
    done += fs.writeSync(fd, chunk, done, chunk.length - done, offset + done);
  }
}

/** A typed value (an interface, which has no index signature) as the JSON the guest records. */
export function asJson(value: unknown): JsonValue {
  return JSON.parse(JSON.stringify(value ?? null)) as JsonValue;
}
