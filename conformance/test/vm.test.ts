/**
 * Host tests of the kernel test bed's pure parts: the cpio writer (read back
 * by an independent newc parser), the record protocol, the stage command
 * line, and how kernels are found.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CpioWriter } from '../lib/vm/cpio.js';
import { nextCmdline, stageFromCmdline } from '../lib/vm/guest.js';
import { buildGuestImage, mke2fsPath } from '../lib/vm/initramfs.js';
import { compareVersions, findKernels, kernelInputsHash, kernelRelease, kernelsCanMountSystemDisk } from '../lib/vm/kernels.js';
import { formatRecord, parseRecord } from '../lib/vm/protocol.js';

const ROOT = path.resolve(__dirname, '..');

interface Entry {
  name: string;
  mode: number;
  nlink: number;
  rdev: [number, number];
  data: Buffer;
}

/** A newc reader written from the format's description, not from the writer. */
function readNewc(archive: Buffer): { entries: Entry[]; end: number } {
  const entries: Entry[] = [];
  let at = 0;
  const align = (n: number): number => (n + 3) & ~3;
  for (;;) {
    expect(archive.toString('latin1', at, at + 6)).toBe('070701');
    const field = (i: number): number => parseInt(archive.toString('latin1', at + 6 + i * 8, at + 14 + i * 8), 16);
    const [mode, nlink, size, rmaj, rmin, namesize] = [field(1), field(4), field(6), field(9), field(10), field(11)];
    const name = archive.toString('utf8', at + 110, at + 110 + namesize - 1);
    expect(archive[at + 110 + namesize - 1]).toBe(0);
    const dataAt = align(at + 110 + namesize);
    at = align(dataAt + size);
    if (name === 'TRAILER!!!') return { entries, end: at };
    entries.push({ name, mode, nlink, rdev: [rmaj, rmin], data: archive.subarray(dataAt, dataAt + size) });
  }
}

function build(write: (w: CpioWriter) => void): Buffer {
  const chunks: Uint8Array[] = [];
  const w = new CpioWriter((c) => void chunks.push(Buffer.from(c)));
  write(w);
  const size = w.finish();
  const archive = Buffer.concat(chunks);
  expect(archive.length).toBe(size);
  return archive;
}

describe('CpioWriter', () => {
  it('writes files, parents, symlinks and device nodes the newc way, padded to 512 bytes', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpio-'));
    const source = path.join(dir, 'blob');
    fs.writeFileSync(source, Buffer.alloc(10_001, 7), { mode: 0o751 });
    const archive = build((w) =>
      w.file('/a/b/c.txt', 'hello').symlink('a/link', 'b/c.txt').charDevice('/dev/console', 5, 1).fileFrom('/bin/blob', source).directory('/a'),
    );
    fs.rmSync(dir, { recursive: true });
    expect(archive.length % 512).toBe(0);
    const { entries, end } = readNewc(archive);
    expect(archive.subarray(end).every((b) => b === 0)).toBe(true);
    expect(entries.map((e) => e.name)).toEqual(['a', 'a/b', 'a/b/c.txt', 'a/link', 'dev', 'dev/console', 'bin', 'bin/blob']);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('a')?.mode).toBe(0o040755);
    expect(byName.get('a/b/c.txt')?.data.toString()).toBe('hello');
    expect(byName.get('a/link')?.mode).toBe(0o120777);
    expect(byName.get('a/link')?.data.toString()).toBe('b/c.txt');
    expect(byName.get('dev/console')?.mode).toBe(0o020600);
    expect(byName.get('dev/console')?.rdev).toEqual([5, 1]);
    expect(byName.get('bin/blob')?.mode).toBe(0o100751);
    expect(byName.get('bin/blob')?.data.equals(Buffer.alloc(10_001, 7))).toBe(true);
  });

  it('rejects paths that leave the archive and writes after finish', () => {
    expect(() => build((w) => w.file('../etc/passwd', 'x'))).toThrow(/bad archive path/);
    const w = new CpioWriter(() => {});
    w.finish();
    expect(() => w.file('x', 'y')).toThrow(/finished/);
  });
});

describe('records', () => {
  it('round-trips through a console line, carriage return and noise included', () => {
    const record = { t: 'end', stage: 2, ok: true } as const;
    expect(parseRecord(`garbage ${formatRecord(record).replace('\n', '\r')}`)).toEqual(record);
  });

  it('ignores lines that are not records or are damaged', () => {
    expect(parseRecord('[    1.0] kernel line')).toBeUndefined();
    expect(parseRecord('@@LU {"t":"end","sta')).toBeUndefined();
    expect(parseRecord('@@LU [1,2]')).toBeUndefined();
  });
});

describe('stage command line', () => {
  it('reads lu.stage, defaulting to 1', () => {
    expect(stageFromCmdline('console=ttyS0 lu.stage=3 quiet\n')).toBe(3);
    expect(stageFromCmdline('console=ttyS0 xlu.stage=3')).toBe(1);
    expect(stageFromCmdline('')).toBe(1);
  });

  it('replaces lu.stage for the next kernel and keeps the rest', () => {
    expect(nextCmdline('console=ttyS0 lu.stage=1 liveupdate=on\n', 2)).toBe('console=ttyS0 liveupdate=on lu.stage=2');
    expect(nextCmdline('console=ttyS0', 2)).toBe('console=ttyS0 lu.stage=2');
    // A parameter of one stage only reaches that stage and leaves with it.
    const params = ['', 'luo_test.register=0'];
    expect(nextCmdline('console=ttyS0 lu.stage=1', 2, params)).toBe('console=ttyS0 luo_test.register=0 lu.stage=2');
    expect(nextCmdline('console=ttyS0 luo_test.register=0 lu.stage=2', 3, params)).toBe('console=ttyS0 lu.stage=3');
  });
});

describe('kernels', () => {
  const dirs: string[] = [];
  const tmp = (): string => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-kernels-'));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  /** A file with just enough of a bzImage setup header to carry a release. */
  function fakeBzImage(file: string, release: string): void {
    const image = Buffer.alloc(0x600);
    image.write('HdrS', 0x202, 'latin1');
    image.writeUInt16LE(0x400 - 0x200, 0x20e);
    image.write(`${release} (builder@host) #1 SMP\0`, 0x400, 'latin1');
    fs.writeFileSync(file, image);
  }

  it('reads the release from a bzImage header, and nothing from other files', () => {
    const dir = tmp();
    fakeBzImage(path.join(dir, 'bzImage'), '7.2.13');
    fs.writeFileSync(path.join(dir, 'other'), Buffer.alloc(0x600));
    expect(kernelRelease(path.join(dir, 'bzImage'))).toBe('7.2.13');
    expect(kernelRelease(path.join(dir, 'other'))).toBeUndefined();
  });

  it('takes LIVEUPDATE_KERNEL first, ":"-separated, and fails on a missing file', () => {
    const dir = tmp();
    fakeBzImage(path.join(dir, 'a'), '7.2.1');
    fakeBzImage(path.join(dir, 'b'), '7.3.1');
    const found = findKernels({ LIVEUPDATE_KERNEL: `${dir}/a:${dir}/b` });
    expect(found.map((k) => [k.release, k.source])).toEqual([['7.2.1', 'LIVEUPDATE_KERNEL'], ['7.3.1', 'LIVEUPDATE_KERNEL']]);
    expect(() => findKernels({ LIVEUPDATE_KERNEL: `${dir}/missing` })).toThrow(/missing file/);
  });

  it('computes the cache key as vm/build-kernel.sh does', () => {
    const script = execFileSync('bash', [path.join(ROOT, 'vm', 'build-kernel.sh'), '--hash'], { encoding: 'utf8' });
    expect(script.trim()).toBe(kernelInputsHash());
  });

  it('takes cached images of the current kernel inputs only, the newest of each series', () => {
    const cache = tmp();
    const hash = kernelInputsHash();
    expect(hash).toMatch(/^[0-9a-f]{12}$/);
    const add = (dir: string, version: string, release: string): void => {
      const d = path.join(cache, 'kernels', dir);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'version'), `${version}\n`);
      fakeBzImage(path.join(d, 'bzImage'), release);
    };
    add(`7.2.9-1-${hash}`, '7.2.9-1', '7.2.9');
    add(`7.2.13-1-${hash}`, '7.2.13-1', '7.2.13');
    add(`7.3.4-1-${hash}`, '7.3.4-1', '7.3.4');
    add('7.4.0-1-000000000000', '7.4.0-1', '7.4.0'); // an older fragment
    expect(findKernels({ LIVEUPDATE_CACHE: cache }).map((k) => k.release)).toEqual(['7.2.13', '7.3.4']);
    expect(findKernels({ LIVEUPDATE_CACHE: tmp() })).toEqual([]);
  });

  it('compares versions numerically', () => {
    expect(compareVersions('7.2.13-1', '7.2.9-1')).toBeGreaterThan(0);
    expect(compareVersions('7.10', '7.9')).toBeGreaterThan(0);
    expect(compareVersions('7.2', '7.2')).toBe(0);
  });

  it('takes a system disk only when the config beside every image has virtio-blk and ext2 built in', () => {
    const kernel = (config: string | undefined): string => {
      const dir = tmp();
      fakeBzImage(path.join(dir, 'bzImage'), '7.2.13');
      if (config !== undefined) fs.writeFileSync(path.join(dir, 'config'), config);
      return path.join(dir, 'bzImage');
    };
    const able = kernel('CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\n# comment\nCONFIG_EXT2_FS=y\n');
    expect(kernelsCanMountSystemDisk([able])).toBe(true);
    expect(kernelsCanMountSystemDisk([able, kernel(undefined)])).toBe(false);
    expect(kernelsCanMountSystemDisk([kernel('CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_EXT2_FS=y\n')])).toBe(false);
    expect(kernelsCanMountSystemDisk([kernel('CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\n# CONFIG_EXT2_FS is not set\n')])).toBe(false);
  });
});

describe('the system disk', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  /** `debugfs -R 'stat PATH'` of an ext2 image: the file's size, read without mounting anything. */
  function sizeOnDisk(disk: string, file: string): number {
    const debugfs = path.join(path.dirname(mke2fsPath() ?? '/usr/sbin/mke2fs'), 'debugfs');
    const out = execFileSync(debugfs, ['-R', `stat ${file}`, disk], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const match = /Size: (\d+)/.exec(out);
    if (match?.[1] === undefined) throw new Error(`no ${file} on ${disk}: ${out}`);
    return Number(match[1]);
  }

  it('carries node, its libraries and the kernels, and leaves the initrd the package and a static /init', () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-disk-'));
    dirs.push(cache);
    const kernel = path.join(cache, 'bzImage');
    fs.writeFileSync(kernel, Buffer.alloc(4096, 1));
    const image = buildGuestImage({ kernels: [kernel], scenarios: [], cacheDir: cache, systemDisk: true });
    expect(image.disk).toBeDefined();
    const disk = image.disk as string;
    // node is stripped on the way (its size changes); the dynamic loader is copied as it is.
    expect(sizeOnDisk(disk, '/usr/bin/node')).toBeGreaterThan(0);
    const loader = '/lib64/ld-linux-x86-64.so.2';
    expect(sizeOnDisk(disk, loader)).toBe(fs.statSync(fs.realpathSync(loader)).size);
    expect(sizeOnDisk(disk, '/boot/kernel-0.bzImage')).toBe(4096);
    const names = readNewc(fs.readFileSync(image.initrd)).entries.map((e) => e.name);
    expect(names).toContain('lu/node_modules/liveupdate/package.json');
    expect(names).toContain('init.js');
    expect(names.filter((n) => /^(usr|lib|lib64|boot)\/./.test(n))).toEqual([]);
    const init = readNewc(fs.readFileSync(image.initrd)).entries.find((e) => e.name === 'init');
    expect(init?.data.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    // The same inputs: both from the cache.
    const again = buildGuestImage({ kernels: [kernel], scenarios: [], cacheDir: cache, systemDisk: true });
    expect([again.cached, again.disk]).toEqual([true, disk]);
  }, 60_000);
});
