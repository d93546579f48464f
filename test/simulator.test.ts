/**
 * The simulated host (`liveupdate/simulator`, `liveupdate agent --simulate`)
 * on this host, which has no LUO: the whole path an integrator's test takes
 * (createSession, preserve, ready, update, claim, retrieve, finish) through
 * `AgentClient` and `Session`, in this process and against the agent as its
 * own process; the misuse cases answered with the kernel's errors; no fd
 * leaked. The package is used as users get it (dist/, by its name). Whether
 * the simulation answers as a kernel does is proven against a real one by
 * test/kernel/differential.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AgentClient,
  AgentQuotaError,
  AgentUnavailableError,
  BadFileDescriptorError,
  DeviceBusyError,
  FileAlreadyPreservedError,
  LiveUpdateError,
  memfd,
  parsePolicy,
  recvFds,
  sendFds,
  SessionAlreadyRetrievedError,
  SessionExistsError,
  SessionNotFoundError,
  SessionStateError,
  TokenInUseError,
  TokenNotFoundError,
  UnsupportedFileError,
  type Session,
} from 'liveupdate';
import { SimulatedDevice, startSimulatedAgent, type SimulatedAgent } from 'liveupdate/simulator';
import { SimulatedLuo } from '../dist/simulator/kernel.js';
import { contentOf, openFds } from './helpers/fds.js';
import { simulatedTranscript } from './kernel/scenarios/differential.js';

const ROOT = path.join(__dirname, '..');

let dir: string;
let socket: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-simulator-'));
  socket = path.join(dir, 'agent.sock');
});

afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A memfd holding `text`, sealable (so that the simulator can freeze its size). */
function memfdOf(text: string): number {
  const fd = memfd.createSync('ram', { allowSealing: true });
  fs.writeSync(fd, Buffer.from(text), 0, Buffer.byteLength(text), 0);
  return fd;
}

/** Resolves once `done()` holds, or after 2 s. */
async function settled(done: () => boolean): Promise<void> {
  for (let waited = 0; !done() && waited < 2000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe('the simulated agent in this process', () => {
  let simulated: SimulatedAgent;

  afterEach(async () => {
    await simulated?.close();
  });

  it('carries a session across a simulated kexec: create, preserve, ready, update, claim, retrieve, finish, and leaks no fd', async () => {
    const before = openFds();
    simulated = await startSimulatedAgent({ socketPath: socket });
    const client = await AgentClient.connect({ socket });
    const session = await client.createSession('vm1', { metadata: { guest: 'alpine' } });
    const ram = memfdOf('guest memory');
    await session.preserve(ram, 1n);
    await client.ready();
    const checks = await simulated.update();
    expect(checks.map((c) => c.name)).toContain('clients-ready');
    expect(simulated.kexecCount).toBe(1);
    // The old kernel's client and session fd are dead, as their process would be.
    await expect(client.sessions()).rejects.toBeInstanceOf(AgentUnavailableError);
    await expect(session.preserve(ram, 2n)).rejects.toMatchObject({ code: 'ESTALE' });
    client.closeSync();
    session.closeSync();
    fs.closeSync(ram);

    const next = await AgentClient.connect({ socket });
    expect(next.kexecCount).toBe(1);
    expect((await next.sessions()).sessions.map((s) => [s.name, s.state])).toEqual([['vm1', 'waiting']]);
    const claimed = await next.retrieveSession('vm1');
    expect(claimed.metadata).toEqual({ guest: 'alpine' });
    expect(claimed.session.state).toBe('incoming');
    const fd = await claimed.session.retrieve(1n);
    expect(contentOf(fd)).toBe('guest memory');
    await claimed.session.finish();
    expect(claimed.session.state).toBe('finished');
    await next.release('vm1');
    fs.closeSync(fd);
    await claimed.session.close();
    await next.close();
    await simulated.close();
    // The agent closes a connection's fd when its reader sees the end, a turn or two after stop().
    await settled(() => openFds().join() === before.join());
    expect(openFds()).toEqual(before);
  });

  it('answers misuse as the kernel does: a name in use, a token in use, a file preserved twice, no handler, an fd not open, the wrong direction', async () => {
    simulated = await startSimulatedAgent({ socketPath: socket });
    const client = await AgentClient.connect({ socket });
    const session = await client.createSession('vm1');
    await expect(client.createSession('vm1')).rejects.toMatchObject({ constructor: SessionExistsError, code: 'EEXIST', errno: -17, syscall: 'ioctl' });
    await expect(client.createSession('x'.repeat(64))).rejects.toMatchObject({ constructor: TypeError, code: 'ERR_INVALID_ARG_VALUE' });
    const ram = memfdOf('ram');
    const other = memfdOf('other');
    const devNull = fs.openSync('/dev/null', 'r');
    session.preserveSync(ram, 1n);
    expect(() => session.preserveSync(ram, 2n)).toThrow(FileAlreadyPreservedError);
    expect(() => session.preserveSync(other, 1n)).toThrow(TokenInUseError);
    expect(() => session.preserveSync(devNull, 3n)).toThrow(UnsupportedFileError);
    expect(() => session.preserveSync(4000, 4n)).toThrow(BadFileDescriptorError);
    await expect(session.retrieve(1n)).rejects.toMatchObject({ constructor: SessionStateError, code: 'EINVAL' });
    await expect(session.finish()).rejects.toMatchObject({ constructor: SessionStateError, code: 'EINVAL' });
    expect(() => simulated.openDevice()).toThrow(DeviceBusyError);
    expect(session.getNameSync()).toBe('vm1');
    for (const fd of [ram, other, devNull]) fs.closeSync(fd);
    session.closeSync();
    await client.close();
  });

  it("freezes a preserved memfd's size until the kexec (EPERM), and the retrieved file is free again", async () => {
    simulated = await startSimulatedAgent({ socketPath: socket });
    const client = await AgentClient.connect({ socket });
    const session = await client.createSession('vm1');
    const ram = memfdOf('0123456789');
    await session.preserve(ram, 1n);
    expect(() => fs.ftruncateSync(ram, 100)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    expect(() => fs.writeSync(ram, Buffer.from('past'), 0, 4, 10)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    expect(fs.writeSync(ram, Buffer.from('AB'), 0, 2, 0)).toBe(2);
    // Preserving after ready is the client's own call: allowed, and carried.
    await client.ready();
    const late = memfdOf('late');
    await session.preserve(late, 2n);
    await simulated.update();
    client.closeSync();
    session.closeSync();
    fs.closeSync(ram);
    fs.closeSync(late);
    const next = await AgentClient.connect({ socket });
    const { session: back } = await next.retrieveSession('vm1');
    const fd = await back.retrieve(1n);
    expect(contentOf(fd)).toBe('AB23456789');
    fs.ftruncateSync(fd, 100);
    expect(fs.fstatSync(fd).size).toBe(100);
    const second = await back.retrieve(1n);
    expect(fs.fstatSync(second).ino).toBe(fs.fstatSync(fd).ino);
    const lateFd = back.retrieveSync(2n);
    expect(contentOf(lateFd)).toBe('late');
    await expect(back.retrieve(99n)).rejects.toBeInstanceOf(TokenNotFoundError);
    expect(() => back.preserveSync(lateFd, 3n)).toThrow(expect.objectContaining({ constructor: SessionStateError, code: 'EINVAL' }));
    back.finishSync();
    for (const f of [fd, second, lateFd]) fs.closeSync(f);
    back.closeSync();
    // Claimed and finished: a second claim finds nothing.
    await next.release('vm1');
    await expect(next.retrieveSession('vm1')).rejects.toBeInstanceOf(SessionNotFoundError);
    await next.close();
  });

  it('drops a session closed before the kexec, and frees its name at once', async () => {
    simulated = await startSimulatedAgent({ socketPath: socket });
    const client = await AgentClient.connect({ socket });
    const gone = await client.createSession('gone');
    await client.release('gone');
    gone.closeSync();
    // Its last fd closed: the name is free again at once.
    const again = await client.createSession('gone');
    await client.release('gone');
    again.closeSync();
    await client.ready();
    await simulated.update();
    client.closeSync();
    const next = await AgentClient.connect({ socket });
    expect((await next.sessions()).sessions).toEqual([]);
    await expect(next.retrieveSession('gone')).rejects.toBeInstanceOf(SessionNotFoundError);
    await next.close();
  });

  it('answers a malformed message on a session fd with EINVAL and goes on serving it', async () => {
    simulated = await startSimulatedAgent({ socketPath: socket });
    const client = await AgentClient.connect({ socket });
    const session = await client.createSession('vm1');
    for (const garbage of ['not json', '{"op":"format-disk"}', '{"op":"retrieve","token":"x"}']) {
      // Through the socket, as a client in another process would send it (the simulator here answers from the event loop).
      await sendFds(session.fd, [], garbage);
      const reply = await recvFds(session.fd, { maxFds: 1 });
      expect(JSON.parse(reply.data.toString())).toEqual({ ok: false, code: 'EINVAL' });
    }
    const ram = memfdOf('still served');
    await session.preserve(ram, 1n);
    expect(() => session.preserveSync(ram, 2n)).toThrow(FileAlreadyPreservedError);
    fs.closeSync(ram);
    session.closeSync();
    await client.close();
  });

  it("refuses sessions beyond the policy's quota with AgentQuotaError, as the real agent does", async () => {
    simulated = await startSimulatedAgent({ socketPath: socket, policy: { ...parsePolicy({ fdStoreMax: 3 }), connect: { uids: new Set([process.getuid?.() ?? 0]), gids: new Set() } } });
    const client = await AgentClient.connect({ socket });
    const one = await client.createSession('one');
    await expect(client.createSession('two')).rejects.toBeInstanceOf(AgentQuotaError);
    one.closeSync();
    await client.close();
  });

  it('refuses an update whose client holding sessions is not ready, and nothing changes', async () => {
    simulated = await startSimulatedAgent({ socketPath: socket });
    const client = await AgentClient.connect({ socket });
    const session = await client.createSession('vm1');
    await expect(simulated.update({ timeoutMs: 200 })).rejects.toMatchObject({ code: 'ERR_LIVEUPDATE_UPDATE_REFUSED' });
    expect(simulated.kexecCount).toBe(0);
    expect((await client.sessions()).sessions.map((s) => s.state)).toEqual(['outgoing']);
    session.closeSync();
    await client.close();
  });
});

it("runs the differential scenario's client to its end, each misuse answered as LUO-FACTS says the kernel answers it", async () => {
  const { before, after } = await simulatedTranscript();
  const result = (steps: typeof before, step: string) => steps.find((s) => s.step === step)?.result;
  const refused = (error: string, code: string, errno: number, syscall = 'ioctl') => ({ error, code, errno, syscall });
  expect(result(before, 'create vm1 again: name in use')).toEqual(refused('SessionExistsError', 'EEXIST', -17));
  expect(result(before, 'preserve ram again as 2: the file is preserved')).toEqual(refused('FileAlreadyPreservedError', 'EBUSY', -16));
  expect(result(before, 'preserve another file as 1: the token is in use')).toEqual(refused('TokenInUseError', 'EEXIST', -17));
  expect(result(before, 'preserve /dev/null: no handler')).toEqual(refused('UnsupportedFileError', 'ENOENT', -2));
  expect(result(before, 'preserve an fd that is not open')).toEqual(refused('BadFileDescriptorError', 'EBADF', -9));
  expect(result(before, 'ftruncate the preserved ram: its size is frozen')).toEqual(refused('Error', 'EPERM', -1, 'ftruncate'));
  expect(result(before, 'retrieve from an outgoing session')).toEqual(refused('SessionStateError', 'EINVAL', -22));
  expect(result(before, 'open the device the agent owns')).toEqual(refused('DeviceBusyError', 'EBUSY', -16, 'open'));
  expect(result(after, 'preserve into an incoming session')).toEqual(refused('SessionStateError', 'EINVAL', -22));
  expect(result(after, 'retrieve a token never preserved')).toEqual(refused('TokenNotFoundError', 'ENOENT', -2));
  expect(result(after, 'claim vm2, closed before the kexec')).toEqual(refused('SessionNotFoundError', 'ENOENT', -2, 'agent'));
  expect(result(after, 'retrieve the sealed memfd: its seals are back')).toMatchObject({ value: { seals: 15 } });
  expect(result(after, 'retrieve the second file')).toMatchObject({ value: { position: 100 } });
  expect(result(after, 'sessions at the end')).toEqual({ value: [[`diff-${'n'.repeat(58)}`, 'finished'], ['diff-vm1', 'finished']] });
});

it('the simulated device answers as /dev/liveupdate: one owner, a session retrieved once, a closed incoming session gone, unretrieved files discarded by finish', async () => {
  const luo = new SimulatedLuo();
  try {
    const device = new SimulatedDevice(luo);
    expect(() => new SimulatedDevice(luo)).toThrow(expect.objectContaining({ constructor: DeviceBusyError, code: 'EBUSY', syscall: 'open' }));
    const outgoing = device.createSessionSync('s');
    expect(() => device.createSessionSync('s')).toThrow(SessionExistsError);
    const ram = memfdOf('kept');
    outgoing.preserveSync(ram, 1n);
    const discarded = memfdOf('never retrieved');
    outgoing.preserveSync(discarded, 2n);
    fs.closeSync(discarded);
    device.createSessionSync('closed').closeSync();
    luo.kexec();
    outgoing.closeSync();
    fs.closeSync(ram);
    // The device of the kernel left is gone with it; this kernel's has no owner yet.
    expect(() => device.retrieveSessionSync('s')).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const next = new SimulatedDevice(luo);
    expect(() => next.retrieveSessionSync('closed')).toThrow(SessionNotFoundError);
    const incoming = next.retrieveSessionSync('s');
    expect(() => next.retrieveSessionSync('s')).toThrow(expect.objectContaining({ constructor: SessionAlreadyRetrievedError, code: 'EINVAL' }));
    const fd = incoming.retrieveSync(1n);
    expect(contentOf(fd)).toBe('kept');
    incoming.finishSync();
    fs.closeSync(fd);
    incoming.closeSync();
    luo.settle();
    expect(() => next.retrieveSessionSync('s')).toThrow(SessionNotFoundError);
    // An outgoing session of the same name as an incoming one is another list: allowed.
    next.createSessionSync('s').closeSync();
    next.closeSync();
  } finally {
    luo.close();
  }
});

describe('liveupdate agent --simulate, as its own process', () => {
  let agent: ChildProcess | undefined;

  afterEach(async () => {
    if (agent?.exitCode === null) {
      const exited = new Promise((resolve) => agent?.once('exit', resolve));
      agent.kill('SIGTERM');
      await exited;
    }
  });

  /** Starts the CLI's agent; resolves once it listens again `times` times (once per simulated kernel). */
  function start(): { listening: (times: number) => Promise<void>; log: string[] } {
    const log: string[] = [];
    const waiting: Array<{ times: number; resolve: () => void }> = [];
    agent = spawn(process.execPath, [path.join(ROOT, 'bin', 'liveupdate.js'), 'agent', '--simulate', '--socket', socket], { stdio: ['ignore', 'ignore', 'pipe'] });
    createInterface({ input: agent.stderr! }).on('line', (line) => {
      log.push(line);
      const count = log.filter((l) => l.includes('"event":"listening"')).length;
      for (const w of waiting.filter((x) => x.times <= count)) w.resolve();
    });
    return {
      log,
      listening: (times) =>
        new Promise((resolve, reject) => {
          const count = log.filter((l) => l.includes('"event":"listening"')).length;
          if (count >= times) return resolve();
          waiting.push({ times, resolve });
          setTimeout(() => reject(new Error(`the simulated agent did not listen (${times}):\n${log.join('\n')}`)), 30_000).unref();
        }),
    };
  }

  it('serves clients in another process: their session calls travel to it, and an update kexecs it into the next simulated kernel', async () => {
    const { listening, log } = start();
    await listening(1);
    expect(log[0]).toContain('simulated LUO');
    const client = await AgentClient.connect({ socket });
    const session: Session = await client.createSession('vm1', { metadata: 7 });
    const ram = memfdOf('across processes');
    session.preserveSync(ram, 1n);
    await expect(session.preserve(ram, 2n)).rejects.toBeInstanceOf(FileAlreadyPreservedError);
    expect(() => session.preserveSync(4000, 3n)).toThrow(BadFileDescriptorError);
    expect(() => fs.ftruncateSync(ram, 1)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    expect(await session.getName()).toBe('vm1');
    await client.ready();
    const updater = await AgentClient.connect({ socket });
    let kexecChecks = 0;
    await expect(updater.update({ kernel: process.execPath, cmdline: 'liveupdate=on kho=on', timeoutMs: 5000, onKexec: (checks) => (kexecChecks = checks.length) })).rejects.toBeInstanceOf(LiveUpdateError);
    expect(kexecChecks).toBeGreaterThan(0);
    updater.closeSync();
    client.closeSync();
    session.closeSync();
    fs.closeSync(ram);
    await listening(2);

    const next = await AgentClient.connect({ socket });
    expect(next.kexecCount).toBe(1);
    const { session: back, metadata } = await next.retrieveSession('vm1');
    expect(metadata).toBe(7);
    const fd = back.retrieveSync(1n);
    expect(contentOf(fd)).toBe('across processes');
    expect(() => back.retrieveSync(5n)).toThrow(TokenNotFoundError);
    await back.finish();
    fs.closeSync(fd);
    back.closeSync();
    await next.close();
  });
});
