/**
 * The agent's own rooms on the host (no LUO here): the policy's limits, the
 * codec's bounds on requests, replies and log lines, the per-connection
 * state machine, the session table's phases, and the update's refusals that
 * come before any device work. What needs real sessions is proven in
 * test/kernel/agent-hostile.test.ts.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgentInProcess, type AgentLog } from '../conformance/lib/harness/agent.js';
import { AgentClient } from '../lib/agent/client.js';
import { decodeRequest, depthOf, MAX_METADATA_DEPTH } from '../lib/agent/codec.js';
import { Connection, ConnectionState, Notifier, TransitionError } from '../lib/agent/connection.js';
import { MAX_POLICY_SECONDS, parsePolicy, type Peer } from '../lib/agent/policy.js';
import { MAX_MESSAGE_BYTES, type JsonValue } from '../lib/agent/protocol.js';
import { Agent } from '../lib/agent/server.js';
import { SessionTable, TablePhase, type Entry, type TableContext } from '../lib/agent/sessions.js';
import { AgentPolicyError, AgentUnavailableError, UpdateRefusedError } from '../lib/errors.js';
import { recvFds, sendFds } from '../lib/fdpass.js';
import { native } from '../lib/native.js';
import type { LiveUpdate } from '../lib/liveupdate.js';
import type { Session } from '../lib/session.js';
import { canRunAs } from './helpers/users.js';
import { writeHeaderOnlyImage } from './helpers/bzimage.js';

const USER: Peer = { pid: 2, uid: 1000, gid: 1000, groups: [1000] };
let dir: string;
let socket: string;
let agent: Agent | undefined;
let log: AgentLog;

async function startAgent(policy = parsePolicy({})): Promise<void> {
  ({ agent, log } = await startAgentInProcess((options) => Agent.start({ ...options, policy }), { socket }));
}

/** Sends one raw message on a new connection (after a hello); answers the reply's size and body. */
async function exchange(message: string | Record<string, JsonValue>): Promise<{ size: number; body: Record<string, JsonValue> }> {
  const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
  try {
    const ask = async (data: string): Promise<{ size: number; body: Record<string, JsonValue> }> => {
      await sendFds(fd, [], data);
      // Room for a reply over the limit: the test must see it, not fail to receive it.
      const { data: reply } = await recvFds(fd, { maxBytes: 4 * MAX_MESSAGE_BYTES, maxFds: 1 });
      return { size: reply.length, body: JSON.parse(reply.toString()) as Record<string, JsonValue> };
    };
    if (typeof message !== 'string') await ask(JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1] }));
    return await ask(typeof message === 'string' ? message : JSON.stringify({ v: 1, id: 2, ...message }));
  } finally {
    fs.closeSync(fd);
  }
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-agent-server-'));
  fs.chmodSync(dir, 0o755);
  socket = path.join(dir, 'agent.sock');
});

afterEach(async () => {
  await agent?.stop();
  agent = undefined;
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('policy', () => {
  it('unclaimed.afterSeconds beyond what one timer can wait is refused, not turned into an immediate expiry', () => {
    expect(() => parsePolicy({ unclaimed: { afterSeconds: 3_000_000, action: 'finish' } })).toThrow(AgentPolicyError);
    expect(() => parsePolicy({ unclaimed: { afterSeconds: MAX_POLICY_SECONDS + 1, action: 'finish' } })).toThrow(/unclaimed\.afterSeconds must be an integer from 0 to 2147483/);
    expect(parsePolicy({ unclaimed: { afterSeconds: MAX_POLICY_SECONDS, action: 'finish' } }).unclaimed).toEqual({ afterSeconds: 2_147_483, action: 'finish' });
  });

  it('readiness says whose clients may hold an update back, and for how long', () => {
    const policy = parsePolicy({ readiness: { waitFor: { users: [1000] }, proceedAfterSeconds: 300 } });
    expect(policy.readiness).toEqual({ waitFor: { uids: new Set([1000]), gids: new Set() }, proceedAfterSeconds: 300 });
    expect(parsePolicy({}).readiness).toEqual({ waitFor: null, proceedAfterSeconds: null });
    expect(() => parsePolicy({ readiness: { waitFor: { users: [1] }, forever: true } })).toThrow(/readiness: unknown field\(s\): forever/);
    expect(() => parsePolicy({ readiness: { proceedAfterSeconds: -1 } })).toThrow(/readiness\.proceedAfterSeconds/);
  });

  it('kernels are absolute paths; fdStoreMax leaves room for the state and a refused manifest; metadata quota at most the codec bound', () => {
    expect(parsePolicy({ kernels: ['/boot/', '/opt/vmlinuz'] }).kernels).toEqual(['/boot/', '/opt/vmlinuz']);
    expect(() => parsePolicy({ kernels: ['boot/'] })).toThrow(/kernels must be an array of absolute paths/);
    expect(parsePolicy({ fdStoreMax: 10 }).fdStoreMax).toBe(8);
    expect(() => parsePolicy({ fdStoreMax: 2 })).toThrow(/fdStoreMax must be more than 2/);
    expect(() => parsePolicy({ quota: { metadataBytes: 1 << 20 } })).toThrow(/quota\.metadataBytes must be an integer from 0 to 16384/);
  });
});

describe('codec', () => {
  const create = (metadata: unknown): Buffer => Buffer.from(JSON.stringify({ v: 1, id: 3, op: 'createSession', name: 'vm1', metadata }));

  it('measures metadata depth without recursion, stopping past the bound', () => {
    let deep: JsonValue = null;
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(depthOf(deep)).toBe(MAX_METADATA_DEPTH + 1);
    expect(depthOf({ a: [1, { b: null }] })).toBe(3);
  });

  it('a name is checked once, with the peer: the kernel name is in its namespace', () => {
    const decoded = decodeRequest(Buffer.from(JSON.stringify({ v: 1, id: 1, op: 'attach', name: 'vm1' })), 1000);
    expect(decoded).toMatchObject({ ok: true, request: { op: 'attach', session: { name: 'vm1', kernelName: 'u1000.vm1' } } });
  });

  it('a malformed message is fatal; a bad argument is answered and the connection kept', () => {
    expect(decodeRequest(Buffer.from('nope'), 0)).toMatchObject({ ok: false, fatal: true, id: 0 });
    let deep: JsonValue = null;
    for (let i = 0; i < 40; i++) deep = [deep];
    expect(decodeRequest(create(deep), 1000)).toMatchObject({ ok: false, fatal: false, id: 3, error: { code: 'ERR_INVALID_ARG_VALUE' } });
    expect(decodeRequest(create({ blob: 'x'.repeat(20_000) }), 0)).toMatchObject({ ok: false, fatal: false, error: { message: expect.stringContaining('at most 16384 bytes') } });
  });
});

describe('connection state machine', () => {
  it('hello, ready and taking a session move it; nothing else does, and every transition is told', async () => {
    const changes = new Notifier();
    const c = new Connection(1, -1, USER, changes);
    expect(c.state).toBe(ConnectionState.AwaitingHello);
    expect(() => c.on('ready')).toThrow(TransitionError);
    const told = changes.changed();
    c.on('hello');
    await told;
    expect(c.state).toBe(ConnectionState.Serving);
    c.holds.add({ kernelName: 'u1000.vm1' });
    expect(c.blocksUpdate).toBe(true);
    c.on('ready');
    expect([c.state, c.blocksUpdate]).toEqual([ConnectionState.Ready, false]);
    c.on('took-session');
    expect(c.blocksUpdate).toBe(true);
    c.on('close');
    expect(() => c.on('hello')).toThrow(TransitionError);
  });
});

/** What the table needs of a standalone host, over the device `device()` answers (or throws). */
function standaloneOver(device: () => LiveUpdate, storeMax: number | null): TableContext['host'] {
  return { withDevice: async (_operation, use) => use(device()), keep: async () => {}, storeMax, incomingInStore: false, retrievesByName: true };
}

/** A table over no device, with sessions the agent "holds" through objects that only count their closes. */
function tableWith(onClientExit: 'keep' | 'release'): { table: SessionTable; client: Connection<Entry>; closed: string[]; events: string[] } {
  const closed: string[] = [];
  const logged: string[] = [];
  const table = new SessionTable({
    policy: parsePolicy({ onClientExit }),
    host: standaloneOver(() => {
      throw new AgentUnavailableError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE: no device', 'ERR_LIVEUPDATE_AGENT_UNAVAILABLE', { operation: 'agent.createSession' });
    }, null),
    event: (name) => logged.push(name),
    forgotten: () => {},
  });
  const client = new Connection<Entry>(1, -1, USER, new Notifier());
  client.on('hello');
  for (const name of ['vm1', 'vm2']) {
    const kernelName = `u1000.${name}`;
    const reference = { fd: -1, closeSync: () => closed.push(kernelName) } as unknown as Session;
    table.adoptOutgoing({ kernelName, name, owner: 1000, metadata: null, createdAt: 0 }, reference);
    table.attach(client, { name, kernelName });
  }
  return { table, client, closed, events: logged };
}

describe('session table phases', () => {
  it('release and attach are refused once sealing begins: the manifest and the table agree', async () => {
    const { table, client } = tableWith('keep');
    table.beginUpdate();
    const sealed = await table.beginSealing();
    expect(sealed.map((s) => s.kernelName)).toEqual(['u1000.vm1', 'u1000.vm2']);
    await expect(table.release(client, { name: 'vm1', kernelName: 'u1000.vm1' })).rejects.toMatchObject({ constructor: AgentUnavailableError, message: expect.stringContaining('being sealed') });
    expect(() => table.attach(client, { name: 'vm2', kernelName: 'u1000.vm2' })).toThrow(/being sealed/);
    expect(table.outgoing.map((e) => e.state)).toEqual(['outgoing', 'outgoing']);
  });

  it('with release, a client lost during an update loses its sessions when the update ends without a jump', () => {
    const { table, client, closed } = tableWith('release');
    table.beginUpdate();
    expect(table.dropHolder(client)).toBe(0);
    expect(closed).toEqual([]);
    table.endUpdate();
    expect(closed).toEqual(['u1000.vm1', 'u1000.vm2']);
    expect(table.outgoing.map((e) => e.state)).toEqual(['released', 'released']);
  });

  it('with release, a stopping agent lets nothing go when its clients drop: the sessions are parked', () => {
    const { table, client, closed } = tableWith('release');
    table.beginStopping();
    table.dropHolder(client);
    expect(closed).toEqual([]);
    expect(table.outgoing.map((e) => e.state)).toEqual(['outgoing', 'outgoing']);
    expect(() => table.beginUpdate()).toThrow(UpdateRefusedError);
    expect(table.phase).toBe(TablePhase.Stopping);
  });
});

/**
 * A table over a stand-in device whose creates take a turn of the event
 * loop, as the real ioctl (run off the loop) does, and whose retrieves are
 * made within the call, as the agent makes them: what the table does
 * meanwhile is what these tests check. The kernel's side is proven in
 * test/kernel/agent-hostile.test.ts.
 */
function tableOverSlowDevice(policy = parsePolicy({ quota: { sessions: 2 } })): { table: SessionTable; client: Connection<Entry>; calls: string[] } {
  const calls: string[] = [];
  const session = (name: string): Session => ({ name, fd: -1, closeSync: () => {}, close: async () => {}, finish: async () => {} }) as unknown as Session;
  const device = {
    createSession: async (name: string) => {
      calls.push(`create ${name}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      return session(name);
    },
    retrieveSessionSync: (name: string) => {
      calls.push(`retrieve ${name}`);
      return session(name);
    },
  };
  const table = new SessionTable({ policy, host: standaloneOver(() => device as unknown as LiveUpdate, policy.fdStoreMax), event: () => {}, forgotten: () => {} });
  const client = new Connection<Entry>(1, -1, USER, new Notifier());
  client.on('hello');
  return { table, client, calls };
}

describe('session table over a device that takes its time', () => {
  it('the quota is reserved before the create is awaited: twelve at once pass a quota of 2 twice only', async () => {
    const { table, client, calls } = tableOverSlowDevice();
    const names = Array.from({ length: 12 }, (_, i) => `vm${i}`);
    const results = await Promise.allSettled(names.map((name) => table.create(client, { name, kernelName: `u1000.${name}` }, null, 4)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(Array(10).fill('ERR_LIVEUPDATE_AGENT_QUOTA'));
    expect(calls).toHaveLength(2);
  });

  it('a create in progress when sealing begins is waited for, and the manifest carries it', async () => {
    const { table, client } = tableOverSlowDevice();
    const creating = table.create(client, { name: 'late', kernelName: 'u1000.late' }, null, 4);
    table.beginUpdate();
    const sealed = await table.beginSealing();
    expect(sealed.map((s) => s.kernelName)).toEqual(['u1000.late']);
    await expect(creating).resolves.toMatchObject({ kernelName: 'u1000.late', state: 'outgoing' });
  });

  it('a claim and the unclaimed timer do not race: the claim wins, and the timer leaves the claimed session alone', async () => {
    const { table, client, calls } = tableOverSlowDevice();
    table.adoptIncoming([{ kernelName: 'u1000.vm1', name: 'vm1', owner: 1000, metadata: null, createdAt: 0 }]);
    const claims = [table.claim(client, { name: 'vm1', kernelName: 'u1000.vm1' }, true), table.claim(client, { name: 'vm1', kernelName: 'u1000.vm1' }, true)];
    const expiry = table.expireUnclaimed('finish');
    const [first, second] = await Promise.all(claims);
    await expiry;
    expect(first).toBe(second);
    expect(first?.state).toBe('claimed');
    expect(calls).toEqual(['retrieve u1000.vm1']);
  });
});

describe('replies and log lines bounded (a real agent)', () => {
  it('an update --dry-run with a long kernel path gets an answer within 64 KiB', async () => {
    await startAgent();
    const { size, body } = await exchange({ op: 'update', kernel: `/${'k'.repeat(60_000)}`, cmdline: 'liveupdate=on', timeoutMs: 0, dryRun: true });
    expect(size).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    expect(body).toMatchObject({ ok: false, error: { class: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('at most 4096 bytes') } });
    const longest = await exchange({ op: 'update', kernel: `/${'k'.repeat(4000)}`, initrd: `/${'i'.repeat(4000)}`, cmdline: 'c'.repeat(4096), timeoutMs: 0, dryRun: true });
    expect(longest.size).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    expect(longest.body).toMatchObject({ ok: false, error: { class: 'UpdateRefusedError' } });
  });

  it('what unauthenticated peers send reaches the log cut short, and their refusals fit in a reply', async () => {
    await startAgent();
    const named = await exchange(JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1], client: 'c'.repeat(60_000) }));
    expect(named.body).toMatchObject({ ok: true });
    const unknown = await exchange(JSON.stringify({ v: 1, id: 1, op: 'o'.repeat(60_000) }));
    expect(unknown.size).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    expect(unknown.body).toMatchObject({ ok: false, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL' } });
    const longest = Math.max(...log.events.map((e) => JSON.stringify(e).length));
    expect(longest).toBeLessThan(4096);
  });

  it('sessions answers one page with the next cursor; a bad limit is a protocol error', async () => {
    await startAgent();
    expect((await exchange({ op: 'sessions', limit: 5 })).body).toMatchObject({ ok: true, sessions: [], next: null });
    expect((await exchange({ op: 'sessions', limit: 0 })).body).toMatchObject({ ok: false, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL' } });
  });
});

describe('update refusals before the device', () => {
  it("the policy's kernels pin what an update may load: a file outside them fails its check", async () => {
    await startAgent(parsePolicy({ kernels: ['/boot/'] }));
    const client = await AgentClient.connect({ socket });
    const image = writeHeaderOnlyImage(path.join(dir, 'bzImage'));
    const error = await client.update({ kernel: image, cmdline: 'liveupdate=on kho=on', dryRun: true }).catch((e: unknown) => e);
    await client.close();
    const failed = ((error as UpdateRefusedError).details as { checks: Array<{ name: string; ok: boolean }> }).checks.filter((c) => !c.ok).map((c) => c.name);
    expect(failed).toEqual(['device-owned', 'kernel-allowed']);
  });

  it.skipIf(!canRunAs(65534))('proceedWithout is root-only: a user allowed to update is refused it', async () => {
    await startAgent(parsePolicy({ connect: { users: [65534] }, update: { users: [65534] } }));
    const script = `
      const { native } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'native.js'))});
      const lu = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      (async () => {
        const fd = native.unixConnect(native.SOCK_SEQPACKET, ${JSON.stringify(socket)});
        const ask = async (m) => { await lu.sendFds(fd, [], JSON.stringify(m)); return JSON.parse((await lu.recvFds(fd, { maxFds: 1 })).data.toString()); };
        await ask({ v: 1, id: 1, op: 'hello', versions: [1] });
        const reply = await ask({ v: 1, id: 2, op: 'update', kernel: '/boot/x', cmdline: 'liveupdate=on', timeoutMs: 0, proceedWithout: true });
        process.stdout.write(JSON.stringify(reply));
      })();`;
    const child = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await new Promise((resolve) => child.on('close', resolve));
    expect(JSON.parse(out)).toMatchObject({ ok: false, error: { class: 'AgentPermissionError', message: expect.stringContaining('proceedWithout (root only)') } });
  });
});
