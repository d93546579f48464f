/**
 * `liveupdate/simulator`: the agent on a simulated Live Update
 * Orchestrator, for integrators' tests on machines without a LUO kernel (a
 * laptop, a hosted CI runner). It serves the agent's protocol
 * (AGENT-PROTOCOL.md) with the agent's own code; only the device is
 * simulated: sessions hold real memfds, an `update` makes a simulated kexec
 * (every client is disconnected, the agent starts again as in the next
 * kernel with its manifest, each session waits to be claimed by its owner),
 * and every misuse fails with the error a real kernel gives (class, `code`,
 * `errno`, `syscall`).
 *
 * A testing aid only: it proves nothing about a kernel (README, "Testing
 * without a LUO host", says what it does not model).
 *
 * @packageDocumentation
 */
import { AgentClient } from '../agent/client.js';
import { DEFAULT_POLICY, type Policy } from '../agent/policy.js';
import type { UpdateCheck } from '../agent/protocol.js';
import { Agent, type AgentEvent, type ModeDecision } from '../agent/server.js';
import { SimulatedLuo } from './kernel.js';
import { SimulatedDevice, simulatedHost } from './host.js';
import { checkOptions, checkPath } from '../validate.js';

export { SimulatedDevice } from './host.js';

/** Options of {@link startSimulatedAgent}. */
export interface SimulatedAgentOptions {
  /** Where the agent listens. Its directory must be one only root (or the agent's user) can change, as for the real agent (AGENT-PROTOCOL.md). */
  socketPath: string;
  /** Who may do what (default: the real agent's default, with this process's user allowed to connect and update). */
  policy?: Policy;
  /** Receives every event of the agent of each simulated kernel, and `simulated-kexec`. */
  log?: (event: AgentEvent) => void;
}

/** Options of {@link SimulatedAgent.update}. */
export interface SimulatedUpdateOptions {
  /** How long the agent waits for the clients holding sessions to say ready (default 10000 ms). */
  timeoutMs?: number;
  /** The "next kernel": any readable file (default: this node binary); it is not read. */
  kernel?: string;
  /** Its command line (default `liveupdate=on kho=on`): checked as the real agent checks it. */
  cmdline?: string;
}

/** The default policy of a simulated agent: the real default, and this process's user may connect and update. */
function defaultPolicy(): Policy {
  const uid = process.getuid?.() ?? 0;
  return { ...DEFAULT_POLICY, connect: { uids: new Set([uid]), gids: new Set() }, update: { uids: new Set([uid]), gids: new Set() } };
}

/**
 * The agent on a simulated LUO, in this process, across simulated kexecs:
 * after each one, the agent of the next kernel listens on the same socket.
 * Get one from {@link startSimulatedAgent}; {@link close} it at the end of the
 * test (it closes every session and memfd it holds).
 */
export class SimulatedAgent {
  readonly #luo = new SimulatedLuo();
  readonly #options: SimulatedAgentOptions & { policy: Policy };
  #agent: Agent | null = null;
  /** The restart after a simulated kexec, while it runs. */
  #restarting: Promise<void> | null = null;
  #waiters: Array<() => void> = [];
  #closed = false;

  private constructor(options: SimulatedAgentOptions) {
    this.#options = { ...options, policy: options.policy ?? defaultPolicy() };
  }

  /** Starts the agent of the first simulated kernel. */
  static async start(options: SimulatedAgentOptions): Promise<SimulatedAgent> {
    const simulated = new SimulatedAgent(options);
    await simulated.#startAgent();
    return simulated;
  }

  /** The agent of the current simulated kernel. */
  get agent(): Agent {
    if (this.#agent === null) throw new Error('the simulated agent is between kernels or closed');
    return this.#agent;
  }

  /** How many simulated kexecs happened. */
  get kexecCount(): number {
    return this.#luo.kexecCount;
  }

  /** The socket path the agent listens on. */
  get socketPath(): string | null {
    return this.#options.socketPath;
  }

  /** The mode the agent reports (standalone, simulated). */
  get mode(): ModeDecision {
    return this.agent.mode;
  }

  /**
   * Opens the simulated `/dev/liveupdate` as another process would: it has
   * one owner, so while the agent holds it this fails with DeviceBusyError
   * (`EBUSY`, syscall `open`), as on a real host.
   */
  openDevice(): SimulatedDevice {
    return new SimulatedDevice(this.#luo);
  }

  /** The agent's one-line status. */
  statusLine(): string {
    return this.#agent?.statusLine() ?? 'simulated kexec in progress';
  }

  /**
   * Asks the agent for an update as a client would (`liveupdate update`)
   * and resolves, with the checks the agent passed, once the agent of the
   * next simulated kernel listens. Refused updates reject as they do on a
   * real host (UpdateRefusedError naming the clients not ready).
   */
  async update(options: SimulatedUpdateOptions = {}): Promise<UpdateCheck[]> {
    const restarted = this.nextKernel();
    let passed: UpdateCheck[] = [];
    const client = await AgentClient.connect({ socket: this.#options.socketPath, name: 'simulated-update' });
    try {
      await client.update({
        kernel: options.kernel ?? process.execPath,
        cmdline: options.cmdline ?? 'liveupdate=on kho=on',
        timeoutMs: options.timeoutMs ?? 10_000,
        onKexec: (checks) => (passed = checks),
      });
    } catch (error) {
      // After the kexec the connection ends without a reply (the machine "rebooted"); any other failure is the update's.
      if (passed.length === 0) throw error;
    } finally {
      client.closeSync();
    }
    await restarted;
    return passed;
  }

  /** Resolves once the agent of the next simulated kernel listens (after an update's kexec, however asked for). */
  nextKernel(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Stops the agent and ends the simulation: every session, file and fd it holds is closed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#restarting?.catch(() => {});
    await this.#agent?.stop();
    this.#agent = null;
    this.#luo.close();
  }

  /** The same as {@link close} (what the CLI calls on SIGTERM). */
  async stop(): Promise<void> {
    await this.close();
  }

  async #startAgent(): Promise<void> {
    const { socketPath, policy, log } = this.#options;
    this.#agent = await Agent.start({
      socket: socketPath,
      policy,
      ...(log === undefined ? {} : { log }),
      host: (storeMax) => simulatedHost(this.#luo, storeMax, () => this.#kexecDone()),
    });
  }

  /** The simulated kexec happened: the clients are cut off with the old agent, and the next kernel's agent starts. */
  #kexecDone(): void {
    this.#options.log?.({ time: new Date().toISOString(), event: 'simulated-kexec', kexecCount: this.#luo.kexecCount });
    const old = this.#agent;
    this.#agent = null;
    this.#restarting = (async () => {
      await old?.stop();
      if (this.#closed) return;
      await this.#startAgent();
      for (const resolve of this.#waiters.splice(0)) resolve();
    })();
  }
}

/**
 * Starts the agent on a simulated LUO, in this process, listening on
 * `socketPath` (see {@link SimulatedAgent}). Clients use `AgentClient` and
 * `Session` as on a real host, in this process or another.
 */
export function startSimulatedAgent(options: SimulatedAgentOptions): Promise<SimulatedAgent> {
  const opts = checkOptions<SimulatedAgentOptions>(options);
  return SimulatedAgent.start({ ...opts, socketPath: checkPath(opts.socketPath, 'options.socketPath') });
}
