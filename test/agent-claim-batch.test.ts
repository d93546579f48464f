/**
 * The agent's per-client work in a burst (after a kexec every client claims
 * at once): its log lines written together once per turn of the event loop,
 * and its replies sent within the turn that made them. What must still hold:
 * every line reaches the log, whole and in order, the lines that come before
 * a kexec or an exit are out before it, and a client that does not read its
 * replies gets them all, in order, once it does (or is dropped after the
 * send timeout, as test/agent.test.ts shows).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { EventLines, PER_CLIENT_EVENTS } from '../lib/agent/event-lines.js';
import { MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { Agent, type AgentEvent } from '../lib/agent/server.js';
import { recvFds, sendFds } from '../lib/fdpass.js';
import { native } from '../lib/native.js';
import { AgentProcess, startAgentInProcess, type AgentLog } from '../conformance/lib/harness/agent.js';

const top = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-claim-batch-'));
/** What a test started, stopped after it whatever it asserted. */
const running: Array<{ stop(): Promise<unknown> }> = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});

afterAll(() => fs.rmSync(top, { recursive: true, force: true }));

const event = (name: string, client: number): AgentEvent => ({ time: '2026-12-05T00:00:00.000Z', event: name, client });
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("the agent's log lines", () => {
  it('per-client lines wait for the end of the turn and go out in one write, in the order they were logged', async () => {
    const writes: string[] = [];
    const lines = new EventLines((text) => writes.push(text));
    lines.add(event('connected', 1));
    lines.add(event('hello', 1));
    lines.add(event('connected', 2));
    expect(writes).toEqual([]);
    await nextTurn();
    expect(writes).toHaveLength(1);
    expect(writes[0]!.split('\n').filter(Boolean).map((l) => JSON.parse(l) as AgentEvent).map((e) => [e.event, e['client']])).toEqual([
      ['connected', 1],
      ['hello', 1],
      ['connected', 2],
    ]);
  });

  it('any other line (the kexec, a refusal of the update, the stop) is written before add returns, after the lines that wait', () => {
    const writes: string[] = [];
    const lines = new EventLines((text) => writes.push(text));
    lines.add(event('claimed', 7));
    lines.add(event('kexec', 0));
    expect(writes).toHaveLength(1);
    expect(writes[0]!.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as AgentEvent).event)).toEqual(['claimed', 'kexec']);
    lines.flush();
    expect(writes).toHaveLength(1);
  });

  it('only the events every client makes wait: the lifecycle of the agent and the update never do', () => {
    for (const name of ['listening', 'mode', 'manifest-read', 'kexec', 'update-refused', 'stopped', 'signal', 'dropped', 'refused']) {
      expect(PER_CLIENT_EVENTS.has(name)).toBe(false);
    }
  });

  it('`liveupdate agent` with 100 clients at once: every line of every client is in its stderr, in order, and its last line, written as it exits, too', async () => {
    const dir = fs.mkdtempSync(path.join(top, 'cli-'));
    const cli = await AgentProcess.start({ socket: path.join(dir, 'agent.sock'), device: path.join(dir, 'no-device') });
    running.push(cli);
    const clients = await Promise.all(Array.from({ length: 100 }, () => cli.connect()));
    const ids = clients.map((c) => c.clientId);
    await Promise.all(clients.map((c) => c.close()));
    for (const id of ids) await cli.log.waitFor((e) => e.event === 'disconnected' && e['client'] === id);
    expect(await cli.stop()).toBe(0);
    const events = cli.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as AgentEvent);
    for (const id of ids) {
      expect(events.filter((e) => e['client'] === id).map((e) => e.event)).toEqual(['connected', 'hello', 'disconnected']);
    }
    expect(events.at(-1)?.event).toBe('stopped');
  });
});

describe("the agent's replies", () => {
  async function startAgent(sendTimeoutMs: number): Promise<{ socket: string; log: AgentLog }> {
    const dir = fs.mkdtempSync(path.join(top, 'd-'));
    const started = await startAgentInProcess((options) => Agent.start({ ...options, sendTimeoutMs }), { socket: path.join(dir, 'agent.sock') });
    running.push(started.agent);
    return started;
  }

  it('a client that sends many requests before reading a reply gets every reply, in order, once it reads: those its socket had no room for waited', async () => {
    const { socket, log } = await startAgent(10_000);
    const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
    try {
      await sendFds(fd, [], JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1] }));
      // Far more replies than the agent's socket buffer holds unread (net.core.wmem_default, with each message's overhead): its sends wait.
      const requests = 1000;
      const sent = Promise.all(Array.from({ length: requests }, (_, i) => sendFds(fd, [], JSON.stringify({ v: 1, id: i + 2, op: 'sessions' }))));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const ids: number[] = [];
      for (let i = 0; i <= requests; i++) {
        const reply = await recvFds(fd, { maxBytes: MAX_MESSAGE_BYTES });
        expect(reply.eof).toBe(false);
        ids.push((JSON.parse(reply.data.toString()) as { id: number }).id);
      }
      await sent;
      expect(ids).toEqual(Array.from({ length: requests + 1 }, (_, i) => i + 1));
      expect(log.find('dropped')).toBeUndefined();
    } finally {
      fs.closeSync(fd);
    }
  });

  it('100 clients of this library at once, each saying hello and asking for a session back: every one is answered', async () => {
    const { socket } = await startAgent(5000);
    const answers = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const client = await AgentClient.connect({ socket });
        try {
          return await client.retrieveSession(`burst-${i}`).then(
            () => 'handed over',
            (error: unknown) => (error as { code?: string }).code,
          );
        } finally {
          await client.close();
        }
      }),
    );
    // No device on this host: every claim is answered, with the agent's refusal to reach one.
    expect(new Set(answers)).toEqual(new Set(['ERR_LIVEUPDATE_AGENT_UNAVAILABLE']));
  });
});
