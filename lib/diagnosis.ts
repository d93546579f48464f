/**
 * Why Live Update Orchestrator is unavailable here, and what to do about it.
 *
 * The facts come from files anyone may read (/proc/cmdline, the kernel's
 * config, /sys, /proc/misc, /proc/PID/fd where permitted, the kernel log
 * where permitted), never from opening the device: opening it would take
 * the one owner slot from the agent that may hold it. `diagnose` is pure, so
 * each reason is tested without a kernel that has it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { isLiveUpdateDevice, liveUpdateDeviceNumber, miscListReadable, provideDeviceDiagnosis, readText, splitDevNumber, type DeviceNumber } from './device.js';

export {
  isLiveUpdateDevice,
  liveUpdateDeviceNumber,
  miscListReadable,
  parseDevNumber,
  parseProcMisc,
  splitDevNumber,
  type DeviceNumber,
} from './device.js';

/** The first Linux release with LUO (merged for 6.19). */
export const FIRST_LUO_RELEASE = '6.19';

/** Why LUO is unavailable, as a stable identifier. */
export type DiagnosisId =
  | 'kernel-too-old'
  | 'built-without-luo'
  | 'not-enabled'
  | 'kho-disabled'
  | 'kho-scratch-failed'
  | 'luo-failed'
  | 'device-node-missing'
  | 'not-luo-device'
  | 'permission-denied'
  | 'device-busy';

/** A reason LUO is unavailable, and what to do about it. */
export interface Diagnosis {
  /** Which reason. */
  id: DiagnosisId;
  /** What is wrong, in a sentence. */
  reason: string;
  /** What to do about it, in a sentence. */
  fix: string;
}

/** A process holding the device open. */
export interface DeviceOwner {
  /** Its pid. */
  pid: number;
  /** Its command name (`/proc/PID/comm`), or null if unreadable. */
  command: string | null;
}

/** The kernel's config, where it could be read. */
export interface KernelConfig {
  /** Where it was read: `/proc/config.gz` or `/boot/config-RELEASE`. */
  source: string;
  /** Each option set or explicitly unset: `CONFIG_X` → `y`, `m`, a value, or `n` for "is not set". */
  options: ReadonlyMap<string, string>;
}

/** What {@link diagnose} looks at. */
export interface Facts {
  /** `uname -r`. */
  release: string;
  /** /proc/cmdline, or null if unreadable. */
  cmdline: string | null;
  /** The kernel's config, or null if no config file was readable. */
  config: KernelConfig | null;
  /** The kernel log, or null if unreadable (it needs CAP_SYSLOG where dmesg_restrict is 1). */
  kernelLog: string | null;
  /** The device path examined. */
  devicePath: string;
  /** Whether it exists. */
  deviceExists: boolean;
  /** The liveupdate misc device's number as the kernel registered it, or null if it did not (or that is unknown). */
  luoDevice: DeviceNumber | null;
  /** Whether the kernel's list of misc devices was readable (so a null `luoDevice` means "not registered"). */
  miscListReadable: boolean;
  /** The path's device number if it is a character device, else null. */
  pathDevice: DeviceNumber | null;
  /** Whether this process may open the path read-write. */
  accessible: boolean;
  /** Processes that hold the path open, as far as /proc shows them; looked for only when the path is LUO's device. */
  owners: readonly DeviceOwner[];
  /** This process's pid. */
  pid: number;
}

// ---- the pure parts -----------------------------------------------------------

/**
 * The kernel's kstrtobool: the first character decides (y, Y, t, T, 1 on;
 * n, N, f, F, 0 off; "on"/"off" by their second character). Anything else,
 * or a bare parameter without `=`, is invalid: undefined (the kernel then
 * keeps what it had).
 */
export function kstrtobool(value: string | null): boolean | undefined {
  if (value === null) return undefined;
  const first = value[0];
  if (first !== undefined && 'yYtT1'.includes(first)) return true;
  if (first !== undefined && 'nNfF0'.includes(first)) return false;
  if (first === 'o' || first === 'O') {
    const second = value[1];
    if (second === 'n' || second === 'N') return true;
    if (second === 'f' || second === 'F') return false;
  }
  return undefined;
}

/** Every value of `key` on a kernel command line, in order; null for a bare `key` without `=`. */
export function kernelParamValues(cmdline: string, key: string): Array<string | null> {
  const values: Array<string | null> = [];
  for (const word of cmdline.trim().split(/\s+/)) {
    if (word === '--') break; // What follows is init's, not the kernel's.
    if (word === key) values.push(null);
    else if (word.startsWith(`${key}=`)) values.push(word.slice(key.length + 1));
  }
  return values;
}

/** The value of `key=` on the kernel command line (the last one), or null if absent. */
export function kernelParam(cmdline: string, key: string): string | null {
  const values = kernelParamValues(cmdline, key).filter((v): v is string => v !== null);
  return values[values.length - 1] ?? null;
}

/**
 * A boolean early parameter as the kernel ends up with it: each occurrence
 * is parsed with kstrtobool in order, an invalid one changes nothing, and
 * `fallback` (the built-in default) stands if none is valid.
 */
export function kernelBoolParam(cmdline: string, key: string, fallback: boolean): boolean {
  let value = fallback;
  for (const text of kernelParamValues(cmdline, key)) value = kstrtobool(text) ?? value;
  return value;
}

/** Parses a kernel .config: `CONFIG_X=value` lines, and `# CONFIG_X is not set` as `n`. */
export function parseKernelConfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_\w+)=(.*)$/.exec(line);
    if (set?.[1] !== undefined) options.set(set[1], (set[2] ?? '').replace(/^"(.*)"$/, '$1'));
    const unset = /^# (CONFIG_\w+) is not set$/.exec(line);
    if (unset?.[1] !== undefined) options.set(unset[1], 'n');
  }
  return options;
}

/** Whether a config option is built in or a module; null when the config is unknown. */
function configEnabled(config: KernelConfig | null, option: string): boolean | null {
  if (config === null) return null;
  const value = config.options.get(option);
  return value === 'y' || value === 'm';
}

/** The numeric parts of a release (`6.18.44-fc-v595` → [6, 18, 44]), or null if it does not start with a version. */
export function releaseVersion(release: string): number[] | null {
  const match = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  if (match === null) return null;
  return match.slice(1).filter((p): p is string => p !== undefined).map(Number);
}

/** Compares two releases by version: negative, zero or positive; null if either is not a version. */
export function compareReleases(a: string, b: string): number | null {
  const va = releaseVersion(a);
  const vb = releaseVersion(b);
  if (va === null || vb === null) return null;
  for (let i = 0; i < Math.max(va.length, vb.length); i++) {
    const d = (va[i] ?? 0) - (vb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function describeOwners(owners: readonly DeviceOwner[], pid: number): string {
  return owners.map((o) => (o.pid === pid ? `this process (pid ${o.pid})` : `pid ${o.pid} (${o.command ?? 'command unknown'})`)).join(', ');
}

/** The options a LUO kernel is built with, each with what it is for (the fix names all it does not know to be set). */
const KERNEL_OPTIONS: ReadonlyArray<readonly [option: string, purpose: string]> = [
  ['CONFIG_LIVEUPDATE', 'the orchestrator'],
  ['CONFIG_KEXEC_HANDOVER', 'which it rides on'],
  ['CONFIG_KEXEC_FILE', 'for kexec.load'],
  ['CONFIG_LIVEUPDATE_MEMFD', 'for memfds'],
];

/** The command line a LUO kernel is booted with. */
const KERNEL_PARAMS = 'liveupdate=on kho=on';

/** `a`, `a and b`, `a, b and c`. */
function listText(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1] ?? ''}`;
}

/** `CONFIG_X=y (what for)` for each option, as a list in words. */
function optionsText(options: ReadonlyArray<readonly [string, string]>): string {
  return listText(options.map(([option, purpose]) => `${option}=y (${purpose})`));
}

/**
 * A kernel to boot instead: every build option and the command line at
 * once, so that one reboot is enough.
 */
const BUILD_FIX = `boot Linux ${FIRST_LUO_RELEASE} or later built with ${optionsText(KERNEL_OPTIONS)}, with ${KERNEL_PARAMS} on its command line`;

/**
 * The fix for a LUO kernel booted without LUO on: every parameter of
 * {@link KERNEL_PARAMS} not already on, and every build option not known
 * to be set (all of them where the config is unreadable), in one sentence.
 */
function enableFix(f: Facts): string {
  const khoDefault = f.config?.options.get('CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT') === 'y';
  const cmdline = f.cmdline ?? '';
  const params = [
    ...(kernelBoolParam(cmdline, 'liveupdate', false) ? [] : ['liveupdate=on']),
    ...(kernelBoolParam(cmdline, 'kho', khoDefault) ? [] : ['kho=on']),
  ];
  const add = params.length === 0 ? KERNEL_PARAMS : params.join(' ');
  const unset = KERNEL_OPTIONS.filter(([option]) => configEnabled(f.config, option) !== true);
  const why = f.config === null ? 'its config is not readable, so they cannot be checked' : `its config (${f.config.source}) does not set them`;
  const build = unset.length === 0 ? '' : `; the kernel must also be built with ${optionsText(unset)}: ${why}`;
  return (
    `add ${add} to the kernel command line (for GRUB: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot, ` +
    `or kexec into the next kernel with ${add} in its command line${build}`
  );
}

/** Why the device node is missing. */
function missingDevice(f: Facts): Diagnosis {
  const release = f.release;
  const built = configEnabled(f.config, 'CONFIG_LIVEUPDATE');
  const older = compareReleases(release, FIRST_LUO_RELEASE);
  if (built !== true && older !== null && older < 0) {
    return { id: 'kernel-too-old', reason: `kernel ${release} is older than ${FIRST_LUO_RELEASE}, the first Linux release with the Live Update Orchestrator`, fix: BUILD_FIX };
  }
  if (built === false) {
    return { id: 'built-without-luo', reason: `kernel ${release} was built without CONFIG_LIVEUPDATE (${f.config?.source})`, fix: BUILD_FIX };
  }
  if (f.luoDevice !== null) {
    const { major, minor } = f.luoDevice;
    return {
      id: 'device-node-missing',
      reason: `the kernel registered the liveupdate device (${major}:${minor}) but ${f.devicePath} does not exist`,
      fix: `open /dev/liveupdate, or create the node: mknod -m 600 ${f.devicePath} c ${major} ${minor} (devtmpfs or udev normally does)`,
    };
  }
  const unknownBuild = built === null ? ` (its config is not readable: no /proc/config.gz or /boot/config-${release}, so it may also lack CONFIG_LIVEUPDATE)` : '';
  if (f.cmdline !== null && !kernelBoolParam(f.cmdline, 'liveupdate', false)) {
    const given = kernelParam(f.cmdline, 'liveupdate');
    const how = given === null ? 'without liveupdate=on' : `with liveupdate=${given}, which is not on`;
    return { id: 'not-enabled', reason: `kernel ${release} was booted ${how}${unknownBuild}`, fix: enableFix(f) };
  }
  const log = f.kernelLog ?? '';
  if (/KHO: Failed to reserve/.test(log)) {
    return {
      id: 'kho-scratch-failed',
      reason: 'Kexec HandOver failed to reserve its scratch memory at boot and turned itself off, and LUO with it (kernel log: "KHO: Failed to reserve scratch area")',
      fix: 'boot with more memory, a smaller initrd, or an explicit scratch size: kho_scratch=N% or kho_scratch=LOWMEM,GLOBAL,PERNODE sizes',
    };
  }
  const khoDefault = f.config?.options.get('CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT') === 'y';
  const khoKnown = f.config !== null || (f.cmdline !== null && kernelParamValues(f.cmdline, 'kho').some((v) => kstrtobool(v) !== undefined));
  const khoOn = f.cmdline === null ? null : kernelBoolParam(f.cmdline, 'kho', khoDefault);
  if (/Disabling liveupdate because KHO is disabled/.test(log) || (khoKnown && khoOn === false)) {
    const param = f.cmdline === null ? null : kernelParam(f.cmdline, 'kho');
    const why = param === null ? 'kho= is not on the command line and the kernel does not enable it by default' : `kho=${param}`;
    return {
      id: 'kho-disabled',
      reason: `Kexec HandOver is off on kernel ${release} (${why}), so LUO turned itself off`,
      fix: enableFix(f),
    };
  }
  const logNote =
    f.kernelLog === null
      ? 'the kernel log is not readable here (it needs root, or kernel.dmesg_restrict=0), so the reason cannot be told'
      : 'the kernel log says nothing this package recognises';
  return {
    id: 'luo-failed',
    reason: `${f.devicePath} does not exist although kernel ${release} was booted with liveupdate=on${unknownBuild}: LUO did not start, and ${logNote}`,
    fix: "read the kernel log as root (dmesg | grep -iE 'KHO|liveupdate') for why LUO did not start",
  };
}

/**
 * Why LUO is unavailable, from the facts; null when nothing stands in the
 * way (the device exists, is LUO's, is accessible and nobody holds it).
 */
export function diagnose(f: Facts): Diagnosis | null {
  if (!f.deviceExists) return missingDevice(f);
  if (!isLiveUpdateDevice(f.pathDevice, f.luoDevice, f.miscListReadable)) {
    const what = f.pathDevice === null ? 'is not a character device' : `is device ${f.pathDevice.major}:${f.pathDevice.minor}`;
    const luo = f.luoDevice === null ? 'this kernel registered no liveupdate device' : `LUO's is ${f.luoDevice.major}:${f.luoDevice.minor}`;
    return { id: 'not-luo-device', reason: `${f.devicePath} ${what}; ${luo}`, fix: 'open /dev/liveupdate (the liveupdate misc device)' };
  }
  if (f.owners.length > 0) {
    const self = f.owners.some((o) => o.pid === f.pid);
    return {
      id: 'device-busy',
      reason: `${f.devicePath} is busy (EBUSY): it has one owner at a time, and ${describeOwners(f.owners, f.pid)} holds it open`,
      fix: self
        ? 'use the LiveUpdate this process already opened, or close it first'
        : 'stop that process, or hand it the files to preserve (see "Handing fds between processes"): only one process may own the device',
    };
  }
  if (!f.accessible) {
    return {
      id: 'permission-denied',
      reason: `this user may not open ${f.devicePath} read-write`,
      fix: `run as root, or give this user read-write access to ${f.devicePath} (a udev rule)`,
    };
  }
  return null;
}

/** Only the diagnosis: what LiveUpdate.open() says when the device is missing. @internal */
export function diagnoseDevice(devicePath: string): Diagnosis | null {
  return diagnose(gatherFacts(devicePath, os.release()));
}
provideDeviceDiagnosis(diagnoseDevice);

// ---- reading the facts --------------------------------------------------------

/** The running kernel's config: /proc/config.gz (CONFIG_IKCONFIG_PROC), else /boot/config-RELEASE. */
export function readKernelConfig(release: string): KernelConfig | null {
  try {
    const compressed = fs.readFileSync('/proc/config.gz');
    // node:zlib (and the streams it loads) only when there is a config to unpack: few programs ever diagnose, and
    // a kernel without CONFIG_IKCONFIG_PROC (the agent's missing device, in the test bed's guests) never does.
    const zlib = require('node:zlib') as typeof import('node:zlib');
    const text = zlib.gunzipSync(compressed).toString('utf8');
    return { source: '/proc/config.gz', options: parseKernelConfig(text) };
  } catch {
    // Absent (no CONFIG_IKCONFIG_PROC) or unreadable: try /boot.
  }
  const file = `/boot/config-${release}`;
  const text = readText(file);
  return text === null ? null : { source: file, options: parseKernelConfig(text) };
}

/**
 * The kernel's log so far, as `dmesg` shows it without timestamps: the text
 * of each record in /dev/kmsg, one a line (a record's continuation lines
 * left out), oldest first. What `status()` reads to tell why LUO is
 * missing (`kernelLogReadable` says whether it could); useful beside it to
 * show the lines themselves. Reads only, never blocks.
 *
 * @returns the log, or null where it is not readable (without CAP_SYSLOG
 *   when `kernel.dmesg_restrict` is 1, or no /dev/kmsg).
 */
export function readKernelLog(): string | null {
  let fd: number;
  try {
    fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  const lines: string[] = [];
  const buffer = Buffer.alloc(8192);
  try {
    // Each read returns one record; EAGAIN marks the end, EPIPE a record overwritten meanwhile.
    for (;;) {
      try {
        const n = fs.readSync(fd, buffer, 0, buffer.length, null);
        if (n === 0) break;
        lines.push(buffer.toString('utf8', 0, n).split(';').slice(1).join(';').split('\n')[0] ?? '');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EPIPE') continue;
        if (lines.length === 0 && (error as NodeJS.ErrnoException).code !== 'EAGAIN') return null;
        break;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return lines.join('\n');
}

/** The device number of `path` if it is a character device, else null (also when it does not exist). */
export function charDeviceNumber(path: string): DeviceNumber | null {
  try {
    const st = fs.statSync(path);
    return st.isCharacterDevice() ? splitDevNumber(st.rdev) : null;
  } catch {
    return null;
  }
}

/**
 * The processes holding `path` open, found by reading the /proc/PID/fd
 * links this user may read (all of them as root, its own otherwise).
 */
export function deviceOwners(path: string): DeviceOwner[] {
  let target: string;
  try {
    target = fs.realpathSync(path);
  } catch {
    return [];
  }
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  const owners: DeviceOwner[] = [];
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // Not ours to see, or gone.
    }
    const holds = fds.some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === target;
      } catch {
        return false;
      }
    });
    if (holds) owners.push({ pid: Number(pid), command: readText(`/proc/${pid}/comm`)?.trim() ?? null });
  }
  return owners;
}

/** Whether this process may open `path` read-write. */
export function accessible(path: string): boolean {
  try {
    fs.accessSync(path, fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Gathers the facts for `devicePath` from this machine. Holders are looked
 * for only when the path is LUO's device (its number is the one the kernel
 * registered): the holders of another path (`/dev/null`) are nobody's
 * concern here.
 */
export function gatherFacts(devicePath: string, release: string): Facts {
  const deviceExists = fs.existsSync(devicePath);
  const luoDevice = liveUpdateDeviceNumber();
  const miscKnown = miscListReadable();
  const pathDevice = deviceExists ? charDeviceNumber(devicePath) : null;
  return {
    release,
    cmdline: readText('/proc/cmdline'),
    config: readKernelConfig(release),
    kernelLog: deviceExists ? null : readKernelLog(),
    devicePath,
    deviceExists,
    luoDevice,
    miscListReadable: miscKnown,
    pathDevice,
    accessible: deviceExists && accessible(devicePath),
    owners: isLiveUpdateDevice(pathDevice, luoDevice, miscKnown) ? deviceOwners(devicePath) : [],
    pid: process.pid,
  };
}
