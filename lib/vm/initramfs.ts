/**
 * The guest image. Archive A holds everything the guest runs: node and its
 * shared libraries, the package as built, the scenarios, the kernel images
 * and an `/init` that starts the guest runner. Archive B holds A as a file,
 * plus the state carried between stages. The machine boots A+B; to kexec, the
 * guest writes A+B' (B' with the new state) and hands that over, so any
 * number of stages works with one image.
 *
 * Built only from what is installed (node, the package directory, its
 * runtime dependencies), so an installed package can build a guest without
 * the repository or any dev dependency.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CpioWriter, fdSink, type CpioSink } from './cpio.js';
import {
  GUEST_ARCHIVE_A,
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
  /** Where built images are cached (default: `<cache>/guest`, see {@link cacheDir}). */
  readonly cacheDir?: string;
  /** Extra files: guest path → host path (e.g. a helper program a scenario runs). */
  readonly files?: Readonly<Record<string, string>>;
}

/** A built guest image. */
export interface GuestImage {
  /** Host path of A+B: the initrd to boot. */
  readonly initrd: string;
  /** Size of archive A in bytes. */
  readonly archiveBytes: number;
  /** The manifest written into the image. */
  readonly manifest: Manifest;
  /** Whether the image came from the cache. */
  readonly cached: boolean;
  /** Time taken to build (or find) it. */
  readonly ms: number;
}

/** One member of archive A: where it goes and where it comes from. */
interface Member {
  readonly guest: string;
  readonly kind: 'file' | 'symlink';
  /** Host path of a file; the link target of a symlink. */
  readonly source: string;
}

/** Bumped when the image layout changes, so old cache entries are not reused. */
const LAYOUT_VERSION = 1;
/** How many built images the cache keeps (each is a few hundred MB). */
const CACHE_KEEP = 4;
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

/**
 * Builds (or reuses from the cache) the guest image for a run. Cached images
 * are keyed by the inputs' paths, sizes and modification times, so a rebuilt
 * package or kernel makes a new image.
 */
export function buildGuestImage(options: GuestImageOptions): GuestImage {
  const started = Date.now();
  if (options.kernels.length === 0) throw new Error('buildGuestImage: no kernel image given');
  const root = options.packageRoot ?? packageRoot();
  const { members, manifest } = plan(options, root);
  const key = cacheKey(members, manifest);
  const dir = path.join(options.cacheDir ?? path.join(cacheDir(), 'guest'), key);
  const initrd = path.join(dir, 'initrd.img');
  const meta = path.join(dir, 'archive-bytes');
  if (fs.existsSync(initrd) && fs.existsSync(meta)) {
    fs.utimesSync(dir, new Date(), new Date()); // keeps it off the eviction list
    return { initrd, archiveBytes: Number(fs.readFileSync(meta, 'utf8')), manifest, cached: true, ms: Date.now() - started };
  }
  fs.mkdirSync(dir, { recursive: true });
  const archiveA = path.join(dir, `a.img.${process.pid}`);
  const archiveBytes = writeToFile(archiveA, (sink) => writeArchiveA(members, manifest, sink));
  const tmp = `${initrd}.${process.pid}`;
  writeToFile(tmp, (sink) => writeBootInitrd(archiveA, { values: {}, stopped: {} }, sink));
  fs.rmSync(archiveA);
  fs.writeFileSync(meta, String(archiveBytes));
  fs.renameSync(tmp, initrd);
  evictOldImages(path.dirname(dir), dir);
  return { initrd, archiveBytes, manifest, cached: false, ms: Date.now() - started };
}

/**
 * Writes A followed by B: B holds A (as {@link GUEST_ARCHIVE_A}) and the
 * carried state. The host does this once per image; the guest does it before
 * every kexec, with A read from {@link GUEST_ARCHIVE_A}.
 */
export function writeBootInitrd(archiveA: string, state: CarriedState, sink: CpioSink): number {
  let total = 0;
  const counted: CpioSink = (chunk) => {
    sink(chunk);
    total += chunk.length;
  };
  copyFile(archiveA, counted);
  const b = new CpioWriter(counted);
  b.fileFrom(GUEST_ARCHIVE_A, archiveA, 0o644);
  b.file(GUEST_STATE, JSON.stringify(state));
  b.finish();
  return total;
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
function plan(options: GuestImageOptions, root: string): { members: Member[]; manifest: Manifest } {
  const node = fs.realpathSync(options.node ?? process.execPath);
  const addons = addonFiles(root);
  const members: Member[] = [{ guest: '/usr/bin/node', kind: 'file', source: node }];
  for (const lib of sharedLibraries([node, ...addons])) members.push({ guest: lib, kind: 'file', source: fs.realpathSync(lib) });
  members.push(...packageMembers(root, addons));
  const kernels = placeKernels(options.kernels, members);
  const scenarios = options.scenarios.map((s, i) => placeScenario(s, i, root, members));
  for (const [guest, source] of Object.entries(options.files ?? {})) members.push({ guest, kind: 'file', source: realFile(source, 'extra file') });
  const manifest: Manifest = { scenarios, kernels, nofile: options.nofile ?? 65536 };
  return { members, manifest };
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
 * A scenario inside the package keeps its place (its relative imports keep
 * working); one from elsewhere is copied to /lu/scenarios and must import
 * the package by name (`require('liveupdate')` resolves from /lu).
 */
function placeScenario(file: string, index: number, root: string, members: Member[]): string {
  const real = realFile(file, 'scenario module');
  const rel = path.relative(fs.realpathSync(root), real);
  if (!rel.startsWith('..') && !path.isAbsolute(rel)) return path.posix.join(GUEST_PACKAGE, ...rel.split(path.sep));
  const guest = `${GUEST_ROOT}/scenarios/${index}-${path.basename(real)}`;
  members.push({ guest, kind: 'file', source: real });
  return guest;
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
    throw new Error(`no compiled addon in ${release} or ${prebuilds}: run \`npm run build\` first`);
  }
  return found;
}

/** package.json, dist/, the addon(s) and the runtime dependencies. */
function packageMembers(root: string, addons: readonly string[]): Member[] {
  const dist = path.join(root, 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) throw new Error(`${dist}/index.js is missing: run \`npm run build\` first`);
  const members: Member[] = [{ guest: `${GUEST_PACKAGE}/package.json`, kind: 'file', source: path.join(root, 'package.json') }];
  members.push(...treeMembers(dist, `${GUEST_PACKAGE}/dist`));
  for (const addon of addons) {
    const rel = path.relative(root, addon).split(path.sep);
    members.push({ guest: path.posix.join(GUEST_PACKAGE, ...rel), kind: 'file', source: addon });
  }
  for (const dep of runtimeDependencies(root)) {
    members.push(...treeMembers(dep.dir, `${GUEST_ROOT}/node_modules/${dep.name}`));
  }
  return members;
}

/**
 * The package's `dependencies`, and theirs, as directories. They go flat
 * into /lu/node_modules, where node's resolution finds them from the package.
 */
function runtimeDependencies(root: string): { name: string; dir: string }[] {
  const found = new Map<string, string>();
  const visit = (from: string): void => {
    const pkg = JSON.parse(fs.readFileSync(path.join(from, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    for (const name of Object.keys(pkg.dependencies ?? {})) {
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

function writeArchiveA(members: readonly Member[], manifest: Manifest, sink: CpioSink): void {
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
  a.file('/init', initScript(), 0o755);
  a.finish();
}

/** /init: node runs the guest runner from the package. */
function initScript(): string {
  return `#!/usr/bin/node\n'use strict';\nrequire('${GUEST_PACKAGE}/dist/vm/guest.js').main();\n`;
}

function copyFile(file: string, sink: CpioSink): void {
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      sink(buffer.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
}

function cacheKey(members: readonly Member[], manifest: Manifest): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ LAYOUT_VERSION, manifest, init: initScript() }));
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
