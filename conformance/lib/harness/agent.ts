/**
 * Starting an agent and waiting until it serves: the one way the tests, the
 * demo and the benchmark do it. Two forms:
 * - {@link AgentProcess}: `liveupdate agent` as its own process, as a service
 *   manager runs it, ready once it has logged its `listening` event and
 *   answered a first hello (bounded wait, an error with its log when it
 *   exits or takes too long);
 * - {@link startAgentInProcess}: `Agent.start` in this process, its events
 *   collected (the host tests, which look at what the agent logged).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, AgentError, AgentUnavailableError, type AgentEvent, type ConnectOptions } from 'liveupdate';
import { CLI_ARGS_ENV, cliLauncher } from './cli.js';

/** Which event a wait is for: its name, or a test of the whole event. */
export type EventMatch = string | ((event: AgentEvent) => boolean);

/** How long {@link AgentProcess.start} waits for `listening` by default: a node start and a manifest read, under software emulation. */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
/** How long a stop or an event wait may take by default. */
export const DEFAULT_WAIT_MS = 30_000;
const RETRY_MS = 20;

/** The events an agent logged, in order, with a bounded wait for the next one wanted. */
export class AgentLog {
  /** Every event so far. */
  readonly events: AgentEvent[] = [];
  readonly #waiters = new Set<() => void>();
  #ended: string | undefined;

  /** Records an event (the agent's `log` option, or a line of its stderr). */
  add(event: AgentEvent): void {
    this.events.push(event);
    this.#wake();
  }

  /** No event will come any more (the process is gone): waits for one fail with `why`. */
  end(why: string): void {
    this.#ended ??= why;
    this.#wake();
  }

  /** The first event so far that matches, if any. */
  find(match: EventMatch): AgentEvent | undefined {
    const test = typeof match === 'string' ? (e: AgentEvent) => e.event === match : match;
    return this.events.find(test);
  }

  /**
   * The first event that matches, already logged or yet to come. Rejects
   * after `timeoutMs`, or when the log ends first; `context` adds to the
   * error (the process's output).
   */
  async waitFor(match: EventMatch, timeoutMs = DEFAULT_WAIT_MS, context: () => string = () => ''): Promise<AgentEvent> {
    const deadline = performance.now() + timeoutMs;
    const wanted = typeof match === 'string' ? `'${match}'` : 'the event wanted';
    for (;;) {
      const found = this.find(match);
      if (found !== undefined) return found;
      if (this.#ended !== undefined) throw new Error(`the agent logged no ${wanted}: ${this.#ended}${context()}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`the agent logged no ${wanted} within ${timeoutMs} ms${context()}`);
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          clearTimeout(timer);
          this.#waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.#waiters.add(wake);
      });
    }
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/** Options of {@link AgentProcess.start}. */
export interface AgentProcessOptions {
  /** `--socket`. */
  readonly socket: string;
  /** `--policy`: a policy file. */
  readonly policy?: string;
  /** `--device` (default: the agent's, /dev/liveupdate). */
  readonly device?: string;
  /** Added to this process's environment (NOTIFY_SOCKET, say). */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Fds handed over as a service manager does (LISTEN_FDS, LISTEN_FDNAMES,
   * LISTEN_PID; they become its fds 3, 4, ...), by FDNAME.
   */
  readonly listenFds?: ReadonlyArray<readonly [name: string, fd: number]>;
  /** How long it may take to log `listening` and answer a hello, all told (default {@link DEFAULT_READY_TIMEOUT_MS}). */
  readonly readyTimeoutMs?: number;
  /** More arguments of `liveupdate agent`, after the test bed's own (`--mode standalone --force`, say). */
  readonly args?: readonly string[];
}

/** `liveupdate agent` running as its own process. */
export class AgentProcess {
  /** What it logged, event by event (its stderr's JSON lines). */
  readonly log = new AgentLog();
  #output = '';
  #answeredAt = Number.NaN;

  private constructor(
    /** The node process. */
    readonly child: ChildProcess,
    /** The socket it serves. */
    readonly socket: string,
  ) {
    let pending = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      this.#output += text;
      const lines = (pending + text).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) this.#addLine(line);
    });
    child.once('exit', (code, signal) => this.log.end(`it exited with ${String(code ?? signal)}`));
    child.once('error', (error) => this.log.end(`it could not be started: ${error.message}`));
  }

  /**
   * Starts `liveupdate agent` and resolves once it has logged `listening` and
   * answered a hello (a refusal by its policy is an answer too). The hello
   * makes sure it got past its start: the agent logs `listening` before it
   * takes SIGTERM as a stop, and a signal in between kills it outright.
   * Rejects, with its output, when it exits first or takes longer than
   * `readyTimeoutMs` all told (it is killed then).
   */
  static async start(options: AgentProcessOptions): Promise<AgentProcess> {
    const args = ['agent', '--socket', options.socket];
    if (options.policy !== undefined) args.push('--policy', options.policy);
    if (options.device !== undefined) args.push('--device', options.device);
    args.push(...(options.args ?? []));
    const passed = options.listenFds ?? [];
    const listen = passed.length === 0 ? {} : { LISTEN_FDS: String(passed.length), LISTEN_FDNAMES: passed.map(([name]) => name).join(':') };
    // A service manager sets LISTEN_PID between fork and exec: the launcher does it first thing.
    const prelude = passed.length === 0 ? '' : 'process.env.LISTEN_PID = String(process.pid);';
    const child = spawn(process.execPath, ['-e', cliLauncher(prelude)], {
      stdio: ['ignore', 'ignore', 'pipe', ...passed.map(([, fd]) => fd)],
      env: { ...process.env, ...options.env, ...listen, [CLI_ARGS_ENV]: JSON.stringify(args) },
    });
    const agent = new AgentProcess(child, options.socket);
    const timeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    const deadline = performance.now() + timeoutMs;
    try {
      await agent.log.waitFor('listening', timeoutMs, () => agent.#context());
      agent.#answeredAt = await agent.#firstAnswer(deadline);
    } catch (error) {
      child.kill('SIGKILL');
      throw new Error(`liveupdate agent on ${options.socket} did not start: ${(error as Error).message}`);
    }
    return agent;
  }

  /** When it first answered a hello: `performance.now()` of this process. */
  get answeredAt(): number {
    return this.#answeredAt;
  }

  /** Everything it wrote on stderr (its JSON event lines and any message). */
  get output(): string {
    return this.#output;
  }

  /** Whether it has exited. */
  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /**
   * A client connection (hello included), retried while the agent does not
   * accept it (busy with others) and is alive; rejects once it has exited or
   * `timeoutMs` has passed.
   */
  async connect(options: Omit<ConnectOptions, 'socket'> = {}, timeoutMs = DEFAULT_WAIT_MS): Promise<AgentClient> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        return await AgentClient.connect({ ...options, socket: this.socket });
      } catch (error) {
        if (!(error instanceof AgentUnavailableError)) throw error;
        if (this.exited) throw new Error(`the agent exited with ${String(this.child.exitCode ?? this.child.signalCode)}${this.#context()}`, { cause: error });
        if (performance.now() > deadline) throw new Error(`the agent at ${this.socket} accepted no connection within ${timeoutMs} ms${this.#context()}`, { cause: error });
        await sleep(RETRY_MS);
      }
    }
  }

  /**
   * Sends `signal` (default SIGTERM) and resolves to the exit status once it
   * has exited (at once if it already has). If it is still running after
   * `timeoutMs`, kills it and rejects with its output.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = DEFAULT_WAIT_MS): Promise<number | null> {
    if (this.exited) return this.child.exitCode;
    const exit = new Promise<number | null>((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
    const outcome = await Promise.race([exit, late]);
    clearTimeout(timer);
    if (outcome !== 'late') return outcome;
    this.child.kill('SIGKILL');
    throw new Error(`the agent did not exit within ${timeoutMs} ms of ${signal} (killed)${this.#context()}`);
  }

  /** Says hello until the agent answers (a refusal by its policy is an answer); resolves to the instant it did. */
  async #firstAnswer(deadline: number): Promise<number> {
    try {
      await (await this.connect({}, Math.ceil(Math.max(0, deadline - performance.now())))).close();
    } catch (error) {
      if (!(error instanceof AgentError) || error instanceof AgentUnavailableError) throw error;
    }
    return performance.now();
  }

  #addLine(line: string): void {
    if (!line.startsWith('{')) return;
    try {
      const event = JSON.parse(line) as AgentEvent;
      if (typeof event.event === 'string') this.log.add(event);
    } catch {
      // A line that only looks like JSON: it stays in the output.
    }
  }

  #context(): string {
    return this.#output === '' ? ' (it wrote nothing on stderr)' : `; its stderr:\n${this.#output}`;
  }
}

/** What {@link startAgentInProcess} passes to the start function: the agent's options it decides. */
export interface InProcessAgentOptions {
  readonly socket: string;
  readonly devicePath: string;
  readonly log: (event: AgentEvent) => void;
}

/** An agent started in this process, and what it logged. */
export interface InProcessAgent<A> {
  /** What `start` resolved to. */
  readonly agent: A;
  readonly socket: string;
  readonly log: AgentLog;
}

/**
 * Starts an agent in this process: `start` gets the socket, the device path
 * (default: `no-such-device` beside the socket, for a host without LUO) and
 * a `log` that records its events, and is to call `Agent.start` with them,
 * plus any options of its own. (The caller passes its own `Agent`, so a
 * test of the library's sources starts the agent of those sources.)
 */
export async function startAgentInProcess<A>(
  start: (options: InProcessAgentOptions) => Promise<A>,
  where: { readonly socket: string; readonly devicePath?: string },
): Promise<InProcessAgent<A>> {
  const log = new AgentLog();
  const devicePath = where.devicePath ?? path.join(path.dirname(where.socket), 'no-such-device');
  const agent = await start({ socket: where.socket, devicePath, log: (event) => log.add(event) });
  return { agent, socket: where.socket, log };
}
