/**
 * Where the LUO kernels come from: `LIVEUPDATE_KERNEL` (one image, or several
 * separated by ":") if set, else the images `npm run vm:kernel`
 * (vm/build-kernel.sh) cached under `<cache>/kernels/<version>-<inputs hash>/`.
 * Only cached images built from the current inputs (vm/kernel.config and the
 * test file handler in vm/luo-test-handler/) count, and of each series
 * (7.2, 7.3, ...) only the newest.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cacheDir, packageRoot } from './initramfs.js';

/** A kernel image to boot. */
export interface KernelImage {
  /** Host path of the bzImage. */
  readonly path: string;
  /** The release the image reports (e.g. "7.2.13"), or the file name if it has none. */
  readonly release: string;
  /** Where it was found. */
  readonly source: 'LIVEUPDATE_KERNEL' | 'cache';
}

/** What to tell someone who has no kernel: one line naming the commands that fix it. */
export const NO_KERNEL_HELP =
  'no LUO kernel built: run `npm run vm:kernel` (about 10 minutes per kernel on 2 cores, cached in ~/.cache/liveupdate) ' +
  'or `bash .ci/run`; LIVEUPDATE_KERNEL=/path/bzImage uses your own, LIVEUPDATE_SKIP_KERNEL_TESTS=1 skips the kernel tests';

/** The kernels to test with; empty if none is found (see {@link NO_KERNEL_HELP}). */
export function findKernels(env: NodeJS.ProcessEnv = process.env): KernelImage[] {
  const override = env['LIVEUPDATE_KERNEL'];
  if (override !== undefined && override !== '') {
    return override.split(':').filter(Boolean).map((p) => {
      if (!fs.existsSync(p)) throw new Error(`LIVEUPDATE_KERNEL names a missing file: ${p}`);
      return { path: path.resolve(p), release: kernelRelease(p) ?? path.basename(p), source: 'LIVEUPDATE_KERNEL' as const };
    });
  }
  return cachedKernels(path.join(env['LIVEUPDATE_CACHE'] ?? cacheDir(), 'kernels'));
}

/**
 * The hash vm/build-kernel.sh puts in cache directory names (its
 * `inputs_hash`): sha256 of vm/kernel.config followed by every file of
 * vm/luo-test-handler/ in byte order of their names, 12 hex digits.
 * Undefined when the package has no vm/kernel.config.
 */
export function kernelInputsHash(vmDir = path.join(packageRoot(), 'vm')): string | undefined {
  const fragment = path.join(vmDir, 'kernel.config');
  if (!fs.existsSync(fragment)) return undefined;
  const handler = path.join(vmDir, 'luo-test-handler');
  const names = fs.existsSync(handler) ? fs.readdirSync(handler).sort() : [];
  const hash = createHash('sha256').update(fs.readFileSync(fragment));
  for (const name of names) hash.update(fs.readFileSync(path.join(handler, name)));
  return hash.digest('hex').slice(0, 12);
}

/** Cached images of the current kernel inputs, newest per series, oldest series first. */
function cachedKernels(dir: string): KernelImage[] {
  if (!fs.existsSync(dir)) return [];
  const hash = kernelInputsHash();
  const bySeries = new Map<string, { image: KernelImage; version: string }>();
  for (const name of fs.readdirSync(dir)) {
    // Without the inputs (an unusual install), take every cached image.
    if (hash !== undefined && !name.endsWith(`-${hash}`)) continue;
    const image = path.join(dir, name, 'bzImage');
    const versionFile = path.join(dir, name, 'version');
    if (!fs.existsSync(image) || !fs.existsSync(versionFile)) continue;
    const version = fs.readFileSync(versionFile, 'utf8').trim();
    const release = kernelRelease(image) ?? version;
    const series = release.split('.').slice(0, 2).join('.');
    const known = bySeries.get(series);
    if (known === undefined || compareVersions(version, known.version) > 0) {
      bySeries.set(series, { image: { path: image, release, source: 'cache' }, version });
    }
  }
  return [...bySeries.values()].map((v) => v.image).sort((a, b) => compareVersions(a.release, b.release));
}

/**
 * The release in a bzImage's setup header (the `kernel_version` field at
 * 0x20e points at "7.2.13 (user@host) #1 ..."), or undefined if the file is
 * not a bzImage.
 */
export function kernelRelease(image: string): string | undefined {
  const fd = fs.openSync(image, 'r');
  try {
    const header = Buffer.alloc(0x400);
    fs.readSync(fd, header, 0, header.length, 0);
    if (header.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
    const text = Buffer.alloc(256);
    fs.readSync(fd, text, 0, text.length, header.readUInt16LE(0x20e) + 0x200);
    const release = text.toString('latin1').split(/[\s\0]/)[0];
    return release === undefined || release === '' ? undefined : release;
  } finally {
    fs.closeSync(fd);
  }
}

/** Compares dotted/dashed version strings numerically ("7.2.13-1" < "7.2.14"). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.\-+~]/);
  const pb = b.split(/[.\-+~]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const diff = Number.isNaN(nx) || Number.isNaN(ny) ? x.localeCompare(y) : nx - ny;
    if (diff !== 0) return diff;
  }
  return 0;
}

/** What a kernel must have built in to mount the guest's system disk (see initramfs.ts). */
const SYSTEM_DISK_OPTIONS = ['CONFIG_VIRTIO_PCI', 'CONFIG_VIRTIO_BLK', 'CONFIG_EXT2_FS'];

/**
 * Whether every one of `images` can mount the guest's system disk, judged by
 * the build config beside each image (`config`, as vm/build-kernel.sh leaves
 * it). An image without one (your own kernel) is taken not to: the guest
 * then carries everything in its initrd, which works on any LUO kernel.
 */
export function kernelsCanMountSystemDisk(images: readonly string[]): boolean {
  return images.every((image) => {
    let config: string;
    try {
      config = fs.readFileSync(path.join(path.dirname(fs.realpathSync(image)), 'config'), 'utf8');
    } catch {
      return false;
    }
    return SYSTEM_DISK_OPTIONS.every((option) => new RegExp(`^${option}=y$`, 'm').test(config));
  });
}

/** A kernel as Debian ships it, with its build config beside it. */
export interface DebianKernel {
  /** Host path of the image (`<cache>/kernels-debian/RELEASE/vmlinuz`). */
  readonly path: string;
  /** Its build config, beside it. */
  readonly config: string;
  /** Its release (`7.3.4+deb13-cloud-amd64`), from the image's header. */
  readonly release: string;
  /** Where a guest puts the two files, as Debian installs them: `/usr/lib/modules/RELEASE/`. */
  readonly guestFiles: Readonly<Record<string, string>>;
}

/**
 * Debian's own cloud kernel of `series` (default 7.3), built without LUO
 * (CONFIG_KEXEC_HANDOVER off): a real kernel for a preflight to refuse.
 * Fetched once by `vm/build-kernel.sh --debian-image` (about 15 MB through
 * the private apt root) and cached under `<cache>/kernels-debian/`.
 */
export function debianKernel(series = '7.3'): DebianKernel {
  const script = path.join(packageRoot(), 'vm', 'build-kernel.sh');
  const image = execFileSync('bash', [script, '--debian-image', series], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const release = kernelRelease(image);
  if (release === undefined) throw new Error(`${image} has no release in its setup header`);
  const config = path.join(path.dirname(image), 'config');
  const guest = `/usr/lib/modules/${release}`;
  return { path: image, config, release, guestFiles: { [`${guest}/vmlinuz`]: image, [`${guest}/config`]: config } };
}
