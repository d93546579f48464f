/**
 * What a kernel image is before anything is loaded: the release in a
 * bzImage's setup header, whether that kernel was built with LUO, and
 * whether a live update from the running kernel into it can hand its
 * sessions over. A few bounded reads of files opened without following
 * links (the agent runs as root); no kexec syscall.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { errnoError, packageError, translateError, type ErrorContext, type HandoverFormatError, type KernelImageError, type KernelWithoutLiveUpdateError } from './errors.js';
import { compareReleases, kernelParam, parseKernelConfig, releaseVersion } from './diagnosis.js';
import { checkOptions, checkPath, invalidArgType } from './validate.js';

/** What the setup header of a bzImage says (Documentation/arch/x86/boot.rst). */
export interface KernelImage {
  /** The path read. */
  path: string;
  /** The kernel's release, as `uname -r` will say it there (`7.3.4`, `7.3.4+deb13-cloud-amd64`). */
  release: string;
  /** The whole version string (`7.3.4 (user@host) #1 SMP ...`). */
  version: string;
  /** The boot protocol version (`2.15`). */
  bootProtocol: string;
  /** How the kernel inside is compressed (from its payload's magic), or `unknown`. */
  compression: 'gzip' | 'bzip2' | 'lzma' | 'xz' | 'lzo' | 'lz4' | 'zstd' | 'unknown';
  /** The file's size in bytes. */
  bytes: number;
}

/** Whether a kernel has LUO, and how that is known. */
export interface LiveUpdateSupport {
  /** True when its build config has every option LUO needs, false when it lacks one, null when it cannot be told. */
  present: boolean | null;
  /** The config file read, or null when none was found. */
  config: string | null;
  /** The options it lacks (`CONFIG_LIVEUPDATE`, ...); empty unless `present` is false. */
  missing: string[];
  /** Options it lacks that LUO does not need but a live update later might (`CONFIG_KEXEC_FILE`). */
  lacking: string[];
}

/** One area of KHO scratch memory. */
export interface ScratchArea {
  /** Its physical address, in hex (`0x...`). */
  address: string;
  /** Its size in bytes. */
  bytes: number;
}

/** The KHO scratch memory the running kernel reserved at boot for the next one. */
export interface ScratchReservation {
  /** Each area (lowmem, global, then one per node); null when not readable. */
  areas: ScratchArea[] | null;
  /** Their sum in bytes, or null. */
  totalBytes: number | null;
  /** Where the areas were read (`/sys/kernel/debug/kho/out`), or why they could not be. */
  source: string;
  /** The size asked for on the running kernel's command line (`kho_scratch=...` or `kho_bootmem=...`), or null for the default. */
  parameter: string | null;
}

/** The running kernel, as far as a live update out of it is concerned. */
export interface RunningKernel {
  /** `uname -r`. */
  release: string;
  /** Whether it has LUO on (`/dev/liveupdate` exists, or its handover state is in debugfs). */
  liveUpdate: boolean;
  /** The handover format it writes (`luo-v5`), or null without LUO. */
  format: string | null;
  /** Where the format comes from: the kernel's own outgoing state in debugfs, or its release. */
  formatSource: 'debugfs' | 'release' | null;
  /** Its KHO scratch reservation. */
  scratch: ScratchReservation;
}

/** The kernel to update into. */
export interface TargetKernel extends KernelImage {
  /** The handover format it reads (`luo-v5`), from its release; null without LUO, or for a release that is not a version. */
  format: string | null;
  /** Whether it has LUO. */
  liveUpdate: LiveUpdateSupport;
  /** The KHO scratch size its command line asks for (`kho_scratch=` or, from 7.4, `kho_bootmem=`), or null. */
  scratchParameter: string | null;
}

/** One reason a live update into the target would lose what it hands over. */
export interface KernelRefusal {
  /** The error code (`ERR_LIVEUPDATE_HANDOVER_FORMAT`, `ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO`). */
  code: string;
  /** The error's message. */
  message: string;
}

/** The kernel preflight's report (JSON: the agent's update and `liveupdate update --json` carry it as `kernel`). */
export interface KernelPreflight {
  /** The running kernel. */
  running: RunningKernel;
  /** The target kernel. */
  target: TargetKernel;
  /** `refuse`: a refusal applies; `warn`: allowed, with warnings; `accept`: nothing to say. */
  verdict: 'accept' | 'warn' | 'refuse';
  /** What may go wrong that the preflight cannot rule out. */
  warnings: string[];
  /** Why the update would lose what it hands over; empty unless `verdict` is `refuse`. */
  refusals: KernelRefusal[];
  /** How long the preflight took, in milliseconds. */
  ms: number;
}

/** What to check: the target image and its command line. */
export interface KernelPreflightOptions {
  /** Path of the target bzImage. Not followed if it is a link. */
  kernel: string;
  /** The target's command line (for `kho_scratch=` / `kho_bootmem=`); default empty. */
  cmdline?: string;
}

/** The format of the releases before 7.2's change. */
const OLDEST_FORMAT = 'pre-7.2';

/** The handover format each release range writes and reads, newest first. */
const HANDOVER_FORMATS: ReadonlyArray<{ since: string; format: string }> = [
  // LUO_ABI_COMPATIBLE in include/linux/kho/abi/luo.h of Debian's 7.2.13 and 7.3.4 sources.
  { since: '7.2', format: 'luo-v5' },
  // 7.2 changed the format; the string of the releases before is not in any source at hand.
  { since: '6.19', format: OLDEST_FORMAT },
];

/** The release that renames `kho_scratch=` to `kho_bootmem=`. */
const BOOTMEM_RELEASE = '7.4';

/** What a kernel needs to take a live update: KHO, LUO, and memfds (the agent's manifest is one). */
const LUO_OPTIONS = ['CONFIG_KEXEC_HANDOVER', 'CONFIG_LIVEUPDATE', 'CONFIG_LIVEUPDATE_MEMFD'];
/** What it needs to make the next live update itself. */
const NEXT_UPDATE_OPTIONS = ['CONFIG_KEXEC_FILE'];

/** Where the running kernel's outgoing KHO state is (CONFIG_KEXEC_HANDOVER_DEBUGFS). */
const KHO_OUT = '/sys/kernel/debug/kho/out';

// The setup header's fields (offsets in the file).
const SETUP_SECTS = 0x1f1;
const BOOT_FLAG = 0x1fe;
const HEADER_MAGIC = 0x202;
const PROTOCOL = 0x206;
const KERNEL_VERSION = 0x20e;
const LOADFLAGS = 0x211;
const XLOADFLAGS = 0x236;
const PAYLOAD_OFFSET = 0x248;
/** The protected-mode part's size, in 16-byte units: the image ends there (a signed one has its signature after it). */
const SYSSIZE = 0x1f4;
/** The header read: every field above, nothing more. */
const HEADER_BYTES = 0x250;
/** kexec_file_load's bzImage64 loader needs protocol 2.12 (xloadflags). */
const MIN_PROTOCOL = 0x020c;
const LOADED_HIGH = 0x01;
const XLF_KERNEL_64 = 0x01;
/** The longest version string read. */
const VERSION_BYTES = 256;
/** The largest config file read (Debian's are about 300 KiB). */
const CONFIG_BYTES = 4 * 1024 * 1024;

const COMPRESSIONS: ReadonlyArray<readonly [KernelImage['compression'], Buffer]> = [
  ['gzip', Buffer.from([0x1f, 0x8b])],
  ['bzip2', Buffer.from('BZh', 'latin1')],
  ['lzma', Buffer.from([0x5d, 0x00, 0x00])],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['lzo', Buffer.from([0x89, 0x4c, 0x5a, 0x4f])],
  ['lz4', Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
];

/** The flags every file here is opened with: no link followed, no blocking open, no terminal taken (Node adds O_CLOEXEC). */
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY;

/** A regular file, opened without following a link, with its size; closed by the caller. */
interface OpenFile {
  fd: number;
  bytes: number;
}

/**
 * Opens `file` for bounded reads: refused (ELOOP) if it is a link, (EINVAL)
 * if it is not a regular file, judged by lstat before the open (opening a
 * device can act) and by fstat after it (the same file).
 */
function openRegular(file: string, context: ErrorContext): OpenFile {
  const fail = (code: 'ELOOP' | 'EINVAL', hint?: string): never => {
    throw errnoError(code, 'open', { ...context, ...(hint === undefined ? {} : { hint }) });
  };
  let before: fs.Stats;
  let fd: number;
  try {
    before = fs.lstatSync(file);
    if (before.isSymbolicLink()) fail('ELOOP');
    if (!before.isFile()) fail('EINVAL');
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (error) {
    throw translateError(error, context);
  }
  const after = fs.fstatSync(fd);
  if (!after.isFile() || after.ino !== before.ino || after.dev !== before.dev) {
    fs.closeSync(fd);
    fail('EINVAL', 'It was replaced while being opened');
  }
  return { fd, bytes: after.size };
}

/** Up to `length` bytes at `position` (fewer at the end of the file). */
function readAt(fd: number, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buffer, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buffer.subarray(0, done);
}

function notBzImage(file: string, why: string): KernelImageError {
  return packageError('ERR_LIVEUPDATE_NOT_BZIMAGE', `${file} is not an x86 bzImage kexec_file_load can load: ${why}`, { operation: 'kernel.read', path: file }) as KernelImageError;
}

/** Parses the setup header of an open image; throws NotKernelImageError saying what is wrong. */
function parseImage(file: string, { fd, bytes }: OpenFile): KernelImage {
  const header = readAt(fd, 0, HEADER_BYTES);
  if (header.length < HEADER_BYTES) throw notBzImage(file, `${header.length} bytes, shorter than a setup header (${HEADER_BYTES})`);
  if (header.toString('latin1', HEADER_MAGIC, HEADER_MAGIC + 4) !== 'HdrS') throw notBzImage(file, "no setup header (no 'HdrS' at 0x202)");
  if (header.readUInt16LE(BOOT_FLAG) !== 0xaa55) throw notBzImage(file, 'no boot flag 0xAA55 at 0x1fe');
  const protocol = header.readUInt16LE(PROTOCOL);
  const bootProtocol = `${protocol >> 8}.${(protocol & 0xff).toString().padStart(2, '0')}`;
  if (protocol < MIN_PROTOCOL) throw notBzImage(file, `boot protocol ${bootProtocol}, older than 2.12`);
  if ((header[LOADFLAGS] ?? 0) & LOADED_HIGH) {
    if (!(header.readUInt16LE(XLOADFLAGS) & XLF_KERNEL_64)) throw notBzImage(file, 'not a 64-bit kernel (no XLF_KERNEL_64 in xloadflags)');
  } else {
    throw notBzImage(file, 'a zImage (loaded low), not a bzImage');
  }
  const setupBytes = ((header[SETUP_SECTS] ?? 0) || 4) * 512 + 512;
  const versionAt = header.readUInt16LE(KERNEL_VERSION) + 0x200;
  if (header.readUInt16LE(KERNEL_VERSION) === 0 || versionAt >= setupBytes) throw notBzImage(file, 'its header points at no version string');
  const text = readAt(fd, versionAt, Math.min(VERSION_BYTES, setupBytes - versionAt));
  const end = text.indexOf(0);
  if (end < 0) throw notBzImage(file, `its version string is not terminated within ${text.length} bytes (truncated?)`);
  const version = text.toString('latin1', 0, end);
  const release = version.split(/\s/)[0] ?? '';
  if (!/^[\x21-\x7e]+$/.test(release)) throw notBzImage(file, 'its version string has no release');
  const imageEnd = setupBytes + header.readUInt32LE(SYSSIZE) * 16;
  if (imageEnd > bytes) throw notBzImage(file, `truncated: ${bytes} bytes, its header says ${imageEnd}`);
  const payloadAt = setupBytes + header.readUInt32LE(PAYLOAD_OFFSET);
  const magic = readAt(fd, payloadAt, 6);
  const compression = COMPRESSIONS.find(([, m]) => magic.subarray(0, m.length).equals(m))?.[0] ?? 'unknown';
  return { path: file, release, version, bootProtocol, compression, bytes };
}

/**
 * Reads a kernel image's setup header: its release, boot protocol and
 * compression. The file is not followed if it is a link. Throws a
 * KernelImageError when it cannot be read (`ELOOP` for a link, `EINVAL`
 * for what is not a regular file, `ENOENT`, ...) and a NotKernelImageError
 * (`ERR_LIVEUPDATE_NOT_BZIMAGE`) when it is not an x86-64 bzImage, before
 * any kexec syscall.
 */
export function readImageSync(file: string): KernelImage {
  const checked = checkPath(file, 'file');
  const image = openRegular(checked, { operation: 'kernel.read', path: checked });
  try {
    return parseImage(checked, image);
  } finally {
    fs.closeSync(image.fd);
  }
}

/** The Promise form of {@link readImageSync} (three small reads, made at once). */
export async function readImage(file: string): Promise<KernelImage> {
  return readImageSync(file);
}

/** The handover format of a release, or null before LUO (or for what is not a version). */
export function handoverFormat(release: string): string | null {
  for (const { since, format } of HANDOVER_FORMATS) {
    const order = compareReleases(release, since);
    if (order === null) return null;
    if (order >= 0) return format;
  }
  return null;
}

/** The text of a small regular file (at most `limit` bytes), or null when it is missing, a link, larger or unreadable. */
function readSmallFile(file: string, limit: number): string | null {
  let opened: OpenFile;
  try {
    opened = openRegular(file, { operation: 'kernel.read', path: file });
  } catch {
    return null;
  }
  try {
    // Read to the end, not to st_size: debugfs and procfs files say 0.
    const text = readAt(opened.fd, 0, limit + 1);
    return text.length > limit ? null : text.toString('utf8');
  } finally {
    fs.closeSync(opened.fd);
  }
}

/** The version a config's header names (`# Linux/x86 7.3.4 Kernel Configuration`), or null. */
function configVersion(text: string): string | null {
  return /^# Linux\/\S+ (\S+) Kernel Configuration$/m.exec(text.slice(0, 512))?.[1] ?? null;
}

/**
 * The build config of `image`, looked for where distributions and the
 * test bed put it: /boot/config-RELEASE, /usr/lib/modules/RELEASE/config,
 * and beside the image (config-RELEASE, or config when its header names
 * the image's version).
 */
function findConfig(image: KernelImage): { file: string; options: Map<string, string> } | null {
  const dir = path.dirname(image.path);
  const version = releaseVersion(image.release)?.join('.');
  const named = [`/boot/config-${image.release}`, `/usr/lib/modules/${image.release}/config`, path.join(dir, `config-${image.release}`)];
  for (const file of [...named, path.join(dir, 'config')]) {
    const text = readSmallFile(file, CONFIG_BYTES);
    if (text === null) continue;
    const header = configVersion(text);
    // A bare `config` may be another kernel's: it counts only when its header names this version.
    if (!named.includes(file) && (header === null || header !== version)) continue;
    return { file, options: parseKernelConfig(text) };
  }
  return null;
}

function liveUpdateSupport(image: KernelImage): LiveUpdateSupport {
  const config = findConfig(image);
  if (config === null) return { present: null, config: null, missing: [], lacking: [] };
  const off = (options: readonly string[]): string[] => options.filter((o) => config.options.get(o) !== 'y');
  const missing = off(LUO_OPTIONS);
  return { present: missing.length === 0, config: config.file, missing, lacking: off(NEXT_UPDATE_OPTIONS) };
}

/** The size parameter of KHO's scratch on a command line: `kho_bootmem=` (7.4) or `kho_scratch=`, as written, or null. */
export function scratchParameter(cmdline: string): string | null {
  const bootmem = kernelParam(cmdline, 'kho_bootmem');
  if (bootmem !== null) return `kho_bootmem=${bootmem}`;
  const scratch = kernelParam(cmdline, 'kho_scratch');
  return scratch === null ? null : `kho_scratch=${scratch}`;
}

/** Hex numbers one a line, as debugfs's scratch_phys and scratch_len print them. */
function hexLines(text: string | null): bigint[] | null {
  if (text === null) return null;
  const lines = text.split('\n').filter((l) => l !== '');
  return lines.every((l) => /^0x[0-9a-f]+$/i.test(l)) ? lines.map((l) => BigInt(l)) : null;
}

/** The running kernel's KHO scratch areas (debugfs, root only), and the size its command line asked for. */
export function scratchReservation(cmdline: string): ScratchReservation {
  const parameter = scratchParameter(cmdline);
  const phys = hexLines(readSmallFile(`${KHO_OUT}/scratch_phys`, 4096));
  const lens = hexLines(readSmallFile(`${KHO_OUT}/scratch_len`, 4096));
  if (phys === null || lens === null || phys.length !== lens.length) {
    const source = `not readable: ${KHO_OUT}/scratch_phys and scratch_len need KHO, CONFIG_KEXEC_HANDOVER_DEBUGFS, debugfs mounted and root`;
    return { areas: null, totalBytes: null, source, parameter };
  }
  const areas = phys.map((address, i) => ({ address: `0x${address.toString(16)}`, bytes: Number(lens[i] ?? 0n) }));
  return { areas, totalBytes: areas.reduce((sum, a) => sum + a.bytes, 0), source: KHO_OUT, parameter };
}

/** The format string at the start of the running kernel's outgoing LUO state (`struct luo_ser`), or null. */
function runningFormat(): string | null {
  const text = readSmallFile(`${KHO_OUT}/sub_fdts/LUO`, 4096);
  const format = text?.split('\0')[0] ?? '';
  return /^luo-v\d+$/.test(format) ? format : null;
}

/** The running kernel: its release, whether it has LUO, the format it hands over in, its scratch. */
export function runningKernel(): RunningKernel {
  const release = os.release();
  const cmdline = readSmallFile('/proc/cmdline', 65536) ?? '';
  const fromKernel = runningFormat();
  const liveUpdate = fromKernel !== null || fs.existsSync('/dev/liveupdate');
  const format = fromKernel ?? (liveUpdate ? handoverFormat(release) : null);
  const formatSource = fromKernel !== null ? 'debugfs' : format !== null ? 'release' : null;
  return { release, liveUpdate, format, formatSource, scratch: scratchReservation(cmdline) };
}

function kernelCheckError(code: 'ERR_LIVEUPDATE_HANDOVER_FORMAT' | 'ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO', text: string, details: Record<string, unknown>): HandoverFormatError | KernelWithoutLiveUpdateError {
  return packageError(code, text, { operation: 'kernel.check', details }) as HandoverFormatError | KernelWithoutLiveUpdateError;
}

/** What {@link judge} finds. */
export interface Judgement {
  /** Why the update would lose what it hands over, as the typed errors {@link preflightSync} throws. */
  errors: Array<HandoverFormatError | KernelWithoutLiveUpdateError>;
  /** What may go wrong that cannot be ruled out. */
  warnings: string[];
}

/**
 * The verdict on a live update from `running` into `target`: the typed
 * errors of what would lose what is handed over, and the warnings. Pure:
 * every fact is in the arguments.
 */
export function judge(running: RunningKernel, target: TargetKernel): Judgement {
  const errors: Array<HandoverFormatError | KernelWithoutLiveUpdateError> = [];
  const warnings: string[] = [];
  const releases = { running: running.release, target: target.release };
  const luo = target.liveUpdate;
  if (luo.present === false) {
    const where = luo.config === null ? `its release is older than ${HANDOVER_FORMATS[HANDOVER_FORMATS.length - 1]?.since}, the first with LUO` : `${luo.config} has ${luo.missing.map((o) => `${o} off`).join(', ')}`;
    errors.push(kernelCheckError('ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO', `kernel ${target.release} has no Live Update Orchestrator (${where}): it would retrieve nothing`, { ...releases, missing: luo.missing }));
  } else if (luo.present === null) {
    warnings.push(`cannot tell whether kernel ${target.release} has LUO: no build config found (/boot/config-${target.release}, /usr/lib/modules/${target.release}/config, or config-${target.release} or config beside the image)`);
  }
  if (luo.lacking.length > 0) warnings.push(`kernel ${target.release} lacks ${luo.lacking.join(', ')}: it can take this live update but cannot load the next one`);
  if (running.format !== null && target.format !== null && running.format !== target.format) {
    errors.push(kernelCheckError(
      'ERR_LIVEUPDATE_HANDOVER_FORMAT',
      `kernel ${running.release} hands over in format ${running.format} and kernel ${target.release} reads ${target.format}${[running.format, target.format].includes(OLDEST_FORMAT) ? ' (Linux 7.2 changed the format)' : ''}: nothing would be retrieved`,
      { ...releases, formats: [running.format, target.format] },
    ));
  } else if (running.liveUpdate && target.format === null && luo.present !== false) {
    warnings.push(`cannot tell which handover format kernel ${target.release} reads: its release is not a version`);
  }
  if (running.liveUpdate && running.release !== target.release && errors.length === 0) {
    warnings.push(`a live update from ${running.release} to ${target.release} crosses releases: upstream guarantees no compatibility of the handover between releases yet`);
  }
  const scratch = target.scratchParameter;
  const newer = compareReleases(target.release, BOOTMEM_RELEASE);
  if (scratch !== null && newer !== null && (newer >= 0) !== scratch.startsWith('kho_bootmem=')) {
    warnings.push(`kernel ${target.release} ${newer >= 0 ? 'reads kho_bootmem= (kho_scratch= until 7.3)' : 'reads kho_scratch= (kho_bootmem= from 7.4)'}: ${scratch} on its command line is ignored`);
  }
  return { errors, warnings };
}

function checkPreflight(options: unknown): { kernel: string; cmdline: string } {
  const o = checkOptions<KernelPreflightOptions>(options);
  const kernel = checkPath(o.kernel, 'options.kernel');
  if (o.cmdline !== undefined && typeof o.cmdline !== 'string') throw invalidArgType('options.cmdline', 'of type string', o.cmdline);
  return { kernel, cmdline: o.cmdline ?? '' };
}

function evaluate(options: unknown): { report: KernelPreflight; errors: Judgement['errors'] } {
  const startedAt = process.hrtime.bigint();
  const { kernel, cmdline } = checkPreflight(options);
  const image = readImageSync(kernel);
  const liveUpdate = liveUpdateSupport(image);
  const format = liveUpdate.present === false ? null : handoverFormat(image.release);
  const target: TargetKernel = { ...image, format, liveUpdate, scratchParameter: scratchParameter(cmdline) };
  const running = runningKernel();
  const { errors, warnings } = judge(running, target);
  const verdict = errors.length > 0 ? 'refuse' : warnings.length > 0 ? 'warn' : 'accept';
  const refusals = errors.map((e) => ({ code: e.code, message: e.message }));
  const ms = Number(process.hrtime.bigint() - startedAt) / 1e6;
  return { report: { running, target, verdict, warnings, refusals, ms: Math.round(ms * 100) / 100 }, errors };
}

/**
 * The kernel preflight's report on a live update into `options.kernel`:
 * both kernels' releases and handover formats, whether the target has LUO,
 * the running kernel's KHO scratch reservation, the verdict, warnings and
 * refusals. Throws only what {@link readImageSync} throws (the image cannot
 * be read, or is not a bzImage) and argument errors; a refusal is in the
 * report. Loads nothing.
 */
export function inspectSync(options: KernelPreflightOptions): KernelPreflight {
  return evaluate(options).report;
}

/** The Promise form of {@link inspectSync}. */
export async function inspect(options: KernelPreflightOptions): Promise<KernelPreflight> {
  return inspectSync(options);
}

/**
 * Like {@link inspectSync}, but a refusal is thrown as its typed error: a
 * HandoverFormatError (`ERR_LIVEUPDATE_HANDOVER_FORMAT`) when the two
 * kernels hand over in different formats (across Linux 7.2's change), a
 * KernelWithoutLiveUpdateError (`ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO`) when
 * the target's build config lacks LUO. Both name the two releases. Returns
 * the report, warnings included, when the update may go on.
 */
export function preflightSync(options: KernelPreflightOptions): KernelPreflight {
  const { report, errors } = evaluate(options);
  if (errors[0] !== undefined) throw errors[0];
  return report;
}

/** The Promise form of {@link preflightSync}. */
export async function preflight(options: KernelPreflightOptions): Promise<KernelPreflight> {
  return preflightSync(options);
}
