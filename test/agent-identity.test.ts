/**
 * Who the agent's peer is, with real users and groups on the host: client
 * processes run as nobody (65534) with chosen supplementary groups
 * (util-linux `setpriv`; the gids need no /etc/group entry), and the
 * groups are those the kernel recorded when the client connected
 * (SO_PEERGROUPS), never what /proc/<pid>/status says later. The pid-reuse
 * case runs in a pid namespace of its own (`unshare --pid`), where the test
 * can give an exited client's pid to another process
 * (/proc/sys/kernel/ns_last_pid) without racing the machine's other
 * processes. Needs root, which the host tests have.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { parsePolicy } from '../lib/agent/policy.js';
import { Agent } from '../lib/agent/server.js';
import { AgentPermissionError } from '../lib/errors.js';
import { native } from '../lib/native.js';

const ROOT = path.join(__dirname, '..');
const NOBODY = 65534;
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-identity-'));
  fs.chmodSync(dir, 0o777);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** setpriv's arguments for running as nobody with exactly `groups` as supplementary groups. */
function asNobody(groups: readonly number[]): string[] {
  const supplementary = groups.length === 0 ? ['--clear-groups'] : [`--groups=${groups.join(',')}`];
  return [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, ...supplementary];
}

/** A listening socket in the test's directory that nobody may connect to. */
function listen(type: number, name: string): { fd: number; socket: string } {
  const socket = path.join(dir, name);
  fs.rmSync(socket, { force: true });
  const fd = native.unixBind(type, socket);
  fs.chmodSync(socket, 0o666);
  return { fd, socket };
}

/** Accepts one connection, waiting on the event loop. */
async function acceptOne(listenFd: number): Promise<number> {
  await native.waitReadableAsync(listenFd);
  return native.unixAccept(listenFd);
}

describe('the peer groups come from the kernel (SO_PEERGROUPS)', () => {
  const cases: [string, number[], number[]][] = [
    ['two supplementary groups', [4242, 4343], [NOBODY, 4242, 4343]],
    ['none', [], [NOBODY]],
    ['the primary gid among them, and unsorted', [4343, NOBODY, 4242], [NOBODY, 4242, 4343]],
    ['more than the first call has room for (100)', Array.from({ length: 100 }, (_, i) => 5100 - i), [NOBODY, ...Array.from({ length: 100 }, (_, i) => 5001 + i)]],
  ];
  for (const [what, groups, expected] of cases) {
    it(`peerCredentials lists the connecting process's groups exactly, primary first: ${what}`, async () => {
      const { fd: listenFd, socket } = listen(native.SOCK_STREAM, 'groups.sock');
      const script = `require('node:net').connect(${JSON.stringify(socket)}).on('connect', () => process.stdin.resume()).on('error', (e) => { console.error(e); process.exit(2); });`;
      const client = spawn('setpriv', [...asNobody(groups), process.execPath, '-e', script], { stdio: ['pipe', 'inherit', 'inherit'] });
      try {
        const fd = await acceptOne(listenFd);
        const cred = native.peerCredentials(fd);
        const credAsync = await native.peerCredentialsAsync(fd);
        fs.closeSync(fd);
        expect(cred).toEqual({ pid: client.pid, uid: NOBODY, gid: NOBODY, groups: expected });
        expect(credAsync).toEqual(cred);
      } finally {
        client.stdin!.end();
        fs.closeSync(listenFd);
      }
    });
  }
});

describe('the agent judges a peer by the groups it connected with', () => {
  /** Runs AgentClient.connect as nobody with `groups`; answers "ok" or the error's class and code. */
  function connectAs(groups: number[], socket: string): Promise<string> {
    const script = `require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))}).AgentClient.connect({ socket: ${JSON.stringify(socket)} })
      .then((c) => { process.stdout.write('ok'); return c.close(); }, (e) => process.stdout.write(e.constructor.name + ' ' + e.code));`;
    return new Promise((resolve, reject) => {
      const child = spawn('setpriv', [...asNobody(groups), process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.on('error', reject);
      child.on('exit', () => resolve(out));
    });
  }

  it('a policy naming a supplementary group lets exactly its members in', async () => {
    // The agent listens only in a directory no other user can write (the test's own is open to nobody's scripts), under a sticky or safe parent.
    const agentDir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-identity-agent-'));
    fs.chmodSync(agentDir, 0o755);
    onTestFinished(() => fs.rmSync(agentDir, { recursive: true, force: true }));
    const socket = path.join(agentDir, 'agent.sock');
    const agent = await Agent.start({ socket, devicePath: path.join(dir, 'no-such-device'), policy: parsePolicy({ connect: { groups: [4242] } }), log: () => {} });
    try {
      expect(await connectAs([4343, 4242], socket)).toBe('ok');
      expect(await connectAs([4343], socket)).toBe(`${AgentPermissionError.name} ERR_LIVEUPDATE_AGENT_PERMISSION`);
      expect(await connectAs([], socket)).toBe(`${AgentPermissionError.name} ERR_LIVEUPDATE_AGENT_PERMISSION`);
      // Root is always let in; this process's own groups are not consulted for it.
      const client = await AgentClient.connect({ socket });
      await client.close();
    } finally {
      await agent.stop();
    }
  });
});

/*
 * Runs as pid 1 of a new pid namespace (unshare --pid --fork --mount-proc).
 * argv: mode ("native" or "agent"), the socket path, the connector's
 * groups, the groups of the process that takes its pid. A connector (as
 * nobody) connects, hands the connection to a holder it starts, and exits;
 * its pid is then given to another process as nobody with other groups.
 * Only then is the connection accepted, by this script ("native": prints
 * what peerCredentials says and what /proc says) or by an agent whose
 * policy admits only the second process's group ("agent": prints the
 * agent's answer to the holder's hello).
 */
const PID_REUSE = String.raw`
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const [mode, socket, connectorGroups, reuserGroups, root] = process.argv.slice(2);
const lib = path.join(root, 'dist');
const { native } = require(path.join(lib, 'native.js'));
const nobody = (groups) => ['--reuid=65534', '--regid=65534', groups === '' ? '--clear-groups' : '--groups=' + groups];
const listenFd = native.unixBind(native.SOCK_SEQPACKET, socket);
fs.chmodSync(socket, 0o666);
const replyFile = path.join(path.dirname(socket), 'reply.json');
const hello = JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1] });
// The holder: says hello (queued until the agent reads), writes the answer to a file.
const holder = 'const { native } = require(' + JSON.stringify(path.join(lib, 'native.js')) + ');' +
  'native.sendFds(3, Buffer.from(' + JSON.stringify(hello) + '), [], 0);' +
  'const r = native.recvFds(3, 65536, 1, 0);' +
  'require("node:fs").writeFileSync(' + JSON.stringify(replyFile) + ', r.data);';
const connector = 'const { native } = require(' + JSON.stringify(path.join(lib, 'native.js')) + ');' +
  'const fd = native.unixConnect(native.SOCK_SEQPACKET, ' + JSON.stringify(socket) + ');' +
  'require("node:child_process").spawn(process.execPath, ["-e", ' + JSON.stringify(holder) + '], { stdio: ["ignore", "ignore", "inherit", fd], detached: true }).unref();';
const connected = spawnSync('setpriv', [...nobody(connectorGroups), process.execPath, '-e', connector], { stdio: 'inherit' });
if (connected.status !== 0) throw new Error('the connector failed');
const pid = connected.pid;
// The next pid this namespace hands out is the connector's.
fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
const reuser = spawn('setpriv', [...nobody(reuserGroups), 'sleep', '60'], { stdio: 'ignore' });
if (reuser.pid !== pid) throw new Error('pid ' + pid + ' was not reused (got ' + reuser.pid + ')');
const procGroups = () => /^Groups:\s*(.*)$/m.exec(fs.readFileSync('/proc/' + pid + '/status', 'utf8'))[1].trim().split(/\s+/).filter(Boolean).map(Number);
// setpriv has exec'd sleep (or is about to): wait until /proc shows the new groups.
for (let i = 0; i < 200 && procGroups().join(',') !== reuserGroups; i++) spawnSync('sleep', ['0.01']);
const out = (value) => { process.stdout.write(JSON.stringify(value)); process.exit(0); };
if (mode === 'native') {
  const fd = native.unixAccept(listenFd);
  out({ pid, cred: native.peerCredentials(fd), procGroups: procGroups() });
} else {
  const { Agent, parsePolicy } = require(path.join(lib, 'index.js'));
  const policy = parsePolicy({ connect: { groups: reuserGroups.split(',').map(Number) } });
  Agent.start({ listenFd, policy, devicePath: '/nonexistent', log: () => {} }).then(() => {
    const started = Date.now();
    const poll = () => fs.existsSync(replyFile) ? out({ pid, procGroups: procGroups(), reply: JSON.parse(fs.readFileSync(replyFile, 'utf8')) })
      : Date.now() - started > 10000 ? out({ pid, error: 'no reply' }) : setTimeout(poll, 20);
    poll();
  });
}
`;

interface PidReuse {
  pid: number;
  procGroups: number[];
  cred?: { pid: number; uid: number; gid: number; groups: number[] };
  reply?: { ok: boolean; error?: { class: string; code: string } };
  error?: string;
}

function runPidReuse(mode: 'native' | 'agent'): PidReuse {
  const script = path.join(dir, 'pid-reuse.js');
  fs.writeFileSync(script, PID_REUSE);
  const socket = path.join(dir, `reuse-${mode}.sock`);
  fs.rmSync(socket, { force: true });
  fs.rmSync(path.join(dir, 'reply.json'), { force: true });
  const run = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, script, mode, socket, '4242', '4343', ROOT], { encoding: 'utf8', timeout: 30_000 });
  if (run.status !== 0) throw new Error(`the pid-reuse scenario failed (${run.status}): ${run.stderr}`);
  return JSON.parse(run.stdout) as PidReuse;
}

describe('supplementary groups are those the kernel recorded at connect, not /proc/<pid>/status at accept time: a client that hands over its connection and exits', () => {
  it('lends nothing: peerCredentials keeps the connecting process\'s groups after its pid went to another process', () => {
    const result = runPidReuse('native');
    // /proc/<pid> now describes the other process...
    expect(result.procGroups).toEqual([4343]);
    // ...while the kernel kept what the connecting process was.
    expect(result.cred).toEqual({ pid: result.pid, uid: NOBODY, gid: NOBODY, groups: [NOBODY, 4242] });
  });

  it('lends nothing to the agent: the groups of the pid\'s next owner do not let the connection in', () => {
    const result = runPidReuse('agent');
    expect(result.error).toBeUndefined();
    expect(result.procGroups).toEqual([4343]);
    expect(result.reply).toMatchObject({ ok: false, error: { class: 'AgentPermissionError', code: 'ERR_LIVEUPDATE_AGENT_PERMISSION' } });
  });
});
