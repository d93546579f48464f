/**
 * What the agent's mode changes, behind one interface: how it reaches the
 * device, where its sessions wait until the kexec, and how it jumps. The
 * standalone host is here; the systemd host is in systemd-host.ts.
 * @internal
 */
// First: the module comment's @internal strips the first statement from the declarations, and they need no kexec.
import type * as KexecModule from '../kexec.js';
import { agentError, LiveUpdateError, type AgentOperation } from '../errors.js';
import type { KernelPreflight } from '../kernel-image.js';
import { onFirstUse } from '../lazy.js';
import { LiveUpdate } from '../liveupdate.js';
import type { Session } from '../session.js';
import { closeQuietly } from './fdstore.js';
import { takeIncomingManifest, writeManifest, MANIFEST_TOKEN, type IncomingManifest, type Manifest } from './manifest.js';
import type { ModeDecision } from './mode.js';
import { AGENT_SESSION_NAME } from './names.js';
import type { UpdateCheck } from './protocol.js';

/** What the agent does with the device: create and retrieve sessions (the real device, or a simulated one). */
export type SessionDevice = Pick<LiveUpdate, 'createSession' | 'retrieveSession' | 'retrieveSessionSync'>;

/** How the next kernel is checked and loaded for the jump. */
export interface KernelLoader {
  /** The kernel preflight's checks of the image, or null for the real one (which inspects the image and this kernel). */
  readonly preflight: ((kernel: string, cmdline: string) => { checks: UpdateCheck[]; report: KernelPreflight | null }) | null;
  /** Loads it (kexec_file_load). */
  load(options: { kernel: string; initrd?: string; cmdline: string }): Promise<void>;
  /** Unloads it: the update ended without a jump. */
  unload(): Promise<void>;
}

/** The kernel's own kexec: what every real host loads with. */
/** kexec, loaded when an update first loads a kernel: the agent's start needs none of it. */
function kexecModule(): typeof KexecModule {
  return onFirstUse('kexec', () => require('../kexec.js') as typeof KexecModule);
}

export const KEXEC_LOADER: KernelLoader = { preflight: null, load: (options) => kexecModule().load(options), unload: () => kexecModule().unload() };

/** An fd the agent parks in its fd store beside its sessions, replacing what was stored under that name. */
export interface ParkedFd {
  /** Its FDNAME. */
  fdName: string;
  /** The fd (still the host's: parking sends a copy). */
  fd: number;
}

/** The agent's view of its host (see the module's comment). */
export interface AgentHost {
  /** The mode and why. */
  readonly decision: ModeDecision;
  /** Why the device cannot be used, or null. */
  readonly deviceError: LiveUpdateError | null;
  /** How many sessions the agent may hold (its fd store's room for them), or null for no limit. */
  readonly storeMax: number | null;
  /** Whether sessions handed over by the previous kernel wait in the fd store too (and so count against {@link storeMax}). */
  readonly incomingInStore: boolean;
  /** Whether a claim may retrieve a session by its name from the device (standalone; under systemd PID 1 has retrieved them). */
  readonly retrievesByName: boolean;
  /** Gets the device ready; a device that cannot be used is {@link deviceError}, not a throw. */
  open(): Promise<void>;
  /** How the next kernel is checked and loaded. */
  readonly loader: KernelLoader;
  /** Runs `use` with the device (AgentUnavailableError for `operation` when there is none). */
  withDevice<T>(operation: AgentOperation, use: (device: SessionDevice) => Promise<T>): Promise<T>;
  /** What the previous kernel's agent left: `parked` is the fd stored under the manifest's FDNAME, if any. */
  incomingManifest(parked: number | undefined): Promise<IncomingManifest>;
  /** A session was just created: the host keeps it where it survives the agent (systemd: the fd store). */
  keep(kernelName: string, session: Session): Promise<void>;
  /** The jump with `manifest` handed over; never resolves; rejects when there was no jump (or with {@link KexecUnderway}). */
  jump(manifest: Manifest, signal: AbortSignal): Promise<never>;
  /** What the host adds to the fd store when the agent stops (systemd: the sealed manifest of a kexec under way). */
  parkedFds(): ParkedFd[];
  /** Lets go of the device and whatever else the host holds. */
  close(): void;
}

/**
 * Thrown by a jump that was started and goes on without the agent:
 * systemd stops the agent on its way to the kexec. The update leaves the
 * kernel loaded and does not answer.
 */
export class KexecUnderway extends Error {
  constructor() {
    super('the kexec is under way: the service manager stops the agent on its way to it');
  }
}

/** The agent without a device (or before it is opened), for an operation that needs one. */
export function noDevice(operation: AgentOperation, why: LiveUpdateError | null): LiveUpdateError {
  return agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', `the agent cannot use /dev/liveupdate: ${why?.message ?? 'the device is closed'}`, { operation });
}

/** The manifest preserved in the agent's own session (token 0), which the next kernel's agent retrieves by name. */
export async function preserveManifest(device: SessionDevice, manifest: Manifest): Promise<Session> {
  const own = await device.createSession(AGENT_SESSION_NAME);
  try {
    const fd = writeManifest(manifest);
    try {
      await own.preserve(fd, MANIFEST_TOKEN);
    } finally {
      closeQuietly(fd);
    }
    return own;
  } catch (error) {
    await own.close();
    throw error;
  }
}

/** What a standalone host holds the device with and jumps by: the kernel's ({@link kernelSystem}) or a simulation's. */
export interface StandaloneSystem {
  /** How the next kernel is checked and loaded. */
  readonly loader: KernelLoader;
  /** Opens the device (a LiveUpdateError when it cannot be used). */
  openDevice(): Promise<SessionDevice & { closeSync(): void }>;
  /** The jump, the manifest preserved in `own`: never resolves; rejects when there was none (or with {@link KexecUnderway}). */
  execute(own: Session, signal: AbortSignal): Promise<never>;
}

/** The kernel's device at `devicePath` and its kexec. */
export function kernelSystem(devicePath: string): StandaloneSystem {
  return { loader: KEXEC_LOADER, openDevice: () => LiveUpdate.open(devicePath), execute: () => kexecModule().execute() };
}

/** Standalone: the agent owns the device from its start to its stop, and jumps itself (reboot(), or the simulation's kexec). */
export class StandaloneHost implements AgentHost {
  readonly incomingInStore = false;
  readonly retrievesByName = true;
  #device: (SessionDevice & { closeSync(): void }) | null = null;
  #deviceError: LiveUpdateError | null = null;

  constructor(
    readonly decision: ModeDecision,
    readonly storeMax: number | null,
    private readonly system: StandaloneSystem,
  ) {}

  get loader(): KernelLoader {
    return this.system.loader;
  }

  get deviceError(): LiveUpdateError | null {
    return this.#deviceError;
  }

  async open(): Promise<void> {
    try {
      this.#device = await this.system.openDevice();
    } catch (error) {
      if (!(error instanceof LiveUpdateError)) throw error;
      this.#deviceError = error;
    }
  }

  withDevice<T>(operation: AgentOperation, use: (device: SessionDevice) => Promise<T>): Promise<T> {
    if (this.#device === null) return Promise.reject(noDevice(operation, this.#deviceError));
    return use(this.#device);
  }

  async incomingManifest(parked: number | undefined): Promise<IncomingManifest> {
    return this.#device === null ? { kind: 'none' } : takeIncomingManifest(this.#device, parked);
  }

  async keep(): Promise<void> {
    // The agent's own reference keeps it; the fd store gets it only at a stop under systemd.
  }

  async jump(manifest: Manifest, signal: AbortSignal): Promise<never> {
    const own = await this.withDevice('agent.update', (device) => preserveManifest(device, manifest));
    try {
      return await this.system.execute(own, signal);
    } catch (error) {
      // No jump: the manifest's session goes (the caller unloads). After a simulated one its fd is dead anyway.
      await own.close();
      throw error;
    }
  }

  parkedFds(): ParkedFd[] {
    return [];
  }

  close(): void {
    this.#device?.closeSync();
    this.#device = null;
  }
}
