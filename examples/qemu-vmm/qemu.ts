/**
 * One QEMU process running a guest whose RAM is a memfd the orchestrator
 * owns (`memory-backend-file` on the inherited fd, `share=on`), driven over
 * QMP. Saving migrates the device state only (RAM is shared and stays where
 * it is) into a second memfd handed over QMP with `getfd`; loading is the
 * same the other way, into a QEMU started with `-incoming defer`.
 *
 * How RAM is kept out of the state depends on the QEMU: `cpr-reboot` (the
 * migration mode made for restarting QEMU or rebooting the host, QEMU 8.2
 * and later) with the `x-ignore-shared` capability, the memfd handed over
 * with `add-fd` and named `file:/dev/fdset/N` (these QEMUs refuse `fd:` on a
 * file); else `x-ignore-shared` alone on a normal migration, the memfd
 * handed over with `getfd` and named `fd:NAME` (QEMU 4.0 to 8.1, Debian
 * 12's 7.2).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { MigrationFailedError, QemuExitedError, QemuUnsupportedError, QmpClosedError, StateTooLargeError, VmmError } from './errors.js';
import { QmpClient } from './qmp.js';

/** How RAM stays out of the saved state. */
export type SaveMethod = 'cpr-reboot' | 'x-ignore-shared';

/** Options of {@link Qemu.start}. */
export interface QemuOptions {
  /** The QEMU binary (default `qemu-system-x86_64` on the PATH). */
  binary?: string;
  /** The guest's RAM: a memfd sized to the RAM (the orchestrator keeps owning it). */
  ram: number;
  /** The guest: a multiboot kernel image (`-kernel`). */
  kernel: string;
  /** Where QEMU's QMP socket goes (a path that does not exist yet). */
  qmpSocket: string;
  /** Start waiting for the state (`-incoming defer`) instead of booting the guest. */
  incoming?: boolean;
  /** `kvm` when /dev/kvm can be opened, else `tcg` (default); or one of them. */
  accelerator?: 'auto' | 'kvm' | 'tcg';
  /** TCG's translation cache in MiB (QEMU's default is 1 GiB: too much inside a small VM). */
  tbSizeMiB?: number;
  /** Each line the guest prints on its serial port. */
  onSerialLine?: (line: string) => void;
  /** How long QEMU may take to open its QMP socket (ms). Default 30 s. */
  startTimeoutMs?: number;
}

/** Options of {@link Qemu.saveState}. */
export interface SaveOptions {
  /** The most state bytes accepted: more ends the save with {@link StateTooLargeError}. */
  capacity: number;
  /** How long the save may take (ms). Default 60 s. */
  timeoutMs?: number;
}

const POLL_MS = 2;
const STDERR_KEPT = 4096;
const STATE_FDNAME = 'vmstate';

/** Whether this process may open /dev/kvm (exists and permitted). */
export function kvmUsable(): boolean {
  try {
    fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
    return true;
  } catch {
    return false;
  }
}

/** A running QEMU and its QMP connection. */
export class Qemu {
  readonly #child: ChildProcess;
  readonly #exited: Promise<string>;
  readonly #stderr: { text: string };
  /** The QMP connection. */
  readonly qmp: QmpClient;
  /** QEMU's version, `major.minor.micro`. */
  readonly version: string;
  /** The accelerator it runs the guest with. */
  readonly accelerator: 'kvm' | 'tcg';
  /** How RAM stays out of the saved state with this QEMU. */
  readonly method: SaveMethod;

  private constructor(child: ChildProcess, exited: Promise<string>, stderr: { text: string }, qmp: QmpClient, method: SaveMethod, accelerator: 'kvm' | 'tcg') {
    this.#child = child;
    this.#exited = exited;
    this.#stderr = stderr;
    this.qmp = qmp;
    const v = qmp.greeting?.version.qemu;
    this.version = v === undefined ? '?' : `${v.major}.${v.minor}.${v.micro}`;
    this.method = method;
    this.accelerator = accelerator;
  }

  /**
   * Starts QEMU on the RAM memfd, connects to QMP and finds how this QEMU
   * keeps RAM out of the state. The guest runs at once, unless `incoming`.
   * @throws {@link QemuExitedError} (QEMU refused its command line), {@link QemuUnsupportedError}, QMP errors.
   */
  static async start(options: QemuOptions): Promise<Qemu> {
    const ramBytes = fs.fstatSync(options.ram).size;
    const accelerator = options.accelerator === 'kvm' || (options.accelerator !== 'tcg' && kvmUsable()) ? 'kvm' : 'tcg';
    const args = [
      '-nodefaults', '-no-user-config', '-display', 'none',
      // RAM is fd 3 of QEMU (the memfd, inherited); share=on: the guest's writes land in the memfd itself.
      '-object', `memory-backend-file,id=ram,size=${ramBytes},mem-path=/proc/self/fd/3,share=on`,
      '-machine', 'pc,memory-backend=ram', '-m', `${ramBytes >> 20}M`,
      '-accel', accelerator === 'kvm' ? 'kvm' : `tcg,tb-size=${options.tbSizeMiB ?? 32}`,
      '-chardev', 'stdio,id=serial,signal=off', '-serial', 'chardev:serial',
      '-qmp', `unix:${options.qmpSocket},server=on,wait=off`,
      '-kernel', options.kernel,
      ...(options.incoming === true ? ['-incoming', 'defer'] : []),
    ];
    const child = spawn(options.binary ?? 'qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe', options.ram] });
    const stderr = { text: '' };
    child.stderr!.on('data', (chunk: Buffer) => (stderr.text = (stderr.text + chunk.toString('utf8')).slice(-STDERR_KEPT)));
    let lineStart = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      const lines = (lineStart + chunk.toString('latin1')).split('\n');
      lineStart = lines.pop()!.slice(-STDERR_KEPT);
      for (const line of lines) options.onSerialLine?.(line.replace(/\r$/, ''));
    });
    const exited = new Promise<string>((resolve) => {
      child.once('error', (error) => resolve(error.message));
      child.once('exit', (code, signal) => resolve(signal === null ? `exit status ${String(code)}` : `signal ${signal}`));
    });
    let qmp: QmpClient;
    try {
      qmp = await connectWhileStarting(options.qmpSocket, exited, options.startTimeoutMs ?? 30_000);
    } catch (error) {
      child.kill('SIGKILL');
      if (error instanceof QemuExitedError || !(error instanceof VmmError)) throw new QemuExitedError(await exited, stderr.text);
      throw error;
    }
    let method: SaveMethod;
    try {
      method = await savingMethod(qmp);
    } catch (error) {
      child.kill('SIGKILL');
      await exited;
      qmp.close();
      throw error;
    }
    return new Qemu(child, exited, stderr, qmp, method, accelerator);
  }

  /** Pauses the guest's CPUs. */
  async stop(): Promise<void> {
    await this.qmp.execute('stop');
  }

  /** Lets the guest's CPUs run. */
  async cont(): Promise<void> {
    await this.qmp.execute('cont');
  }

  /**
   * Stops the guest (if it runs) and writes its device state into `stateFd`
   * (a memfd, written from offset 0); resolves to the number of bytes.
   * @throws {@link StateTooLargeError}, {@link MigrationFailedError}, QMP errors.
   */
  async saveState(stateFd: number, options: SaveOptions): Promise<number> {
    await this.stop();
    await this.#shareRam();
    await this.qmp.execute('migrate', { uri: await this.#handOver(stateFd, 'save') });
    await this.#migration('save', options.timeoutMs ?? 60_000, () => {
      const written = fs.fstatSync(stateFd).size;
      if (written > options.capacity) throw new StateTooLargeError(written, options.capacity);
    });
    return fs.fstatSync(stateFd).size;
  }

  /**
   * Loads the device state saved in `stateFd` into this QEMU (started with
   * `incoming`); the guest stays paused until {@link cont}.
   * @throws {@link MigrationFailedError}, QMP errors.
   */
  async loadState(stateFd: number, timeoutMs = 60_000): Promise<void> {
    await this.#shareRam();
    await this.qmp.execute('migrate-incoming', { uri: await this.#handOver(stateFd, 'load') });
    await this.#migration('load', timeoutMs, () => {});
  }

  /** Ends QEMU (QMP `quit`, SIGKILL if it does not go); resolves once it has exited. */
  async quit(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      await this.qmp.execute('quit', undefined, { timeoutMs: 5000 }).catch(() => this.#child.kill('SIGKILL'));
    }
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await this.#exited;
    clearTimeout(timer);
    this.qmp.close();
  }

  /** Kills QEMU at once (SIGKILL) and resolves once it has exited. */
  async kill(): Promise<void> {
    this.#child.kill('SIGKILL');
    await this.#exited;
    this.qmp.close();
  }

  /** QEMU's process id. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** The end of what QEMU wrote on stderr. */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** Tells QEMU to keep shared RAM out of the migration stream, by this QEMU's method. */
  async #shareRam(): Promise<void> {
    await this.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    if (this.method === 'cpr-reboot') await this.qmp.execute('migrate-set-parameters', { mode: 'cpr-reboot' });
  }

  /**
   * Hands QEMU the state memfd and returns the migration URI that names it:
   * a new open file of the memfd (so QEMU reads or writes from offset 0
   * whatever the memfd's own offset), sent in the same sendmsg as the
   * command. `cpr-reboot` QEMUs take it into an fd set (`add-fd`; they open
   * it write-only to save, read-only to load); older ones by name (`getfd`).
   */
  async #handOver(stateFd: number, direction: 'save' | 'load'): Promise<string> {
    const fresh = fs.openSync(`/proc/self/fd/${stateFd}`, direction === 'save' ? fs.constants.O_WRONLY : fs.constants.O_RDONLY);
    try {
      if (this.method === 'x-ignore-shared') {
        await this.qmp.execute('getfd', { fdname: STATE_FDNAME }, { fds: [fresh] });
        return `fd:${STATE_FDNAME}`;
      }
      const added = await this.qmp.execute<{ 'fdset-id': number }>('add-fd', { opaque: STATE_FDNAME }, { fds: [fresh] });
      return `file:/dev/fdset/${added['fdset-id']}`;
    } finally {
      fs.closeSync(fresh);
    }
  }

  /** Polls `query-migrate` until the migration completes; `check` runs on every poll and may throw (then it is cancelled). */
  async #migration(direction: 'save' | 'load', timeoutMs: number, check: () => void): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      try {
        check();
        if (info.status === 'completed') return;
        if (info.status === 'failed' || info.status === 'cancelled') throw new MigrationFailedError(direction, `${info.status}${info['error-desc'] === undefined ? '' : `: ${info['error-desc']}`}`);
        if (Date.now() > deadline) throw new MigrationFailedError(direction, `still ${info.status ?? 'not started'} after ${timeoutMs} ms`);
      } catch (error) {
        if (direction === 'save') await this.qmp.execute('migrate_cancel').catch(() => {});
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
}

/** Connects to the QMP socket as soon as QEMU has made it; QEMU exiting first is a {@link QemuExitedError}. */
async function connectWhileStarting(path: string, exited: Promise<string>, timeoutMs: number): Promise<QmpClient> {
  let gone: string | undefined;
  void exited.then((how) => (gone = how));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone !== undefined) throw new QemuExitedError(gone, '');
    try {
      return await QmpClient.connect(path, { timeoutMs });
    } catch (error) {
      const refused = error instanceof QmpClosedError && ['ENOENT', 'ECONNREFUSED'].includes((error.cause as NodeJS.ErrnoException | undefined)?.code ?? '');
      if (!refused || Date.now() > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Which way this QEMU keeps shared RAM out of the state, from what it says it supports. */
async function savingMethod(qmp: QmpClient): Promise<SaveMethod> {
  const capabilities = await qmp.execute<Array<{ capability: string }>>('query-migrate-capabilities');
  if (!capabilities.some((c) => c.capability === 'x-ignore-shared')) {
    throw new QemuUnsupportedError(`QEMU ${describe(qmp)} has no x-ignore-shared migration capability (QEMU 4.0 or later has it)`);
  }
  const parameters = await qmp.execute<Record<string, unknown>>('query-migrate-parameters');
  return 'mode' in parameters ? 'cpr-reboot' : 'x-ignore-shared';
}

function describe(qmp: QmpClient): string {
  const v = qmp.greeting?.version;
  return v === undefined ? '(version unknown)' : `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro} (${v.package})`;
}
