/**
 * The hello's deadline in a burst of clients: the agent keeps one timer for
 * every connection that has not said hello (they all have the same timeout,
 * so the oldest deadline is the next one), instead of a timer each. What
 * must still hold: each silent connection is told and dropped at its own
 * deadline, counted from its own connect, not at an earlier one's; a
 * connection that said hello is never dropped for it; one that connects
 * after the last deadline passed is timed again.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { Agent } from '../lib/agent/server.js';
import { recvFds } from '../lib/fdpass.js';
import { native } from '../lib/native.js';
import { startAgentInProcess } from '../conformance/lib/harness/agent.js';

const top = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-claim-hello-'));
const HELLO_TIMEOUT_MS = 600;
const running: Array<{ stop(): Promise<unknown> }> = [];
const opened: number[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
  for (const fd of opened.splice(0)) fs.closeSync(fd);
});

afterAll(() => fs.rmSync(top, { recursive: true, force: true }));

async function startAgent(): Promise<string> {
  const socket = path.join(fs.mkdtempSync(path.join(top, 'agent-')), 'agent.sock');
  const { agent } = await startAgentInProcess((options) => Agent.start({ ...options, helloTimeoutMs: HELLO_TIMEOUT_MS }), { socket });
  running.push(agent);
  return socket;
}

/**
 * A raw peer that connects and says nothing; resolves to its fd and an
 * instant no later than its connect. Taken before the connect is asked
 * for: the agent in this process may accept it, and start its deadline,
 * before the connect's Promise is resolved here (by milliseconds, on a
 * loaded machine).
 */
async function silentPeer(socket: string): Promise<{ fd: number; connectedAt: number }> {
  const connectedAt = performance.now();
  const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
  opened.push(fd);
  return { fd, connectedAt };
}

/** The agent's first message to a silent peer, and how long after `since` it came. */
async function refusalOf(fd: number, since: number): Promise<{ message: string; afterMs: number }> {
  const reply = await recvFds(fd, { maxBytes: MAX_MESSAGE_BYTES, maxFds: 0 });
  const afterMs = performance.now() - since;
  const body = JSON.parse(reply.data.toString()) as { ok: boolean; error: { message: string } };
  expect(body.ok).toBe(false);
  return { message: body.error.message, afterMs };
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("the hello's deadline, one timer for all connections", () => {
  it('each silent connection is dropped at its own deadline, a later one not at an earlier one', async () => {
    const socket = await startAgent();
    const first = await silentPeer(socket);
    await pause(HELLO_TIMEOUT_MS / 2);
    const second = await silentPeer(socket);
    const [early, late] = await Promise.all([refusalOf(first.fd, first.connectedAt), refusalOf(second.fd, second.connectedAt)]);
    expect(early.message).toContain(`no hello within ${HELLO_TIMEOUT_MS} ms`);
    expect(late.message).toContain(`no hello within ${HELLO_TIMEOUT_MS} ms`);
    // Not before its own deadline (a timer shared wrongly would drop the second at the first's, half the time in).
    expect(early.afterMs).toBeGreaterThanOrEqual(HELLO_TIMEOUT_MS - 5);
    expect(late.afterMs).toBeGreaterThanOrEqual(HELLO_TIMEOUT_MS - 5);
    // And then the connection is closed.
    expect((await recvFds(second.fd, { maxBytes: MAX_MESSAGE_BYTES, maxFds: 0 })).eof).toBe(true);
  });

  it('a connection that said hello outlives every deadline; one made after the last deadline passed is timed again', async () => {
    const socket = await startAgent();
    const silent = await silentPeer(socket);
    const client = await AgentClient.connect({ socket });
    await refusalOf(silent.fd, silent.connectedAt);
    await pause(HELLO_TIMEOUT_MS / 2);
    // Greeted before the silent one's deadline, and still served well after it.
    expect((await client.sessions()).sessions).toEqual([]);
    const later = await silentPeer(socket);
    const refused = await refusalOf(later.fd, later.connectedAt);
    expect(refused.afterMs).toBeGreaterThanOrEqual(HELLO_TIMEOUT_MS - 5);
    expect((await client.sessions()).sessions).toEqual([]);
    await client.close();
  });
});
