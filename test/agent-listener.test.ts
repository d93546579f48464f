/**
 * The agent's listening socket and its connection limits, against a real
 * agent on this host (no LUO here: the agent serves without a device).
 * Hostile users are real processes of other uids that root spawns; the
 * agent lives in this process, so its fds are this process's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { boundedLogValue, connectionLimits, DEFAULT_CONNECTION_LIMITS, LINGERING_REFUSALS_PER_UID, MAX_LOG_TEXT, REFUSAL_LINGER_MS } from '../lib/agent/listener.js';
import { parsePolicy, type Policy } from '../lib/agent/policy.js';
import { MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { Agent, type AgentEvent, type AgentOptions } from '../lib/agent/server.js';
import { recvFds, sendFds } from '../lib/fdpass.js';
import { AgentPolicyError } from '../lib/errors.js';
import { loadNative, native } from '../lib/native.js';
import { openFds } from './helpers/fds.js';
import { canRunAs } from './helpers/users.js';

const ROOT = path.join(__dirname, '..');
const NOBODY = 65534;
const OTHER = 65533;
const top = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-listener-'));
fs.chmodSync(top, 0o755);
let dir: string;
let socket: string;
let agent: Agent | undefined;
let events: AgentEvent[];
let children: ChildProcess[] = [];

async function startAgent(options: Partial<AgentOptions> & { policy?: Policy } = {}): Promise<Agent> {
  events = [];
  agent = await Agent.start({ socket, devicePath: path.join(top, 'no-such-device'), log: (e) => events.push(e), ...options });
  return agent;
}

/** A root-owned file that must keep its mode whatever the agent does. */
function rootFile(): string {
  const file = path.join(top, `precious-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(file, 'secret', { mode: 0o600 });
  return file;
}

function modeOf(file: string): number {
  return fs.statSync(file).mode & 0o7777;
}

/** A directory for the socket with `mode`, owned by `uid`. */
function socketDirectory(mode: number, uid = 0, parent = top): string {
  const made = fs.mkdtempSync(path.join(parent, 'd-'));
  fs.chownSync(made, uid, uid);
  fs.chmodSync(made, mode);
  return made;
}

beforeEach(() => {
  dir = socketDirectory(0o755);
  socket = path.join(dir, 'agent.sock');
  agent = undefined;
});

afterEach(async () => {
  for (const child of children) child.kill('SIGKILL');
  children = [];
  await agent?.stop();
});

afterAll(() => {
  fs.rmSync(top, { recursive: true, force: true });
});

describe('the socket path', () => {
  it('chmod of the socket path follows a symlink when the socket directory is writable by others: a planted link is refused, its target keeps its mode', async () => {
    const target = rootFile();
    const open = socketDirectory(0o777);
    fs.symlinkSync(target, path.join(open, 'agent.sock'));
    const error = await Agent.start({ socket: path.join(open, 'agent.sock'), devicePath: path.join(top, 'none') }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPERM', errno: -1, syscall: 'bind', path: open, message: expect.stringContaining(`The socket's directory ${open} is writable by others (mode 0777)`) });
    expect(modeOf(target)).toBe(0o600);
    expect(fs.lstatSync(path.join(open, 'agent.sock')).isSymbolicLink()).toBe(true);
  });

  it('chmod of the socket path follows a symlink when the socket directory is writable by others: a link swapped in between the bind and the chmod never reaches its target', async () => {
    const target = rootFile();
    const open = socketDirectory(0o777);
    const planted = path.join(open, 'agent.sock');
    const link = path.join(open, 'link');
    fs.symlinkSync(target, link);
    // The race won every time: right after the bind, the socket's name becomes a link to root's file.
    const binding = loadNative();
    const bind = binding.unixBind;
    binding.unixBind = (type: number, where: string): number => {
      const fd = bind(type, where);
      fs.renameSync(link, planted);
      return fd;
    };
    let started: unknown;
    try {
      started = await Agent.start({ socket: planted, devicePath: path.join(top, 'none') }).catch((e: unknown) => e);
      if (started instanceof Agent) await started.stop();
    } finally {
      binding.unixBind = bind;
    }
    expect(modeOf(target)).toBe(0o600);
    expect(started).toMatchObject({ code: 'EPERM', path: open });
  });

  // Another user's files: root can make them only where that uid is mapped (not under npm run test:newest-node).
  it.skipIf(!canRunAs(NOBODY))('a sticky world-writable directory, one owned by another user, and one below a directory others may write are refused by name', async () => {
    const sticky = socketDirectory(0o1777);
    const theirs = socketDirectory(0o755, NOBODY);
    const openParent = socketDirectory(0o777);
    const below = socketDirectory(0o755, 0, openParent);
    const cases: Array<[string, string]> = [
      [sticky, `The socket's directory ${sticky} is writable by others (mode 01777)`],
      [theirs, `The socket's directory ${theirs} is owned by uid ${NOBODY}`],
      [below, `${openParent}, above the socket's directory ${below}, is writable by other users and not sticky (mode 0777)`],
    ];
    for (const [where, why] of cases) {
      const error = await Agent.start({ socket: path.join(where, 'agent.sock'), devicePath: path.join(top, 'none') }).catch((e: unknown) => e);
      expect(error, where).toMatchObject({ code: 'EPERM', syscall: 'bind', path: where, message: expect.stringContaining(why) });
      expect(fs.readdirSync(where), where).toEqual([]);
    }
  });

  it.skipIf(!canRunAs(NOBODY))('a link on the way to the socket\'s directory that another user owns is refused, though it leads to a safe directory', async () => {
    const sticky = socketDirectory(0o1777);
    const link = path.join(sticky, 'run');
    fs.symlinkSync(dir, link);
    fs.lchownSync(link, NOBODY, NOBODY);
    await expect(Agent.start({ socket: path.join(link, 'agent.sock'), devicePath: path.join(top, 'none') })).rejects.toMatchObject({
      code: 'EPERM',
      message: expect.stringContaining(`${link}, a link on the way to the socket's directory ${link}, is owned by uid ${NOBODY}`),
    });
    expect(fs.readdirSync(dir)).toEqual([]);
    // The same link root's own: served.
    fs.lchownSync(link, 0, 0);
    socket = path.join(link, 'agent.sock');
    await startAgent();
    expect(modeOf(path.join(dir, 'agent.sock'))).toBe(0o666);
  });

  it('a missing socket directory is created root-owned 0755 whatever the umask, and the socket in it is 0666', async () => {
    const made = path.join(dir, 'run', 'liveupdate');
    socket = path.join(made, 'agent.sock');
    const umask = process.umask(0o077);
    try {
      await startAgent();
    } finally {
      process.umask(umask);
    }
    const st = fs.statSync(made);
    expect([st.uid, st.mode & 0o7777]).toEqual([0, 0o755]);
    expect(modeOf(socket)).toBe(0o666);
    expect(agent?.socketPath).toBe(socket);
  });

  it('a socket the agent may not use stops it before it opens the device, and leaves no fd behind', async () => {
    const open = socketDirectory(0o777);
    const seen: AgentEvent[] = [];
    const before = openFds();
    await expect(Agent.start({ socket: path.join(open, 'agent.sock'), devicePath: path.join(top, 'none'), log: (e) => seen.push(e) })).rejects.toMatchObject({ code: 'EPERM' });
    expect(openFds()).toEqual(before);
    // The mode only, no 'device-unavailable': the device was never tried.
    expect(seen.map((e) => e.event)).toEqual(['mode']);
  });

  it('a link or a file at the socket path of a safe directory is left alone: "exists and is not a socket"', async () => {
    const target = rootFile();
    fs.symlinkSync(target, socket);
    await expect(Agent.start({ socket, devicePath: path.join(top, 'none') })).rejects.toMatchObject({
      code: 'EEXIST',
      syscall: 'bind',
      message: expect.stringContaining(`${socket} exists and is not a socket`),
    });
    expect(modeOf(target)).toBe(0o600);
    expect(fs.readlinkSync(socket)).toBe(target);
  });
});

/** Runs `script` in a fresh node (as root) that may require the built package; resolves with its JSON output, or 'killed' after `timeoutMs`. */
function nodeChild(script: string, timeoutMs: number): Promise<Record<string, unknown> | 'killed'> {
  const child = spawn(process.execPath, ['-e', `const ROOT = ${JSON.stringify(ROOT)};\n${script}`], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve(status === null ? 'killed' : (JSON.parse(out) as Record<string, unknown>));
    }),
  );
}

describe('a socket path another agent still serves', () => {
  it('a blocking stale-socket connect at start: a listener that never accepts, its backlog full, is reported at once as another agent', async () => {
    const hostile = native.unixBind(native.SOCK_SEQPACKET, socket);
    // A filler connects until the backlog is full; its next connect blocks for good.
    const filler = spawn(process.execPath, ['-e', `
      const { native } = require(${JSON.stringify(path.join(ROOT, 'dist', 'native.js'))});
      for (let i = 1; ; i++) { native.unixConnect(native.SOCK_SEQPACKET, ${JSON.stringify(socket)}); process.stdout.write(i + '\\n'); }
    `]);
    children.push(filler);
    let connected = 0;
    filler.stdout.on('data', (chunk: Buffer) => (connected = Number(chunk.toString().trim().split('\n').pop())));
    for (let last = -1; last !== connected || connected === 0; ) {
      last = connected;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    try {
      const started = await nodeChild(`
        const lu = require(ROOT + '/dist/index.js');
        const t0 = Date.now();
        lu.Agent.start({ socket: ${JSON.stringify(socket)}, devicePath: '/nonexistent' }).then(
          async (a) => { await a.stop(); process.stdout.write(JSON.stringify({ started: true })); },
          (e) => process.stdout.write(JSON.stringify({ code: e.code, syscall: e.syscall, message: e.message, ms: Date.now() - t0 })));
      `, 10_000);
      expect(started).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind', message: expect.stringContaining(`Another agent is listening on ${socket}`) });
      expect((started as { ms: number }).ms).toBeLessThan(2000);
      expect(fs.lstatSync(socket).isSocket()).toBe(true);
    } finally {
      fs.closeSync(hostile);
    }
  }, 20_000);

  it('a running agent keeps its socket; a dead one\'s socket is replaced', async () => {
    const first = await startAgent();
    await expect(Agent.start({ socket, devicePath: path.join(top, 'none') })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const client = await AgentClient.connect({ socket });
    await client.close();
    // A socket file whose agent is gone: nothing is bound to it any more.
    await first.stop();
    fs.closeSync(native.unixBind(native.SOCK_SEQPACKET, socket));
    await startAgent();
    const again = await AgentClient.connect({ socket });
    await again.close();
  });
});

/** What a flooding child saw of its connections once asked. */
interface FloodReport {
  /** Connections the agent closed (EOF after its refusal, if any). */
  closed: number;
  /** Connections still open. */
  open: number;
  /** The refusals read, by code. */
  codes: Record<string, number>;
}

/**
 * A child as `uid` that opens `count` connections and says nothing on them.
 * `opened` resolves once all are made; `report()` then asks which the agent
 * closed and what it said on them.
 */
function flood(uid: number, count: number): { opened: Promise<number>; report: () => Promise<FloodReport> } {
  const script = `
    const { native } = require(${JSON.stringify(path.join(ROOT, 'dist', 'native.js'))});
    const fds = [];
    for (let i = 0; i < ${count}; i++) fds.push(native.unixConnect(native.SOCK_SEQPACKET, ${JSON.stringify(socket)}));
    process.stdout.write(JSON.stringify({ opened: fds.length }) + '\\n');
    const readable = (fd) => { try { return native.waitReadable(fd, 0); } catch { return false; } };
    process.stdin.once('data', () => {
      const report = { closed: 0, open: 0, codes: {} };
      for (const fd of fds) {
        if (!readable(fd)) { report.open++; continue; }
        let r = native.recvFds(fd, 65536, 0, 0);
        if (r.status === 0) {
          const code = JSON.parse(r.data.toString()).error.code;
          report.codes[code] = (report.codes[code] || 0) + 1;
          r = readable(fd) ? native.recvFds(fd, 65536, 0, 0) : r;
        }
        if (r.status === 1) report.closed++; else report.open++;
      }
      process.stdout.write(JSON.stringify(report) + '\\n');
      process.exit(0);
    });
  `;
  const child = spawn(process.execPath, ['-e', script], { uid, gid: uid, stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let buffered = '';
  child.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
    waiters.splice(0).forEach((wake) => wake());
  });
  const line = async (n: number): Promise<Record<string, unknown>> => {
    while (lines.length <= n) await new Promise<void>((resolve) => waiters.push(resolve));
    return JSON.parse(lines[n] as string) as Record<string, unknown>;
  };
  return {
    opened: line(0).then((l) => Number(l['opened'])),
    report: async () => {
      child.stdin.write('go\n');
      return (await line(1)) as unknown as FloodReport;
    },
  };
}

/** Root connects, lists sessions and leaves, again and again until `until` settles; resolves to the slowest round in ms. */
async function rootServedDuring(until: Promise<unknown>): Promise<{ rounds: number; slowestMs: number }> {
  let done = false;
  void until.finally(() => (done = true));
  let rounds = 0;
  let slowestMs = 0;
  while (!done || rounds === 0) {
    const t0 = Date.now();
    const client = await AgentClient.connect({ socket });
    await client.sessions();
    await client.close();
    slowestMs = Math.max(slowestMs, Date.now() - t0);
    rounds++;
  }
  return { rounds, slowestMs };
}

describe.skipIf(!canRunAs(NOBODY) || !canRunAs(OTHER))('connection limits (other uids, as root spawns them)', () => {
  it('no connection limits, a refused user exhausts the agent\'s fds: 1200 connections of a refused user are answered and closed at once, the agent\'s fds stay bounded, root is served throughout', async () => {
    await startAgent({ policy: parsePolicy({}) });
    const before = openFds().length;
    let most = before;
    const sampler = setInterval(() => (most = Math.max(most, openFds().length)), 5);
    const attack = flood(NOBODY, 1200);
    const root = await rootServedDuring(attack.opened);
    expect(await attack.opened).toBe(1200);
    await new Promise((resolve) => setTimeout(resolve, REFUSAL_LINGER_MS + 300));
    clearInterval(sampler);
    // The lingering refusals (each an fd and its poll's copy) and root's clients with the agent's copies of theirs (24 to 25 measured here): not one fd per attacker's connection.
    expect(most - before).toBeLessThan(2 * LINGERING_REFUSALS_PER_UID + 24);
    expect(await attack.report()).toEqual({ closed: 1200, open: 0, codes: { ERR_LIVEUPDATE_AGENT_PERMISSION: 1200 } });
    // The log too is bounded: refusals beyond the lingering ones are counted, and the count logged once they are over.
    const logged = events.filter((e) => e.event === 'refused');
    const counted = events.filter((e) => e.event === 'refused-unlogged');
    expect(logged.length + counted.length).toBeLessThan(100);
    expect(logged.length + counted.reduce((sum, e) => sum + Number(e['count']), 0)).toBe(1200);
    expect([...logged, ...counted].every((e) => e['uid'] === NOBODY)).toBe(true);
    expect(root.rounds).toBeGreaterThan(0);
    expect(root.slowestMs).toBeLessThan(3000);
  }, 30_000);

  it('no connection limits: a permitted user holds at most its per-uid cap, all users together at most the total less root\'s share, and root still connects', async () => {
    await startAgent({ policy: parsePolicy({ connect: { users: [NOBODY, OTHER] } }), limits: { total: 40, perUid: 25, reservedForRoot: 5 }, helloTimeoutMs: 20_000 });
    const first = flood(NOBODY, 100);
    expect(await first.opened).toBe(100);
    const second = flood(OTHER, 100);
    expect(await second.opened).toBe(100);
    const roots = await Promise.all([1, 2, 3, 4, 5].map(() => AgentClient.connect({ socket })));
    await expect(AgentClient.connect({ socket })).rejects.toMatchObject({ code: 'ERR_LIVEUPDATE_AGENT_QUOTA', message: expect.stringContaining('too many connections: the agent has 40 connections, its limit') });
    await Promise.all(roots.map((c) => c.close()));
    await new Promise((resolve) => setTimeout(resolve, REFUSAL_LINGER_MS + 300));
    expect(await first.report()).toEqual({ closed: 75, open: 25, codes: { ERR_LIVEUPDATE_AGENT_QUOTA: 75 } });
    expect(await second.report()).toEqual({ closed: 90, open: 10, codes: { ERR_LIVEUPDATE_AGENT_QUOTA: 90 } });
    const refused = events.filter((e) => e.event === 'refused');
    expect(refused.find((e) => e['uid'] === NOBODY)).toMatchObject({ code: 'ERR_LIVEUPDATE_AGENT_QUOTA', message: expect.stringContaining(`uid ${NOBODY} has 25 connections, its limit`) });
    expect(refused.find((e) => e['uid'] === OTHER)).toMatchObject({ message: expect.stringContaining('connections of users other than root, its limit (5 more are kept for root)') });
  }, 30_000);
});

describe('the limits as configured', () => {
  it('limits from a policy file: every field optional, each checked by name', () => {
    expect(connectionLimits({})).toEqual(DEFAULT_CONNECTION_LIMITS);
    expect(connectionLimits({ perUid: 8 })).toEqual({ ...DEFAULT_CONNECTION_LIMITS, perUid: 8 });
    for (const [value, why] of [
      [[], 'limits must be an object'],
      [{ perUid: -1 }, 'limits.perUid must be a non-negative integer'],
      [{ total: 1.5 }, 'limits.total must be a non-negative integer'],
      [{ total: 10, reservedForRoot: 10 }, 'limits.reservedForRoot (10) must be below limits.total (10)'],
      [{ connections: 5 }, 'limits: unknown field(s): connections'],
    ] as const) {
      expect(() => connectionLimits(value), why).toThrow(expect.objectContaining({ constructor: AgentPolicyError, code: 'ERR_LIVEUPDATE_AGENT_POLICY', message: expect.stringContaining(why) }));
    }
  });

  it('bad limits given to Agent.start are a TypeError before anything is made', async () => {
    const before = openFds();
    await expect(Agent.start({ socket, devicePath: path.join(top, 'none'), limits: { perUid: -5 } })).rejects.toMatchObject({ constructor: TypeError, code: 'ERR_INVALID_ARG_VALUE' });
    expect(openFds()).toEqual(before);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

describe('timeouts and the log', () => {
  it('unauthenticated peers hold an fd for 30 s: a connection that says nothing is dropped after 5 s', async () => {
    await startAgent();
    const silent = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
    const t0 = Date.now();
    const reply = await recvFds(silent, { maxBytes: MAX_MESSAGE_BYTES, maxFds: 0 });
    const eof = await recvFds(silent, { maxBytes: MAX_MESSAGE_BYTES, maxFds: 0 });
    const waited = Date.now() - t0;
    fs.closeSync(silent);
    expect(JSON.parse(reply.data.toString())).toMatchObject({ ok: false, error: { message: expect.stringContaining('no hello within 5000 ms') } });
    expect(eof.eof).toBe(true);
    expect(waited).toBeGreaterThanOrEqual(4900);
    expect(waited).toBeLessThan(6500);
  }, 15_000);

  it('unbounded log lines chosen by unauthenticated peers: what a peer sends before hello reaches the log cut short and without control characters', async () => {
    await startAgent();
    const forged = '\n{"event":"kexec"}\u001b[2J\u2028\u202e' + 'x'.repeat(60_000);
    for (const message of [
      { v: 1, id: 1, op: forged },
      { v: 1, id: 1, op: 'hello', versions: [1], client: forged },
    ]) {
      const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
      await sendFds(fd, [], JSON.stringify(message));
      await recvFds(fd, { maxBytes: 2 * MAX_MESSAGE_BYTES, maxFds: 0 });
      fs.closeSync(fd);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    const fromPeer = events.filter((e) => JSON.stringify(e).includes('xxxx'));
    expect(fromPeer.map((e) => e.event)).toEqual(expect.arrayContaining(['refused', 'hello']));
    for (const e of fromPeer) {
      for (const value of Object.values(e)) {
        if (typeof value !== 'string') continue;
        expect(value.length).toBeLessThan(MAX_LOG_TEXT + 40);
        expect(value).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
      }
    }
  });

  it('log fields: nested text is cleaned too, and a cut never leaves half a character', () => {
    const emoji = '😀'.repeat(MAX_LOG_TEXT);
    const cut = boundedLogValue({ list: ['a\u0007b'], nested: { 'k\n': emoji } }) as { list: string[]; nested: Record<string, string> };
    expect(cut.list).toEqual(['a\ufffdb']);
    const text = cut.nested['k\ufffd'] as string;
    expect(text.startsWith('😀'.repeat(MAX_LOG_TEXT / 2))).toBe(true);
    expect(text).toMatch(/^(😀)+…\(\d+ more characters\)$/u);
  });

  it('the listening event reports the limits, the hello timeout and the open-files limit node raised to the hard limit', async () => {
    await startAgent();
    const hard = /^Max open files\s+\S+\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    expect(events.find((e) => e.event === 'listening')).toMatchObject({
      limits: { total: 4096, perUid: 1024, reservedForRoot: 64, helloTimeoutMs: 5000, openFiles: Number(hard) },
    });
  });
});

it('stopping removes only the agent\'s own socket', async () => {
  await startAgent();
  fs.rmSync(socket);
  // Another agent's socket by now (a stale file here stands for it).
  fs.closeSync(native.unixBind(native.SOCK_SEQPACKET, socket));
  await agent?.stop();
  agent = undefined;
  expect(fs.lstatSync(socket).isSocket()).toBe(true);
});
