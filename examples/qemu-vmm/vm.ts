/**
 * A guest's life around a kernel update, without the agent: boot it on a
 * fresh RAM memfd, suspend it (stop, device state into a second memfd, QEMU
 * gone), and restore it from the two memfds into a new QEMU, checking that
 * it continues rather than starts over. `main.ts` adds the agent, which
 * carries the two memfds across the kexec; this part works within one
 * kernel too (the host test runs it so).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { memfd } from 'liveupdate';
import { GuestNotAnsweringError, GuestNotResumedError } from './errors.js';
import { digestUntouched, fillUntouched, MIN_RAM_BYTES, readCounters, type GuestCounters } from './guest.js';
import { Qemu, type QemuOptions } from './qemu.js';
import { digestPrefix, readTrailer, writeTrailer, type StateTrailer } from './state.js';

/** The most device state accepted by default: the counter guest's is about 300 KiB; RAM copied by mistake would be far more. */
export const DEFAULT_STATE_CAPACITY = 16 << 20;

/** How the VM runs. */
export interface VmConfig {
  /** The VM's name (memfd names, the QMP socket). */
  name: string;
  /** The guest: a multiboot image. */
  kernel: string;
  /** A directory for the QMP socket. */
  runDir: string;
  /** QEMU's binary, accelerator, TCG cache size, serial output. */
  qemu?: Pick<QemuOptions, 'binary' | 'accelerator' | 'tbSizeMiB' | 'onSerialLine'>;
  /** The most state bytes accepted (default {@link DEFAULT_STATE_CAPACITY}). */
  stateCapacity?: number;
  /** How long the guest may take to count after a start or a `cont` (ms). Default 30 s. */
  answerTimeoutMs?: number;
}

/** When each step of a suspend or restore ended (ms since the epoch). */
export type Timeline = Record<string, number>;

/** What {@link Vm.suspend} leaves: the state memfd and its trailer. */
export interface Suspended {
  /** The state memfd (stream + trailer), owned by the caller. */
  state: number;
  trailer: StateTrailer;
  /** `stopped`, `saved`, `quit`. */
  at: Timeline;
}

/** What {@link Vm.restore} found. */
export interface Resumed {
  vm: Vm;
  trailer: StateTrailer;
  /** The counters in RAM before the new QEMU ran a single instruction. */
  beforeCont: GuestCounters;
  /** The counters once the guest counted again. */
  counting: GuestCounters;
  /** `qemuStarted`, `stateLoaded`, `cont`, `counting`, `verified` (the untouched RAM compared). */
  at: Timeline;
}

/** A running guest: its RAM memfd and the QEMU running it. */
export class Vm {
  readonly #config: VmConfig;
  #qemu: Qemu | undefined;
  /** SHA-256 of the RAM the guest never touches, taken before it first ran. */
  readonly #untouchedSha256: string;
  /** The guest's RAM, a memfd owned by the VM until {@link close}. */
  readonly ram: number;

  private constructor(config: VmConfig, ram: number, qemu: Qemu, untouchedSha256: string) {
    this.#config = config;
    this.ram = ram;
    this.#qemu = qemu;
    this.#untouchedSha256 = untouchedSha256;
  }

  /** The QEMU running the guest (undefined once suspended). */
  get qemu(): Qemu | undefined {
    return this.#qemu;
  }

  /** Boots the guest on a new RAM memfd of `ramBytes`, its untouched region filled; resolves once it counts. */
  static async boot(config: VmConfig, ramBytes: number): Promise<Vm> {
    if (!Number.isSafeInteger(ramBytes) || ramBytes < MIN_RAM_BYTES || ramBytes % (1 << 20) !== 0) {
      throw new RangeError(`ramBytes must be a whole number of MiB, at least ${MIN_RAM_BYTES >> 20} MiB; got ${ramBytes}`);
    }
    const ram = await memfd.create(`${config.name}-ram`);
    try {
      fs.ftruncateSync(ram, ramBytes); // before preserving: LUO freezes the size
      fillUntouched(ram, ramBytes, config.name);
      // Taken now, before the guest runs: a digest of all RAM at the stop would cost downtime that grows with RAM.
      const untouchedSha256 = digestUntouched(ram, ramBytes);
      const qemu = await Qemu.start(qemuOptions(config, ram, false));
      const vm = new Vm(config, ram, qemu, untouchedSha256);
      await vm.#untilCounting(0, () => {}).catch(async (error: unknown) => {
        await qemu.kill();
        throw error;
      });
      return vm;
    } catch (error) {
      fs.closeSync(ram);
      throw error;
    }
  }

  /**
   * Stops the guest, saves its device state into a new memfd (with the
   * trailer), and ends QEMU. The RAM memfd stays the VM's.
   */
  async suspend(): Promise<Suspended> {
    const qemu = this.#running();
    const at: Timeline = {};
    await qemu.stop();
    at['stopped'] = Date.now();
    const state = await memfd.create(`${this.#config.name}-state`);
    try {
      const stateBytes = await qemu.saveState(state, { capacity: this.#config.stateCapacity ?? DEFAULT_STATE_CAPACITY });
      at['saved'] = Date.now();
      const counters = readCounters(this.ram);
      const trailer: StateTrailer = {
        stateBytes,
        sha256: digestPrefix(state, stateBytes),
        method: qemu.method,
        qemu: qemu.version,
        ramBytes: fs.fstatSync(this.ram).size,
        countAtStop: counters.count,
        boots: counters.boots,
        untouchedSha256: this.#untouchedSha256,
      };
      writeTrailer(state, trailer);
      await qemu.quit();
      this.#qemu = undefined;
      at['quit'] = Date.now();
      return { state, trailer, at };
    } catch (error) {
      fs.closeSync(state);
      throw error;
    }
  }

  /**
   * Restores a suspended guest from its RAM and state memfds into a new
   * QEMU: checks the state and the guest's counters against the trailer,
   * loads, `cont`, checks the guest continues (same boot, counter past where
   * it stopped), and then, while it runs, that the RAM it never touches is
   * as it was (a digest of RAM would cost downtime that grows with RAM). The
   * VM owns `ram` from then on; `state` stays the caller's.
   * @throws {@link StateTruncatedError}, {@link GuestNotResumedError}, {@link GuestNotAnsweringError}, QEMU and QMP errors.
   */
  static async restore(config: VmConfig, ram: number, state: number): Promise<Resumed> {
    const trailer = readTrailer(state);
    const ramBytes = fs.fstatSync(ram).size;
    if (ramBytes !== trailer.ramBytes) throw new GuestNotResumedError(`the RAM memfd has ${ramBytes} bytes, the state was saved with ${trailer.ramBytes}`);
    const beforeCont = readCounters(ram);
    if (beforeCont.count !== trailer.countAtStop || beforeCont.boots !== trailer.boots) {
      throw new GuestNotResumedError(`RAM changed while the guest was stopped (counter ${beforeCont.count}, boot ${beforeCont.boots}; at the stop ${trailer.countAtStop}, boot ${trailer.boots})`);
    }
    const at: Timeline = {};
    const qemu = await Qemu.start(qemuOptions(config, ram, true));
    const vm = new Vm(config, ram, qemu, trailer.untouchedSha256);
    try {
      at['qemuStarted'] = Date.now();
      if (qemu.method !== trailer.method) throw new GuestNotResumedError(`QEMU ${qemu.version} saves by ${qemu.method}, the state was saved by ${trailer.method} (QEMU ${trailer.qemu})`);
      await qemu.loadState(state);
      at['stateLoaded'] = Date.now();
      await qemu.cont();
      at['cont'] = Date.now();
      const counting = await vm.#untilCounting(trailer.countAtStop, (now) => {
        if (now.boots !== trailer.boots || now.count < trailer.countAtStop) {
          throw new GuestNotResumedError(`it started again (boot ${now.boots}, counter ${now.count}; it stopped at ${trailer.countAtStop} in boot ${trailer.boots})`);
        }
      });
      at['counting'] = Date.now();
      if (digestUntouched(ram, ramBytes) !== trailer.untouchedSha256) throw new GuestNotResumedError('the RAM the guest never touches differs from what it was at the stop');
      at['verified'] = Date.now();
      return { vm, trailer, beforeCont, counting, at };
    } catch (error) {
      await qemu.kill();
      throw error;
    }
  }

  /** Ends QEMU and closes the RAM memfd. */
  async close(): Promise<void> {
    await this.#qemu?.quit();
    this.#qemu = undefined;
    fs.closeSync(this.ram);
  }

  #running(): Qemu {
    if (this.#qemu === undefined) throw new Error(`${this.#config.name} is not running`);
    return this.#qemu;
  }

  /** Waits until the counter moves past `above`; `check` sees each reading and may throw. */
  async #untilCounting(above: number, check: (counters: GuestCounters) => void): Promise<GuestCounters> {
    const timeoutMs = this.#config.answerTimeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const counters = readCounters(this.ram);
      if (counters.started) check(counters);
      if (counters.started && counters.count > above) return counters;
      if (Date.now() > deadline) throw new GuestNotAnsweringError(timeoutMs, counters.count);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

function qemuOptions(config: VmConfig, ram: number, incoming: boolean): QemuOptions {
  return { ...config.qemu, ram, kernel: config.kernel, qmpSocket: path.join(config.runDir, `${config.name}-${process.pid}-${Date.now()}.qmp`), incoming };
}
