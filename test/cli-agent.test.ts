/**
 * The agent's commands of `liveupdate` (update, sessions) as a user meets
 * them: the real binary against a real agent (no LUO on this host: it
 * serves without a device), a fake agent that lists hostile names, and no
 * agent at all. Reports go to stdout, errors to stderr.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { checkClientName, printable } from '../lib/agent/names.js';
import { Agent } from '../lib/agent/server.js';
import { COMMANDS, EXIT_STATUSES, parseCommandLine, usage } from '../lib/cli.js';
import { runProcess, type ProcessResult } from '../conformance/lib/harness/process.js';
import { fakeAgent, helloReply, type FakeAgent } from './helpers/fake-agent.js';
import { writeHeaderOnlyImage } from './helpers/bzimage.js';

const BIN = path.join(__dirname, '..', 'bin', 'liveupdate.js');
let dir: string;
let socket: string;
let agent: Agent | undefined;
let fake: FakeAgent | undefined;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-cli-agent-'));
  fs.chmodSync(dir, 0o755);
  socket = path.join(dir, 'agent.sock');
});

afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  fake?.close();
  fake = undefined;
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function startAgent(): Promise<Agent> {
  agent = await Agent.start({ socket, devicePath: path.join(dir, 'no-such-device') });
  return agent;
}

/** Runs the real binary without blocking this process's event loop (the agent lives here). */
function cli(...args: string[]): Promise<ProcessResult> {
  return runProcess(process.execPath, [BIN, ...args], { timeoutMs: 30_000 });
}

// Each case starts a node process or two: seconds on a busy machine.
describe('liveupdate update and sessions: errors on stderr, reports on stdout', { timeout: 60_000 }, () => {
  it('update prints its errors on stderr, not only on stdout; --json keeps stdout to the JSON report', async () => {
    await startAgent();
    const image = writeHeaderOnlyImage(path.join(dir, 'bzImage'));
    const update = ['update', '--socket', socket, '--kernel', image, '--cmdline', 'liveupdate=on kho=on', '--dry-run'];
    const json = await cli(...update, '--json');
    expect(json.status).toBe(1);
    expect(json.stderr).toMatch(/^liveupdate update: ERR_LIVEUPDATE_UPDATE_REFUSED: the update was refused: check failed: device-owned\n$/);
    const report = JSON.parse(json.stdout) as { result: string; code: string; details: { checks: Array<{ name: string; ok: boolean }> } };
    expect(report).toMatchObject({ result: 'refused', code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' });
    expect(report.details.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['kernel-readable', 'liveupdate-on', 'kho-not-disabled', 'device-owned']));
    expect(report.details.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['device-owned']);
    const text = await cli(...update);
    expect(text.status).toBe(1);
    expect(text.stdout.startsWith(`ok   kernel-readable: ${image}\n`)).toBe(true);
    expect(text.stdout).toMatch(/^FAIL device-owned: the agent has no \/dev\/liveupdate$/m);
    expect(text.stdout).not.toMatch(/ERR_LIVEUPDATE/);
    expect(text.stderr).toMatch(/^liveupdate update: ERR_LIVEUPDATE_UPDATE_REFUSED: /);
  });

  it('no agent: sessions and update fail on stderr with the true errno, syscall and a fix line; exit 69', async () => {
    const missing = path.join(dir, 'nobody.sock');
    for (const args of [
      ['sessions', '--socket', missing],
      ['sessions', '--socket', missing, '--json'],
      ['update', '--socket', missing, '--kernel', '/proc/self/exe', '--cmdline', 'liveupdate=on'],
    ]) {
      const result = await cli(...args);
      expect(result.status, args.join(' ')).toBe(69);
      expect(result.stderr).toBe(
        `liveupdate ${args[0]}: ENOENT: no agent: ${missing} does not exist, connect '${missing}'. Fix: start the agent (systemctl start liveupdate-agent.socket, or liveupdate agent), or name its socket (--socket PATH, options.socket)\n`,
      );
      expect(result.stdout).toBe('');
    }
  });

  it('a socket of the wrong type is a typed error (EPROTOTYPE), exit 1', async () => {
    const stream = path.join(dir, 'stream.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(stream, resolve));
    try {
      const result = await cli('sessions', '--socket', stream);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/^liveupdate sessions: EPROTOTYPE: .* is a socket of another type, not the agent's SOCK_SEQPACKET socket, connect/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('update --dry-run makes its checks without an agent: exit 69 when they pass, 1 when one fails', async () => {
    const missing = path.join(dir, 'nobody.sock');
    const image = writeHeaderOnlyImage(path.join(dir, 'bzImage'));
    const passing = await cli('update', '--socket', missing, '--kernel', image, '--cmdline', 'liveupdate=on kho=on', '--dry-run', '--json');
    expect(passing.status).toBe(69);
    const report = JSON.parse(passing.stdout) as { result: string; agent: boolean; checks: Array<{ name: string; ok: boolean; detail?: string }> };
    expect(report).toMatchObject({ result: 'dry-run', agent: false });
    expect(report.checks.filter((c) => !c.ok)).toEqual([{ name: 'device-owned', ok: false, detail: 'no agent answers (ENOENT): these checks were made by this process' }]);
    expect(passing.stderr).toMatch(/^liveupdate update: ENOENT: no agent: /);
    const failing = await cli('update', '--socket', missing, '--kernel', path.join(dir, 'no-kernel'), '--cmdline', 'quiet', '--dry-run');
    expect(failing.status).toBe(1);
    expect(failing.stdout).toMatch(/^FAIL kernel-readable: ENOENT/m);
    expect(failing.stdout).toMatch(/^FAIL liveupdate-on: liveupdate=\(absent\)$/m);
    expect(failing.stdout).toMatch(/dry run without an agent: a check failed\n$/);
  });
});

describe('escape sequences and newlines in session names reach root\'s terminal and forge table rows', { timeout: 60_000 }, () => {
  const hostile = ['vm1\x1b[2J\x1b[31mowned', 'vm2\nforged  u0.x  0  outgoing', 'vm3\u202etxt.exe', 'back\\slash', 'del\x7f', 'c1\x9b31m'];

  it('the table shows control characters escaped, one row per session; --json gives the names exactly', async () => {
    const sessions = hostile.map((name, i) => ({ name, kernelName: `u1000.${name}`, owner: 1000, state: 'outgoing', metadata: null, createdAt: i }));
    fake = fakeAgent(socket, (request) => (request.op === 'hello' ? helloReply(request) : { v: 1, id: request.id, ok: true, sessions, kexecCount: 0, updateStartedAt: null, frozenAt: null, firstOpenAt: null, refused: null }));
    const table = await cli('sessions', '--socket', socket);
    expect(table.status).toBe(0);
    // Nothing that acts on a terminal, and exactly a header, one line per session and the summary.
    expect(table.stdout).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(1 + hostile.length + 1);
    expect(table.stdout).toContain('vm1\\x1b[2J\\x1b[31mowned');
    expect(table.stdout).toContain('vm2\\x0aforged  u0.x  0  outgoing');
    expect(table.stdout).toContain('vm3\\u{202e}txt.exe');
    expect(table.stdout).toContain('back\\\\slash');
    expect(table.stdout).toContain('del\\x7f');
    expect(table.stdout).toContain('c1\\x9b31m');
    const json = await cli('sessions', '--socket', socket, '--json');
    expect((JSON.parse(json.stdout) as { sessions: Array<{ name: string }> }).sessions.map((s) => s.name)).toEqual(hostile);
  });

  it('printable() escapes C0, DEL, C1, bidi controls and line separators, and doubles backslashes', () => {
    expect(printable('a\x00b\x1b\n\t\x7f\x85\u061c\u200e\u200f\u2028\u2029\u202a\u202e\u2066\u2069\\z')).toBe(
      'a\\x00b\\x1b\\x0a\\x09\\x7f\\x85\\u{61c}\\u{200e}\\u{200f}\\u{2028}\\u{2029}\\u{202a}\\u{202e}\\u{2066}\\u{2069}\\\\z',
    );
    expect(printable('vm-42 ü 日本')).toBe('vm-42 ü 日本');
  });

  it('names with control characters are refused when a session is created, for root and for users', async () => {
    for (const name of hostile.filter((n) => n !== 'back\\slash')) {
      for (const uid of [0, 1000]) expect(() => checkClientName(name, uid), `${JSON.stringify(name)} uid ${uid}`).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('control characters') }));
    }
    expect(checkClientName('back\\slash', 1000)).toBe('back\\slash');
    expect(checkClientName('vm-42 ü', 0)).toBe('vm-42 ü');
    // Through a real agent, before it looks for a device.
    await startAgent();
    const client = await AgentClient.connect({ socket });
    await expect(client.createSession('vm\x1b[31m')).rejects.toMatchObject({ constructor: TypeError, code: 'ERR_INVALID_ARG_VALUE' });
    await expect(client.createSession('vm\nrow')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await client.close();
  });
});

describe('sessions, page by page', { timeout: 60_000 }, () => {
  const session = (name: string): Record<string, unknown> => ({ name, kernelName: name, owner: 0, state: 'outgoing', metadata: null, createdAt: 0 });

  it('the CLI lists every page of the agent\'s list; an agent whose cursor repeats cannot keep it running', async () => {
    const pages: Record<string, { sessions: Record<string, unknown>[]; next: string | null }> = {
      first: { sessions: [session('a'), session('b')], next: 'p2' },
      p2: { sessions: [session('c')], next: 'p3' },
      p3: { sessions: [session('d')], next: 'p3' },
    };
    fake = fakeAgent(socket, (request) => {
      if (request.op === 'hello') return helloReply(request);
      const page = pages[typeof request['cursor'] === 'string' ? request['cursor'] : 'first'];
      return { v: 1, id: request.id, ok: true, ...page, kexecCount: 0, updateStartedAt: null, frozenAt: null, firstOpenAt: null, refused: null };
    });
    const listed = await cli('sessions', '--socket', socket, '--json');
    expect(listed.status).toBe(0);
    const report = JSON.parse(listed.stdout) as { sessions: Array<{ name: string }>; next: unknown };
    // p3 points at itself: fetched once, not forever.
    expect(report.sessions.map((s) => s.name)).toEqual(['a', 'b', 'c', 'd']);
    expect(report.next).toBeNull();
    expect(fake.requests.filter((r) => r.op === 'sessions').map((r) => r['cursor'] ?? null)).toEqual([null, 'p2', 'p3']);
  });

  it('the client asks for a page with cursor and limit, and checks them first', async () => {
    fake = fakeAgent(socket, (request) => (request.op === 'hello' ? helloReply(request) : { v: 1, id: request.id, ok: true, sessions: [], kexecCount: 0 }));
    const client = await AgentClient.connect({ socket });
    await expect(client.sessions({ cursor: 'abc', limit: 5 })).resolves.toMatchObject({ sessions: [], next: null });
    expect(fake.requests.at(-1)).toMatchObject({ op: 'sessions', cursor: 'abc', limit: 5 });
    await expect(client.sessions({ limit: 0 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(client.sessions({ cursor: 5 as unknown as string })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await client.close();
  });
});

describe('help', { timeout: 60_000 }, () => {
  it('the main help lists every exit status of every command', async () => {
    const statuses = new Set<number>();
    for (const command of COMMANDS) for (const [, status] of command.details.matchAll(/\b(\d{1,2})\b \(/g)) statuses.add(Number(status));
    statuses.add(0);
    const help = await cli('--help');
    expect(help.status).toBe(0);
    for (const status of [0, 1, 2, 3, 69, 77]) expect(help.stdout).toMatch(new RegExp(`^ +${status} +\\S`, 'm'));
    for (const status of statuses) expect(EXIT_STATUSES.map(([s]) => s), `exit status ${status} of a command`).toContain(status);
    expect(usage()).toBe(help.stdout.trimEnd());
  });

  it('liveupdate help help works', async () => {
    expect(parseCommandLine(['help', 'help'])).toMatchObject({ kind: 'help', text: expect.stringMatching(/^usage: liveupdate help \[COMMAND\]/) });
    const result = await cli('help', 'help');
    expect(result).toMatchObject({ status: 0, stderr: '' });
    expect(result.stdout).toMatch(/^usage: liveupdate help \[COMMAND\]/);
  });
});

describe('liveupdate agent: signals', { timeout: 60_000 }, () => {
  it('a SIGTERM just after the agent logs listening stops it cleanly: exit 0 and stopped logged, never killed by the signal', async () => {
    for (let run = 0; run < 5; run++) {
      const child = spawn(process.execPath, [BIN, 'agent', '--socket', socket, '--device', path.join(dir, 'no-such-device')], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      let signalled = false;
      const ended = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (status, signal) => resolve({ status, signal })));
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (!signalled && stderr.includes('"event":"listening"')) {
          signalled = true;
          child.kill('SIGTERM');
        }
      });
      expect(await ended, stderr).toEqual({ status: 0, signal: null });
      expect(stderr).toContain('"event":"stopped"');
    }
  });
});
