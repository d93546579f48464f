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
  /** Stops listening and closes every connection. */
  close(): void;
}

/** Listens at `socket`; every request gets `answer(request)` (after `delayMs`, if it returns a delay). */
export function fakeAgent(socket: string, answer: (request: FakeRequest) => FakeReply | Promise<FakeReply>): FakeAgent {
  const listenFd = native.unixBind(native.SOCK_SEQPACKET, socket);
  const connections = new Set<number>();
  const requests: FakeRequest[] = [];
  let waiting: Cancellable<boolean> | null = null;
  let closed = false;
  const serve = async (fd: number): Promise<void> => {
    try {
      for (;;) {
        const message = await recvFds(fd, { maxBytes: 1 << 20, maxFds: 0 });
        if (message.eof) return;
        const request = JSON.parse(message.data.toString('utf8')) as FakeRequest;
        requests.push(request);
        const reply = await answer(request);
        if (reply !== null) await sendFds(fd, [], Buffer.isBuffer(reply) ? reply : JSON.stringify(reply));
      }
    } catch {
      // The client went away, or the test closed us.
    } finally {
      if (connections.delete(fd)) fs.closeSync(fd);
    }
  };
  void (async () => {
    while (!closed) {
      waiting = native.waitReadableAsync(listenFd);
      try {
        await waiting;
      } catch {
        return;
      }
      if (closed) return;
      const fd = native.unixAccept(listenFd);
      connections.add(fd);
      void serve(fd);
    }
  })();
  return {
    requests,
    close(): void {
      closed = true;
      waiting?.cancel();
      fs.closeSync(listenFd);
      for (const fd of connections) fs.closeSync(fd);
      connections.clear();
      fs.rmSync(socket, { force: true });
    },
  };
}
