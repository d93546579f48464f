/**
 * The agent's protocol on the host, against a real agent serving a real
 * socket: this machine has no LUO, so the agent runs as it does on any
 * kernel without /dev/liveupdate (it serves, and answers every request
 * that needs the device with AgentUnavailableError). What these tests prove
 * is what happens before any device work: identity, policy, hostile and
 * broken peers. Sessions across a kexec are proven in test/kernel/agent.test.ts.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { MANIFEST_FORMAT, parseManifest, readManifest, writeManifest, type Manifest } from '../lib/agent/manifest.js';
import { AGENT_SESSION_NAME, checkClientName, kernelName } from '../lib/agent/names.js';
import { parsePolicy, type Policy } from '../lib/agent/policy.js';
import { MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { Agent } from '../lib/agent/server.js';
import { startAgentInProcess, type AgentLog } from '../conformance/lib/harness/agent.js';
import { runCli } from '../conformance/lib/harness/cli.js';
import { runProcess } from '../conformance/lib/harness/process.js';
import { AgentPolicyError, AgentUnavailableError, ManifestVersionError, UpdateRefusedError } from '../lib/errors.js';
import { recvFds, sendFds } from '../lib/fdpass.js';
import * as memfd from '../lib/memfd.js';
import { native } from '../lib/native.js';
import { openFds } from './helpers/fds.js';
import { canRunAs } from './helpers/users.js';
import { writeHeaderOnlyImage } from './helpers/bzimage.js';

const ROOT = path.join(__dirname, '..');
const NOBODY = 65534;
let dir: string;
let socket: string;
let agent: Agent;
/** What the agent of the test logged. */
let log: AgentLog;

/** Starts the agent of these sources in this process, on `socket`, without a device. */
async function startAgent(policy?: Policy, extra: { helloTimeoutMs?: number; sendTimeoutMs?: number } = {}): Promise<void> {
  ({ agent, log } = await startAgentInProcess((options) => Agent.start({ ...options, ...(policy === undefined ? {} : { policy }), ...extra }), { socket }));
}

/** A raw protocol peer: a SOCK_SEQPACKET socket with nothing of AgentClient in between. */
function rawConnect(): Promise<number> {
  return native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
}

async function rawReply(fd: number): Promise<{ body: Record<string, unknown> | null; eof: boolean }> {
  const message = await recvFds(fd, { maxBytes: MAX_MESSAGE_BYTES, maxFds: 1 });
  return { body: message.eof ? null : (JSON.parse(message.data.toString()) as Record<string, unknown>), eof: message.eof };
}

/** Sends one raw message; answers the reply and whether the agent then hung up. */
async function rawExchange(fd: number, data: string | Buffer): Promise<{ reply: Record<string, unknown> | null; hungUp: boolean }> {
  await sendFds(fd, [], data);
  const first = await rawReply(fd);
  const second = first.eof ? first : await rawReply(fd);
  return { reply: first.body, hungUp: second.eof };
}

/** Waits (up to 2 s) for something the agent does after answering, such as closing a connection. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still not true after 2 s: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const hello = JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1] });

/** The agent still serves: a new client says hello and lists sessions. */
async function stillServes(): Promise<void> {
  const client = await AgentClient.connect({ socket });
  expect((await client.sessions()).sessions).toEqual([]);
  await client.close();
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-agent-'));
  fs.chmodSync(dir, 0o755);
  socket = path.join(dir, 'agent.sock');
});

afterEach(async () => {
  await agent?.stop();
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('agent protocol with a real agent (no LUO on this host)', () => {
  it('hello reports the peer the kernel saw (SO_PEERCRED) and the agent without a device', async () => {
    await startAgent();
    const client = await AgentClient.connect({ socket, name: 'test' });
    expect(client.peer).toEqual({ pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() });
    expect(agent.deviceError?.code).toBe('ENOENT');
    await expect(client.createSession('vm1')).rejects.toMatchObject({ constructor: AgentUnavailableError, code: 'ERR_LIVEUPDATE_AGENT_UNAVAILABLE', errno: -111 });
    await client.close();
    await log.waitFor('disconnected', 2000);
    expect(log.events.map((e) => e.event)).toEqual(['mode', 'device-unavailable', 'listening', 'connected', 'hello', 'request-failed', 'disconnected']);
  });

  it('an argument error travels as the same TypeError a local call throws', async () => {
    await startAgent();
    const client = await AgentClient.connect({ socket });
    await expect(client.createSession('')).rejects.toMatchObject({ constructor: TypeError, code: 'ERR_INVALID_ARG_VALUE' });
    await expect(client.createSession(AGENT_SESSION_NAME)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('reserved') });
    await client.close();
  });

  it('a message that is not JSON is answered with a protocol error, then dropped; others are served', async () => {
    await startAgent();
    const fd = await rawConnect();
    const { reply, hungUp } = await rawExchange(fd, 'this is not json');
    fs.closeSync(fd);
    expect(reply).toMatchObject({ ok: false, error: { class: 'AgentProtocolError', code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL' } });
    expect(hungUp).toBe(true);
    await stillServes();
  });

  it('an unknown operation, a wrong version and a request before hello are refused and dropped', async () => {
    await startAgent();
    for (const message of [
      { v: 1, id: 1, op: 'frobnicate' },
      { v: 99, id: 1, op: 'hello', versions: [99] },
      { v: 1, id: 7, op: 'sessions' },
      { v: 1, id: -1, op: 'hello', versions: [1] },
    ]) {
      const fd = await rawConnect();
      const { reply, hungUp } = await rawExchange(fd, JSON.stringify(message));
      fs.closeSync(fd);
      expect(reply, JSON.stringify(message)).toMatchObject({ ok: false, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL' } });
      expect(hungUp).toBe(true);
    }
    await stillServes();
  });

  it('an oversized message is refused without being read whole, and dropped', async () => {
    await startAgent();
    const fd = await rawConnect();
    const { reply, hungUp } = await rawExchange(fd, Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0x20));
    fs.closeSync(fd);
    expect(reply).toMatchObject({ ok: false, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL', message: expect.stringContaining('exceeds maxBytes') } });
    expect(hungUp).toBe(true);
    await stillServes();
  });

  it('a client cannot send the agent an fd at all: the kernel refuses the send (SO_PASSRIGHTS off on the listener), nothing reaches the agent', async () => {
    await startAgent();
    const before = openFds().length;
    const fd = await rawConnect();
    const file = memfd.createSync('stray');
    // Linux 6.16+ (this host, every LUO kernel): the sender gets EPERM and the agent never holds the fd.
    await expect(sendFds(fd, [file], hello)).rejects.toMatchObject({ code: 'EPERM', syscall: 'sendmsg' });
    await sendFds(fd, [], hello);
    expect((await rawReply(fd)).body).toMatchObject({ ok: true });
    fs.closeSync(file);
    fs.closeSync(fd);
    await stillServes();
    await until(() => openFds().length === before);
  });

  it('a client that never says hello is dropped after the hello timeout while others are served', async () => {
    await startAgent(undefined, { helloTimeoutMs: 300 });
    const silent = await rawConnect();
    await stillServes();
    const { body } = await rawReply(silent);
    expect(body).toMatchObject({ ok: false, error: { code: 'ERR_LIVEUPDATE_AGENT_PROTOCOL', message: expect.stringContaining('no hello within 300 ms') } });
    expect((await rawReply(silent)).eof).toBe(true);
    fs.closeSync(silent);
  });

  it('a client that does not read its replies is dropped after the send timeout while others are served', async () => {
    await startAgent(undefined, { sendTimeoutMs: 300 });
    const slow = await rawConnect();
    await sendFds(slow, [], hello);
    const request = JSON.stringify({ v: 1, id: 2, op: 'sessions', padding: 'x'.repeat(4000) });
    // Requests without reading a reply: the replies fill the socket until the agent's send times out.
    const flood = (async () => {
      for (let i = 0; i < 5000; i++) await sendFds(slow, [], request);
    })().catch((error: unknown) => error);
    await stillServes();
    const dropped = await flood;
    expect(dropped).toBeInstanceOf(Error);
    expect(log.find((e) => e.event === 'dropped' && String(e['reason']).includes('could not be sent'))).toBeDefined();
    fs.closeSync(slow);
  });

  it('a client that vanishes mid-request costs the agent nothing: no fd kept, others served', async () => {
    await startAgent();
    const before = openFds().length;
    for (let i = 0; i < 20; i++) {
      const fd = await rawConnect();
      await sendFds(fd, [], hello);
      await sendFds(fd, [], JSON.stringify({ v: 1, id: 2, op: 'sessions' }));
      fs.closeSync(fd);
    }
    await stillServes();
    await until(() => openFds().length === before);
  });

  it('no agent: AgentUnavailableError with the socket in the message', async () => {
    await expect(AgentClient.connect({ socket: path.join(dir, 'nobody-here.sock') })).rejects.toMatchObject({
      constructor: AgentUnavailableError,
      code: 'ENOENT',
      errno: -2,
      syscall: 'connect',
      message: expect.stringContaining('nobody-here.sock'),
    });
    agent = undefined as unknown as Agent;
  });
});

/** What a call in {@link asUser} ended with: 'ok', or its error's class, code, errno and the classes it is an instance of. */
interface Outcome {
  class: string;
  code: string;
  errno?: number;
  lineage?: string[];
}

/** Runs an AgentClient call in a child process as uid/gid `id`; resolves to how it ended. */
async function asUser(id: number, call: string): Promise<Outcome> {
  const script = `
    const lu = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
    (async () => {
      const client = await lu.AgentClient.connect({ socket: ${JSON.stringify(socket)} });
      ${call};
      return { class: 'ok', code: 'ok' };
    })().then((r) => process.stdout.write(JSON.stringify(r)), (e) => {
      const lineage = [];
      for (let p = Object.getPrototypeOf(e); p !== null; p = Object.getPrototypeOf(p)) lineage.push(p.constructor.name);
      process.stdout.write(JSON.stringify({ class: e.constructor.name, code: e.code, errno: e.errno, lineage }));
    });
  `;
  const child = await runProcess(process.execPath, ['-e', script], { uid: id, gid: id, timeoutMs: 10_000 });
  expect(child.stdout, child.stderr).not.toBe('');
  return JSON.parse(child.stdout) as Outcome;
}

describe.skipIf(!canRunAs(NOBODY))('identity and policy (a second uid, as root spawns it)', () => {
  it('a user the policy does not name is refused as it connects; the refusal is logged; root is still served', async () => {
    await startAgent(parsePolicy({}));
    expect(await asUser(NOBODY, '')).toMatchObject({ class: 'AgentPermissionError', code: 'ERR_LIVEUPDATE_AGENT_PERMISSION', errno: -13 });
    expect(log.find('refused')).toMatchObject({ uid: NOBODY, op: 'agent.connect', code: 'ERR_LIVEUPDATE_AGENT_PERMISSION' });
    await stillServes();
  });

  it('an allowed user over its metadata quota gets AgentQuotaError, a permission refusal, before any device work', async () => {
    await startAgent(parsePolicy({ connect: { users: [NOBODY] }, quota: { metadataBytes: 16 } }));
    expect(await asUser(NOBODY, `await client.createSession('vm1', { metadata: { ram: 'x'.repeat(64) } })`)).toMatchObject({
      class: 'AgentQuotaError',
      code: 'ERR_LIVEUPDATE_AGENT_QUOTA',
      // A client that catches permission refusals catches this one too.
      lineage: expect.arrayContaining(['AgentPermissionError', 'AgentError', 'LiveUpdateError', 'Error']),
    });
    expect(await asUser(NOBODY, `await client.createSession('vm1', { metadata: 1 })`)).toMatchObject({ class: 'AgentUnavailableError' });
  });

  it('an allowed user may not run an update unless the policy says so', async () => {
    await startAgent(parsePolicy({ connect: { users: [NOBODY] } }));
    const update = `await client.update({ kernel: '/boot/x', cmdline: 'liveupdate=on', dryRun: true })`;
    expect(await asUser(NOBODY, update)).toMatchObject({ class: 'AgentPermissionError', code: 'ERR_LIVEUPDATE_AGENT_PERMISSION' });
    await agent.stop();
    await startAgent(parsePolicy({ connect: { users: [NOBODY] }, update: { users: [NOBODY] } }));
    expect(await asUser(NOBODY, update)).toMatchObject({ class: 'UpdateRefusedError', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' });
  });

  it('a user cannot attach to, retrieve or release a session under a name outside its namespace', async () => {
    await startAgent(parsePolicy({ connect: { users: [NOBODY] } }));
    for (const call of [`await client.attach('vm1')`, `await client.release('vm1')`]) {
      expect(await asUser(NOBODY, call)).toMatchObject({ class: 'SessionNotFoundError', code: 'ENOENT' });
    }
  });
});

describe('update checks', () => {
  it('a dry run reports each failed check; the CLI exits 1 and prints them as JSON', async () => {
    await startAgent();
    const client = await AgentClient.connect({ socket });
    const error = await client.update({ kernel: path.join(dir, 'missing'), cmdline: 'console=ttyS0 kho=off', dryRun: true }).catch((e: unknown) => e);
    await client.close();
    expect(error).toBeInstanceOf(UpdateRefusedError);
    const checks = (error as UpdateRefusedError).details as { checks: Array<{ name: string; ok: boolean }> };
    expect(checks.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['kernel-readable', 'liveupdate-on', 'kho-not-disabled', 'device-owned']);
    const image = writeHeaderOnlyImage(path.join(dir, 'bzImage'));
    const cli = await runCli(['update', '--socket', socket, '--kernel', image, '--cmdline', 'liveupdate=on kho=on', '--dry-run', '--json']);
    expect(cli.status).toBe(1);
    const printed = cli.json<{ result: string; details: { checks: Array<{ name: string; ok: boolean }> } }>();
    expect(printed.result).toBe('refused');
    expect(printed.details.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['device-owned']);
  });

  it('the CLI: sessions --json, and exit 69 when no agent answers', async () => {
    await startAgent();
    const listed = await runCli(['sessions', '--socket', socket, '--json']);
    expect(listed.status).toBe(0);
    expect(listed.json()).toMatchObject({ sessions: [], kexecCount: 0 });
    await agent.stop();
    const none = await runCli(['sessions', '--socket', socket]);
    expect(none.status).toBe(69);
    expect(none.stderr).toContain('no agent');
  });
});

describe('names, policy and manifest (pure logic and real memfds)', () => {
  it('root names are literal; users get u<uid>. or, past 63 bytes, u<uid>~ and 40 hex digits of SHA-256', () => {
    expect(kernelName(0, 'vm1')).toBe('vm1');
    expect(kernelName(1000, 'vm1')).toBe('u1000.vm1');
    expect(kernelName(1001, 'vm1')).not.toBe(kernelName(1000, 'vm1'));
    const long = 'ü'.repeat(100);
    const hashed = kernelName(4294967294, long);
    expect(hashed).toBe(`u4294967294~${createHash('sha256').update(Buffer.from(long, 'utf8')).digest('hex').slice(0, 40)}`);
    expect(Buffer.byteLength(hashed)).toBeLessThanOrEqual(63);
    expect(kernelName(1000, 'x'.repeat(57))).toBe(`u1000.${'x'.repeat(57)}`); // 63 bytes: still plain
    expect(kernelName(1000, 'x'.repeat(58))).toMatch(/^u1000~[0-9a-f]{40}$/);
    expect(() => checkClientName('u1000.vm1', 0)).toThrow(/namespace/);
    expect(() => checkClientName('x'.repeat(64), 0)).toThrow(/63 bytes/);
    expect(checkClientName('x'.repeat(255), 1000)).toHaveLength(255);
    expect(() => checkClientName('x'.repeat(256), 1000)).toThrow(/255 bytes/);
  });

  it('a policy names the first bad field', () => {
    expect(() => parsePolicy({ quota: { sessions: -1 } })).toThrow(AgentPolicyError);
    expect(() => parsePolicy({ connect: { users: ['no-such-user-here'] } })).toThrow(/no such name 'no-such-user-here'/);
    expect(() => parsePolicy({ bogus: 1 })).toThrow(/unknown field\(s\): bogus/);
    expect(parsePolicy({ connect: { users: ['root', 5] } }).connect.uids).toEqual(new Set([0, 5]));
  });

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: [1, 0],
    kexecCount: 1,
    updateStartedAt: 1,
    frozenAt: 2,
    next: { kernel: '/boot/k', cmdline: 'liveupdate=on' },
    sessions: [{ kernelName: 'u1000.vm1', name: 'vm1', owner: 1000, metadata: { ram: 64 }, createdAt: 0 }],
  };

  it('the manifest round-trips through a sealed memfd that refuses writes', () => {
    const fd = writeManifest(manifest);
    try {
      expect(memfd.getSealsSync(fd) & memfd.SEAL_WRITE).toBe(memfd.SEAL_WRITE);
      expect(() => fs.writeSync(fd, 'x', 0)).toThrow(/EPERM/);
      expect(readManifest(fd)).toEqual(manifest);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a newer major version is a ManifestVersionError; a newer minor is read', () => {
    expect(() => parseManifest(JSON.stringify({ ...manifest, version: [2, 0] }))).toThrow(ManifestVersionError);
    expect(() => parseManifest(JSON.stringify({ ...manifest, version: [2, 0] }))).toThrow(/version 2\.0.*Nothing was finished or discarded/);
    expect(parseManifest(JSON.stringify({ ...manifest, version: [1, 7], extra: true })).kexecCount).toBe(1);
  });
});
