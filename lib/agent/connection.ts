/**
 * One client connection and its state machine. Every state change of a
 * connection goes through {@link Connection.on}, which knows the allowed
 * transitions; nothing else writes the state.
 */
import type { NativeReadableWatch } from '../native.js';
import type { Peer } from './policy.js';
import { HELLO_VERSION } from './protocol.js';

/** Where a connection is in its life. */
export enum ConnectionState {
  /** Connected; only `hello` is served. */
  AwaitingHello = 'awaiting-hello',
  /** Said hello; holds sessions not yet declared ready (or none). */
  Serving = 'serving',
  /** Said `ready` and has taken no session since: does not block an update. */
  Ready = 'ready',
  /** Subscribed, told `prepare` and has not said `ready` since: blocks the update. */
  Preparing = 'preparing',
  /** Being dropped: nothing more is read, its sessions are let go. */
  Closing = 'closing',
}

/**
 * What happens to a connection: its own requests (`hello`, `ready`,
 * `took-session`, `subscribe`), the agent's announcements to it
 * (`prepare`, `resume`), its end.
 */
export type ConnectionEvent = 'hello' | 'ready' | 'took-session' | 'subscribe' | 'prepare' | 'resume' | 'close';

const { AwaitingHello, Serving, Ready, Preparing, Closing } = ConnectionState;

/** The state each event leads to, from each state (absent: the event is not allowed there). */
const TRANSITIONS: Readonly<Record<ConnectionState, Partial<Record<ConnectionEvent, ConnectionState>>>> = {
  [AwaitingHello]: { hello: Serving, close: Closing },
  // A second hello changes nothing (clients may repeat it); resume undoes a ready said for the update that ended.
  [Serving]: { hello: Serving, ready: Ready, 'took-session': Serving, subscribe: Serving, prepare: Preparing, resume: Serving, close: Closing },
  // A ready said before the prepare does not count: quiesced means quiesced after being told.
  [Ready]: { hello: Ready, ready: Ready, 'took-session': Serving, subscribe: Ready, prepare: Preparing, resume: Serving, close: Closing },
  [Preparing]: { hello: Preparing, ready: Ready, 'took-session': Preparing, subscribe: Preparing, resume: Serving, close: Closing },
  // An update's resume may reach a connection already going: nothing changes.
  [Closing]: { resume: Closing, close: Closing },
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
  #subscribed = false;
  #leftWhilePreparing = false;
  /** The protocol version its hello chose (the hello's own before). */
  version = HELLO_VERSION;
  /** Announcements sent to it that it has not taken yet (bounded: see Announcements). */
  unsentAnnouncements = 0;
  /** Outgoing sessions this client created or re-attached to. */
  readonly holds = new Set<H>();
  /** Its readiness watcher, made at its first wait for a request and closed with its fd. @internal */
  watch: NativeReadableWatch | undefined;
  /** Cancels the wait for its next request: what drops the connection while it is quiet. */
  stopReading: (() => void) | undefined;

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
    return this.#state === Serving || this.#state === Ready || this.#state === Preparing;
  }

  /** Whether it asked for announcements (`subscribe`). */
  get subscribed(): boolean {
    return this.#subscribed;
  }

  /** Whether it ended after being told `prepare` and before saying ready. */
  get leftWhilePreparing(): boolean {
    return this.#leftWhilePreparing;
  }

  /**
   * Whether it blocks an update: told `prepare` and not ready since, or
   * holding sessions without having said ready since it last took one.
   */
  get blocksUpdate(): boolean {
    return this.#state === Preparing || (this.#state === Serving && this.holds.size > 0);
  }

  /** Applies `event`; throws TransitionError if the state machine does not allow it. */
  on(event: ConnectionEvent): void {
    const next = TRANSITIONS[this.#state][event];
    if (next === undefined) throw new TransitionError(`connection ${this.id}: '${event}' in state '${this.#state}'`);
    if (event === 'close' && this.#state === Preparing) this.#leftWhilePreparing = true;
    if (event === 'subscribe') this.#subscribed = true;
    this.#state = next;
    if (event === 'close') this.stopReading?.();
    this.changes.notify();
  }
}
