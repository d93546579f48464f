/**
 * LiveUpdate: the owner of /dev/liveupdate. Sessions are created (before
 * the kexec) and retrieved (after it) through the device; they then live on
 * their own fds, independently of the device.
 */
import { callAsync, callSync, LiveUpdateError, translateError, type ErrorContext } from './errors.js';
import { native } from './native.js';
import { Session } from './session.js';
import { DEVICE_PATH, statusSync } from './status.js';
import { checkPath, checkSessionName } from './validate.js';

const REQUEST = {
  createSession: 'LIVEUPDATE_IOCTL_CREATE_SESSION',
  retrieveSession: 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION',
} as const;

/**
 * An open `/dev/liveupdate`. One process owns the device at a time; closing
 * it does not end the sessions made through it.
 */
export class LiveUpdate {
  #fd: number;
  readonly #path: string;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.#path = path;
  }

  /**
   * Opens the LUO device (default `/dev/liveupdate`). Fails with
   * LiveUpdateUnavailableError (saying why, from status()) where the kernel
   * has no LUO, DeviceBusyError while another process owns it.
   */
  static async open(path: string = DEVICE_PATH): Promise<LiveUpdate> {
    checkPath(path, 'path');
    try {
      return new LiveUpdate(await native.openDeviceAsync(path), path);
    } catch (error) {
      throw LiveUpdate.#openError(path, error);
    }
  }

  /** The synchronous form of {@link open}. */
  static openSync(path: string = DEVICE_PATH): LiveUpdate {
    checkPath(path, 'path');
    try {
      return new LiveUpdate(native.openDevice(path), path);
    } catch (error) {
      throw LiveUpdate.#openError(path, error);
    }
  }

  /** Types an open failure; on ENOENT the message says why LUO is missing, from status(). */
  static #openError(path: string, error: unknown): unknown {
    const context: ErrorContext = { operation: 'open', path };
    if ((error as { code?: unknown }).code === 'ENOENT') {
      context.hint = statusSync({ path, probe: false }).reason ?? undefined;
    }
    return translateError(error, context);
  }

  /** The device fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** The device path opened. */
  get path(): string {
    return this.#path;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Creates an outgoing session named `name` (1 to 63 bytes of UTF-8, no NUL).
   * Fails with SessionExistsError while a live session has that name.
   */
  async createSession(name: string): Promise<Session> {
    const context = this.#context('createSession', checkSessionName(name));
    const fd = await callAsync(context, () => native.createSessionAsync(this.#fd, name));
    return new Session(fd, name, 'outgoing');
  }

  /** The synchronous form of {@link createSession}. */
  createSessionSync(name: string): Session {
    const context = this.#context('createSession', checkSessionName(name));
    return new Session(callSync(context, () => native.createSession(this.#fd, name)), name, 'outgoing');
  }

  /**
   * Retrieves the incoming session `name` preserved by the previous kernel.
   * Fails with SessionNotFoundError if there is none, and
   * SessionAlreadyRetrievedError if it was already retrieved.
   */
  async retrieveSession(name: string): Promise<Session> {
    const context = this.#context('retrieveSession', checkSessionName(name));
    const fd = await callAsync(context, () => native.retrieveSessionAsync(this.#fd, name));
    return new Session(fd, name, 'incoming');
  }

  /** The synchronous form of {@link retrieveSession}. */
  retrieveSessionSync(name: string): Session {
    const context = this.#context('retrieveSession', checkSessionName(name));
    return new Session(callSync(context, () => native.retrieveSession(this.#fd, name)), name, 'incoming');
  }

  /** Closes the device (sessions stay alive on their own fds). Closing twice is a no-op. */
  async close(): Promise<void> {
    this.closeSync();
  }

  /** The synchronous form of {@link close}. */
  closeSync(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    native.close(fd);
  }

  /** Closes the device: for `using`. */
  [Symbol.dispose](): void {
    this.closeSync();
  }

  #context(operation: 'createSession' | 'retrieveSession', sessionName: string): ErrorContext {
    const context: ErrorContext = { operation, sessionName, request: REQUEST[operation], path: this.#path };
    if (this.#fd < 0) {
      const message = `ERR_LIVEUPDATE_DEVICE_CLOSED: ${this.#path} was closed; open it again to ${operation}`;
      throw new LiveUpdateError(message, 'ERR_LIVEUPDATE_DEVICE_CLOSED', context);
    }
    return context;
  }
}
