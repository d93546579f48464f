/**
 * A writer of newc ("070701") cpio archives, the format the kernel unpacks as
 * an initramfs. It runs on the host (to build the guest image) and inside the
 * guest (to rebuild the initrd for the next kexec), so it needs nothing but
 * Node: no cpio tool.
 *
 * Output goes to a sink function chunk by chunk, so multi-hundred-megabyte
 * members (node itself, or a whole archive stored as a file) stream from disk
 * instead of sitting in memory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Receives the archive's bytes in order. */
export type CpioSink = (chunk: Uint8Array) => void;

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** newc stores sizes in 8 hex digits. */
const MAX_MEMBER_SIZE = 0xffffffff;
const COPY_CHUNK = 8 * 1024 * 1024;
const ZEROS = new Uint8Array(512);

/** One member's header fields that vary; the rest are fixed. */
interface Header {
  readonly name: string;
  readonly mode: number;
  readonly size: number;
  readonly nlink: number;
  readonly rdevMajor?: number;
  readonly rdevMinor?: number;
}

/** Writes a sink's output to an open file descriptor, synchronously. */
export function fdSink(fd: number): CpioSink {
  return (chunk) => {
    let offset = 0;
    while (offset < chunk.length) {
      offset += fs.writeSync(fd, chunk, offset, chunk.length - offset);
    }
  };
}

/**
 * Builds one newc archive. Member paths are written relative ("usr/bin/node"),
 * a leading "/" is dropped; parent directories are added automatically the
 * first time a path under them appears.
 */
export class CpioWriter {
  readonly #sink: CpioSink;
  readonly #dirs = new Set<string>(['.', '']);
  #ino = 1;
  #offset = 0;
  #finished = false;

  /** @param sink receives the archive's bytes in order. */
  constructor(sink: CpioSink) {
    this.#sink = sink;
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    return this.#offset;
  }

  /** Adds a directory (and its missing parents). */
  directory(name: string, mode = 0o755): this {
    const rel = normalize(name);
    if (this.#dirs.has(rel)) return this;
    this.#parents(rel);
    this.#dirs.add(rel);
    this.#header({ name: rel, mode: S_IFDIR | mode, size: 0, nlink: 2 });
    return this;
  }

  /** Adds a regular file holding `data`. */
  file(name: string, data: Uint8Array | string, mode = 0o644): this {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const rel = this.#memberPath(name);
    this.#header({ name: rel, mode: S_IFREG | mode, size: bytes.length, nlink: 1 });
    this.#emit(bytes);
    this.#pad();
    return this;
  }

  /**
   * Adds a regular file whose contents are read from `source` on disk, in
   * chunks. `mode` defaults to the source's permission bits.
   */
  fileFrom(name: string, source: string, mode?: number): this {
    const fd = fs.openSync(source, 'r');
    try {
      const stat = fs.fstatSync(fd);
      if (stat.size > MAX_MEMBER_SIZE) throw new RangeError(`${source} is too large for a newc archive`);
      const rel = this.#memberPath(name);
      this.#header({ name: rel, mode: S_IFREG | (mode ?? stat.mode & 0o7777), size: stat.size, nlink: 1 });
      this.#copy(fd, stat.size, source);
      this.#pad();
    } finally {
      fs.closeSync(fd);
    }
    return this;
  }

  /** Adds a symbolic link `name` → `target`. */
  symlink(name: string, target: string): this {
    const rel = this.#memberPath(name);
    const bytes = Buffer.from(target);
    this.#header({ name: rel, mode: S_IFLNK | 0o777, size: bytes.length, nlink: 1 });
    this.#emit(bytes);
    this.#pad();
    return this;
  }

  /** Adds a character device node, e.g. /dev/console (5, 1). */
  charDevice(name: string, major: number, minor: number, mode = 0o600): this {
    const rel = this.#memberPath(name);
    this.#header({ name: rel, mode: S_IFCHR | mode, size: 0, nlink: 1, rdevMajor: major, rdevMinor: minor });
    return this;
  }

  /**
   * Writes the trailer and pads the archive to a 512-byte boundary (the
   * kernel skips zero padding between concatenated archives). Returns the
   * archive's total size.
   */
  finish(): number {
    if (this.#finished) return this.#offset;
    this.#header({ name: 'TRAILER!!!', mode: 0, size: 0, nlink: 1 });
    const rest = this.#offset % 512;
    if (rest !== 0) this.#emit(ZEROS.subarray(0, 512 - rest));
    this.#finished = true;
    return this.#offset;
  }

  #memberPath(name: string): string {
    const rel = normalize(name);
    this.#parents(rel);
    return rel;
  }

  #parents(rel: string): void {
    const parent = path.posix.dirname(rel);
    if (!this.#dirs.has(parent)) this.directory(parent);
  }

  #header(h: Header): void {
    if (this.#finished) throw new Error('cpio archive already finished');
    const name = Buffer.from(`${h.name}\0`);
    const fields = [
      this.#ino++, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rdevMajor ?? 0, h.rdevMinor ?? 0, name.length, 0,
    ];
    const text = '070701' + fields.map((v) => v.toString(16).padStart(8, '0')).join('');
    this.#emit(Buffer.from(text, 'latin1'));
    this.#emit(name);
    this.#pad();
  }

  #copy(fd: number, size: number, source: string): void {
    const buffer = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(size, 1)));
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, buffer, 0, Math.min(buffer.length, size - done), done);
      if (n === 0) throw new Error(`${source} shrank while it was being archived`);
      this.#emit(buffer.subarray(0, n));
      done += n;
    }
  }

  /** newc aligns every header and every file body to 4 bytes. */
  #pad(): void {
    const rest = this.#offset % 4;
    if (rest !== 0) this.#emit(ZEROS.subarray(0, 4 - rest));
  }

  #emit(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#sink(chunk);
    this.#offset += chunk.length;
  }
}

/** "/usr/bin/node" → "usr/bin/node"; rejects paths that climb out. */
function normalize(name: string): string {
  const rel = path.posix.normalize(name).replace(/^\/+/, '').replace(/\/+$/, '');
  if (rel === '' || rel === '.' || rel.startsWith('../') || rel === '..') {
    throw new Error(`bad archive path: ${JSON.stringify(name)}`);
  }
  return rel;
}
