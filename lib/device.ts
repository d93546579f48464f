/**
 * Which character device is LUO's: what opening the device checks on every
 * open, kept apart from the diagnosis (lib/diagnosis.ts, which re-exports
 * these) so that an open loads no diagnosis until one is asked for.
 */
import * as fs from 'node:fs';

/** Default path of the LUO character device. */
export const DEVICE_PATH = '/dev/liveupdate';

/** The misc devices' character major (MISC_MAJOR). */
export const MISC_MAJOR = 10;

/** A character device number. */
export interface DeviceNumber {
  major: number;
  minor: number;
}

/** A file's text, or null where it cannot be read. @internal */
export function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** The number in /sys/class/misc/NAME/dev (`10:123`). */
export function parseDevNumber(text: string): DeviceNumber | null {
  // Read by hand, not by a regular expression: its first use compiles it, and
  // under emulation, where code run for the first time is what costs, that was
  // a visible part of an open in a new kernel.
  const number = text.trimEnd();
  const colon = number.indexOf(':');
  if (colon < 0) return null;
  const major = decimal(number.slice(0, colon));
  const minor = decimal(number.slice(colon + 1));
  return major === null || minor === null ? null : { major, minor };
}

/** The value of a string of decimal digits, or null for anything else (empty, a sign, a space). */
function decimal(digits: string): number | null {
  if (digits.length === 0) return null;
  for (let i = 0; i < digits.length; i++) {
    const c = digits.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return null;
  }
  return Number(digits);
}

/** The minor of misc device `name` in /proc/misc (`123 liveupdate` lines). */
export function parseProcMisc(text: string, name: string): DeviceNumber | null {
  for (const line of text.split('\n')) {
    const match = /^\s*(\d+)\s+(\S+)\s*$/.exec(line);
    if (match?.[2] === name) return { major: MISC_MAJOR, minor: Number(match[1]) };
  }
  return null;
}

/**
 * Major and minor of a `st_rdev` as glibc encodes it (gnu_dev_major and
 * gnu_dev_minor, each taken from 32-bit parts of the 64-bit dev_t). A number
 * is split as a number: fs.Stats' are exact below 2^53, and the kernel's
 * device numbers are 32 bits. (BigInt arithmetic's first use would be new
 * code too, see parseDevNumber.)
 */
export function splitDevNumber(rdev: number | bigint): DeviceNumber {
  const [low, high] = typeof rdev === 'bigint' ? halves(rdev) : [rdev % 2 ** 32, Math.floor(rdev / 2 ** 32)];
  const major = ((low >>> 8) & 0xfff) | (high & ~0xfff);
  // dev_t's bits 12 to 43 (the shifts and masks of 32-bit integers keep just those), low byte cleared.
  const minor = (low & 0xff) | (((low >>> 12) | (high << 20)) & ~0xff);
  return { major: major >>> 0, minor: minor >>> 0 };
}

/** The low and high 32 bits of a 64-bit dev_t. */
function halves(rdev: bigint): [low: number, high: number] {
  return [Number(BigInt.asUintN(32, rdev)), Number(BigInt.asUintN(32, rdev >> 32n))];
}

/**
 * Whether a character device number is LUO's: equal to the number the
 * kernel registered for the liveupdate misc device. Where the kernel's list
 * of misc devices cannot be read (no sysfs, no procfs), only the misc major
 * can be checked; the first ioctl then tells the rest.
 */
export function isLiveUpdateDevice(device: DeviceNumber | null, luo: DeviceNumber | null, miscListKnown: boolean): boolean {
  if (device === null) return false;
  if (luo !== null) return device.major === luo.major && device.minor === luo.minor;
  return !miscListKnown && device.major === MISC_MAJOR;
}

/**
 * The liveupdate misc device's number as this kernel registered it. Its
 * minor is dynamic (MISC_DYNAMIC_MINOR), so it must be read, not assumed:
 * /sys/class/misc/liveupdate/dev has major and minor; /proc/misc has the
 * minor (the major is MISC_MAJOR) where sysfs is not mounted.
 */
export function liveUpdateDeviceNumber(): DeviceNumber | null {
  const sys = readText('/sys/class/misc/liveupdate/dev');
  if (sys !== null) return parseDevNumber(sys);
  const misc = readText('/proc/misc');
  return misc === null ? null : parseProcMisc(misc, 'liveupdate');
}

/** Whether the kernel's misc-device list was readable at all (sysfs or /proc/misc). */
export function miscListReadable(): boolean {
  return fs.existsSync('/sys/class/misc') || readText('/proc/misc') !== null;
}

/** What a failed open asks of the diagnosis: why `path` cannot be LUO's device, or null. */
export type DeviceDiagnosis = (path: string) => { reason: string; fix: string } | null;

let diagnosisOfDevice: DeviceDiagnosis | undefined;

/** Called by diagnosis.ts when it loads: the diagnosis a failed open uses. @internal */
export function provideDeviceDiagnosis(diagnose: DeviceDiagnosis): void {
  diagnosisOfDevice = diagnose;
}

/**
 * Why an open of `path` failed, from the diagnosis, which loads here the
 * first time an open fails, without status() and kexec, which it does not
 * need. Where something already loaded diagnosis.ts (a loader that runs lib/
 * as ES module source, in which require() finds no TypeScript), it is used
 * as it is.
 * @internal
 */
export function diagnoseDevice(path: string): { reason: string; fix: string } | null {
  if (diagnosisOfDevice === undefined) require('./diagnosis.js');
  return diagnosisOfDevice === undefined ? null : diagnosisOfDevice(path);
}
