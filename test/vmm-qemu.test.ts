/**
 * The QEMU VMM example (examples/qemu-vmm/) on the host, no LUO needed: the
 * host's own QEMU suspends the counter guest into a state memfd and a new
 * QEMU resumes it from the same two memfds, within one kernel, as the
 * orchestrator does around a kexec. Then each failure it promises a typed
 * error for, and its QMP client against hostile peers.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recvFds } from '../lib/index.js';
import { buildCounterGuest, buildQemuVmm } from '../conformance/lib/vm/vmm-qemu.js';
import { GuestNotAnsweringError, GuestNotResumedError, QemuUnsupportedError, QmpClosedError, QmpCommandError, QmpProtocolError, QmpTimeoutError, StateTooLargeError, StateTruncatedError } from '../examples/qemu-vmm/errors.js';
import { STATE_BLOCK } from '../examples/qemu-vmm/guest.js';
import { QmpClient } from '../examples/qemu-vmm/qmp.js';
import { Vm, type VmConfig } from '../examples/qemu-vmm/vm.js';
import { expectNoFdLeak } from './helpers/fds.js';

const MIB = 1 << 20;
const RAM_BYTES = 32 * MIB;
let dir: string;
let guest: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmm-qemu-'));
  guest = buildCounterGuest(path.join(__dirname, '..', 'conformance'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function config(name: string, extra: Partial<VmConfig> = {}, serial: string[] = []): VmConfig {
  return { name, kernel: guest, runDir: dir, answerTimeoutMs: 20_000, ...extra, qemu: { onSerialLine: (line) => serial.push(line), ...extra.qemu } };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function alive(pid: number | undefined): boolean {
  try {
    process.kill(pid ?? -1, 0);
    return true;
  } catch {
    return false;
  }
}

/** The bytes the test expects from 4 MiB to half the RAM: the VM's name padded to 64 bytes, repeated (written out here, not taken from the example). */
function expectedUntouched(vm: string): Buffer {
  const pattern = `untouched RAM of ${vm} `;
  return Buffer.alloc(RAM_BYTES / 2 - 4 * MIB, pattern + '.'.repeat(64 - pattern.length));
}

function readRam(ram: number, offset: number, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  fs.readSync(ram, bytes, 0, length, offset);
  return bytes;
}

describe("the QEMU VMM example with the host's QEMU", () => {
  it('suspends the guest into a state memfd and resumes it in a new QEMU from the same two memfds: counter continues, untouched RAM identical, no fd left', async () => {
    await expectNoFdLeak(async () => {
      const before: string[] = [];
      const vm = await Vm.boot(config('resumed', {}, before), RAM_BYTES);
      await sleep(300);
      const firstQemu = vm.qemu!;
      const suspended = await vm.suspend();
      const { trailer } = suspended;
      expect(alive(firstQemu.pid), 'the first QEMU is gone').toBe(false);
      // RAM is not in the state: a few hundred KiB for 32 MiB of RAM.
      expect(trailer.stateBytes).toBeLessThan(MIB);
      expect(trailer.method).toBe(Number(firstQemu.version.split('.')[0]) >= 9 ? 'cpr-reboot' : 'x-ignore-shared');
      expect(trailer.countAtStop).toBeGreaterThan(0);
      expect(trailer.boots).toBe(1);

      const after: string[] = [];
      const resumed = await Vm.restore(config('resumed', {}, after), vm.ram, suspended.state);
      fs.closeSync(suspended.state);
      expect(resumed.beforeCont.count, 'RAM as the guest left it').toBe(trailer.countAtStop);
      expect(resumed.counting.count).toBeGreaterThan(trailer.countAtStop);
      expect(resumed.counting.boots, 'not started again').toBe(1);
      expect(readRam(vm.ram, 4 * MIB, RAM_BYTES / 2 - 4 * MIB).equals(expectedUntouched('resumed'))).toBe(true);
      // The guest keeps running: its counter moves on, and what it prints continues from the stop.
      await sleep(200);
      expect(readRam(vm.ram, STATE_BLOCK + 4, 4).readUInt32LE(0)).toBeGreaterThan(resumed.counting.count);
      expect(before[0]).toBe('counter-guest: boot 1');
      expect(after.filter((line) => line.startsWith('counter-guest: boot'))).toEqual([]);
      await resumed.vm.close();
      const printed = after.map((line) => /^count (\d+)$/.exec(line)?.[1]).filter((n) => n !== undefined).map(Number);
      for (const n of printed) expect(n).toBeGreaterThanOrEqual(trailer.countAtStop);
    });
  }, 60_000);

  it('refuses a guest whose RAM changed while it was stopped (GuestNotResumedError): its counter before any QEMU starts, the RAM it never touches once it runs', async () => {
    await expectNoFdLeak(async () => {
      const vm = await Vm.boot(config('changed'), RAM_BYTES);
      const suspended = await vm.suspend();
      const counter = readRam(vm.ram, STATE_BLOCK + 4, 4);
      fs.writeSync(vm.ram, Buffer.from([0, 0, 0, 0]), 0, 4, STATE_BLOCK + 4);
      await expect(Vm.restore(config('changed'), vm.ram, suspended.state)).rejects.toMatchObject({ name: 'GuestNotResumedError', message: expect.stringContaining('RAM changed while the guest was stopped') });
      fs.writeSync(vm.ram, counter, 0, 4, STATE_BLOCK + 4);
      fs.writeSync(vm.ram, Buffer.from('x'), 0, 1, 6 * MIB);
      const error = await Vm.restore(config('changed'), vm.ram, suspended.state).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(GuestNotResumedError);
      expect(error).toMatchObject({ code: 'ERR_GUEST_NOT_RESUMED', message: expect.stringContaining('never touches differs') });
      fs.closeSync(suspended.state);
      fs.closeSync(vm.ram);
    });
  }, 60_000);

  it('a state memfd cut short is StateTruncatedError, found from the trailer before QEMU reads it', async () => {
    const vm = await Vm.boot(config('truncated'), RAM_BYTES);
    const suspended = await vm.suspend();
    fs.ftruncateSync(suspended.state, Math.floor(suspended.trailer.stateBytes / 2));
    await expect(Vm.restore(config('truncated'), vm.ram, suspended.state)).rejects.toMatchObject({ name: 'StateTruncatedError', code: 'ERR_STATE_TRUNCATED' });
    fs.ftruncateSync(suspended.state, 0);
    await expect(Vm.restore(config('truncated'), vm.ram, suspended.state)).rejects.toThrow(StateTruncatedError);
    fs.closeSync(suspended.state);
    fs.closeSync(vm.ram);
  }, 60_000);

  it('device state larger than the memfd may hold is StateTooLargeError, and the guest is left stopped, not lost', async () => {
    const vm = await Vm.boot(config('too-large', { stateCapacity: 64 * 1024 }), RAM_BYTES);
    const error = await vm.suspend().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateTooLargeError);
    expect(error).toMatchObject({ code: 'ERR_STATE_TOO_LARGE', capacity: 64 * 1024 });
    expect(await vm.qemu!.qmp.execute('query-status')).toMatchObject({ running: false });
    await vm.close();
  }, 60_000);

  it('QEMU refusing a command is QmpCommandError with the command, QMP error class and description', async () => {
    const vm = await Vm.boot(config('refused'), RAM_BYTES);
    const error = await vm.qemu!.qmp.execute('migrate-incoming', { uri: 'fd:nothing' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpCommandError);
    expect(error).toMatchObject({ code: 'ERR_QMP_COMMAND', command: 'migrate-incoming', errorClass: 'GenericError' });
    await expect(vm.qemu!.qmp.execute('no-such-command')).rejects.toMatchObject({ errorClass: 'CommandNotFound' });
    await vm.close();
  }, 60_000);

  it('a QMP socket that closes (QEMU killed) fails the command waiting on it and every later one with QmpClosedError', async () => {
    const vm = await Vm.boot(config('killed'), RAM_BYTES);
    const qemu = vm.qemu!;
    const waiting = qemu.qmp.nextEvent('NEVER', 30_000);
    process.kill(qemu.pid!, 'SIGKILL');
    await expect(waiting).rejects.toThrow(QmpClosedError);
    await expect(vm.suspend()).rejects.toMatchObject({ code: 'ERR_QMP_CLOSED' });
    await vm.close();
  }, 60_000);

  it('a guest that never counts is GuestNotAnsweringError, and boot leaves no QEMU and no fd behind', async () => {
    const source = path.join(dir, 'halt.S');
    fs.writeFileSync(source, '.text\n.long 0x1BADB002, 0, -0x1BADB002\n.globl _start\n_start: cli\n1: hlt\njmp 1b\n');
    const halting = path.join(dir, 'halt.elf');
    execFileSync('as', ['--32', '-o', `${halting}.o`, source]);
    execFileSync('ld', ['-m', 'elf_i386', '-N', '--no-warn-rwx-segments', '-Ttext', '0x100000', '-e', '_start', '-o', halting, `${halting}.o`]);
    await expectNoFdLeak(async () => {
      const error = await Vm.boot(config('silent', { kernel: halting, answerTimeoutMs: 1500 }), RAM_BYTES).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(GuestNotAnsweringError);
      expect(error).toMatchObject({ code: 'ERR_GUEST_NOT_ANSWERING', message: 'the guest did not count within 1500 ms (counter stays at 0)' });
    });
  }, 60_000);

  it('a QEMU without x-ignore-shared is told apart: QemuUnsupportedError naming its version', async () => {
    // A stand-in for an old QEMU: it speaks QMP and lists migration capabilities without x-ignore-shared.
    const fake = path.join(dir, 'old-qemu');
    fs.writeFileSync(
      fake,
      `#!${process.execPath}
const net = require('node:net');
const socket = process.argv[process.argv.indexOf('-qmp') + 1].replace(/^unix:/, '').split(',')[0];
net.createServer((c) => {
  c.write(JSON.stringify({ QMP: { version: { qemu: { major: 2, minor: 12, micro: 0 }, package: 'old' }, capabilities: [] } }) + '\\r\\n');
  let buffered = '';
  c.on('data', (d) => {
    buffered += d;
    for (let i; (i = buffered.indexOf('\\n')) >= 0; buffered = buffered.slice(i + 1)) {
      const { execute, id } = JSON.parse(buffered.slice(0, i));
      const answer = execute === 'query-migrate-capabilities' ? [{ capability: 'xbzrle', state: false }] : {};
      c.write(JSON.stringify({ return: answer, id }) + '\\r\\n');
    }
  });
}).listen(socket);
`,
      { mode: 0o755 },
    );
    await expectNoFdLeak(async () => {
      const error = await Vm.boot(config('old', { qemu: { binary: fake } }), RAM_BYTES).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QemuUnsupportedError);
      expect((error as Error).message).toBe('this QEMU cannot keep guest RAM in place across a restart: QEMU 2.12.0 (old) has no x-ignore-shared migration capability (QEMU 4.0 or later has it)');
    });
  }, 60_000);
});

describe('the orchestrator program (main.js, compiled with tsc -p examples/qemu-vmm as its README says)', () => {
  let program: string;
  beforeAll(() => {
    const out = buildQemuVmm(path.join(__dirname, '..', 'examples', 'qemu-vmm'));
    // Beside a node_modules that finds the package, as in a user's project.
    program = path.join(dir, 'project', 'main.js');
    fs.cpSync(out, path.dirname(program), { recursive: true });
    fs.symlinkSync(path.join(__dirname, '..', 'node_modules'), path.join(dir, 'project', 'node_modules'));
  }, 120_000);

  const run = (args: readonly string[]) => spawnSync(process.execPath, [program, ...args], { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env['PATH'] ?? '' } });

  it('without an agent: AgentUnavailableError (ENOENT) on stderr, a failed step on stdout, exit status 69, and no QEMU started', () => {
    const out = run(['--name', 'vm1', '--guest', guest, '--socket', path.join(dir, 'no-agent.sock'), '--json']);
    expect(out.stderr).toMatch(/^AgentUnavailableError \(ENOENT\): ENOENT: /);
    expect(JSON.parse(out.stdout)).toMatchObject({ step: 'failed', error: 'AgentUnavailableError', code: 'ENOENT' });
    expect(out.status).toBe(69);
  });

  it('without --name or --guest: the usage on stderr, exit status 2', () => {
    const out = run(['--guest', guest]);
    expect(out.stderr).toMatch(/^usage: node main\.js --name VM --guest IMAGE/);
    expect(out.status).toBe(2);
  });
});

/** A QMP peer of the test's making on a Unix socket; `serve` gets each connection. */
async function peer(serve: (connection: net.Socket) => void): Promise<{ path: string; close: () => Promise<void> }> {
  const socketPath = path.join(dir, `peer-${Math.random().toString(36).slice(2)}.sock`);
  const connections: net.Socket[] = [];
  const server = net.createServer((connection) => {
    connections.push(connection);
    connection.on('error', () => {});
    serve(connection);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    path: socketPath,
    close: () => {
      for (const c of connections) c.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const GREETING = `${JSON.stringify({ QMP: { version: { qemu: { major: 9, minor: 0, micro: 0 }, package: 'test' }, capabilities: ['oob'] } })}\r\n`;

/** Greets, answers qmp_capabilities, then hands every later command (parsed) to `next`. */
function qmpPeer(next: (command: { execute: string; id: number; arguments?: unknown }, connection: net.Socket) => void): (connection: net.Socket) => void {
  return (connection) => {
    connection.write(GREETING);
    let buffered = '';
    connection.on('data', (chunk) => {
      buffered += chunk.toString();
      for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
        const command = JSON.parse(buffered.slice(0, i)) as { execute: string; id: number };
        buffered = buffered.slice(i + 1);
        if (command.execute === 'qmp_capabilities') connection.write(`${JSON.stringify({ return: {}, id: command.id })}\r\n`);
        else next(command, connection);
      }
    });
  };
}

describe('the QMP client against hostile peers', () => {
  it('a line longer than its bound (no newline ever) ends the connection with QmpProtocolError: it buffers no more than the bound', async () => {
    const server = await peer((c) => c.write(Buffer.alloc(256 * 1024, 'x')));
    await expect(QmpClient.connect(server.path, { maxLineBytes: 64 * 1024, timeoutMs: 10_000 })).rejects.toMatchObject({ name: 'QmpProtocolError', message: expect.stringContaining('longer than 65536 bytes') });
    await server.close();
  });

  it('a greeting that is not JSON, or not a greeting, is QmpProtocolError', async () => {
    for (const first of ['{"QMP": oops}\r\n', '{"return": {}}\r\n']) {
      const server = await peer((c) => c.write(first));
      await expect(QmpClient.connect(server.path, { timeoutMs: 10_000 })).rejects.toThrow(QmpProtocolError);
      await server.close();
    }
  });

  it('a peer that never greets is QmpTimeoutError within the bound given', async () => {
    const server = await peer(() => {});
    const started = Date.now();
    await expect(QmpClient.connect(server.path, { timeoutMs: 300 })).rejects.toThrow(QmpTimeoutError);
    expect(Date.now() - started).toBeLessThan(5000);
    await server.close();
  });

  it('nothing listening is QmpClosedError carrying the connect error', async () => {
    await expect(QmpClient.connect(path.join(dir, 'nobody.sock'))).rejects.toMatchObject({ code: 'ERR_QMP_CLOSED', cause: { code: 'ENOENT' } });
  });

  it('a peer that closes mid-command fails it with QmpClosedError; later commands fail the same way at once', async () => {
    const server = await peer(qmpPeer((_, c) => c.destroy()));
    const qmp = await QmpClient.connect(server.path);
    await expect(qmp.execute('query-status')).rejects.toThrow(QmpClosedError);
    expect(qmp.open).toBe(false);
    await expect(qmp.execute('query-status')).rejects.toThrow(QmpClosedError);
    await server.close();
  });

  it('an answer to an id never sent is QmpProtocolError, and ends the connection', async () => {
    const server = await peer(qmpPeer((command, c) => c.write(`${JSON.stringify({ return: {}, id: command.id + 1000 })}\r\n`)));
    const qmp = await QmpClient.connect(server.path);
    await expect(qmp.execute('query-status')).rejects.toMatchObject({ name: 'QmpProtocolError', message: expect.stringContaining('an answer to no command of ours') });
    expect(qmp.open).toBe(false);
    await server.close();
  });

  it('events reach nextEvent and the event listeners, between the answers', async () => {
    const server = await peer(
      qmpPeer((command, c) => {
        c.write(`${JSON.stringify({ event: 'STOP', data: {}, timestamp: { seconds: 1, microseconds: 2 } })}\r\n`);
        c.write(`${JSON.stringify({ return: { status: 'paused' }, id: command.id })}\r\n`);
      }),
    );
    const qmp = await QmpClient.connect(server.path);
    const seen: string[] = [];
    qmp.on('event', (event: { event: string }) => seen.push(event.event));
    const stop = qmp.nextEvent('STOP', 5000);
    expect(await qmp.execute('stop')).toEqual({ status: 'paused' });
    expect(await stop).toMatchObject({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } });
    expect(seen).toEqual(['STOP']);
    qmp.close();
    await server.close();
  });

  it("passes an fd with the command that names it (getfd), in QMP's own stream", async () => {
    let received: Promise<{ fds: number[]; text: string }> | undefined;
    const server = await peer((c) => {
      c.write(GREETING);
      received = (async () => {
        const capabilities = await recvFds(c, { framing: 'none' });
        const id = (JSON.parse(capabilities.data.toString()) as { id: number }).id;
        c.write(`${JSON.stringify({ return: {}, id })}\r\n`);
        const getfd = await recvFds(c, { framing: 'none' });
        c.write(`${JSON.stringify({ return: {}, id: (JSON.parse(getfd.data.toString()) as { id: number }).id })}\r\n`);
        return { fds: getfd.fds, text: getfd.data.toString() };
      })();
    });
    const qmp = await QmpClient.connect(server.path);
    const file = path.join(dir, 'passed');
    fs.writeFileSync(file, 'passed');
    const fd = fs.openSync(file, 'r');
    await qmp.execute('getfd', { fdname: 'state' }, { fds: [fd] });
    const { fds, text } = await received!;
    expect(JSON.parse(text)).toMatchObject({ execute: 'getfd', arguments: { fdname: 'state' } });
    expect(fds).toHaveLength(1);
    expect(fs.fstatSync(fds[0]!).ino).toBe(fs.fstatSync(fd).ino);
    for (const f of [...fds, fd]) fs.closeSync(f);
    qmp.close();
    await server.close();
  });
});
