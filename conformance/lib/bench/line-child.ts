/**
 * A C side of the benchmark that runs as a server: it answers each command
 * line on its stdin with one line on its stdout. Lets node's rounds and C's
 * interleave within one run.
 * @internal
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** A child program spoken to line by line. */
export class LineChild {
  readonly #lines: string[] = [];
  readonly #waiting: { resolve: (line: string) => void; reject: (error: Error) => void }[] = [];
  readonly #name: string;
  /** The process, for whoever must keep it alive (or end it). */
  readonly process: ChildProcessByStdio<Writable, Readable, null>;
  #failure: Error | undefined;

  constructor(command: string, args: readonly string[]) {
    this.#name = `${command} ${args.join(' ')}`;
    this.process = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.process.stdout }).on('line', (line) => {
      const waiter = this.#waiting.shift();
      if (waiter !== undefined) waiter.resolve(line);
      else this.#lines.push(line);
    });
    this.process.on('exit', (code, signal) => this.#fail(new Error(`${this.#name} exited with ${String(code ?? signal)}`)));
    this.process.on('error', (error) => this.#fail(error));
  }

  #fail(error: Error): void {
    this.#failure = error;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(error);
  }

  /** The next line it prints. */
  line(): Promise<string> {
    const ready = this.#lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /** Waits for its first line and checks that it is `expected`. */
  async expect(expected: string): Promise<void> {
    const line = await this.line();
    if (line !== expected) throw new Error(`${this.#name} said ${JSON.stringify(line)}, not ${expected}`);
  }

  /** Sends `command` and reads the number it answers (nanoseconds, for the servers here). */
  async ask(command = ''): Promise<number> {
    this.process.stdin.write(`${command}\n`);
    const line = await this.line();
    const value = Number(line);
    if (line === '' || !Number.isFinite(value)) throw new Error(`${this.#name} answered ${JSON.stringify(line)}, not a number`);
    return value;
  }

  /** Closes its stdin (servers end at EOF) and waits for it to exit. */
  async end(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.process.once('exit', () => resolve()));
    this.process.stdin.end();
    await exited;
  }
}
