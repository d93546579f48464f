/**
 * The guest image: one initrd made of two concatenated cpio archives.
 * Archive A holds everything the guest runs: node and its shared libraries,
 * this package and liveupdate as built (with their addons), the scenarios, the kernel images and an `/init` that
 * starts the guest runner. The state archive after it holds what the cases
 * carry from one stage to the next.
 *
 * To kexec, the guest takes the initrd its kernel kept (`retain_initrd`
 * exposes it as /sys/firmware/initrd), appends a new state archive (a later
 * archive's file replaces an earlier one's), and hands that to
 * kexec_file_load: any number of stages works with one image. A copy of A
 * inside the image (A as a file in a second archive) would work too, but it
 * doubles the initrd, and kexec_file_load SHA-256-digests every byte of it
 * at load while purgatory verifies it again at the jump: under emulation that
 * doubled the time of every kexec.
 *
 * With kernels that can mount it (virtio-blk and ext2 built in, as the test
 * bed's own kernels are), node, its libraries and the kernel images go on a
 * read-only system disk instead (an ext2 image, attached as /dev/vda), and
 * /init is the static lu-init (vm/lu-init.c), which mounts it and starts
 * node: the initrd each kexec carries shrinks from about 95 MB to about
 * 3 MB, which saves seconds of copying, digesting and unpacking per kexec.
 *
 * Built only from what is installed (node, the package directory, its
 * runtime and peer dependencies), so an installed package can build a guest
 * without the repository or any dev dependency.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { CpioWriter, fdSink, type CpioSink } from './cpio.js';
import { kernelsCanMountSystemDisk } from './kernels.js';
import { compileC } from '../harness/compile.js';
import {
  GUEST_MANIFEST,
  GUEST_PACKAGE,
  GUEST_ROOT,
  GUEST_STATE,
  type CarriedState,
  type Manifest,
} from './protocol.js';

/** What goes into a guest image. */
export interface GuestImageOptions {
  /** Host paths of the kernel images, one per stage; the last one repeats for later stages. */
  readonly kernels: readonly string[];
  /** Host paths of compiled (JavaScript) scenario modules. */
  readonly scenarios: readonly string[];
  /** The package root to copy (default: the package this module belongs to). */
  readonly packageRoot?: string;
  /** The node binary to run in the guest (default: this process's). */
  readonly node?: string;
  /** RLIMIT_NOFILE in the guest (default 65536). */
  readonly nofile?: number;
  /**
   * gzip archive A (default false). Every kexec SHA-256-digests the whole
   * initrd twice (at load, and in purgatory before the jump), so a smaller
   * initrd loads faster; but the kernel's gunzip at every boot cost more than
   * that saved, measured under emulation.
   */
  readonly compress?: boolean;
  /**
   * Node, its libraries and the kernels on a system disk (see the top of
   * this file). Default: when every kernel's build config (the `config` file
   * beside its image, as `npm run vm:kernel` leaves it) has what it takes.
   */
  readonly systemDisk?: boolean;
  /** Where built images are cached (default: `<cache>/guest`, see {@link cacheDir}). */
  readonly cacheDir?: string;
  /** Extra files: guest path → host path (e.g. a helper program a scenario runs). */
  readonly files?: Readonly<Record<string, string>>;
  /**
   * Kernel parameters for one stage only (index 0 = stage 1), e.g. a boot
   * parameter the next kernel must see and the first must not.
   */
  readonly stageParams?: readonly string[];
}

/** A built guest image. */
export interface GuestImage {
  /** Host path of the initrd to boot (archive A and the first state archive). */
  readonly initrd: string;
  /** Size of archive A (everything but the state) in bytes. */
  readonly archiveBytes: number;
  /** Host path of the system disk (a raw ext2 image), when the image has one. */
  readonly disk?: string;
  /** The manifest written into the image. */
  readonly manifest: Manifest;
  /** Whether the image came from the cache. */
  readonly cached: boolean;
  /** Time taken to build (or find) it. */
  readonly ms: number;
}

/** One file of the guest image: where it goes and where it comes from. */
export interface Member {
  readonly guest: string;
  readonly kind: 'file' | 'symlink';
  /** Host path of a file; the link target of a symlink. */
  readonly source: string;
}

/** Bumped when the image layout changes, so old cache entries are not reused. */
const LAYOUT_VERSION = 3;
/** What to tell someone without mke2fs. */
export const MKE2FS_HELP = "mke2fs not found (it makes the guest's system disk): install e2fsprogs (`apt-get install e2fsprogs`)";
/** What goes on the system disk, by top-level guest directory; lu-init binds each of them. */
const SYSTEM_DISK_DIRS = ['/usr/', '/lib/', '/lib64/', '/boot/'];
/** How many built images the cache keeps (each is a few hundred MB). */
const CACHE_KEEP = 8;
/** Files up to this size enter the cache key by content. */
const HASH_CONTENT_LIMIT = 1024 * 1024;

/** The test bed's cache root: `$LIVEUPDATE_CACHE`, else ~/.cache/liveupdate. */
export function cacheDir(): string {
  return process.env['LIVEUPDATE_CACHE'] ?? path.join(os.homedir(), '.cache', 'liveupdate');
}

/** The root of the package this module is part of (dist/vm/.. /..). */
export function packageRoot(): string {
  return path.resolve(__dirname, '..', '..');
}

/** The root of the liveupdate package the test bed runs (the one `require('liveupdate')` finds). */
export function libraryRoot(): string {
  return path.dirname(require.resolve('liveupdate/package.json'));
}

/**
 * Builds (or reuses from the cache) the guest image for a run. Cached images
 * are keyed by the inputs' paths, sizes and modification times, so a rebuilt
 * package or kernel makes a new image.
 */
export function buildGuestImage(options: GuestImageOptions): GuestImage {
  const started = Date.now();
  if (options.kernels.length === 0) throw new Error('buildGuestImage: no kernel image given');
  const root = options.packageRoot ?? packageRoot();
  const cache = options.cacheDir ?? path.join(cacheDir(), 'guest');
  const systemDisk = options.systemDisk ?? kernelsCanMountSystemDisk(options.kernels);
  const { members, manifest } = plan(options, root, cache);
  const init = systemDisk ? luInit(root, cache) : undefined;
  const key = cacheKey(members, manifest, { compress: options.compress === true, luInit: init ?? null });
  const dir = path.join(cache, key);
  const initrd = path.join(dir, 'initrd.img');
  const disk = init === undefined ? undefined : path.join(dir, 'system.img');
  const meta = path.join(dir, 'archive-bytes');
  const built = (archiveBytes: number, cached: boolean): GuestImage => ({
    initrd,
    archiveBytes,
    ...(disk === undefined ? {} : { disk }),
    manifest,
    cached,
    ms: Date.now() - started,
  });
  if (fs.existsSync(initrd) && fs.existsSync(meta) && (disk === undefined || fs.existsSync(disk))) {
    fs.utimesSync(dir, new Date(), new Date()); // keeps it off the eviction list
    return built(Number(fs.readFileSync(meta, 'utf8')), true);
  }
  fs.mkdirSync(dir, { recursive: true });
  const onDisk = (m: Member): boolean => init !== undefined && SYSTEM_DISK_DIRS.some((d) => m.guest.startsWith(d));
  if (disk !== undefined) writeSystemDisk(members.filter(onDisk), disk);
  const tmp = `${initrd}.${process.pid}`;
  let archiveBytes = 0;
  const inInitrd = members.filter((m) => !onDisk(m));
  writeToFile(tmp, (sink) => {
    const write = (inner: CpioSink): number => writeArchiveA(inInitrd, manifest, init, inner);
    archiveBytes = options.compress !== true ? write(sink) : writeGzipped(sink, write);
    writeStateArchive({ values: {}, stopped: {} }, sink);
  });
  fs.writeFileSync(meta, String(archiveBytes));
  fs.renameSync(tmp, initrd);
  evictOldImages(path.dirname(dir), dir);
  return built(archiveBytes, false);
}

/**
 * lu-init (vm/lu-init.c), compiled static once per source into the cache;
 * returns its host path.
 */
function luInit(root: string, cache: string): string {
  const source = path.join(root, 'vm', 'lu-init.c');
  const hash = createHash('sha256');
  for (const file of [source, path.join(root, 'vm', 'system-disk.h')]) hash.update(fs.readFileSync(file));
  const out = path.join(cache, `lu-init-${hash.digest('hex').slice(0, 12)}`);
  return fs.existsSync(out) ? out : compileC({ sources: [source], out, static: true, flags: ['-Werror', '-s', '-I', path.join(root, 'vm')] });
}

/**
 * mke2fs (e2fsprogs): from PATH, else where Debian installs it (/usr/sbin
 * is not on an ordinary user's PATH). Undefined when there is none.
 */
export function mke2fsPath(): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin'];
  return dirs.map((dir) => path.join(dir, 'mke2fs')).find((file) => fs.existsSync(file));
}

/**
 * The system disk: an ext2 image of `members` made by mke2fs from a staging
 * tree, sized to fit them with room for ext2's own blocks.
 */
function writeSystemDisk(members: readonly Member[], disk: string): void {
  const staging = `${disk}.tree${process.pid}`;
  const tmp = `${disk}.${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  try {
    let bytes = 0;
    for (const m of members) {
      const target = path.join(staging, m.guest);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      if (m.kind === 'symlink') {
        fs.symlinkSync(m.source, target);
      } else {
        fs.copyFileSync(m.source, target);
        fs.chmodSync(target, fs.statSync(m.source).mode & 0o7777);
        bytes += fs.statSync(target).size;
      }
    }
    const kib = Math.ceil((bytes * 1.1) / 1024) + 8192;
    const args = ['-q', '-F', '-t', 'ext2', '-b', '4096', '-m', '0', '-L', 'lu-system', '-E', 'root_owner=0:0', '-d', staging, tmp, `${kib}k`];
    const mke2fs = mke2fsPath();
    if (mke2fs === undefined) throw new Error(MKE2FS_HELP);
    try {
      execFileSync(mke2fs, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      const e = error as NodeJS.ErrnoException & { stderr?: Buffer };
      throw new Error(`mke2fs failed: ${e.stderr?.toString() ?? e.message}`);
    }
    fs.renameSync(tmp, disk);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(tmp, { force: true });
  }
}

/** Runs `write` into a gzip stream that ends up in `sink`; returns the uncompressed size. */
function writeGzipped(sink: CpioSink, write: (inner: CpioSink) => number): number {
  const chunks: Uint8Array[] = [];
  const size = write((chunk) => void chunks.push(Buffer.from(chunk)));
  sink(zlib.gzipSync(Buffer.concat(chunks), { level: 6 }));
  return size;
}

/** Writes a state archive: {@link GUEST_STATE} holding `state`. Returns its size. */
export function writeStateArchive(state: CarriedState, sink: CpioSink): number {
  const archive = new CpioWriter(sink);
  archive.file(GUEST_STATE, JSON.stringify(state));
  return archive.finish();
}

/**
 * Writes the next stage's initrd to `file`: the `previous` one (the initrd
 * this kernel kept) followed by a state archive with `state`. Returns its size.
 */
export function writeNextInitrd(previous: string, state: CarriedState, file: string): number {
  // copyFileSync lets the kernel move the bytes (sendfile): /sys/firmware/initrd
  // reads 4 KiB per read(2), which costs seconds from JavaScript under emulation.
  fs.copyFileSync(previous, file);
  const fd = fs.openSync(file, 'a');
  try {
    writeStateArchive(state, fdSink(fd));
    return fs.fstatSync(fd).size;
  } finally {
    fs.closeSync(fd);
  }
}

/** Runs `write` against a new file at `file`; returns the bytes written. */
export function writeToFile(file: string, write: (sink: CpioSink) => unknown): number {
  const fd = fs.openSync(file, 'w', 0o644);
  try {
    const sink = fdSink(fd);
    let bytes = 0;
    write((chunk) => {
      sink(chunk);
      bytes += chunk.length;
    });
    return bytes;
  } finally {
    fs.closeSync(fd);
  }
}

/** Where each input goes in the guest, and the manifest that describes the run. */
function plan(options: GuestImageOptions, root: string, cache: string): { members: Member[]; manifest: Manifest } {
  const node = fs.realpathSync(options.node ?? process.execPath);
  const addons = guestPackages(root).filter((p) => hasAddon(p.dir)).flatMap((p) => addonFiles(p.dir));
  const members: Member[] = [{ guest: '/usr/bin/node', kind: 'file', source: strippedNode(node, cache) }];
  for (const lib of sharedLibraries([node, ...addons])) members.push({ guest: lib, kind: 'file', source: fs.realpathSync(lib) });
  const payload = planPayload(options, root);
  return { members: [...members, ...payload.members], manifest: payload.manifest };
}

/** The packages the guest runs: this one at {@link GUEST_PACKAGE}, its runtime and peer dependencies beside it. */
function guestPackages(root: string): { dir: string; guest: string }[] {
  return [{ dir: root, guest: GUEST_PACKAGE }, ...runtimeDependencies(root).map((dep) => ({ dir: dep.dir, guest: `${GUEST_ROOT}/node_modules/${dep.name}` }))];
}

/**
 * What a run adds to a guest that has its own node (the packages with their
 * addons, the kernels, the scenarios, the extra files), and the manifest.
 * The systemd guest image (systemd-image.ts) gets only this.
 */
export function planPayload(options: GuestImageOptions, root: string): { members: Member[]; manifest: Manifest } {
  const members: Member[] = [];
  for (const p of guestPackages(root)) members.push(...(hasAddon(p.dir) ? builtPackageMembers(p.dir, p.guest) : treeMembers(p.dir, p.guest)));
  const kernels = placeKernels(options.kernels, members);
  const scenarios = placeScenarios(options.scenarios, root, members);
  for (const [guest, source] of Object.entries(options.files ?? {})) members.push({ guest, kind: 'file', source: realFile(source, 'extra file') });
  const manifest: Manifest = { scenarios, kernels, nofile: options.nofile ?? 65536, stageParams: options.stageParams ?? [] };
  return { members, manifest };
}

/**
 * node without its symbol tables, made once and cached: Debian's node carries
 * about 12 MB of them, which every kexec would copy and digest. Falls back to
 * node itself where binutils' `strip` is missing.
 */
function strippedNode(node: string, cache: string): string {
  const st = fs.statSync(node);
  const key = createHash('sha256').update(`${node}\0${st.size}\0${st.mtimeMs}\0${st.ino}`).digest('hex').slice(0, 16);
  const out = path.join(cache, `node-${key}`);
  if (fs.existsSync(out)) return out;
  fs.mkdirSync(cache, { recursive: true });
  const tmp = `${out}.${process.pid}`;
  try {
    execFileSync('strip', ['-o', tmp, node], { stdio: 'ignore' });
    fs.renameSync(tmp, out);
    return out;
  } catch {
    fs.rmSync(tmp, { force: true });
    return node;
  }
}

/** Copies each distinct kernel image to /boot; returns the guest path per stage. */
function placeKernels(kernels: readonly string[], members: Member[]): string[] {
  const placed = new Map<string, string>();
  return kernels.map((k) => {
    const real = realFile(k, 'kernel image');
    let guest = placed.get(real);
    if (guest === undefined) {
      guest = `/boot/kernel-${placed.size}.bzImage`;
      placed.set(real, guest);
      members.push({ guest, kind: 'file', source: real });
    }
    return guest;
  });
}

/**
 * A scenario inside the package's dist/ keeps its place (its relative imports
 * keep working). One from elsewhere is copied with the other modules of its
 * directory (the helpers it imports relatively) to /lu/scenarios/<n>/, and
 * imports the packages by name: `require('liveupdate')` and
 * `require('liveupdate-conformance')` resolve from /lu.
 */
function placeScenarios(files: readonly string[], root: string, members: Member[]): string[] {
  // Only dist/ of the package goes into the image (see builtPackageMembers).
  const dist = path.join(fs.realpathSync(root), 'dist');
  const copiedDirs = new Map<string, string>();
  return files.map((file) => {
    const real = realFile(file, 'scenario module');
    const rel = path.relative(dist, real);
    if (!rel.startsWith('..') && !path.isAbsolute(rel)) return path.posix.join(GUEST_PACKAGE, 'dist', ...rel.split(path.sep));
    const dir = path.dirname(real);
    let guestDir = copiedDirs.get(dir);
    if (guestDir === undefined) {
      guestDir = `${GUEST_ROOT}/scenarios/${copiedDirs.size}`;
      copiedDirs.set(dir, guestDir);
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        if (entry.isFile() && entry.name.endsWith('.js')) members.push({ guest: `${guestDir}/${entry.name}`, kind: 'file', source: path.join(dir, entry.name) });
      }
    }
    return `${guestDir}/${path.basename(real)}`;
  });
}

function realFile(file: string, what: string): string {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    throw new Error(`${what} not found: ${file}`);
  }
  if (!fs.statSync(real).isFile()) throw new Error(`${what} is not a file: ${file}`);
  return real;
}

/** The compiled addon(s): build/Release/*.node and prebuilds for this platform. */
function addonFiles(root: string): string[] {
  const found: string[] = [];
  const release = path.join(root, 'build', 'Release');
  if (fs.existsSync(release)) {
    for (const f of fs.readdirSync(release)) if (f.endsWith('.node')) found.push(path.join(release, f));
  }
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (fs.existsSync(prebuilds)) {
    for (const f of fs.readdirSync(prebuilds)) if (f.endsWith('.node')) found.push(path.join(prebuilds, f));
  }
  if (found.length === 0) {
    throw new Error(`no compiled addon in ${release} or ${prebuilds}: run \`npm run compile\` first`);
  }
  return found;
}

/** Whether a package builds an addon (and so carries sources and a build tree the guest needs none of). */
function hasAddon(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'binding.gyp'));
}

/** What the guest needs of a package with an addon: package.json, dist/ and the addon(s). */
function builtPackageMembers(dir: string, guestDir: string): Member[] {
  const dist = path.join(dir, 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) throw new Error(`${dist}/index.js is missing: run \`npm run compile\` first`);
  const members: Member[] = [{ guest: `${guestDir}/package.json`, kind: 'file', source: path.join(dir, 'package.json') }];
  members.push(...treeMembers(dist, `${guestDir}/dist`));
  for (const addon of addonFiles(dir)) {
    const rel = path.relative(dir, addon).split(path.sep);
    members.push({ guest: path.posix.join(guestDir, ...rel), kind: 'file', source: addon });
  }
  return members;
}

/**
 * The package's `dependencies` and `peerDependencies` (liveupdate itself),
 * and theirs, as directories. They go flat into /lu/node_modules, where
 * node's resolution finds them from the package and from the scenarios.
 */
function runtimeDependencies(root: string): { name: string; dir: string }[] {
  const found = new Map<string, string>();
  const visit = (from: string): void => {
    const pkg = JSON.parse(fs.readFileSync(path.join(from, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
      peerDependencies?: Record<string, string>;
    };
    for (const name of [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})]) {
      if (found.has(name)) continue;
      const dir = findPackageDir(name, from);
      found.set(name, dir);
      visit(dir);
    }
  };
  visit(root);
  return [...found].map(([name, dir]) => ({ name, dir }));
}

/**
 * Node's lookup of a package directory: `node_modules/<name>` in `from` and
 * each parent. (require.resolve would refuse packages whose `exports` hide
 * package.json.)
 */
function findPackageDir(name: string, from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return fs.realpathSync(candidate);
    if (path.dirname(dir) === dir) throw new Error(`dependency ${name} of ${from} is not installed: run \`npm ci\``);
  }
}

/** Every file and symlink under `dir`, placed under `guestDir`. */
function treeMembers(dir: string, guestDir: string): Member[] {
  const members: Member[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const source = path.join(dir, entry.name);
    const guest = `${guestDir}/${entry.name}`;
    if (entry.isDirectory()) members.push(...treeMembers(source, guest));
    else if (entry.isSymbolicLink()) members.push({ guest, kind: 'symlink', source: fs.readlinkSync(source) });
    else if (entry.isFile()) members.push({ guest, kind: 'file', source });
  }
  return members;
}

/**
 * The shared libraries (and the dynamic loader) the binaries load, as the
 * absolute paths `ldd` prints: the guest's loader looks for them there.
 */
export function sharedLibraries(binaries: readonly string[]): string[] {
  const libs = new Set<string>();
  for (const binary of binaries) {
    let out: string;
    try {
      out = execFileSync('ldd', [binary], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      const e = error as NodeJS.ErrnoException & { stdout?: string };
      if (e.code === 'ENOENT') throw new Error('ldd not found: install it (apt-get install libc-bin)');
      if (typeof e.stdout === 'string' && e.stdout.includes('not a dynamic executable')) continue;
      throw error;
    }
    for (const line of out.split('\n')) {
      const match = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
      if (match?.[1] !== undefined) libs.add(match[1]);
      if (line.includes('not found')) throw new Error(`${binary}: a shared library is missing: ${line.trim()}`);
    }
  }
  return [...libs].sort();
}

function writeArchiveA(members: readonly Member[], manifest: Manifest, init: string | undefined, sink: CpioSink): number {
  const a = new CpioWriter(sink);
  for (const dir of ['/proc', '/sys', '/dev', '/tmp', '/run', '/root', '/boot']) a.directory(dir);
  // The kernel opens /dev/console for /init's stdio before anything is mounted.
  a.charDevice('/dev/console', 5, 1);
  a.charDevice('/dev/null', 1, 3, 0o666);
  for (const m of members) {
    if (m.kind === 'symlink') a.symlink(m.guest, m.source);
    else a.fileFrom(m.guest, m.source);
  }
  a.file(GUEST_MANIFEST, JSON.stringify(manifest, null, 2));
  if (init === undefined) {
    a.file('/init', initScript(), 0o755);
  } else {
    a.fileFrom('/init', init);
    a.file('/init.js', initScript(), 0o644);
  }
  return a.finish();
}

/** The runner's start: /init itself, or the /init.js lu-init runs. */
function initScript(): string {
  return `#!/usr/bin/node\n'use strict';\nrequire('${GUEST_PACKAGE}/dist/vm/guest.js').main();\n`;
}

/** The runner's start in the systemd guest image: the script its unit lu-runner.service runs. */
export function systemdRunnerScript(): string {
  return `'use strict';\nrequire('${GUEST_PACKAGE}/dist/vm/guest.js').mainUnderSystemd();\n`;
}

function cacheKey(members: readonly Member[], manifest: Manifest, layout: { compress: boolean; luInit: string | null }): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ LAYOUT_VERSION, manifest, init: initScript(), ...layout }));
  for (const m of members) {
    if (m.kind === 'symlink') {
      hash.update(`${m.guest}\0L${m.source}\n`);
    } else {
      // Small files (the package, rebuilt with new mtimes by every `npm run
      // build`) by content; big ones (node, libraries, kernels) by identity.
      const st = fs.statSync(m.source);
      hash.update(`${m.guest}\0${st.size}\0`);
      if (st.size <= HASH_CONTENT_LIMIT) hash.update(fs.readFileSync(m.source));
      else hash.update(`${m.source}\0${st.mtimeMs}\0${st.ino}`);
      hash.update('\n');
    }
  }
  return hash.digest('hex').slice(0, 16);
}

/** Keeps the newest {@link CACHE_KEEP} images. */
function evictOldImages(dir: string, keep: string): void {
  const entries = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => path.join(dir, e.name))
    .filter((p) => p !== keep)
    .map((p) => ({ p, mtime: fs.statSync(p).mtimeMs }))
    .sort((x, y) => y.mtime - x.mtime);
  for (const old of entries.slice(CACHE_KEEP - 1)) fs.rmSync(old.p, { recursive: true, force: true });
}
