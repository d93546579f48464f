/**
 * The agent's announcements (protocol version 2) on the host: how a client
 * tells an announcement from a reply, what it does with each, what an agent
 * or client of version 1 sees, and the agent's bounds on what it sends.
 * The far end is a fake agent (test/helpers/fake-agent.ts) where the test
 * must send what the agent sends unasked, the real Agent (without a device)
 * where the host can run it. An update that announces needs a LUO kernel:
 * test/kernel/agent-announce.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgentInProcess, type AgentLog } from '../conformance/lib/harness/agent.js';
import { Announcements, MAX_UNSENT_ANNOUNCEMENTS } from '../lib/agent/announcements.js';
import { AgentClient, type PrepareEvent, type ResumeEvent } from '../lib/agent/client.js';
import { decodeRequest, encodeAnnouncement } from '../lib/agent/codec.js';
import { Connection, ConnectionState, Notifier } from '../lib/agent/connection.js';
import { classifyAgentMessage, MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { Agent } from '../lib/agent/server.js';
import { AgentProtocolError, AgentUnavailableError, SocketBusyError, UpdateRefusedError } from '../lib/errors.js';
import { recvFds, sendFds, sendFdsSync, socketPair } from '../lib/fdpass.js';
import { native } from '../lib/native.js';
import { fakeAgent, helloReply, type FakeAgent, type FakeReply, type FakeRequest } from './helpers/fake-agent.js';
import { openFds } from './helpers/fds.js';

const USER = { pid: 1, uid: 1000, gid: 1000, groups: [1000] };
let dir: string;
let socket: string;
let fake: FakeAgent | undefined;
let agent: Agent | undefined;
let log: AgentLog;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-agent-announce-'));
  fs.chmodSync(dir, 0o755);
  socket = path.join(dir, 'agent.sock');
});

afterEach(async () => {
  fake?.close();
  fake = undefined;
  await agent?.stop();
  agent = undefined;
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const bytes = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

/** Waits (up to 2 s) until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still not true after 2 s: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * A fake agent of version 2: hello chooses 2, subscribe is answered, and
 * `onRequest` may send announcements (through `push`) before the reply.
 */
function agentV2(onRequest: (request: FakeRequest, push: (message: unknown) => Promise<void>) => FakeReply | Promise<FakeReply> = (r) => ({ v: 2, id: r.id, ok: true })): FakeAgent {
  const push = async (message: unknown): Promise<void> => {
    for (const fd of fake!.connections) await sendFds(fd, [], bytes(message));
  };
  fake = fakeAgent(socket, (request) => {
    if (request.op === 'hello') return { ...helloReply(request), v: 2, version: 2 };
    if (request.op === 'subscribe') return { v: 2, id: request.id, ok: true, subscribed: true };
    return onRequest(request, push);
  });
  return fake;
}

const PREPARE = { v: 2, event: 'prepare', deadline: Date.UTC(2026, 11, 5), remainingMs: 1500, kernel: '/boot/vmlinuz-next' };

/** A client's events, in the order they came, with the moment a request resolved among them. */
function record(client: AgentClient): Array<string | PrepareEvent | ResumeEvent | Error | undefined> {
  const seen: Array<string | PrepareEvent | ResumeEvent | Error | undefined> = [];
  client.on('prepare', (e) => seen.push('prepare', e));
  client.on('resume', (e) => seen.push('resume', e));
  client.on('close', (e) => seen.push('close', e));
  return seen;
}

describe('the wire: replies and announcements told apart', () => {
  it('a message with an id and no event is a reply; one with an event and no id an announcement, its fields checked', () => {
    expect(classifyAgentMessage(bytes({ v: 2, id: 7, ok: true }))).toEqual({ kind: 'reply' });
    expect(classifyAgentMessage(bytes({ v: 2, id: 0, ok: false, error: {} }))).toEqual({ kind: 'reply' });
    expect(classifyAgentMessage(bytes(PREPARE))).toEqual({ kind: 'announcement', announcement: { event: 'prepare', deadline: PREPARE.deadline, remainingMs: 1500, kernel: '/boot/vmlinuz-next' } });
    expect(classifyAgentMessage(bytes({ v: 2, event: 'resume', reason: 'refused', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' }))).toEqual({
      kind: 'announcement',
      announcement: { event: 'resume', reason: 'refused', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' },
    });
    expect(classifyAgentMessage(bytes({ v: 2, event: 'resume', reason: 'no code' }))).toEqual({ kind: 'announcement', announcement: { event: 'resume', reason: 'no code' } });
  });

  it('a message that is both, neither, not JSON, or an announcement without its fields is invalid; an unknown event is only skipped', () => {
    for (const broken of [{ v: 2, id: 1, event: 'prepare' }, { v: 2, ok: true }, { ...PREPARE, kernel: 7 }, { ...PREPARE, remainingMs: -1 }, { ...PREPARE, deadline: 'soon' }, { v: 2, event: 'resume' }, { v: 2, event: 'resume', reason: 'x', code: 5 }, [1]]) {
      expect(classifyAgentMessage(bytes(broken)).kind, JSON.stringify(broken)).toBe('invalid');
    }
    expect(classifyAgentMessage(Buffer.from('{"v":2,')).kind).toBe('invalid');
    expect(classifyAgentMessage(bytes({ v: 2, event: 'reboot-scheduled', at: 1 }))).toEqual({ kind: 'unknown-event', event: 'reboot-scheduled' });
  });

  it("the agent writes an announcement in the connection's version, with no id", () => {
    expect(JSON.parse(encodeAnnouncement(2, { event: 'resume', reason: 'r' }).toString())).toEqual({ v: 2, event: 'resume', reason: 'r' });
  });

  it('subscribe is unknown on a connection that agreed on version 1 (as to an agent of version 1), a request on one of version 2', () => {
    const request = bytes({ v: 1, id: 4, op: 'subscribe' });
    expect(decodeRequest(request, 1000, 1)).toMatchObject({ ok: false, fatal: true, id: 4, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL', message: expect.stringContaining("unknown operation 'subscribe' in protocol version 1") } });
    expect(decodeRequest(bytes({ v: 2, id: 5, op: 'subscribe' }), 1000, 2)).toMatchObject({ ok: true, request: { op: 'subscribe', id: 5 } });
  });
});

describe('the client: events and replies on one connection', () => {
  it('an announcement that arrives while a request waits for its reply is emitted, and the reply still answers that request', async () => {
    agentV2(async (request, push) => {
      if (request.op !== 'ready') return null;
      // prepare, then resume, then the reply: the client must take neither announcement for the reply.
      await push(PREPARE);
      await push({ v: 2, event: 'resume', reason: 'the update was refused', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' });
      return { v: 2, id: request.id, ok: true, sessions: 3 };
    });
    const client = await AgentClient.connect({ socket });
    expect(client.protocolVersion).toBe(2);
    const seen = record(client);
    await client.subscribe();
    expect(client.subscribed).toBe(true);
    await client.ready();
    seen.push('ready answered');
    expect(seen).toEqual([
      'prepare',
      { deadline: new Date(PREPARE.deadline), deadlineMs: 1500, kernel: '/boot/vmlinuz-next' },
      'resume',
      { reason: 'the update was refused', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' },
      'ready answered',
    ]);
    await client.close();
    expect(seen.slice(-2)).toEqual(['close', undefined]);
  });

  it('an announcement with no request outstanding is emitted; the client answers it with ready, which the agent reads', async () => {
    const f = agentV2();
    const client = await AgentClient.connect({ socket });
    await client.subscribe();
    const prepared = new Promise<PrepareEvent>((resolve) => client.once('prepare', resolve));
    client.on('prepare', () => void client.ready());
    for (const fd of f.connections) await sendFds(fd, [], bytes(PREPARE));
    expect((await prepared).kernel).toBe('/boot/vmlinuz-next');
    await until(() => f.requests.some((r) => r.op === 'ready'));
    // Every request after the hello is written in the version the hello chose.
    expect(f.requests.map((r) => [r.op, r.v])).toEqual([
      ['hello', 1],
      ['subscribe', 2],
      ['ready', 2],
    ]);
    await client.close();
  });

  it("update's two replies both reach it through the loop of a subscribed client", async () => {
    agentV2((request) => (request.op === 'update' ? bytes({ v: 2, id: request.id, ok: false, error: { code: 'ERR_LIVEUPDATE_UPDATE_REFUSED', message: 'ERR_LIVEUPDATE_UPDATE_REFUSED: the update was refused: test', errno: -125, details: { checks: [], notReady: [{ id: 2, pid: 3, uid: 4, disconnected: true }] } } }) : null));
    const client = await AgentClient.connect({ socket });
    await client.subscribe();
    const refused = await client.update({ kernel: '/boot/k', cmdline: 'liveupdate=on', timeoutMs: 100 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UpdateRefusedError);
    expect((refused as UpdateRefusedError).details.notReady).toEqual([{ id: 2, pid: 3, uid: 4, disconnected: true }]);
    await client.close();
  });

  it('an agent of version 1: subscribe is refused before anything is sent, and the client goes on as before', async () => {
    fake = fakeAgent(socket, (request) => (request.op === 'hello' ? helloReply(request) : { v: 1, id: request.id, ok: true, sessions: 0 }));
    const client = await AgentClient.connect({ socket });
    expect(client.protocolVersion).toBe(1);
    const refused = await client.subscribe().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AgentProtocolError);
    expect((refused as AgentProtocolError).message).toMatch(/protocol version 1, which has no announcements/);
    await client.ready();
    expect(fake.requests.map((r) => [r.op, r.v])).toEqual([
      ['hello', 1],
      ['ready', 1],
    ]);
    await client.close();
  });

  it('a subscribed client refuses the Sync forms (they would cut into its reading) with SocketBusyError', async () => {
    agentV2();
    const client = await AgentClient.connect({ socket });
    await client.subscribe();
    expect(() => client.readySync()).toThrow(SocketBusyError);
    await client.ready();
    await client.close();
  });

  it('an agent that breaks the protocol (a message both reply and announcement) ends the connection: close with the error, the waiting request rejected with it, no fd left', async () => {
    const before = openFds().length;
    agentV2((request) => (request.op === 'ready' ? bytes({ v: 2, id: request.id, event: 'prepare' }) : null));
    const client = await AgentClient.connect({ socket });
    const seen = record(client);
    await client.subscribe();
    const failed = await client.ready().catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(AgentProtocolError);
    expect((failed as Error).message).toMatch(/both or neither of 'id' and 'event'/);
    expect(seen).toEqual(['close', failed]);
    expect(client.subscribed).toBe(false);
    await expect(client.ready()).rejects.toBeInstanceOf(AgentUnavailableError);
    fake?.close();
    fake = undefined;
    await until(() => openFds().length === before);
  });

  it('replies nobody asked for are bounded: past two the connection ends with a protocol error', async () => {
    const f = agentV2();
    const client = await AgentClient.connect({ socket });
    const seen = record(client);
    await client.subscribe();
    for (const fd of f.connections) for (let id = 90; id < 93; id++) await sendFds(fd, [], bytes({ v: 2, id, ok: true }));
    await until(() => seen.length === 2);
    expect(seen[1]).toBeInstanceOf(AgentProtocolError);
    expect((seen[1] as Error).message).toMatch(/replies to requests this client did not make/);
  });

  it('the agent going away is a close event with AgentUnavailableError', async () => {
    const f = agentV2();
    const client = await AgentClient.connect({ socket });
    const seen = record(client);
    await client.subscribe();
    f.close();
    fake = undefined;
    await until(() => seen.length === 2);
    expect(seen[0]).toBe('close');
    expect(seen[1]).toBeInstanceOf(AgentUnavailableError);
    expect(client.subscribed).toBe(false);
  });
});

describe('the real agent (no device)', () => {
  async function startAgent(): Promise<void> {
    ({ agent, log } = await startAgentInProcess((options) => Agent.start(options), { socket }));
  }

  it('a client of version 1 is served as before: replies in version 1, and subscribe is an unknown operation that drops it', async () => {
    await startAgent();
    const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
    const exchange = async (message: unknown): Promise<Record<string, unknown> | null> => {
      await sendFds(fd, [], bytes(message));
      const reply = await recvFds(fd, { maxBytes: MAX_MESSAGE_BYTES, maxFds: 1 });
      return reply.eof ? null : (JSON.parse(reply.data.toString()) as Record<string, unknown>);
    };
    expect(await exchange({ v: 1, id: 1, op: 'hello', versions: [1] })).toMatchObject({ v: 1, id: 1, ok: true, version: 1 });
    expect(await exchange({ v: 1, id: 2, op: 'ready' })).toMatchObject({ v: 1, id: 2, ok: true, sessions: 0 });
    expect(await exchange({ v: 1, id: 3, op: 'subscribe' })).toMatchObject({ v: 1, id: 3, ok: false, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL' } });
    expect((await recvFds(fd, { maxBytes: MAX_MESSAGE_BYTES })).eof).toBe(true);
    fs.closeSync(fd);
  });

  it('this package\'s client agrees on version 2 and subscribes; an update refused at its checks announces nothing', async () => {
    await startAgent();
    const watcher = await AgentClient.connect({ socket, name: 'watcher' });
    const seen = record(watcher);
    await watcher.subscribe();
    expect([watcher.protocolVersion, watcher.subscribed]).toEqual([2, true]);
    expect(log.find('subscribed')).toMatchObject({ client: watcher.clientId });
    const asker = await AgentClient.connect({ socket });
    await expect(asker.update({ kernel: '/boot/none', cmdline: 'liveupdate=on', timeoutMs: 100 })).rejects.toBeInstanceOf(UpdateRefusedError);
    // The watcher still answers, and was told nothing.
    await watcher.ready();
    expect(seen).toEqual([]);
    expect(log.find('prepare-announced')).toBeUndefined();
    await asker.close();
    await watcher.close();
  });
});

describe('the agent side: who is told, and the bounds on what is sent', () => {
  /** A connection of the agent over a socketpair; `peer` is the client's end. */
  function pair(id: number, changes: Notifier): { c: Connection; peer: number } {
    const [agentEnd, peer] = socketPair('seqpacket');
    const c = new Connection(id, agentEnd, USER, changes);
    c.on('hello');
    c.version = 2;
    return { c, peer };
  }

  async function read(fd: number): Promise<Record<string, unknown>> {
    return JSON.parse((await recvFds(fd, { maxBytes: MAX_MESSAGE_BYTES })).data.toString()) as Record<string, unknown>;
  }

  /** Fills the socket of `agentEnd` until it would block, as a client that never reads leaves it. */
  function fill(agentEnd: number): void {
    const chunk = Buffer.alloc(32 * 1024);
    for (;;) {
      try {
        sendFdsSync(agentEnd, [], chunk, { timeout: 0 });
      } catch {
        return;
      }
    }
  }

  it('prepare goes to every subscribed connection but the asker; a late subscriber is told too; resume goes to those told, still connected', async () => {
    const changes = new Notifier();
    const conns = [1, 2, 3, 4].map((id) => pair(id, changes));
    const [subscribed, asker, unsubscribed, gone] = conns.map((x) => x.c) as [Connection, Connection, Connection, Connection];
    const events: string[] = [];
    const announcements = new Announcements({ connections: () => conns.map((x) => x.c), sendTimeoutMs: 5000, event: (name) => events.push(name) });
    for (const c of [subscribed, asker, gone]) announcements.subscribe(c);
    const round = announcements.prepare({ deadline: Date.now() + 10_000, kernel: '/boot/k' }, asker);
    expect([...round.prepared].map((c) => c.id)).toEqual([1, 4]);
    expect([subscribed.state, asker.state, unsubscribed.state, subscribed.blocksUpdate]).toEqual([ConnectionState.Preparing, ConnectionState.Serving, ConnectionState.Serving, true]);
    const told = await read(conns[0]!.peer);
    expect(told).toMatchObject({ v: 2, event: 'prepare', kernel: '/boot/k' });
    expect(told['remainingMs']).toBeGreaterThan(9000);
    expect(told).not.toHaveProperty('id');
    // Subscribing while the round is open: told at once.
    announcements.subscribe(unsubscribed);
    expect((await read(conns[2]!.peer))['event']).toBe('prepare');
    gone.on('close');
    expect(gone.leftWhilePreparing).toBe(true);
    subscribed.on('ready');
    expect(subscribed.blocksUpdate).toBe(false);
    round.resume('refused', 'ERR_LIVEUPDATE_UPDATE_REFUSED');
    expect(await read(conns[0]!.peer)).toEqual({ v: 2, event: 'resume', reason: 'refused', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' });
    expect((await read(conns[2]!.peer))['event']).toBe('resume');
    // A ready said for the update that did not happen does not count for the next one.
    expect(subscribed.state).toBe(ConnectionState.Serving);
    expect(events).toEqual(['prepare-announced', 'resume-announced']);
    for (const { c, peer } of conns) {
      fs.closeSync(c.fd);
      fs.closeSync(peer);
    }
  });

  it('a client that does not take its prepare within the send timeout is dropped, and counts as gone mid-prepare; the agent did not wait for it', async () => {
    const changes = new Notifier();
    const slow = pair(1, changes);
    const events: Array<[string, unknown]> = [];
    const announcements = new Announcements({ connections: () => [slow.c], sendTimeoutMs: 200, event: (name, fields) => events.push([name, fields['reason']]) });
    announcements.subscribe(slow.c);
    fill(slow.c.fd);
    const asker = pair(2, changes);
    const started = Date.now();
    announcements.prepare({ deadline: Date.now() + 10_000, kernel: '/boot/k' }, asker.c);
    expect(Date.now() - started).toBeLessThan(100);
    await until(() => slow.c.state === ConnectionState.Closing);
    expect(slow.c.leftWhilePreparing).toBe(true);
    expect(events.find(([name]) => name === 'announcement-dropped')?.[1]).toMatch(/prepare announcement could not be sent/);
    for (const fd of [slow.c.fd, slow.peer, asker.c.fd, asker.peer]) fs.closeSync(fd);
  });

  it(`announcements not taken are bounded per connection: past ${MAX_UNSENT_ANNOUNCEMENTS} the connection is dropped at once`, async () => {
    const changes = new Notifier();
    const slow = pair(1, changes);
    const asker = pair(2, changes);
    const dropped: unknown[] = [];
    const announcements = new Announcements({ connections: () => [slow.c], sendTimeoutMs: 60_000, event: (name, fields) => name === 'announcement-dropped' && dropped.push(fields['reason']) });
    announcements.subscribe(slow.c);
    fill(slow.c.fd);
    // Updates one after another while the client reads nothing: prepare, resume, prepare, resume, prepare.
    for (let i = 0; i < 2; i++) announcements.prepare({ deadline: Date.now() + 10_000, kernel: '/boot/k' }, asker.c).resume('refused', undefined);
    expect([slow.c.unsentAnnouncements, slow.c.state]).toEqual([4, ConnectionState.Serving]);
    announcements.prepare({ deadline: Date.now() + 10_000, kernel: '/boot/k' }, asker.c);
    expect(slow.c.state).toBe(ConnectionState.Closing);
    expect(dropped).toEqual([`${MAX_UNSENT_ANNOUNCEMENTS} announcements not taken`]);
    for (const fd of [slow.c.fd, slow.peer, asker.c.fd, asker.peer]) fs.closeSync(fd);
  });
});
