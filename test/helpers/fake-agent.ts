/**
 * A stand-in for the agent at the far end of a real SOCK_SEQPACKET socket:
 * each request is handed to `answer`, which returns the reply's JSON (or
 * raw bytes, or null to stay silent). Nothing of the package's Agent is in
 * between, so a test can make the peer stall, send too much, or lie.
 */
import * as fs from 'node:fs';
import { recvFds, sendFds } from '../../lib/fdpass.js';
import { native, type Cancellable } from '../../lib/native.js';

/** One request as the fake agent received it. */
export type FakeRequest = { v: number; id: number; op: string } & Record<string, unknown>;

/** The reply to send: a JSON value, exact bytes, or null for none (a stall). */
export type FakeReply = Record<string, unknown> | Buffer | null;

/** A hello reply as the real agent sends it. */
export function helloReply(request: FakeRequest): Record<string, unknown> {
  return { v: 1, id: request.id, ok: true, version: 1, clientId: 1, peer: { pid: process.pid, uid: 0, gid: 0 }, agentPid: process.pid, kexecCount: 0, device: false };
}

/** A fake agent listening at `socket` until `close()`. */
export interface FakeAgent {
  /** Every request received, in order. */
  readonly requests: FakeRequest[];
  /** The connections open now (fd numbers), so that a test can send what the agent sends unasked. */
  readonly connections: Set<number>;
  /** Stops listening and closes every connection. */
  close(): void;
}

/** Listens at `socket`; every request gets `answer(request)` (after `delayMs`, if it returns a delay). */
export function fakeAgent(socket: string, answer: (request: FakeRequest) => FakeReply | Promise<FakeReply>): FakeAgent {
  const listenFd = native.unixBind(native.SOCK_SEQPACKET, socket);
  const requests: FakeRequest[] = [];
  const connections = new Set<number>();
  // Each connection's loop closes its own fd when this aborts: closing the numbers here
  // could close a number the next fake agent (or anything else) has been given since.
  const stop = new AbortController();
  let waiting: Cancellable<boolean> | null = null;
  const serve = async (fd: number): Promise<void> => {
    connections.add(fd);
    try {
      while (!stop.signal.aborted) {
        const message = await recvFds(fd, { maxBytes: 1 << 20, maxFds: 0, signal: stop.signal });
        if (message.eof) return;
        const request = JSON.parse(message.data.toString('utf8')) as FakeRequest;
        requests.push(request);
        const reply = await answer(request);
        if (reply !== null && !stop.signal.aborted) await sendFds(fd, [], Buffer.isBuffer(reply) ? reply : JSON.stringify(reply), { signal: stop.signal });
      }
    } catch {
      // The client went away, or the test closed us.
    } finally {
      connections.delete(fd);
      fs.closeSync(fd);
    }
  };
  void (async () => {
    while (!stop.signal.aborted) {
      waiting = native.waitReadableAsync(listenFd);
      try {
        await waiting;
      } catch {
        return;
      }
      if (stop.signal.aborted) return;
      void serve(native.unixAccept(listenFd));
    }
  })();
  return {
    requests,
    connections,
    close(): void {
      stop.abort();
      waiting?.cancel();
      fs.closeSync(listenFd);
      fs.rmSync(socket, { force: true });
    },
  };
}
