/**
 * status(): can Live Update Orchestrator be used here, if not, why, and what
 * to do about it. Reads /proc, /sys and the kernel's config and log only
 * (see diagnosis.ts), unless asked to probe the device (which takes it).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { compareReleases, diagnose, FIRST_LUO_RELEASE, gatherFacts, kernelParam, type DeviceOwner, type Diagnosis, type DiagnosisId } from './diagnosis.js';
import * as kexec from './kexec.js';
import type { KexecFileSupport } from './kexec.js';
import { closeFd, loadNative, native } from './native.js';
import { checkOptions } from './validate.js';
import { DEVICE_PATH, readText } from './device.js';
import { AGENT_INFO_PATH } from './agent/names.js';

export { DEVICE_PATH } from './device.js';

/** Where `liveupdate agent` (as root) says who it is (its home is agent/names.ts, which the agent loads without this module). */
export { AGENT_INFO_PATH };

/** Where the kernel gives each boot's random id. */
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

/** The agent running on this host, as it described itself at its start. */
export interface AgentInfo {
  /** Its process. */
  pid: number;
  /** `systemd` (it opens the device only for each create) or `standalone` (it holds the device). */
  mode: 'systemd' | 'standalone';
  /** Why that mode. */
  reason: string;
  /** The socket clients connect to (null when it serves one systemd passed it). */
  socket: string | null;
}

/** What status() found. */
export interface Status {
  /** True if nothing stands in LUO's way: the device exists, is LUO's, is accessible, nobody holds it, and (when probed) it opened. */
  available: boolean;
  /** Why LUO is unavailable, or what limits it; `null` when all is well. */
  reason: string | null;
  /** What to do about {@link reason}; `null` when all is well. */
  fix: string | null;
  /** Which reason, as a stable identifier; `null` when all is well (or for a probe's own failure). */
  diagnosis: DiagnosisId | null;
  /** `uname -r`. */
  kernelRelease: string;
  /**
   * This boot's id (`/proc/sys/kernel/random/boot_id`): a new one at every
   * boot, a kexec's included, so that an orchestrator tells whether a host
   * it left jumped; null if unreadable.
   */
  bootId: string | null;
  /** Whether this release is at least {@link FIRST_LUO_RELEASE}; null if the release is not a version. */
  releaseHasLuo: boolean | null;
  /** The device path examined. */
  devicePath: string;
  /** Whether the device node exists. */
  deviceExists: boolean;
  /** Processes holding the device open, where /proc shows them (all as root, this user's otherwise); empty when the path is not LUO's device. */
  deviceOwners: DeviceOwner[];
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
  /** Where the config was read (`/proc/config.gz`, `/boot/config-RELEASE`), or null. */
  configSource: string | null;
  /** Whether the kernel log was readable for the diagnosis (it is read only when the device is missing). */
  kernelLogReadable: boolean | null;
  /** Whether the device was opened by the probe; null when not probed. */
  deviceOpenable: boolean | null;
  /** Whether LIVEUPDATE_SESSION_GET_NAME works; null when not probed. */
  getName: boolean | null;
  /** Whether a kexec kernel is loaded now (false where the kernel has no kexec); null if unknown. */
  kexecLoaded: boolean | null;
  /** Whether `kexec.load()` can work here (kexec_file_load exists and may be called), and if not, why. */
  kexecFile: KexecFileSupport;
  /** Why the native addon did not load; null when it did. status() works without it, with less to tell. */
  addon: string | null;
  /** The agent running here (`liveupdate agent`), when it said so in its info file and its process still runs; null otherwise. */
  agent: AgentInfo | null;
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
      closeFd(session);
    }
  } catch (error) {
    return { openable: true, getName: null, error: (error as Error).message };
  } finally {
    closeFd(device);
  }
}

/** What the kexec API can do here; both null where the addon is missing. */
function kexecFacts(addon: string | null): { kexecLoaded: boolean | null; kexecFile: KexecFileSupport } {
  if (addon !== null) return { kexecLoaded: null, kexecFile: { available: null, reason: 'the native addon is not loaded' } };
  let kexecLoaded: boolean | null;
  try {
    kexecLoaded = kexec.isLoadedSync();
  } catch {
    kexecLoaded = null;
  }
  return { kexecLoaded, kexecFile: kexec.supportSync() };
}

/** Why the addon does not load, or null when it does. */
function addonProblem(): string | null {
  try {
    loadNative();
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

/** The agent's info file, if it names a process that still runs. @internal */
export function runningAgent(file = AGENT_INFO_PATH): AgentInfo | null {
  let info: Partial<AgentInfo>;
  try {
    info = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<AgentInfo>;
  } catch {
    return null;
  }
  if (typeof info.pid !== 'number' || (info.mode !== 'systemd' && info.mode !== 'standalone') || !fs.existsSync(`/proc/${info.pid}`)) return null;
  return { pid: info.pid, mode: info.mode, reason: String(info.reason ?? ''), socket: typeof info.socket === 'string' ? info.socket : null };
}

/**
 * Whether the device is busy only because the standalone agent holds it:
 * then LUO is available, through the agent. @internal
 */
export function heldByAgent(found: Diagnosis | null, owners: readonly DeviceOwner[], agent: AgentInfo | null): agent is AgentInfo {
  return found?.id === 'device-busy' && agent !== null && agent.mode === 'standalone' && owners.length > 0 && owners.every((o) => o.pid === agent.pid);
}

/**
 * Reports whether LUO is usable on this machine and, if not, why, with a
 * `fix` line: a kernel older than Linux 6.19, one built without
 * CONFIG_LIVEUPDATE, a boot without `liveupdate=on`, Kexec HandOver off or
 * without its scratch memory, a device held by another process (which, where
 * /proc shows it), or a path that is not LUO's device. The diagnosis reads
 * files only; `probe` also opens the device.
 */
export function statusSync(options?: StatusOptions): Status {
  const opts = checkOptions<StatusOptions>(options);
  const devicePath = opts.path ?? DEVICE_PATH;
  const release = os.release();
  const facts = gatherFacts(devicePath, release);
  const cmdline = facts.cmdline;
  const agent = runningAgent();
  const diagnosed = diagnose(facts);
  // The standalone agent holds the device by design: LUO is there, through it.
  const found = heldByAgent(diagnosed, facts.owners, agent) ? null : diagnosed;
  const addon = addonProblem();
  const base = {
    kernelRelease: release,
    bootId: readText(BOOT_ID_PATH)?.trim() ?? null,
    releaseHasLuo: ((d) => (d === null ? null : d >= 0))(compareReleases(release, FIRST_LUO_RELEASE)),
    devicePath,
    deviceExists: facts.deviceExists,
    deviceOwners: [...facts.owners],
    liveupdateParam: cmdline === null ? null : kernelParam(cmdline, 'liveupdate'),
    kho: {
      param: cmdline === null ? null : kernelParam(cmdline, 'kho'),
      debugfs: fs.existsSync('/sys/kernel/debug/kho'),
      incoming: fs.existsSync('/sys/kernel/debug/kho') ? fs.existsSync('/sys/kernel/debug/kho/in') : null,
    },
    configLiveupdate: facts.config === null ? null : ['y', 'm'].includes(facts.config.options.get('CONFIG_LIVEUPDATE') ?? 'n'),
    configSource: facts.config?.source ?? null,
    kernelLogReadable: facts.deviceExists ? null : facts.kernelLog !== null,
    deviceOpenable: null as boolean | null,
    getName: null as boolean | null,
    ...kexecFacts(addon),
    addon,
    agent,
  };
  let reason = found?.reason ?? null;
  // A probe asked for is made whenever there is a LUO device to open, even one
  // the diagnosis already calls busy: deviceOpenable then says what open() did.
  if (opts.probe === true && addon === null && facts.deviceExists && found?.id !== 'not-luo-device') {
    const probe = probeDevice(devicePath);
    base.deviceOpenable = probe.openable;
    base.getName = probe.getName;
    if (reason === null && probe.error !== null) reason = probe.error;
  }
  const available = found === null && (reason === null || base.deviceOpenable === true);
  return { available, reason, fix: found?.fix ?? null, diagnosis: found?.id ?? null, ...base };
}

/** The Promise form of {@link statusSync}. */
export async function status(options?: StatusOptions): Promise<Status> {
  return statusSync(options);
}
