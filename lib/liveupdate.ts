/**
 * LiveUpdate: the owner of /dev/liveupdate. Sessions are created (before
 * the kexec) and retrieved (after it) through the device; they then live on
 * their own fds, independently of the device.
 */
import * as fs from 'node:fs';
import { DEVICE_PATH, diagnoseDevice, isLiveUpdateDevice, liveUpdateDeviceNumber, miscListReadable, splitDevNumber, type DeviceNumber } from './device.js';
import { callAsync, callSync, packageError, translateError, type ErrorContext } from './errors.js';
import { native } from './native.js';
import { Session } from './session.js';
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
   * Opens the LUO device (default `/dev/liveupdate`) and checks that it is
   * LUO's: a path that is not the liveupdate misc device is refused with
   * NotLiveUpdateDeviceError (and the fd closed again). Fails with
   * LiveUpdateUnavailableError (whose `reason` and `fix` come from status())
   * where the kernel has no LUO, DeviceBusyError (naming the owner where
   * /proc shows it) while another process owns it.
   */
  static async open(path: string = DEVICE_PATH): Promise<LiveUpdate> {
    checkPath(path, 'path');
    let fd: number;
    try {
      fd = await native.openDeviceAsync(path);
    } catch (error) {
      throw LiveUpdate.#openError(path, error);
    }
    return new LiveUpdate(verifyDevice(fd, path), path);
  }

  /** The synchronous form of {@link open}. */
  static openSync(path: string = DEVICE_PATH): LiveUpdate {
    checkPath(path, 'path');
    let fd: number;
    try {
      fd = native.openDevice(path);
    } catch (error) {
      throw LiveUpdate.#openError(path, error);
    }
    return new LiveUpdate(verifyDevice(fd, path), path);
  }

  /** Types an open failure, with status()'s reason and fix where they explain it. */
  static #openError(path: string, error: unknown): unknown {
    const context: ErrorContext = { operation: 'open', path };
    const code = (error as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'EBUSY' || code === 'EACCES' || code === 'EPERM') {
      const found = diagnoseDevice(path);
      if (found !== null) Object.assign(context, { hint: found.reason, fix: found.fix });
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
    callSync({ operation: 'close', fd, path: this.#path }, () => native.close(fd));
  }

  /** Closes the device: for `using`. */
  [Symbol.dispose](): void {
    this.closeSync();
  }

  #context(operation: 'createSession' | 'retrieveSession', sessionName: string): ErrorContext {
    const context: ErrorContext = { operation, sessionName, request: REQUEST[operation], path: this.#path };
    if (this.#fd < 0) {
      throw packageError('ERR_LIVEUPDATE_DEVICE_CLOSED', `${this.#path} was closed; open it again to ${operation}`, context);
    }
    return context;
  }
}

/**
 * Returns `fd` if it is the liveupdate misc device; otherwise closes it and
 * throws. Checked on the open fd (fstat), not the path, so nothing can swap
 * the file between the check and the use. The expected number is read from
 * the kernel (its minor is dynamic), see isLiveUpdateDevice.
 */
function verifyDevice(fd: number, path: string): number {
  let device: DeviceNumber | null = null;
  try {
    const st = fs.fstatSync(fd);
    if (st.isCharacterDevice()) device = splitDevNumber(st.rdev);
  } catch {
    // An fd we just opened does not fail fstat; if it did, it is no device of ours.
  }
  const luo = liveUpdateDeviceNumber();
  // Whether the misc list is readable matters only when it named no liveupdate device: a stat the open skips otherwise.
  if (isLiveUpdateDevice(device, luo, luo !== null || miscListReadable())) return fd;
  fs.closeSync(fd);
  const what = device === null ? 'is not a character device' : `is device ${device.major}:${device.minor}`;
  const expected = luo === null ? 'this kernel registered no liveupdate device' : `the liveupdate device is ${luo.major}:${luo.minor}`;
  const fix = 'open /dev/liveupdate (the liveupdate misc device)';
  throw packageError('ERR_LIVEUPDATE_NOT_LUO_DEVICE', `${path} ${what}, not Live Update Orchestrator's (${expected})`, { operation: 'open', path, fd, fix });
}
