/**
 * How the agent tells a burst of clients from a lone one: the `liveupdate
 * agent` process compiles its code to baseline code once a burst begins
 * (a second connection served at once), and a lone client's next request is
 * looked for at once rather than at the end of the turn. What must hold:
 * clients one after another never count as a burst; the first time two are
 * served at once does, once; either way every client is served.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { Agent } from '../lib/agent/server.js';
import { startAgentInProcess, type AgentLog } from '../conformance/lib/harness/agent.js';

const top = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-claim-burst-'));
const running: Array<{ stop(): Promise<unknown> }> = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});

afterAll(() => fs.rmSync(top, { recursive: true, force: true }));

async function startAgent(onBurst: () => void): Promise<{ socket: string; log: AgentLog }> {
  const socket = path.join(fs.mkdtempSync(path.join(top, 'agent-')), 'agent.sock');
  const { agent, log } = await startAgentInProcess((options) => Agent.start({ ...options, onBurst }), { socket });
  running.push(agent);
  return { socket, log };
}

const count = (log: AgentLog, event: string): number => log.events.filter((e) => e.event === event).length;

/** Waits until the agent has logged the end of every connection it logged (the harness's own first one included): the next one is alone. */
async function noneOpen(log: AgentLog): Promise<void> {
  await log.waitFor(() => count(log, 'disconnected') === count(log, 'connected'));
}

describe('a burst of clients', () => {
  it('clients one after another are no burst; two at once begin one, told once however many follow', async () => {
    let bursts = 0;
    const { socket, log } = await startAgent(() => bursts++);
    for (let i = 0; i < 3; i++) {
      await noneOpen(log);
      const lone = await AgentClient.connect({ socket });
      expect((await lone.sessions()).sessions).toEqual([]);
      await lone.close();
    }
    expect(bursts).toBe(0);
    const first = await AgentClient.connect({ socket });
    const second = await AgentClient.connect({ socket });
    expect(bursts).toBe(1);
    const more = await Promise.all(Array.from({ length: 20 }, () => AgentClient.connect({ socket })));
    // Every one served, each its own replies, in a burst as alone.
    const reports = await Promise.all([first, second, ...more].map((c) => c.sessions()));
    expect(reports.map((r) => r.sessions)).toEqual(reports.map(() => []));
    expect(bursts).toBe(1);
    await Promise.all([first, second, ...more].map((c) => c.close()));
  });
});
