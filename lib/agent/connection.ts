/**
 * One client connection and its state machine. Every state change of a
 * connection goes through {@link Connection.on}, which knows the allowed
 * transitions; nothing else writes the state.
 */
import type { Peer } from './policy.js';

/** Where a connection is in its life. */
export enum ConnectionState {
  /** Connected; only `hello` is served. */
  AwaitingHello = 'awaiting-hello',
  /** Said hello; holds sessions not yet declared ready (or none). */
  Serving = 'serving',
  /** Said `ready` and has taken no session since: does not block an update. */
  Ready = 'ready',
  /** Being dropped: nothing more is read, its sessions are let go. */
  Closing = 'closing',
}

/** What happens to a connection. */
export type ConnectionEvent = 'hello' | 'ready' | 'took-session' | 'close';

/** The state each event leads to, from each state (absent: the event is not allowed there). */
const TRANSITIONS: Readonly<Record<ConnectionState, Partial<Record<ConnectionEvent, ConnectionState>>>> = {
  [ConnectionState.AwaitingHello]: { hello: ConnectionState.Serving, close: ConnectionState.Closing },
  // A second hello changes nothing (clients may repeat it).
  [ConnectionState.Serving]: { hello: ConnectionState.Serving, ready: ConnectionState.Ready, 'took-session': ConnectionState.Serving, close: ConnectionState.Closing },
  [ConnectionState.Ready]: { hello: ConnectionState.Ready, ready: ConnectionState.Ready, 'took-session': ConnectionState.Serving, close: ConnectionState.Closing },
  [ConnectionState.Closing]: { close: ConnectionState.Closing },
};

/** A state change that the state machine does not allow: a bug in the agent, never a peer's doing. */
export class TransitionError extends Error {}

/**
 * Something that changes and that others wait on (an update waits for
 * clients to be ready): `changed()` resolves at the next `notify()`.
 */
export class Notifier {
  #waiters: Array<() => void> = [];

  /** Wakes every waiter. */
  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves at the next {@link notify}. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** A session as a connection holds it (the session table's entry). */
export interface Held {
  readonly kernelName: string;
}

/** One client connection. */
export class Connection<H extends Held = Held> {
  #state = ConnectionState.AwaitingHello;
  /** Outgoing sessions this client created or re-attached to. */
  readonly holds = new Set<H>();
  /** The receive in progress, aborted to drop the connection. */
  receiving: AbortController | undefined;

  /**
   * @param id - The agent's number for it (in its log and in `holder`).
   * @param fd - The accepted socket.
   * @param peer - Who it is, as the kernel said at connect.
   * @param changes - Told of every transition.
   */
  constructor(
    readonly id: number,
    readonly fd: number,
    readonly peer: Peer,
    readonly changes: Notifier,
  ) {}

  /** The current state. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** Whether it said hello (and is not closing). */
  get greeted(): boolean {
    return this.#state === ConnectionState.Serving || this.#state === ConnectionState.Ready;
  }

  /** Whether it blocks an update: it holds sessions and has not said ready since it last took one. */
  get blocksUpdate(): boolean {
    return this.#state === ConnectionState.Serving && this.holds.size > 0;
  }

  /** Applies `event`; throws TransitionError if the state machine does not allow it. */
  on(event: ConnectionEvent): void {
    const next = TRANSITIONS[this.#state][event];
    if (next === undefined) throw new TransitionError(`connection ${this.id}: '${event}' in state '${this.#state}'`);
    this.#state = next;
    if (event === 'close') this.receiving?.abort();
    this.changes.notify();
  }
}
