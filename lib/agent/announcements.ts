/**
 * What the agent tells subscribed clients unasked (protocol version 2):
 * `prepare` when an update is coming, `resume` when it will not happen
 * after all. Sending never blocks the agent and never grows without bound:
 * each announcement is a small message sent on its own (the update does
 * not wait for it), a client that does not take one within the send
 * timeout is dropped, and so is one with {@link MAX_UNSENT_ANNOUNCEMENTS}
 * still waiting in its socket.
 * @internal
 */
import { sendFds } from '../fdpass.js';
import { encodeAnnouncement } from './codec.js';
import { ConnectionState, type Connection } from './connection.js';
import type { Announcement, JsonValue } from './protocol.js';

/**
 * The most announcements one connection may have not yet taken: one
 * update sends at most two (`prepare`, `resume`) and updates run one at a
 * time, so a client past this bound has not read for several updates.
 */
export const MAX_UNSENT_ANNOUNCEMENTS = 4;

/** What the announcements need from the agent. */
export interface AnnouncementsContext {
  /** Every live connection. */
  connections(): Iterable<Connection>;
  /** A client that does not take an announcement within this time is dropped (ms). */
  readonly sendTimeoutMs: number;
  /** Logs one event. */
  event(name: string, fields: Record<string, JsonValue | undefined>): void;
}

/** The `prepare` of one update: who was told, and how to take it back. */
export interface PrepareRound {
  /** When readiness ends (ms since the epoch), as announced. */
  readonly deadline: number;
  /** Every connection told `prepare` (those that subscribe while it is open included). */
  readonly prepared: ReadonlySet<Connection>;
  /** Tells everyone still connected who was told `prepare` that the update will not happen, and closes the round. */
  resume(reason: string, code: string | undefined): void;
  /** Closes the round without a resume (the update jumps). */
  close(): void;
}

type Prepare = Extract<Announcement, { event: 'prepare' }>;

/** The agent's announcements: subscriptions and the current update's round. */
export class Announcements {
  #round: { prepare: Omit<Prepare, 'remainingMs'>; prepared: Set<Connection>; asker: Connection } | null = null;

  constructor(private readonly ctx: AnnouncementsContext) {}

  /**
   * Subscribes `c`. Called once its `subscribe` reply is sent: a prepare
   * in progress then reaches it too, after that reply.
   */
  subscribe(c: Connection): void {
    // Gone between its reply and now: nothing to subscribe.
    if (c.state === ConnectionState.Closing) return;
    c.on('subscribe');
    const round = this.#round;
    if (round !== null && c !== round.asker && !round.prepared.has(c)) this.#prepare(c, round.prepare, round.prepared);
  }

  /**
   * Tells every subscribed connection but the asker's (busy with its own
   * `update` request, it could not say ready) that an update is coming:
   * each then blocks the update until it says ready.
   */
  prepare(prepare: Omit<Prepare, 'event' | 'remainingMs'>, asker: Connection): PrepareRound {
    const prepared = new Set<Connection>();
    const round = { prepare: { event: 'prepare' as const, ...prepare }, prepared, asker };
    this.#round = round;
    for (const c of this.ctx.connections()) {
      if (c.subscribed && c !== asker && c.greeted) this.#prepare(c, round.prepare, prepared);
    }
    this.ctx.event('prepare-announced', { clients: prepared.size, deadline: prepare.deadline });
    const close = (): void => {
      if (this.#round === round) this.#round = null;
    };
    return {
      deadline: prepare.deadline,
      prepared,
      resume: (reason, code) => {
        close();
        let told = 0;
        for (const c of prepared) {
          if (c.state === ConnectionState.Closing) continue;
          c.on('resume');
          this.#send(c, { event: 'resume', reason, ...(code === undefined ? {} : { code }) });
          told++;
        }
        this.ctx.event('resume-announced', { clients: told, code: code ?? null });
      },
      close,
    };
  }

  #prepare(c: Connection, prepare: Omit<Prepare, 'remainingMs'>, prepared: Set<Connection>): void {
    prepared.add(c);
    c.on('prepare');
    this.#send(c, { ...prepare, remainingMs: Math.max(0, prepare.deadline - Date.now()) });
  }

  /** Sends without waiting; a client that does not take it in time, or has too many waiting, is dropped. */
  #send(c: Connection, announcement: Announcement): void {
    if (c.unsentAnnouncements >= MAX_UNSENT_ANNOUNCEMENTS) {
      this.#drop(c, `${c.unsentAnnouncements} announcements not taken`);
      return;
    }
    c.unsentAnnouncements++;
    sendFds(c.fd, [], encodeAnnouncement(c.version, announcement), { signal: AbortSignal.timeout(this.ctx.sendTimeoutMs) }).then(
      () => c.unsentAnnouncements--,
      (error: unknown) => {
        c.unsentAnnouncements--;
        this.#drop(c, `the ${announcement.event} announcement could not be sent: ${(error as Error).message}`);
      },
    );
  }

  #drop(c: Connection, reason: string): void {
    if (c.state === ConnectionState.Closing) return;
    this.ctx.event('announcement-dropped', { client: c.id, pid: c.peer.pid, uid: c.peer.uid, reason });
    // Its serve loop sees the closing state, stops reading, and lets the connection go.
    c.on('close');
  }
}
