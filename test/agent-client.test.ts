/**
 * AgentClient against peers that misbehave, over real sockets: an agent
 * that never answers, one that answers too much, sockets that are not an
 * agent's. The agent itself is tested in agent.test.ts; here the far end is
 * a small fake (test/helpers/fake-agent.ts) or a socket of the wrong kind.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient, DEFAULT_REQUEST_TIMEOUT_MS } from '../lib/agent/client.js';
import { MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { AgentPermissionError, AgentProtocolError, AgentTimeoutError, AgentUnavailableError, LiveUpdateError, UpdateRefusedError } from '../lib/errors.js';
import { native } from '../lib/native.js';
import { fakeAgent, helloReply, type FakeAgent, type FakeRequest } from './helpers/fake-agent.js';
import { openFds } from './helpers/fds.js';
import { canRunAs } from './helpers/users.js';

const ROOT = path.join(__dirname, '..');
let dir: string;
let socket: string;
let fake: FakeAgent | undefined;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-agent-client-'));
  fs.chmodSync(dir, 0o755);
  socket = path.join(dir, 'agent.sock');
});

afterEach(() => {
  fake?.close();
  fake = undefined;
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** An agent that says hello and then answers each request with `reply(request)` (null: never). */
function agentAnswering(reply: (request: FakeRequest) => Record<string, unknown> | Buffer | null | Promise<Record<string, unknown> | Buffer | null>): FakeAgent {
  fake = fakeAgent(socket, (request) => (request.op === 'hello' ? helloReply(request) : reply(request)));
  return fake;
}

/** Waits (up to 2 s) until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still not true after 2 s: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function rejection(promise: Promise<unknown>): Promise<LiveUpdateError> {
  try {
    await promise;
  } catch (error) {
    return error as LiveUpdateError;
  }
  throw new Error('it resolved');
}

function thrown(fn: () => unknown): LiveUpdateError {
  try {
    fn();
  } catch (error) {
    return error as LiveUpdateError;
  }
  throw new Error('it did not throw');
}

describe('an agent that stalls: every request has a timeout', () => {
  it('the client hangs no more: a hello that is never answered is an AgentTimeoutError (ETIMEDOUT) and the connection is closed', async () => {
    // A listener that never accepts: the kernel queues the connection and the hello, and nobody answers.
    const listener = native.unixBind(native.SOCK_SEQPACKET, socket);
    const before = openFds();
    try {
      const started = Date.now();
      const error = await rejection(AgentClient.connect({ socket, timeoutMs: 200 }));
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
      expect(error).toBeInstanceOf(AgentTimeoutError);
      expect(error).toBeInstanceOf(AgentUnavailableError);
      expect(error).toMatchObject({ code: 'ETIMEDOUT', errno: -110, syscall: 'recvmsg', operation: 'agent.hello', path: socket });
      expect(error.message).toMatch(/^ETIMEDOUT: the agent at .* did not answer agent\.hello in time; the connection is closed, recvmsg '.*'\. No reply within 200 ms\. Fix: /);
      expect(error.fix).toMatch(/timeoutMs/);
      expect(openFds()).toEqual(before);
      // The synchronous form is bounded too.
      const sync = thrown(() => AgentClient.connectSync({ socket, timeoutMs: 100 }));
      expect(sync).toBeInstanceOf(AgentTimeoutError);
      expect(sync).toMatchObject({ code: 'ETIMEDOUT', syscall: 'recvmsg' });
      expect(openFds()).toEqual(before);
    } finally {
      fs.closeSync(listener);
      fs.rmSync(socket, { force: true });
    }
  });

  it('a request the agent never answers times out per call; the connection is then closed', async () => {
    agentAnswering((request) => (request.op === 'sessions' ? null : { v: 1, id: request.id, ok: true, sessions: 0 }));
    const client = await AgentClient.connect({ socket });
    const error = await rejection(client.sessions({ timeoutMs: 150 }));
    expect(error).toMatchObject({ constructor: AgentTimeoutError, code: 'ETIMEDOUT', operation: 'agent.sessions' });
    // A late reply would be taken for the next request's: the client is closed instead.
    await expect(client.ready()).rejects.toMatchObject({ constructor: AgentUnavailableError, code: 'ERR_LIVEUPDATE_AGENT_UNAVAILABLE', message: expect.stringContaining('the client is closed') });
    expect(() => client.readySync()).toThrow(AgentUnavailableError);
  });

  it('the connection timeout applies to every request, the sync forms too', async () => {
    fake = fakeAgent(socket, (request) => (request.op === 'hello' && request['client'] === undefined ? helloReply(request) : null));
    const client = await AgentClient.connect({ socket, timeoutMs: 100 });
    await expect(client.ready()).rejects.toBeInstanceOf(AgentTimeoutError);
    // The sync form blocks this thread, where the fake agent lives too: it cannot answer, as a stalled agent.
    const again = await AgentClient.connect({ socket, timeoutMs: 100 });
    expect(() => again.sessionsSync()).toThrow(AgentTimeoutError);
    expect(() => AgentClient.connectSync({ socket, timeoutMs: 100, name: 'stalled' })).toThrow(AgentTimeoutError);
  });

  it('an AbortSignal cancels a request and closes the connection', async () => {
    agentAnswering(() => null);
    const client = await AgentClient.connect({ socket });
    const controller = new AbortController();
    const pending = client.sessions({ signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    await expect(client.sessions()).rejects.toMatchObject({ message: expect.stringContaining('the client is closed') });
  });

  it('update waits for its own timeoutMs plus the request timeout: the agent waits that long for the clients', async () => {
    expect(DEFAULT_REQUEST_TIMEOUT_MS).toBe(30_000);
    agentAnswering(async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return { v: 1, id: request.id, ok: true, dryRun: true, checks: [{ name: 'kernel-readable', ok: true }] };
    });
    const client = await AgentClient.connect({ socket, timeoutMs: 200 });
    // 300 ms is more than the request timeout, less than timeoutMs + it.
    await expect(client.update({ kernel: '/k', cmdline: 'liveupdate=on', timeoutMs: 250, dryRun: true })).resolves.toMatchObject({ dryRun: true });
    await client.close();
  });

  it('bad timeouts are argument errors before anything is sent', async () => {
    agentAnswering(() => null);
    await expect(AgentClient.connect({ socket, timeoutMs: -1 })).rejects.toMatchObject({ constructor: RangeError, code: 'ERR_OUT_OF_RANGE' });
    await expect(AgentClient.connect({ socket, timeoutMs: '5' as unknown as number })).rejects.toMatchObject({ constructor: TypeError, code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe('replies: told truthfully, up to the protocol maximum', () => {
  it('a reply larger than the protocol allows is an AgentProtocolError saying its size, not "no answer"; the connection stays in step', async () => {
    const huge = Buffer.from(JSON.stringify({ v: 1, id: 0, ok: true, sessions: [], padding: 'x'.repeat(90_716 - 60) }));
    agentAnswering((request) => (request.op === 'sessions' ? huge : { v: 1, id: request.id, ok: true, sessions: 0 }));
    const client = await AgentClient.connect({ socket });
    const error = await rejection(client.sessions());
    expect(error).toBeInstanceOf(AgentProtocolError);
    expect(error.code).toBe('ERR_LIVEUPDATE_AGENT_PROTOCOL');
    expect(error.message).toContain(`the agent's reply of ${huge.length} bytes exceeds the protocol's limit of ${MAX_MESSAGE_BYTES} bytes`);
    expect(error.message).not.toMatch(/no answer/);
    // The packet was skipped whole: the next reply is the next request's.
    await expect(client.ready()).resolves.toBeUndefined();
    await client.close();
  });

  it('a reply of exactly the protocol maximum is accepted', async () => {
    const head = JSON.stringify({ v: 1, id: 2, ok: true, sessions: [], kexecCount: 0, padding: '' });
    const exact = Buffer.from(head.replace('"padding":""', `"padding":"${'x'.repeat(MAX_MESSAGE_BYTES - head.length)}"`));
    expect(exact.length).toBe(MAX_MESSAGE_BYTES);
    agentAnswering(() => exact);
    const client = await AgentClient.connect({ socket });
    await expect(client.sessions()).resolves.toMatchObject({ kexecCount: 0 });
    await client.close();
  });

  it('a reply that is not a JSON object, or names another request, is a protocol error', async () => {
    const replies: Array<Buffer | Record<string, unknown>> = [Buffer.from('[1,2]'), Buffer.from('not json'), { v: 1, id: 999, ok: true }];
    agentAnswering(() => replies.shift() ?? null);
    const client = await AgentClient.connect({ socket });
    for (let i = 0; i < 3; i++) await expect(client.ready()).rejects.toBeInstanceOf(AgentProtocolError);
    await client.close();
  });
});

describe('connect failures: typed, with the true errno and syscall and a fix', () => {
  it('no socket: AgentUnavailableError ENOENT, connect, and how to start the agent', async () => {
    const missing = path.join(dir, 'missing.sock');
    const error = await rejection(AgentClient.connect({ socket: missing }));
    expect(error).toMatchObject({ constructor: AgentUnavailableError, code: 'ENOENT', errno: -2, syscall: 'connect', operation: 'agent.connect', path: missing });
    expect(error.message).toBe(`ENOENT: no agent: ${missing} does not exist, connect '${missing}'. Fix: ${error.fix ?? ''}`);
    expect(error.fix).toMatch(/systemctl start liveupdate-agent\.socket.*liveupdate agent/);
    expect(thrown(() => AgentClient.connectSync({ socket: missing }))).toMatchObject({ constructor: AgentUnavailableError, code: 'ENOENT' });
  });

  it('nobody listening (a socket left behind, or a plain file): AgentUnavailableError ECONNREFUSED', async () => {
    const file = path.join(dir, 'plain-file');
    fs.writeFileSync(file, '');
    const error = await rejection(AgentClient.connect({ socket: file }));
    expect(error).toMatchObject({ constructor: AgentUnavailableError, code: 'ECONNREFUSED', errno: -111, syscall: 'connect' });
    expect(error.message).toMatch(/no agent listens at .*plain-file/);
  });

  it('a socket of the wrong type: AgentProtocolError EPROTOTYPE naming what the agent needs', async () => {
    const stream = path.join(dir, 'stream.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(stream, resolve));
    try {
      const error = await rejection(AgentClient.connect({ socket: stream }));
      expect(error).toMatchObject({ constructor: AgentProtocolError, code: 'EPROTOTYPE', errno: -91, syscall: 'connect' });
      expect(error.message).toMatch(/is a socket of another type, not the agent's SOCK_SEQPACKET socket/);
      expect(error.fix).toMatch(/ListenSequentialPacket=/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it.skipIf(!canRunAs(65534))('a socket this user may not write: AgentPermissionError EACCES (as nobody)', () => {
    agentAnswering(() => null);
    fs.chmodSync(socket, 0o600);
    const script = `
      const lu = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
      lu.AgentClient.connect({ socket: ${JSON.stringify(socket)} }).catch((e) => process.stdout.write(JSON.stringify({ class: e.constructor.name, code: e.code, errno: e.errno, syscall: e.syscall, fix: e.fix })));`;
    const out = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
    expect(JSON.parse(out.stdout)).toMatchObject({ class: 'AgentPermissionError', code: 'EACCES', errno: -13, syscall: 'connect', fix: expect.stringContaining('SocketMode=0666') });
  });
});

describe('typed details and await using', () => {
  it("an update refusal's failed checks are readable without a cast, with the documented names", async () => {
    const checks = [
      { name: 'kernel-readable', ok: true, detail: '/k' },
      { name: 'liveupdate-on', ok: false, detail: 'liveupdate=(absent)' },
      { name: 'bogus', ok: 'yes' },
    ];
    agentAnswering((request) => ({ v: 1, id: request.id, ok: false, error: { class: 'UpdateRefusedError', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED', errno: -125, syscall: 'agent', message: 'ERR_LIVEUPDATE_UPDATE_REFUSED: the update was refused', operation: 'agent.update', details: { checks } } }));
    const client = await AgentClient.connect({ socket });
    const error = await rejection(client.update({ kernel: '/k', cmdline: '', dryRun: true }));
    await client.close();
    if (!(error instanceof UpdateRefusedError)) throw new Error(`not an UpdateRefusedError: ${String(error)}`);
    // What crossed the socket is checked item by item: the malformed check is dropped.
    expect(error.details.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['liveupdate-on']);
    expect(error.details.notReady).toEqual([]);
  });

  it('await using closes the connection at the end of the block', async () => {
    agentAnswering((request) => ({ v: 1, id: request.id, ok: true, sessions: 0 }));
    const before = openFds().length;
    {
      await using client = await AgentClient.connect({ socket });
      await client.ready();
      expect(openFds().length).toBeGreaterThan(before);
    }
    // Not one fd more than before (the fake agent's own may have gone too).
    await until(() => openFds().length <= before);
  });

  it('a permission refusal of the policy keeps its class and code across the socket', async () => {
    fake = fakeAgent(socket, (request) => ({ v: 1, id: request.id, ok: false, error: { class: 'AgentPermissionError', code: 'ERR_LIVEUPDATE_AGENT_PERMISSION', errno: -13, syscall: 'agent', message: 'ERR_LIVEUPDATE_AGENT_PERMISSION: uid 1 may not use this agent', operation: 'agent.hello' } }));
    await expect(AgentClient.connect({ socket })).rejects.toMatchObject({ constructor: AgentPermissionError, errno: -13, syscall: 'agent', operation: 'agent.hello' });
  });
});
