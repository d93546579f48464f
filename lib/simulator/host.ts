/**
 * The agent's host on a simulated LUO (lib/agent/host.ts's standalone
 * host on a simulated system): the device is the simulator's, the kernel
 * is neither read nor loaded, and the jump is the simulated kexec.
 * @internal
 */
// First: the module comment's @internal strips the first statement from the declarations, and they need no DEVICE_PATH.
import { DEVICE_PATH } from '../device.js';
import { callSync, packageError, type ErrorContext } from '../errors.js';
import { Session } from '../session.js';
import { checkSessionName } from '../validate.js';
import { KexecUnderway, StandaloneHost, type KernelLoader, type SessionDevice } from '../agent/host.js';
import type { ModeDecision } from '../agent/mode.js';
import type { SimulatedLuo } from './kernel.js';

/** The ioctl names, as the real device's errors carry them. */
const REQUEST = {
  createSession: 'LIVEUPDATE_IOCTL_CREATE_SESSION',
  retrieveSession: 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION',
} as const;

/**
 * The simulated `/dev/liveupdate`, opened: what `LiveUpdate` is on a real
 * kernel, with its errors (the same classes, codes, errnos and syscalls).
 */
export class SimulatedDevice implements SessionDevice {
  readonly #luo: SimulatedLuo;
  #handle: number | null;

  /** Opens the simulated device: DeviceBusyError (EBUSY, `open`) while another holder has it. */
  constructor(luo: SimulatedLuo) {
    this.#luo = luo;
    this.#handle = callSync({ operation: 'open', path: DEVICE_PATH }, () => luo.open());
  }

  /** Creates an outgoing session, as `LiveUpdate.createSession`. */
  async createSession(name: string): Promise<Session> {
    return this.createSessionSync(name);
  }

  /** The synchronous form of {@link createSession}. */
  createSessionSync(name: string): Session {
    const context = this.#context('createSession', checkSessionName(name));
    return new Session(callSync(context, () => this.#luo.createSession(this.#handle ?? -1, name)), name, 'outgoing');
  }

  /** Retrieves an incoming session, as `LiveUpdate.retrieveSession`. */
  async retrieveSession(name: string): Promise<Session> {
    return this.retrieveSessionSync(name);
  }

  /** The synchronous form of {@link retrieveSession}. */
  retrieveSessionSync(name: string): Session {
    const context = this.#context('retrieveSession', checkSessionName(name));
    return new Session(callSync(context, () => this.#luo.retrieveSession(this.#handle ?? -1, name)), name, 'incoming');
  }

  /** Closes the device (the sessions live on their fds). */
  closeSync(): void {
    if (this.#handle !== null) this.#luo.release(this.#handle);
    this.#handle = null;
  }

  #context(operation: 'createSession' | 'retrieveSession', sessionName: string): ErrorContext {
    const context: ErrorContext = { operation, sessionName, request: REQUEST[operation], path: DEVICE_PATH };
    if (this.#handle === null) throw packageError('ERR_LIVEUPDATE_DEVICE_CLOSED', `${DEVICE_PATH} was closed; open it again to ${operation}`, context);
    return context;
  }
}

/** The mode a simulated agent reports. */
export const SIMULATED_MODE: ModeDecision = { mode: 'standalone', reason: 'simulated LUO (liveupdate agent --simulate): no kernel takes part, for tests only', forced: false };

/** The preflight of a simulated kernel: nothing to read; the checks keep the real preflight's names. */
const SIMULATED_LOADER: KernelLoader = {
  preflight: () => ({
    checks: [
      { name: 'kernel-image', ok: true, detail: 'simulated: the image is not read' },
      { name: 'kernel-format', ok: true, detail: 'simulated: one handover format' },
      { name: 'kernel-luo', ok: true, detail: 'simulated: the next kernel has LUO' },
    ],
    report: null,
  }),
  load: async () => {},
  unload: async () => {},
};

/**
 * The agent's host on a {@link SimulatedLuo}: a standalone host whose
 * device is the simulator's and whose jump is the simulated kexec, after
 * which `kexecDone` is told (the agent must stop and start again: it does
 * not answer the update, as the real one cannot).
 */
export function simulatedHost(luo: SimulatedLuo, storeMax: number | null, kexecDone: () => void): StandaloneHost {
  return new StandaloneHost(SIMULATED_MODE, storeMax, {
    loader: SIMULATED_LOADER,
    openDevice: async () => new SimulatedDevice(luo),
    execute: async (_own, signal) => {
      luo.kexec();
      kexecDone();
      if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      throw new KexecUnderway();
    },
  });
}
