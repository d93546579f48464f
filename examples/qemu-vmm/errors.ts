/**
 * The orchestrator's errors: one class per thing that can go wrong, each
 * with a stable `code` to branch on (as Node's own errors have), the cause
 * kept when one error wraps another.
 */

/** Every code the orchestrator's errors carry. */
export type VmmErrorCode =
  | 'ERR_QMP_COMMAND'
  | 'ERR_QMP_CLOSED'
  | 'ERR_QMP_PROTOCOL'
  | 'ERR_QMP_TIMEOUT'
  | 'ERR_QEMU_UNSUPPORTED'
  | 'ERR_QEMU_EXITED'
  | 'ERR_MIGRATION_FAILED'
  | 'ERR_STATE_TOO_LARGE'
  | 'ERR_STATE_TRUNCATED'
  | 'ERR_GUEST_NOT_ANSWERING'
  | 'ERR_GUEST_NOT_RESUMED';

/** The base class: `code` says which failure, `message` says what to do about it. */
export class VmmError extends Error {
  readonly code: VmmErrorCode;

  constructor(code: VmmErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** QEMU answered a command with an error (`class` is QMP's error class, e.g. `GenericError`). */
export class QmpCommandError extends VmmError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly description: string,
  ) {
    super('ERR_QMP_COMMAND', `QEMU refused ${command}: ${description} (${errorClass})`);
  }
}

/** The QMP socket closed (QEMU exited, or was killed) before the answer came. */
export class QmpClosedError extends VmmError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super('ERR_QMP_CLOSED', `the QMP connection closed: ${detail}`, options);
  }
}

/** The peer on the QMP socket broke the protocol: no greeting, a line too long, not JSON, an answer to no command. */
export class QmpProtocolError extends VmmError {
  constructor(detail: string) {
    super('ERR_QMP_PROTOCOL', `QMP protocol error: ${detail}`);
  }
}

/** QEMU did not answer in time. */
export class QmpTimeoutError extends VmmError {
  constructor(what: string, ms: number) {
    super('ERR_QMP_TIMEOUT', `QEMU did not answer ${what} within ${ms} ms`);
  }
}

/** This QEMU cannot keep the guest's RAM in place while saving its device state. */
export class QemuUnsupportedError extends VmmError {
  constructor(detail: string) {
    super('ERR_QEMU_UNSUPPORTED', `this QEMU cannot keep guest RAM in place across a restart: ${detail}`);
  }
}

/** The QEMU process ended when it should not have; `stderr` holds the end of what it said. */
export class QemuExitedError extends VmmError {
  constructor(
    readonly exit: string,
    readonly stderr: string,
  ) {
    super('ERR_QEMU_EXITED', `QEMU exited (${exit})${stderr === '' ? '' : `: ${stderr.trim()}`}`);
  }
}

/** The state migration ended as `failed` or `cancelled`, or did not end in time. */
export class MigrationFailedError extends VmmError {
  constructor(direction: 'save' | 'load', detail: string) {
    super('ERR_MIGRATION_FAILED', `saving or loading the device state failed (${direction}): ${detail}`);
  }
}

/** QEMU wrote more device state than the state memfd may hold (a QEMU copying RAM into it, say). */
export class StateTooLargeError extends VmmError {
  constructor(
    readonly written: number,
    readonly capacity: number,
  ) {
    super('ERR_STATE_TOO_LARGE', `the device state outgrew its memfd: ${written} bytes written, at most ${capacity} allowed (is guest RAM being copied instead of shared?)`);
  }
}

/** The state memfd is shorter than the state it should hold, or carries no trailer of ours. */
export class StateTruncatedError extends VmmError {
  constructor(detail: string) {
    super('ERR_STATE_TRUNCATED', `the state memfd is too small or damaged: ${detail}`);
  }
}

/** The guest's counter did not move within the time given. */
export class GuestNotAnsweringError extends VmmError {
  constructor(ms: number, count: number) {
    super('ERR_GUEST_NOT_ANSWERING', `the guest did not count within ${ms} ms (counter stays at ${count})`);
  }
}

/** After the restore the guest is not the one that stopped: started again, or its RAM changed. */
export class GuestNotResumedError extends VmmError {
  constructor(detail: string) {
    super('ERR_GUEST_NOT_RESUMED', `the guest was not resumed: ${detail}`);
  }
}
