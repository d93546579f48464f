/**
 * status(): can Live Update Orchestrator be used here, and if not, why.
 * Reads /proc and /sys only, unless asked to probe the device (which takes it).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { native } from './native.js';
import { checkOptions } from './validate.js';

/** Default path of the LUO character device. */
export const DEVICE_PATH = '/dev/liveupdate';

/** What status() found. */
export interface Status {
  /** True if the device exists and (when probed) could be opened. */
  available: boolean;
  /** Why LUO is unavailable, or what limits it; `null` when all is well. */
  reason: string | null;
  /** `uname -r`. */
  kernelRelease: string;
  /** The device path examined. */
  devicePath: string;
  /** Whether the device node exists. */
  deviceExists: boolean;
  /** The `liveupdate=` value on the kernel command line, or null if absent. */
  liveupdateParam: string | null;
  /** Kexec HandOver, which LUO rides on. */
  kho: {
    /** The `kho=` value on the kernel command line, or null if absent (the kernel's default applies). */
    param: string | null;
    /** Whether KHO's debugfs directory is visible (needs debugfs mounted). */
    debugfs: boolean;
    /** Whether this kernel was started with KHO state from a previous kernel, if debugfs tells. */
    incoming: boolean | null;
  };
  /** CONFIG_LIVEUPDATE from the kernel's config, if a config file was readable. */
  configLiveupdate: boolean | null;
  /** Whether the device was opened by the probe; null when not probed. */
  deviceOpenable: boolean | null;
  /** Whether LIVEUPDATE_SESSION_GET_NAME works; null when not probed. */
  getName: boolean | null;
  /** Whether a kexec kernel is loaded now, or null if unknown. */
  kexecLoaded: boolean | null;
}

/** Options for status(). */
export interface StatusOptions {
  /** Device path (default /dev/liveupdate). */
  path?: string;
  /**
   * Open the device and create and close a throw-away session to learn
   * whether it opens and whether GET_NAME works (default false). The device
   * has a single owner: while the probe holds it, the real owner's `open()`
   * fails with EBUSY, so probe only where no agent may be starting. The
   * probe fails with EBUSY while another process owns the device; that is
   * reported, not thrown.
   */
  probe?: boolean;
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** The value of `key=` on the kernel command line (last one wins, as the kernel parses). */
export function kernelParam(cmdline: string, key: string): string | null {
  let value: string | null = null;
  for (const word of cmdline.trim().split(/\s+/)) {
    if (word === key) value = '';
    else if (word.startsWith(`${key}=`)) value = word.slice(key.length + 1);
  }
  return value;
}

/** True for the spellings the kernel's kstrtobool accepts as "on". */
export function paramEnabled(value: string | null): boolean {
  return value !== null && /^(1|y|Y|on|ON|On|yes|true)$/.test(value);
}

function configLiveupdate(release: string): boolean | null {
  const config = readText(`/boot/config-${release}`);
  if (config === null) return null;
  return /^CONFIG_LIVEUPDATE=y$/m.test(config);
}

function kexecLoaded(): boolean | null {
  const text = readText('/sys/kernel/kexec_loaded');
  return text === null ? null : text.trim() === '1';
}

interface Probe {
  openable: boolean;
  getName: boolean | null;
  error: string | null;
}

/** Opens the device, creates, names and closes a throw-away session. */
function probeDevice(devicePath: string): Probe {
  let device: number;
  try {
    device = native.openDevice(devicePath);
  } catch (error) {
    return { openable: false, getName: null, error: (error as Error).message };
  }
  try {
    const session = native.createSession(device, `liveupdate-probe-${process.pid}`);
    try {
      native.getSessionName(session);
      return { openable: true, getName: true, error: null };
    } catch {
      return { openable: true, getName: false, error: null };
    } finally {
      native.close(session);
    }
  } catch (error) {
    return { openable: true, getName: null, error: (error as Error).message };
  } finally {
    native.close(device);
  }
}

function unavailableReason(s: Omit<Status, 'available' | 'reason'>, cmdline: string | null): string | null {
  if (s.deviceExists) return null;
  if (s.configLiveupdate === false) return `kernel ${s.kernelRelease} was built without CONFIG_LIVEUPDATE`;
  if (cmdline !== null && !paramEnabled(s.liveupdateParam)) {
    const extra = s.configLiveupdate === null ? ' (or lacks CONFIG_LIVEUPDATE)' : '';
    return `kernel ${s.kernelRelease} was booted without liveupdate=on${extra}`;
  }
  if (s.kho.param !== null && !paramEnabled(s.kho.param)) return `Kexec HandOver is off (kho=${s.kho.param}); LUO needs it`;
  return `${s.devicePath} does not exist on kernel ${s.kernelRelease}: it lacks CONFIG_LIVEUPDATE, or LUO failed to start (see dmesg)`;
}

/**
 * Reports whether LUO is usable on this machine and, if not, why: a kernel
 * without CONFIG_LIVEUPDATE, a boot without `liveupdate=on`, KHO off, or a
 * device already owned by another process.
 */
export function statusSync(options?: StatusOptions): Status {
  const opts = checkOptions<StatusOptions>(options);
  const devicePath = opts.path ?? DEVICE_PATH;
  const cmdline = readText('/proc/cmdline');
  const release = os.release();
  const base = {
    kernelRelease: release,
    devicePath,
    deviceExists: fs.existsSync(devicePath),
    liveupdateParam: cmdline === null ? null : kernelParam(cmdline, 'liveupdate'),
    kho: {
      param: cmdline === null ? null : kernelParam(cmdline, 'kho'),
      debugfs: fs.existsSync('/sys/kernel/debug/kho'),
      incoming: fs.existsSync('/sys/kernel/debug/kho') ? fs.existsSync('/sys/kernel/debug/kho/in') : null,
    },
    configLiveupdate: configLiveupdate(release),
    deviceOpenable: null as boolean | null,
    getName: null as boolean | null,
    kexecLoaded: kexecLoaded(),
  };
  let reason = unavailableReason(base, cmdline);
  if (reason === null && opts.probe === true) {
    const probe = probeDevice(devicePath);
    base.deviceOpenable = probe.openable;
    base.getName = probe.getName;
    if (probe.error !== null) reason = probe.error;
  }
  return { available: reason === null || base.deviceOpenable === true, reason, ...base };
}

/** The Promise form of {@link statusSync}. */
export async function status(options?: StatusOptions): Promise<Status> {
  return statusSync(options);
}
