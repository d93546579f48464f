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
  const match = /^(\d+):(\d+)\s*$/.exec(text);
  return match === null ? null : { major: Number(match[1]), minor: Number(match[2]) };
}

/** The minor of misc device `name` in /proc/misc (`123 liveupdate` lines). */
export function parseProcMisc(text: string, name: string): DeviceNumber | null {
  for (const line of text.split('\n')) {
    const match = /^\s*(\d+)\s+(\S+)\s*$/.exec(line);
    if (match?.[2] === name) return { major: MISC_MAJOR, minor: Number(match[1]) };
  }
  return null;
}

/** Major and minor of a `st_rdev` as glibc encodes it (gnu_dev_major/minor). */
export function splitDevNumber(rdev: number | bigint): DeviceNumber {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
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
