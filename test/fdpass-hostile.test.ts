/**
 * The fd-passing receive path against hostile peers, on the host: a peer
 * that passes a file whose close blocks, a peer that resets the connection,
 * a kernel option that refuses fds outright (SO_PASSRIGHTS, Linux 6.16+),
 * and a long-running receiver of bad frames. The blocking file is real: a
 * TCP socket over loopback with SO_LINGER {1, 30} and unsent data, made by
 * a Python attacker (Node cannot set SO_LINGER), whose last close waits
 * until the data is sent, which it never is: the attacker's listener never
 * reads. The close returns when the attacker exits and its listener's
 * unaccepted connection is reset.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/agent/client.js';
import { Agent } from '../lib/agent/server.js';
import { ControlTruncatedError, FramingError, PeerClosedError, StreamOutOfStepError } from '../lib/errors.js';
import { outOfStepCount, recvFds, recvFdsSync, sendFds, sendFdsSync, socketPair } from '../lib/fdpass.js';
import * as kexec from '../lib/kexec.js';
import { native } from '../lib/native.js';
import { openFds } from './helpers/fds.js';

/*
 * argv: seconds to live after sending, then where to send: "fd3" (a Unix
 * socket inherited as fd 3) or the path of a SOCK_SEQPACKET listener.
 * Prints "sent" or "refused ERRNO" once its own copy of the socket is
 * closed: from then on, whoever closes the passed fd closes it last.
 */
const ATTACKER = String.raw`
import socket, struct, sys, time
hold, target = float(sys.argv[1]), sys.argv[2]
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(1)
victim = socket.create_connection(listener.getsockname())
victim.setblocking(False)
try:
    while True:
        victim.send(b'x' * 65536)
except BlockingIOError:
    pass
victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 30))
if target == 'fd3':
    unix = socket.socket(fileno=3)
else:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    unix.connect(target)
try:
    socket.send_fds(unix, [b'x'], [victim.fileno()])
    said = 'sent'
except OSError as e:
    said = 'refused %d' % e.errno
# At once: the receiver's close must be the last one, the one that blocks.
victim.close()
print(said, flush=True)
time.sleep(hold)
`;

let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-hostile-'));
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, 'attacker.py'), ATTACKER);
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Attacker {
  /** "sent" or "refused ERRNO", once the attacker has tried. */
  said: Promise<string>;
  exited: Promise<void>;
  child: ChildProcess;
}

/** Starts the attacker; `unixFd` becomes its fd 3. It lives `holdSeconds` after its send. */
function attack(holdSeconds: number, target: { fd: number } | { path: string }): Attacker {
  const fd3 = 'fd' in target ? target.fd : 'ignore';
  const child = spawn('python3', [path.join(dir, 'attacker.py'), String(holdSeconds), 'fd' in target ? 'fd3' : target.path], {
    stdio: ['ignore', 'pipe', 'inherit', fd3],
  });
  let out = '';
  const said = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.on('exit', (code) => reject(new Error(`attacker exited (${code}) before saying anything`)));
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { said, exited, child };
}

/**
 * Records the longest gap between 10 ms timer ticks: how long the event
 * loop was held. A stall here is the attacker's whole hold (1.5 s or
 * more); a busy 2-core machine adds scheduling noise of about 100 ms, so
 * the bound the tests use is 300 ms.
 */
const RESPONSIVE_MS = 300;

function watchEventLoop(): () => number {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 10);
  return () => {
    clearInterval(timer);
    return Math.max(longest, performance.now() - last);
  };
}

describe('a passed fd whose close() blocks', () => {
  it('really blocks whoever closes it last (the test is about a real blocking close)', async () => {
    const [ours, theirs] = socketPair('seqpacket');
    const attacker = attack(1, { fd: theirs });
    fs.closeSync(theirs);
    try {
      expect(await attacker.said).toBe('sent');
      const { fds } = await recvFds(ours, { maxFds: 1 });
      expect(fds).toHaveLength(1);
      const started = performance.now();
      fs.closeSync(fds[0]!); // Blocks this thread until the attacker exits (about 1 s).
      expect(performance.now() - started).toBeGreaterThan(600);
    } finally {
      fs.closeSync(ours);
      await attacker.exited;
    }
  });

  it('a passed fd whose close blocks does not stall the event loop: recvFds drops it on a thread of its own', async () => {
    const [ours, theirs] = socketPair('seqpacket');
    const attacker = attack(1.5, { fd: theirs });
    fs.closeSync(theirs);
    expect(await attacker.said).toBe('sent');
    const before = openFds();
    const longestGap = watchEventLoop();
    const started = performance.now();
    try {
      const refused = await recvFds(ours, { maxFds: 0 }).catch((error: unknown) => error);
      const settledAfter = performance.now() - started;
      const gap = longestGap();
      expect(refused).toBeInstanceOf(ControlTruncatedError);
      expect((refused as ControlTruncatedError).closedFds).toBe(1);
      // The drop waited for the close, which waited for the attacker to exit...
      expect(settledAfter).toBeGreaterThan(900);
      // ...and all the while the event loop ran.
      expect(gap).toBeLessThan(RESPONSIVE_MS);
      // Closed before the Promise settled: nothing of the attacker's is left.
      expect(openFds()).toEqual(before);
    } finally {
      longestGap();
      fs.closeSync(ours);
      await attacker.exited;
    }
  });

  it('passed fds whose close blocks do not hold the libuv thread pool: fs calls go on while four receives drop them', async () => {
    // One blocking close per receive, on as many receives as libuv has pool threads (4 by default).
    const pairs = Array.from({ length: 4 }, () => socketPair('seqpacket'));
    const attackers = pairs.map(([, theirs]) => attack(1.5, { fd: theirs }));
    pairs.forEach(([, theirs]) => fs.closeSync(theirs));
    try {
      for (const attacker of attackers) expect(await attacker.said).toBe('sent');
      const drops = pairs.map(([ours]) => recvFds(ours, { maxFds: 0 }).catch((error: unknown) => error));
      await new Promise((resolve) => setTimeout(resolve, 100));
      const started = performance.now();
      await Promise.all(Array.from({ length: 8 }, () => fs.promises.stat(dir)));
      expect(performance.now() - started).toBeLessThan(RESPONSIVE_MS);
      for (const refused of await Promise.all(drops)) expect(refused).toBeInstanceOf(ControlTruncatedError);
    } finally {
      pairs.forEach(([ours]) => fs.closeSync(ours));
      await Promise.all(attackers.map((a) => a.exited));
    }
  });

  it('a Worker that ends while its receive is closing a blocking fd neither aborts the process nor stops the closer', () => {
    const script = String.raw`
      const { spawn } = require('node:child_process');
      const fs = require('node:fs');
      const { Worker } = require('node:worker_threads');
      const lu = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      const [ours, theirs] = lu.socketPair('seqpacket');
      const attacker = spawn('python3', [${JSON.stringify(path.join(dir, 'attacker.py'))}, '1', 'fd3'], { stdio: ['ignore', 'pipe', 'inherit', theirs] });
      fs.closeSync(theirs);
      const exited = new Promise((resolve) => attacker.on('exit', resolve));
      attacker.stdout.once('data', async () => {
        const body = "const { workerData } = require('node:worker_threads'); require(workerData.dist).recvFds(workerData.fd, { maxFds: 0 }).catch(() => {}); setInterval(() => {}, 1000);";
        const worker = new Worker(body, { eval: true, workerData: { dist: ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}, fd: ours } });
        await sleep(300); // Its receive has the fd and is closing it: blocked until the attacker exits.
        await worker.terminate();
        await exited;
        await sleep(200); // The close returns; the closer wakes a loop that is gone.
        const [a, b] = lu.socketPair('seqpacket');
        await lu.sendFds(a, [a], 'x');
        const error = await lu.recvFds(b, { maxFds: 0 }).catch((e) => e);
        console.log(JSON.stringify({ after: error.constructor.name }));
        process.exit(0);
      });
    `;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(run.stderr).not.toMatch(/Abort|terminate called|uv_loop_close/);
    expect({ status: run.status, signal: run.signal }).toEqual({ status: 0, signal: null });
    expect(JSON.parse(run.stdout)).toEqual({ after: 'ControlTruncatedError' });
  });

  it('a passed fd whose close blocks does not stall the agent: a peer passing one before hello leaves everyone else served', async () => {
    // The attacker connects and sends before the agent accepts (the message
    // waits with the connection), so that the agent's close is the last.
    const socket = path.join(dir, 'agent.sock');
    fs.rmSync(socket, { force: true });
    const listenFd = native.unixBind(native.SOCK_SEQPACKET, socket);
    fs.chmodSync(socket, 0o666);
    const attacker = attack(2, { path: socket });
    let agent: Agent | undefined;
    try {
      expect(await attacker.said).toBe('sent');
      const longestGap = watchEventLoop();
      agent = await Agent.start({ listenFd, devicePath: path.join(dir, 'no-such-device'), log: () => {} });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const started = performance.now();
      const client = await AgentClient.connect({ socket });
      expect((await client.sessions()).sessions).toEqual([]);
      await client.close();
      expect(performance.now() - started).toBeLessThan(1000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(longestGap()).toBeLessThan(RESPONSIVE_MS);
    } finally {
      await attacker.exited;
      if (agent !== undefined) await agent.stop();
      else fs.closeSync(listenFd);
    }
  });
});

describe('fds a receive does not hand over', () => {
  it('recvFds with maxFds 0 never surfaces fds: all 253 of a message are closed before it settles', async () => {
    const [a, b] = socketPair('seqpacket');
    const sent = Array.from({ length: 253 }, () => fs.openSync('/dev/null', 'r'));
    const before = openFds();
    try {
      await sendFds(a, sent, 'x');
      const refused = await recvFds(b, { maxFds: 0 }).catch((error: unknown) => error);
      // Every one came in and was closed by us, not dropped by the kernel in our thread.
      expect(refused).toMatchObject({ constructor: ControlTruncatedError, closedFds: 253 });
      expect(openFds()).toEqual(before);
      sendFdsSync(a, sent.slice(0, 3), 'y');
      expect(() => recvFdsSync(b, { maxFds: 0 })).toThrow(expect.objectContaining({ closedFds: 3 }) as Error);
      expect(openFds()).toEqual(before);
    } finally {
      [a, b, ...sent].forEach((fd) => fs.closeSync(fd));
    }
  });

  it('fds that arrived with a frame cut short by a cancel are closed before the cancel settles', async () => {
    const [a, b] = socketPair('stream');
    const before = openFds();
    try {
      // A frame header claiming 10 bytes, with an fd, and no body.
      const header = Buffer.from([0x4c, 0x55, 0x46, 0x44, 0, 0, 0, 10]);
      native.sendFds(a, header, [a], 1);
      const controller = new AbortController();
      const pending = recvFds(b, { signal: controller.signal });
      await new Promise((resolve) => setTimeout(resolve, 50));
      controller.abort();
      await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
      expect(openFds()).toEqual(before);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});

describe('SO_PASSRIGHTS', () => {
  it('a listener with setPassRights(false) makes every sender of fds get EPERM, on sockets accepted from it too', () => {
    const name = `@liveupdate-passrights-${process.pid}`;
    const listener = native.unixBind(native.SOCK_SEQPACKET, name);
    const fds: number[] = [listener];
    try {
      expect(native.setPassRights(listener, false)).toBe(true);
      const client = native.unixConnect(native.SOCK_SEQPACKET, name);
      const accepted = native.unixAccept(listener);
      fds.push(client, accepted);
      // The client's peer is the accepted socket: it inherited the listener's setting.
      expect(() => sendFdsSync(client, [client], 'x')).toThrow(expect.objectContaining({ code: 'EPERM', syscall: 'sendmsg' }) as Error);
      // Bytes still pass, and fds the other way.
      sendFdsSync(client, [], 'bytes only');
      expect(recvFdsSync(accepted).data.toString()).toBe('bytes only');
      sendFdsSync(accepted, [accepted], 'x');
      const back = recvFdsSync(client, { maxFds: 1 });
      fds.push(...back.fds);
      // Turned back on, the accepted socket takes fds again.
      expect(native.setPassRights(accepted, true)).toBe(true);
      sendFdsSync(client, [client], 'x');
      const taken = recvFdsSync(accepted, { maxFds: 1 });
      fds.push(...taken.fds);
      expect(taken.fds).toHaveLength(1);
    } finally {
      fds.forEach((fd) => fs.closeSync(fd));
    }
  });

  it('setPassRights refuses what is not a socket with a Node-style system error', () => {
    const file = fs.openSync('/dev/null', 'r');
    try {
      expect(() => native.setPassRights(file, false)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', syscall: 'setsockopt', errno: -os.constants.errno.ENOTSOCK }) as Error);
    } finally {
      fs.closeSync(file);
    }
    expect(() => native.setPassRights(-1, false)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }) as Error);
  });
});

describe('a peer reset', () => {
  /** A pair whose peer end resets: it is closed with bytes it never read. */
  function resettingPair(type: 'stream' | 'seqpacket'): [number, number] {
    const [ours, theirs] = socketPair(type);
    sendFdsSync(ours, [], 'never read');
    return [ours, theirs];
  }

  for (const type of ['stream', 'seqpacket'] as const) {
    it(`a peer reset is reported by async recvFds as ECONNRESET on recvmsg, not EBADF (${type})`, async () => {
      const [ours, theirs] = resettingPair(type);
      try {
        const pending = recvFds(ours);
        await new Promise((resolve) => setTimeout(resolve, 20));
        fs.closeSync(theirs);
        await expect(pending).rejects.toMatchObject({ constructor: PeerClosedError, code: 'ECONNRESET', syscall: 'recvmsg' });
      } finally {
        fs.closeSync(ours);
      }
    });

    it(`a peer reset is reported by recvFdsSync as ECONNRESET on recvmsg (${type})`, () => {
      const [ours, theirs] = resettingPair(type);
      fs.closeSync(theirs);
      try {
        expect(() => recvFdsSync(ours)).toThrow(expect.objectContaining({ constructor: PeerClosedError, code: 'ECONNRESET', syscall: 'recvmsg' }) as Error);
      } finally {
        fs.closeSync(ours);
      }
    });
  }

  it('a plain close (nothing unread) is still EOF, sync and Promise', async () => {
    const [ours, theirs] = socketPair('seqpacket');
    const pending = recvFds(ours);
    await new Promise((resolve) => setTimeout(resolve, 20));
    fs.closeSync(theirs);
    expect(await pending).toMatchObject({ eof: true });
    expect(recvFdsSync(ours)).toMatchObject({ eof: true });
    fs.closeSync(ours);
  });
});

describe('the out-of-step registry', () => {
  it('does not grow over many connections that each went out of step and were closed', async () => {
    const baseline = outOfStepCount();
    for (let i = 0; i < 300; i++) {
      const [a, b] = socketPair('stream');
      native.sendFds(a, Buffer.from('not a frame of this package'), [], 1);
      await expect(recvFds(b)).rejects.toBeInstanceOf(FramingError);
      await expect(recvFds(b)).rejects.toBeInstanceOf(StreamOutOfStepError);
      fs.closeSync(a);
      fs.closeSync(b);
    }
    expect(outOfStepCount() - baseline).toBeLessThan(128);
  });

  it('keeps refusing a socket that is out of step and still open, however many others come and go', async () => {
    const [a, b] = socketPair('stream');
    try {
      native.sendFds(a, Buffer.from('garbage bytes'), [], 1);
      await expect(recvFds(b)).rejects.toBeInstanceOf(FramingError);
      for (let i = 0; i < 200; i++) {
        const [c, d] = socketPair('stream');
        native.sendFds(c, Buffer.from('garbage bytes'), [], 1);
        await expect(recvFds(d)).rejects.toBeInstanceOf(FramingError);
        fs.closeSync(c);
        fs.closeSync(d);
      }
      expect(() => recvFdsSync(b)).toThrow(StreamOutOfStepError);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});

describe('kexec.load and a path that is not a regular file', () => {
  /** Fails the test instead of hanging if `pending` blocks: a writer then unblocks a FIFO's open. */
  async function withinTwoSeconds<T>(pending: Promise<T>, fifo: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        fs.closeSync(writer);
        reject(new Error(`kexec.load blocked on the FIFO ${fifo}`));
      }, 2000);
    });
    try {
      return await Promise.race([pending, stuck]);
    } finally {
      clearTimeout(timer);
    }
  }

  it('a FIFO as the kernel is refused with a typed error naming it, before kexec_file_load, without blocking', async () => {
    const fifo = path.join(dir, 'kernel.fifo');
    fs.rmSync(fifo, { force: true });
    expect(spawnSyncOk('mkfifo', [fifo])).toBe(true);
    const before = openFds();
    const error = await withinTwoSeconds(kexec.load({ kernel: fifo, cmdline: '' }).catch((e: unknown) => e), fifo);
    expect(error).toMatchObject({ name: 'KexecImageRejectedError', code: 'EINVAL', syscall: 'open', path: fifo, operation: 'kexec.load' });
    expect((error as Error).message).toContain(fifo);
    expect(() => kexec.loadSync({ kernel: fifo, cmdline: '' })).toThrow(expect.objectContaining({ code: 'EINVAL', path: fifo }) as Error);
    expect(openFds()).toEqual(before);
  });

  it('a FIFO as the initrd is refused naming the initrd; a directory too', async () => {
    const fifo = path.join(dir, 'initrd.fifo');
    fs.rmSync(fifo, { force: true });
    expect(spawnSyncOk('mkfifo', [fifo])).toBe(true);
    const kernel = path.join(dir, 'bzImage');
    fs.writeFileSync(kernel, 'not really a kernel');
    const before = openFds();
    await expect(withinTwoSeconds(kexec.load({ kernel, initrd: fifo, cmdline: '' }), fifo)).rejects.toMatchObject({ code: 'EINVAL', path: fifo });
    await expect(kexec.load({ kernel: dir, cmdline: '' })).rejects.toMatchObject({ code: 'EINVAL', path: dir });
    await expect(kexec.load({ kernel: path.join(dir, 'missing'), cmdline: '' })).rejects.toMatchObject({ code: 'ENOENT', path: path.join(dir, 'missing') });
    expect(openFds()).toEqual(before);
  });

  it('regular files go on to kexec_file_load (which this container refuses), leaking nothing', async () => {
    const kernel = path.join(dir, 'bzImage');
    fs.writeFileSync(kernel, 'not really a kernel');
    const before = openFds();
    await expect(kexec.load({ kernel, initrd: kernel, cmdline: 'x' })).rejects.toMatchObject({ syscall: 'kexec_file_load', path: kernel });
    expect(() => kexec.loadSync({ kernel, cmdline: 'x' })).toThrow(expect.objectContaining({ syscall: 'kexec_file_load' }) as Error);
    expect(openFds()).toEqual(before);
  });
});

function spawnSyncOk(command: string, args: string[]): boolean {
  return spawnSync(command, args).status === 0;
}
