/**
 * Many clients at once (after a kexec every client of the host reconnects
 * in the same instant): the agent in this process, on this host (no LUO:
 * it serves without a device), and the burst from a child process making
 * plain blocking connects, as any client library does.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { Agent } from '../lib/agent/server.js';
import { AgentUnavailableError } from '../lib/errors.js';

const ROOT = path.join(__dirname, '..');
const BURST = 200;
/** How long the agent stays busy (its event loop blocked) at most while the burst connects: far longer than 200 connects take, even on a loaded machine. */
const BUSY_MS = 10_000;
const top = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-burst-'));
let agent: Agent | undefined;

afterEach(async () => {
  await agent?.stop();
  agent = undefined;
});

afterAll(() => {
  fs.rmSync(top, { recursive: true, force: true });
});

async function startAgent(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(top, 'd-'));
  const socket = path.join(dir, 'agent.sock');
  agent = await Agent.start({ socket, devicePath: path.join(dir, 'no-such-device'), log: () => {} });
  return socket;
}

/** What the burst's child saw: its connects, then each connection's hello answered or not. */
interface BurstReport {
  connected: number;
  answered: number;
  failed: string[];
}

/**
 * A child that connects `count` times in a row (blocking connects, each
 * counted in `progress` as it returns), then says hello on every
 * connection and waits for every answer (at most 10 s each).
 */
function burst(socket: string, count: number, progress: string): Promise<BurstReport> {
  const script = `
    const fs = require('node:fs');
    const { native } = require(${JSON.stringify(path.join(ROOT, 'dist', 'native.js'))});
    const fds = [];
    for (let i = 0; i < ${count}; i++) {
      fds.push(native.unixConnect(native.SOCK_SEQPACKET, ${JSON.stringify(socket)}));
      fs.writeFileSync(${JSON.stringify(progress)}, String(fds.length));
    }
    const hello = Buffer.from(JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1, 2], client: 'burst' }));
    for (const fd of fds) native.sendFds(fd, hello, [], 0, -1);
    const out = { connected: fds.length, answered: 0, failed: [] };
    for (const fd of fds) {
      try {
        if (!native.waitReadable(fd, 10000)) throw new Error('no answer');
        const reply = JSON.parse(native.recvFds(fd, 65536, 0, 0).data.toString());
        if (reply.ok === true) out.answered++;
        else out.failed.push(reply.error.code);
      } catch (e) {
        out.failed.push(e.code ?? e.message);
      }
    }
    process.stdout.write(JSON.stringify(out));
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(stdout) as BurstReport) : reject(new Error(`the burst exited with ${String(code)}: ${stderr}`))));
  });
}

/** Blocks this thread (and with it the agent's event loop) until `progress` says `count`, or for `ms`; the count reached. */
function busyUntil(progress: string, count: number, ms: number): number {
  const deadline = Date.now() + ms;
  let reached = 0;
  while (Date.now() < deadline) {
    try {
      reached = Number(fs.readFileSync(progress, 'utf8')) || reached;
    } catch {
      // Not written yet.
    }
    if (reached >= count) break;
  }
  return reached;
}

describe('a burst of clients', () => {
  it(`${BURST} clients connecting at once while the agent is busy: every connect completes without waiting for the agent, and every hello is answered`, async () => {
    const socket = await startAgent();
    const progress = path.join(top, `progress-${process.pid}`);
    const report = burst(socket, BURST, progress);
    // The agent cannot accept while this thread is busy: the connects must queue in the listening socket's backlog.
    const connectedWhileBusy = busyUntil(progress, BURST, BUSY_MS);
    expect(connectedWhileBusy).toBe(BURST);
    const seen = await report;
    // Every hello answered: none of them waited out the agent's hello timeout (that is answered with an error).
    expect(seen).toEqual({ connected: BURST, answered: BURST, failed: [] });
  }, 60_000);

  it(`${BURST} clients of this library at once: every one connects, says hello and is answered with no retry`, async () => {
    const socket = await startAgent();
    const clients = await Promise.all(Array.from({ length: BURST }, () => AgentClient.connect({ socket, timeoutMs: 10_000 })));
    const answered = await Promise.all(
      clients.map((client, i) =>
        client.retrieveSession(`burst-${i}`).then(
          () => 'handed back',
          (error: unknown) => (error instanceof AgentUnavailableError ? 'no device' : String(error)),
        ),
      ),
    );
    await Promise.all(clients.map((c) => c.close()));
    // No device here: each claim reaches the point where the kernel would be asked, and is told so.
    expect(answered).toEqual(Array.from({ length: BURST }, () => 'no device'));
  }, 60_000);
});
