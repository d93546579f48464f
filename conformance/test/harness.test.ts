/**
 * The harness the tests, the demo and the benchmark start agents and run
 * the `liveupdate` command with, on the host (no LUO: the agent serves
 * without a device). Its failure paths say what happened and leave no
 * process behind.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent, AgentClient } from 'liveupdate';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentLog, AgentProcess, startAgentInProcess } from '../lib/harness/agent.js';
import { runCli } from '../lib/harness/cli.js';
import { compileC } from '../lib/harness/compile.js';
import { runProcess } from '../lib/harness/process.js';
import { libraryBinding } from '../lib/native.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-harness-'));
fs.chmodSync(dir, 0o755);
const NO_DEVICE = path.join(dir, 'no-device');
let sockets = 0;
/** A fresh socket path per test: a killed agent leaves its socket file behind. */
const newSocket = (): string => path.join(dir, `agent-${++sockets}.sock`);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The pids of live processes whose environment holds `marker` (a variable only the test set). */
function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0').includes(marker)) pids.push(Number(entry));
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return pids;
}

/** Waits (up to 5 s) until no process carries `marker`; answers those still there. */
async function survivors(marker: string): Promise<number[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const left = processesWith(marker);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('runProcess and runCli', () => {
  it('collect the exit status and both outputs, and parse --json', async () => {
    const version = await runCli(['--version']);
    expect([version.status, version.signal, version.stderr]).toEqual([0, null, '']);
    expect(version.stdout.trim()).toBe((JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version);
    const refused = await runCli(['sessions', '--socket', path.join(dir, 'nobody.sock'), '--json']);
    expect(refused.status).toBe(69);
    expect(refused.stderr).toContain('nobody.sock');
  });

  it('json() names the command and shows what it printed when that is not JSON', async () => {
    const help = await runCli(['help']);
    expect(help.status).toBe(0);
    expect(() => help.json()).toThrow(/^liveupdate help printed no JSON \(exit 0\)\nstdout: usage: liveupdate/);
  });

  it('a command still running at its timeout is killed and the call fails, naming it', async () => {
    const marker = `LU_HARNESS_TEST=timeout-${process.pid}`;
    const [name, value] = marker.split('=') as [string, string];
    const started = Date.now();
    await expect(runCli(['agent', '--socket', newSocket(), '--device', NO_DEVICE], { timeoutMs: 1500, env: { [name]: value } })).rejects.toThrow(
      /^liveupdate agent --socket \S+ --device \S+ still ran after 1500 ms and was killed\nstdout: \nstderr: .*"event":"listening"/s,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await survivors(marker)).toEqual([]);
  });

  it('a command still running at its timeout is killed with everything it started (an `npm run` holds its output pipes through its children)', async () => {
    const marker = `LU_HARNESS_TEST=tree-${process.pid}`;
    const [name, value] = marker.split('=') as [string, string];
    const started = Date.now();
    // A grandchild that outlives its parent's kill keeps stdout open: the call would wait out its 60 s.
    const script = 'sh -c "sleep 60; :" & echo started; sleep 60; wait';
    await expect(runProcess('sh', ['-c', script], { timeoutMs: 1000, env: { [name]: value } })).rejects.toThrow(/still ran after 1000 ms and was killed\nstdout: started\n/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await survivors(marker)).toEqual([]);
  });

  it('a command that cannot be started is a rejection, not a hang', async () => {
    await expect(runProcess(path.join(dir, 'no-such-program'), [])).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('AgentProcess: `liveupdate agent` as its own process', () => {
  it('resolves once the agent listens: a client is served at once, and SIGTERM stops it with status 0', async () => {
    const agent = await AgentProcess.start({ socket: newSocket(), device: NO_DEVICE });
    try {
      expect(agent.log.find('listening')).toMatchObject({ socket: agent.socket, device: false });
      const client = await AgentClient.connect({ socket: agent.socket }); // once, no retry: it serves already
      expect((await client.sessions()).sessions).toEqual([]);
      await client.close();
      expect((await agent.log.waitFor('disconnected')).event).toBe('disconnected');
    } finally {
      expect(await agent.stop()).toBe(0);
    }
    expect(agent.exited).toBe(true);
    expect(await agent.stop()).toBe(0); // stopping again answers the same status
  });

  it('an agent that exits before listening: the error says so and carries its stderr', async () => {
    const policy = path.join(dir, 'bad-policy.json');
    fs.writeFileSync(policy, JSON.stringify({ bogus: 1 }));
    await expect(AgentProcess.start({ socket: newSocket(), device: NO_DEVICE, policy })).rejects.toThrow(/did not start: the agent logged no 'listening': it exited with 1; its stderr:\n.*unknown field\(s\): bogus/s);
  });

  it('an agent not listening within the bound is killed; the error names the bound', async () => {
    const marker = `LU_HARNESS_TEST=ready-${process.pid}`;
    const [name, value] = marker.split('=') as [string, string];
    await expect(AgentProcess.start({ socket: newSocket(), device: NO_DEVICE, readyTimeoutMs: 1, env: { [name]: value } })).rejects.toThrow(/did not start: the agent logged no 'listening' within 1 ms/);
    expect(await survivors(marker)).toEqual([]);
  });

  it('connect gives up once the agent has exited, with its status', async () => {
    const agent = await AgentProcess.start({ socket: newSocket(), device: NO_DEVICE });
    await agent.stop();
    await expect(agent.connect({}, 5000)).rejects.toThrow(/^the agent exited with 0; its stderr:\n.*"event":"signal"/s);
  });

  it('an agent that does not exit after the stop signal is killed; the error says so', async () => {
    const agent = await AgentProcess.start({ socket: newSocket(), device: NO_DEVICE });
    // SIGSTOP: the process stays, stopped, and never exits by itself.
    await expect(agent.stop('SIGSTOP', 300)).rejects.toThrow(/^the agent did not exit within 300 ms of SIGSTOP \(killed\)/);
    await expect(agent.log.waitFor('never-logged', 5000)).rejects.toThrow(/it exited with SIGKILL/);
    expect(agent.exited).toBe(true);
  });

  it('hands fds over as a service manager does (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID): the agent serves the socket passed', async () => {
    const addon = libraryBinding();
    const address = path.join(dir, 'passed.sock');
    const listening = addon.unixBind(addon.SOCK_SEQPACKET, address);
    try {
      // Had the agent not taken the fd (LISTEN_PID not its pid), it would find the address taken and exit.
      const agent = await AgentProcess.start({ socket: address, device: NO_DEVICE, listenFds: [['agent.socket', listening]] });
      try {
        const client = await AgentClient.connect({ socket: address });
        expect(client.peer.pid).toBe(process.pid);
        await client.close();
      } finally {
        expect(await agent.stop()).toBe(0);
      }
    } finally {
      fs.closeSync(listening);
    }
  });
});

describe('startAgentInProcess', () => {
  it('starts the given Agent on the socket without a device and records its events', async () => {
    const socket = newSocket();
    const { agent, log } = await startAgentInProcess((options) => Agent.start(options), { socket });
    try {
      expect(agent).toBeInstanceOf(Agent);
      expect(agent.deviceError?.code).toBe('ENOENT');
      expect(log.events.map((e) => e.event)).toEqual(['mode', 'device-unavailable', 'listening']);
      expect(log.find('device-unavailable')?.['message']).toContain(`${path.join(dir, 'no-such-device')} does not exist`);
      await expect(log.waitFor('connected', 200)).rejects.toThrow(/^the agent logged no 'connected' within 200 ms$/);
    } finally {
      await agent.stop();
    }
  });
});

describe('AgentLog', () => {
  it('wakes a wait when the event comes, and fails it when the log ends first', async () => {
    const log = new AgentLog();
    const waiting = log.waitFor((e) => e.event === 'kexec' && e['n'] === 2, 5000);
    log.add({ time: 't', event: 'kexec', n: 1 });
    log.add({ time: 't', event: 'kexec', n: 2 });
    await expect(waiting).resolves.toMatchObject({ n: 2 });
    const never = log.waitFor('stopped', 5000, () => '; context');
    log.end('it exited with 3');
    await expect(never).rejects.toThrow(/^the agent logged no 'stopped': it exited with 3; context$/);
  });
});

describe('compileC', () => {
  it('builds a program that runs, static or not', async () => {
    const source = path.join(dir, 'hello.c');
    fs.writeFileSync(source, '#include <stdio.h>\nint main(void) { puts(GREETING); return 3; }\n');
    for (const linkedStatic of [false, true]) {
      const out = compileC({ sources: [source], out: path.join(dir, 'bin', `hello-${String(linkedStatic)}`), static: linkedStatic, flags: ['-Werror', '-DGREETING="hi"'] });
      expect(await runProcess(out, [])).toEqual({ status: 3, signal: null, stdout: 'hi\n', stderr: '' });
    }
  });

  it("a source that does not compile: the compiler's message, and nothing at the output path", () => {
    const source = path.join(dir, 'broken.c');
    fs.writeFileSync(source, 'int main(void) { return undeclared; }\n');
    const out = path.join(dir, 'bin', 'broken');
    expect(() => compileC({ sources: [source], out })).toThrow(/^cc .*broken\.c failed:\n.*undeclared.*\(first use in this function\)/s);
    expect(fs.readdirSync(path.dirname(out)).filter((f) => f.startsWith('broken'))).toEqual([]);
    expect(() => compileC({ sources: [path.join(dir, 'absent.c')], out })).toThrow(`${path.join(dir, 'absent.c')} is missing`);
  });
});
