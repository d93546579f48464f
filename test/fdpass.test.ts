import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControlTruncatedError,
  FramingError,
  MessageTruncatedError,
  recvFds,
  recvFdsSync,
  sendFds,
  sendFdsSync,
  socketPair,
  type RecvResult,
  type UnixSocketType,
} from '../lib/fdpass.js';
import { BadFileDescriptorError, LiveUpdateError, PeerClosedError } from '../lib/errors.js';
import { native } from '../lib/native.js';
import { compiledLib, removeCompiledLib, runChild, sha256 } from './helpers/child.js';
import { closeAll, contentOf, expectNoFdLeak, memfdWith, openFds } from './helpers/fds.js';

const TYPES: UnixSocketType[] = ['stream', 'seqpacket', 'dgram'];

/** FD_CLOEXEC as the kernel reports it in fdinfo (O_CLOEXEC = 02000000). */
function isCloexec(fd: number): boolean {
  const flags = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/^flags:\s+(\d+)/m)?.[1] ?? '0';
  return (parseInt(flags, 8) & 0o2000000) !== 0;
}

/** An fd number that is certainly not open: a syscall on it would fail with EBADF. */
const NOT_OPEN = 2_000_000_000;

beforeAll(() => {
  compiledLib();
}, 60_000);
afterAll(() => removeCompiledLib());

// The child receives with this package's recvFdsSync (fd 3 is its socket end),
// hashes each fd's content via pread, and reports FD_CLOEXEC per fd.
const RECEIVER = `
const fs = require('fs'); const crypto = require('crypto');
const { recvFdsSync } = require(lib + '/fdpass.js');
const { native } = require(lib + '/native.js');
const msg = recvFdsSync(3);
const hashes = msg.fds.map((fd) => {
  const size = fs.fstatSync(fd).size; const buf = Buffer.alloc(size); fs.readSync(fd, buf, 0, size, 0);
  return crypto.createHash('sha256').update(buf).digest('hex');
});
console.log(JSON.stringify({ data: msg.data.toString(), hashes, cloexec: msg.fds.map((fd) => native.getCloexec(fd)) }));
`;

interface Received {
  data: string;
  hashes: string[];
  cloexec: number[];
}

describe('a child process receives memfds and reads each', () => {
  for (const type of TYPES) {
    for (const count of [1, 200]) {
      it(`${count} memfd(s) over ${type}`, async () => {
        await expectNoFdLeak(async () => {
          const texts = Array.from({ length: count }, (_, i) => `memfd ${i} over ${type}: ${'x'.repeat(i)}`);
          const memfds = texts.map(memfdWith);
          const [mine, theirs] = socketPair(type);
          try {
            const child = runChild<Received>(RECEIVER, [theirs]);
            fs.closeSync(theirs);
            await sendFds(mine, memfds, `hello ${count}`);
            const { value, code, stderr } = await child;
            expect(code, stderr).toBe(0);
            expect(value.data).toBe(`hello ${count}`);
            expect(value.hashes).toEqual(texts.map(sha256));
            expect(value.cloexec).toEqual(texts.map(() => 1));
          } finally {
            closeAll([mine, ...memfds]);
          }
        });
      }, 30_000);
    }
  }
});

// The child makes its own memfds and sends them with sendFdsSync.
const SENDER = `
const fs = require('fs');
const { sendFdsSync } = require(lib + '/fdpass.js');
const { native } = require(lib + '/native.js');
const fds = [0, 1, 2].map((i) => { const fd = native.memfdCreate('child', 1); fs.writeSync(fd, 'child memfd ' + i); return fd; });
sendFdsSync(3, fds, 'from the child');
console.log(JSON.stringify({ sent: fds.length }));
`;

describe('the parent receives on the event loop what a child sends', () => {
  for (const type of TYPES) {
    it(`over ${type}`, async () => {
      await expectNoFdLeak(async () => {
        const [mine, theirs] = socketPair(type);
        try {
          const pending = recvFds(mine);
          // Settled (rejected) at the socket's close below if the child fails first.
          pending.catch(() => undefined);
          const child = runChild<{ sent: number }>(SENDER, [theirs]);
          fs.closeSync(theirs);
          // A child that dies sends nothing, and a datagram socket never sees its peer go: its failure ends the wait.
          const msg = await Promise.race([pending, child.then(() => pending)]);
          expect((await child).value.sent).toBe(3);
          expect(msg.data.toString()).toBe('from the child');
          expect(msg.fds.map(contentOf)).toEqual(['child memfd 0', 'child memfd 1', 'child memfd 2']);
          expect(msg.fds.map(isCloexec)).toEqual([true, true, true]);
          closeAll(msg.fds);
        } finally {
          fs.closeSync(mine);
        }
      });
    }, 30_000);
  }
});

describe('messages and their fds stay together', () => {
  it('keeps each frame with its own fds on a stream, in both forms', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      const m1 = memfdWith('one');
      const m2 = memfdWith('two');
      try {
        sendFdsSync(a, [], 'no fds');
        sendFdsSync(a, [m1], 'with one');
        await sendFds(a, [], '');
        await sendFds(a, [m2, m1], 'with two');
        const r1 = recvFdsSync(b);
        const r2 = await recvFds(b);
        const r3 = recvFdsSync(b);
        const r4 = await recvFds(b);
        expect([r1, r2, r3, r4].map((r) => r.data.toString())).toEqual(['no fds', 'with one', '', 'with two']);
        expect([r1.fds.length, r3.fds.length]).toEqual([0, 0]);
        expect(r2.fds.map(contentOf)).toEqual(['one']);
        expect(r4.fds.map(contentOf)).toEqual(['two', 'one']);
        closeAll([...r2.fds, ...r4.fds]);
      } finally {
        closeAll([a, b, m1, m2]);
      }
    });
  });

  it('sends a message larger than the socket buffer with its fds once, the rest of the bytes after', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      const m = memfdWith('big');
      const big = Buffer.alloc(4 << 20, 7);
      try {
        // The receiver runs concurrently; the sender must wait for room several times.
        const [received] = await Promise.all([recvFds(b, { maxBytes: 8 << 20 }), sendFds(a, [m], big), sendFds(a, [], 'next')]);
        expect(received.data.equals(big)).toBe(true);
        expect(received.fds.map(contentOf)).toEqual(['big']);
        const next = await recvFds(b);
        expect([next.data.toString(), next.fds.length]).toEqual(['next', 0]);
        closeAll(received.fds);
      } finally {
        closeAll([a, b, m]);
      }
    });
  });

  it("with framing 'none', sends raw bytes (one NUL when empty) that a framed receiver refuses", async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      const m = memfdWith('raw');
      try {
        sendFdsSync(a, [m], '', { framing: 'none' });
        const raw = recvFdsSync(b, { framing: 'none' });
        expect([...raw.data]).toEqual([0]);
        expect(raw.fds.map(contentOf)).toEqual(['raw']);
        closeAll(raw.fds);
        sendFdsSync(a, [m], 'not a frame', { framing: 'none' });
        const before = openFds();
        expect(() => recvFdsSync(b)).toThrow(FramingError);
        expect(openFds()).toEqual(before);
      } finally {
        closeAll([a, b, m]);
      }
    });
  });

  it('reports the end of the stream, and EOF in mid-frame', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      try {
        native.sendFds(a, Buffer.from('LUFD\0\0\0\x09abc'), [], 1); // A header promising 9 bytes, then 3.
        const pending = recvFds(b);
        fs.closeSync(a);
        await expect(pending).rejects.toMatchObject({ code: 'ERR_LIVEUPDATE_SHORT_FRAME' });
        expect(await recvFds(b)).toEqual({ fds: [], data: Buffer.alloc(0), eof: true });
      } finally {
        fs.closeSync(b);
      }
    });
  });
});

describe('truncation closes every fd that arrived', () => {
  for (const type of TYPES) {
    it(`MSG_CTRUNC over ${type}: typed error, no fd leaked, next message intact`, async () => {
      await expectNoFdLeak(async () => {
        const [a, b] = socketPair(type);
        const memfds = [1, 2, 3, 4, 5].map((i) => memfdWith(`m${i}`));
        try {
          await sendFds(a, memfds, 'five');
          const before = openFds();
          const error = await recvFds(b, { maxFds: 2 }).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(ControlTruncatedError);
          // All five arrive (the control buffer has room beyond maxFds for what
          // SO_PASSCRED/SO_PASSPIDFD add) and all five are closed.
          expect(error).toMatchObject({ code: 'ERR_LIVEUPDATE_FDS_TRUNCATED', closedFds: 5, operation: 'recvFds', errno: undefined });
          // One error model: the fd-passing errors are LiveUpdateErrors too.
          expect(error).toBeInstanceOf(LiveUpdateError);
          expect(openFds()).toEqual(before);
          sendFdsSync(a, memfds.slice(0, 2), 'two');
          expect(() => recvFdsSync(b, { maxFds: 1 })).toThrow(ControlTruncatedError);
          expect(openFds()).toEqual(before);
          await sendFds(a, [memfds[0] ?? -1], 'after');
          const after = recvFdsSync(b, { maxFds: 1 });
          expect([after.data.toString(), after.fds.map(contentOf)]).toEqual(['after', ['m1']]);
          closeAll(after.fds);
        } finally {
          closeAll([a, b, ...memfds]);
        }
      });
    });
  }

  it('maxFds 0 refuses any fd', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('seqpacket');
      const m = memfdWith('z');
      try {
        sendFdsSync(a, [m], 'x');
        expect(() => recvFdsSync(b, { maxFds: 0 })).toThrow(ControlTruncatedError);
      } finally {
        closeAll([a, b, m]);
      }
    });
  });

  for (const type of ['dgram', 'stream'] as const) {
    it(`a message over maxBytes over ${type}: typed error with its length, fds closed, next one read`, async () => {
      await expectNoFdLeak(async () => {
        const [a, b] = socketPair(type);
        const m = memfdWith('long');
        try {
          sendFdsSync(a, [m], 'y'.repeat(100));
          sendFdsSync(a, [], 'short');
          const error = await recvFds(b, { maxBytes: 10 }).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(MessageTruncatedError);
          expect(error).toMatchObject({ code: 'ERR_LIVEUPDATE_MESSAGE_TRUNCATED', length: 100, closedFds: 1 });
          expect(recvFdsSync(b, { maxBytes: 10 }).data.toString()).toBe('short');
        } finally {
          closeAll([a, b, m]);
        }
      });
    });
  }
});

describe('validation happens before any syscall', () => {
  // A socket fd that is not open: reaching a syscall would give EBADF instead.
  const cases: Array<[string, () => unknown, string]> = [
    ['254 fds', () => sendFdsSync(NOT_OPEN, new Array<number>(254).fill(0)), 'ERR_OUT_OF_RANGE'],
    ['a negative fd', () => sendFdsSync(NOT_OPEN, [-1]), 'ERR_OUT_OF_RANGE'],
    ['a non-integer fd', () => sendFdsSync(NOT_OPEN, [1.5]), 'ERR_OUT_OF_RANGE'],
    ['fds not an array', () => sendFdsSync(NOT_OPEN, 3 as unknown as number[]), 'ERR_INVALID_ARG_TYPE'],
    ['data of the wrong type', () => sendFdsSync(NOT_OPEN, [], 42 as unknown as string), 'ERR_INVALID_ARG_TYPE'],
    ['a socket of the wrong type', () => sendFdsSync('x' as unknown as number, []), 'ERR_INVALID_ARG_TYPE'],
    ['an unknown framing', () => sendFdsSync(NOT_OPEN, [], '', { framing: 'x' as 'none' }), 'ERR_INVALID_ARG_VALUE'],
    ['maxFds over 253', () => recvFdsSync(NOT_OPEN, { maxFds: 254 }), 'ERR_OUT_OF_RANGE'],
    ['maxBytes negative', () => recvFdsSync(NOT_OPEN, { maxBytes: -1 }), 'ERR_OUT_OF_RANGE'],
    ['options not an object', () => recvFdsSync(NOT_OPEN, 5 as unknown as object), 'ERR_INVALID_ARG_TYPE'],
  ];
  for (const [what, call, code] of cases) {
    it(`refuses ${what} with ${code}`, () => {
      const before = openFds();
      expect(call).toThrow(expect.objectContaining({ code }) as unknown as Error);
      expect(openFds()).toEqual(before);
    });
  }

  it('rejects the Promise forms the same way', async () => {
    await expect(sendFds(NOT_OPEN, new Array<number>(254).fill(0))).rejects.toThrow(RangeError);
    await expect(recvFds(NOT_OPEN, { maxFds: 300 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  });

  it('passes 253 fds, the most one message takes', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('seqpacket');
      const m = memfdWith('many');
      try {
        await sendFds(a, new Array<number>(253).fill(m));
        const msg = await recvFds(b);
        expect(msg.fds).toHaveLength(253);
        expect(new Set(msg.fds.map((fd) => fs.fstatSync(fd).ino))).toEqual(new Set([fs.fstatSync(m).ino]));
        closeAll(msg.fds);
      } finally {
        closeAll([a, b, m]);
      }
    });
  });

  it('reports kernel failures as Node-style system errors', async () => {
    const [a, b] = socketPair('stream');
    fs.closeSync(b);
    const peerClosed = sendFds(a, [], 'x');
    await expect(peerClosed).rejects.toBeInstanceOf(PeerClosedError);
    await expect(peerClosed).rejects.toMatchObject({ code: 'EPIPE', syscall: 'sendmsg', errno: -os.constants.errno.EPIPE, operation: 'sendFds', fd: a });
    fs.closeSync(a);
    expect(() => recvFdsSync(NOT_OPEN)).toThrow(BadFileDescriptorError);
    expect(() => recvFdsSync(NOT_OPEN)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fstat', message: `EBADF: fd ${NOT_OPEN} is not an open file descriptor, fstat` }) as unknown as Error);
    const pipe = native.pipe();
    expect(() => recvFdsSync(pipe[0])).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }) as unknown as Error);
    closeAll(pipe);
  });
});

describe('the event loop drives pending operations', () => {
  it('keeps the thread pool free while many receives wait', async () => {
    await expectNoFdLeak(async () => {
      // More waiting receives than libuv has pool threads (4): were each one
      // parked on a thread, the file read below could never run.
      const pairs = Array.from({ length: 12 }, () => socketPair('dgram'));
      try {
        const pending = pairs.map(([, b]) => recvFds(b));
        const text = await fs.promises.readFile(__filename, 'utf8');
        expect(text.length).toBeGreaterThan(0);
        pairs.forEach(([a], i) => sendFdsSync(a, [], `m${i}`));
        const got = await Promise.all(pending);
        expect(got.map((r) => r.data.toString())).toEqual(pairs.map((_, i) => `m${i}`));
      } finally {
        closeAll(pairs.flat());
      }
    });
  });

  it('cancels a pending receive with an AbortSignal, leaking nothing', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      try {
        const controller = new AbortController();
        const pending = recvFds(b, { signal: controller.signal });
        setTimeout(() => controller.abort(), 20);
        await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
        await expect(recvFds(b, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
      } finally {
        closeAll([a, b]);
      }
    });
  });

  it('runs concurrent sends on one stream one after another', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      try {
        const blobs = [1, 2, 3].map((i) => Buffer.alloc(1 << 20, i));
        const sends = blobs.map((blob) => sendFds(a, [], blob));
        const got: RecvResult[] = [];
        for (let i = 0; i < 3; i++) got.push(await recvFds(b, { maxBytes: 2 << 20 }));
        await Promise.all(sends);
        expect(got.map((r) => r.data.equals(blobs[got.indexOf(r)] ?? Buffer.alloc(0)))).toEqual([true, true, true]);
      } finally {
        closeAll([a, b]);
      }
    });
  });
});

describe('worker threads', () => {
  it('a Worker that exits with a receive pending leaves the socket alone', async () => {
    const [a, b] = socketPair('stream');
    try {
      const worker = new Worker(
        `const { parentPort, workerData } = require('worker_threads');
         const { recvFds } = require(workerData.lib + '/fdpass.js');
         recvFds(workerData.fd).then(() => parentPort.postMessage('received'));
         parentPort.postMessage('waiting');`,
        { eval: true, workerData: { fd: b, lib: compiledLib() } },
      );
      const messages: unknown[] = [];
      worker.on('message', (m: unknown) => messages.push(m));
      await new Promise((resolve) => worker.once('message', resolve));
      await worker.terminate(); // Node aborts here if the pending poll handle were left open.
      sendFdsSync(a, [], 'for the main thread');
      expect(recvFdsSync(b).data.toString()).toBe('for the main thread');
      expect(messages).toEqual(['waiting']);
    } finally {
      closeAll([a, b]);
    }
  }, 30_000);
});

describe('net.Socket', () => {
  it('receives before Node reads, and sends, on an accepted connection', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-net-'));
    const address = path.join(dir, 'agent.sock');
    const m = memfdWith('guest memory');
    const server = net.createServer();
    try {
      await new Promise<void>((resolve) => server.listen(address, resolve));
      await expectNoFdLeak(async () => {
        const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
        const client = native.unixConnect(native.SOCK_STREAM, address);
        sendFdsSync(client, [m], 'memfd for vm1'); // Queued before Node even accepts.
        const socket = await accepted;
        const msg = await recvFds(socket);
        expect(msg.data.toString()).toBe('memfd for vm1');
        expect(msg.fds.map(contentOf)).toEqual(['guest memory']);
        await sendFds(socket, msg.fds, 'ack');
        const ack = recvFdsSync(client);
        expect([ack.data.toString(), ack.fds.map(contentOf)]).toEqual(['ack', ['guest memory']]);
        closeAll([...msg.fds, ...ack.fds, client]);
        socket.destroy();
        await new Promise((resolve) => socket.once('close', resolve));
      });
    } finally {
      server.close();
      fs.closeSync(m);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a socket in flowing mode', async () => {
    const [a, b] = socketPair('stream');
    const socket = new net.Socket({ fd: b, readable: true, writable: true });
    try {
      socket.on('data', () => undefined);
      await expect(recvFds(socket)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    } finally {
      socket.destroy();
      fs.closeSync(a);
    }
  });

  it('refuses a socket whose bytes Node already read ahead', async () => {
    const [a, b] = socketPair('stream');
    // Not flowing, but Node starts reading into its buffer as soon as it wraps the fd.
    const socket = new net.Socket({ fd: b, readable: true, writable: true });
    try {
      native.sendFds(a, Buffer.from('stolen'), [], 1);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(socket.readableLength).toBeGreaterThan(0);
      await expect(recvFds(socket)).rejects.toThrow(/already read/);
    } finally {
      socket.destroy();
      fs.closeSync(a);
    }
  });
});
