/**
 * The agent's log on stderr, one JSON line per event, as `liveupdate agent`
 * writes it (under systemd, to the journal).
 * @internal
 */
import * as fs from 'node:fs';
import type { AgentEvent } from './server.js';

/**
 * Writes to fd 2 at once, as node's process.stderr does on Linux for a file, a
 * pipe or a socket, but without making that stream: for a pipe or the
 * journal's socket it loads node:net and its streams, which the agent's start
 * would compile before its first answer (tens of milliseconds under
 * emulation). Whatever the direct write cannot do (a full non-blocking pipe,
 * a closed stderr) goes to process.stderr, as every line did before.
 */
function writeStderr(text: string): void {
  const bytes = Buffer.from(text);
  let written = 0;
  try {
    while (written < bytes.length) written += fs.writeSync(2, bytes, written);
  } catch {
    process.stderr.write(bytes.subarray(written));
  }
}

/**
 * The events every client makes, a few each: with a thousand clients claiming
 * at once, a write each (a syscall, and a wake-up of whoever reads the log)
 * was a quarter of the agent's CPU time on the host. They are written
 * together once per turn of the event loop instead, in order; any other
 * event (a start, a refusal of the update, the kexec, the stop) first writes
 * what waits and then itself at once, so nothing the agent does next (a
 * kexec, an exit) can outrun its line.
 */
export const PER_CLIENT_EVENTS: ReadonlySet<string> = new Set(['connected', 'hello', 'claimed', 'disconnected', 'session-created', 'attached', 'ready', 'subscribed', 'request-failed']);

/** The agent's log on stderr, one JSON line per event; per-client events written once per turn (see {@link PER_CLIENT_EVENTS}). */
export class EventLines {
  #pending: string[] = [];
  #due = false;
  readonly #write: (text: string) => void;

  constructor(write: (text: string) => void = writeStderr) {
    this.#write = write;
  }

  /** Writes `event`'s line: now, or with this turn's other per-client lines. */
  add(event: AgentEvent): void {
    this.#pending.push(`${JSON.stringify(event)}\n`);
    if (!PER_CLIENT_EVENTS.has(event.event)) this.flush();
    else if (!this.#due) {
      this.#due = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes every line that waits. */
  flush(): void {
    this.#due = false;
    if (this.#pending.length === 0) return;
    const text = this.#pending.join('');
    this.#pending = [];
    this.#write(text);
  }
}

