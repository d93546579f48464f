/**
 * Fd passing without a syscall more than the kernel needs. A send no longer
 * asks the socket's type first (getsockopt SO_TYPE): its first sendmsg is
 * laid out as on a seqpacket socket and addressed so that only a connected
 * seqpacket socket takes it; every other socket refuses it untouched, and
 * the refusal says which layout to use (a stream: EISCONN) or that the type
 * must be asked (a datagram, or no Unix socket at all). These tests hold the
 * guarantees that came with the type check: each socket type still gets its
 * own layout, a socket that is not Unix still gets a clear typed error, and
 * the syscalls a round trip makes are counted, as the kernel sees them.
 */
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recvFds, recvFdsSync, sendFds, sendFdsSync, socketPair } from '../lib/fdpass.js';
import { NotUnixSocketError } from '../lib/index.js';
import { native } from '../lib/native.js';
import { ROOT } from './helpers/child.js';
import { closeAll, contentOf, expectNoFdLeak, memfdWith } from './helpers/fds.js';

const DIST = path.join(ROOT, 'dist', 'index.js');

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-fast-path-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The fd under a node socket (its libuv handle's), which this test reads directly. */
function handleFd(socket: net.Socket | dgram.Socket): number {
  const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
  expect(fd).toBeGreaterThanOrEqual(0);
  return fd;
}

/** Nothing waits to be read on `fd` (poll, without waiting). */
function nothingArrived(fd: number): boolean {
  return !native.readableNow(fd);
}

describe('each socket type still gets its own layout, without the type asked first', () => {
  it('a seqpacket message of bytes and an fd arrives whole, in both forms', async () => {
    const [a, b] = socketPair('seqpacket');
    const file = memfdWith('seqpacket');
    try {
      sendFdsSync(a, [file], 'one');
      await sendFds(a, [file], 'two');
      const first = recvFdsSync(b);
      const second = await recvFds(b);
      expect(first.data.toString()).toBe('one');
      expect(second.data.toString()).toBe('two');
      expect(first.fds.map(contentOf)).toEqual(['seqpacket']);
      expect(second.fds.map(contentOf)).toEqual(['seqpacket']);
      closeAll([...first.fds, ...second.fds]);
    } finally {
      closeAll([a, b, file]);
    }
  });

  it('on a stream, each message is a frame: two queued back to back come out as two, each with its own fd', async () => {
    const [a, b] = socketPair('stream');
    const one = memfdWith('first');
    const two = memfdWith('second');
    try {
      sendFdsSync(a, [one], 'frame one');
      await sendFds(a, [two], 'frame two, longer');
      // The frame's header, read off the wire: magic "LUFD" and the length.
      const first = recvFdsSync(b);
      expect(first.data.toString()).toBe('frame one');
      expect(first.fds.map(contentOf)).toEqual(['first']);
      const second = recvFdsSync(b);
      expect(second.data.toString()).toBe('frame two, longer');
      expect(second.fds.map(contentOf)).toEqual(['second']);
      closeAll([...first.fds, ...second.fds]);
    } finally {
      closeAll([a, b, one, two]);
    }
  });

  it('on a stream, the frame is what the wire carries: an 8-byte header then the bytes', () => {
    const [a, b] = socketPair('stream');
    try {
      sendFdsSync(a, [], 'abc');
      const raw = recvFdsSync(b, { framing: 'none' });
      expect([...raw.data]).toEqual([0x4c, 0x55, 0x46, 0x44, 0, 0, 0, 3, 0x61, 0x62, 0x63]);
    } finally {
      closeAll([a, b]);
    }
  });

  it('an empty raw message is one NUL byte on a stream (fds need a byte to ride on), and an empty record on seqpacket', () => {
    const [s1, s2] = socketPair('stream');
    const [q1, q2] = socketPair('seqpacket');
    const file = memfdWith('empty');
    try {
      sendFdsSync(s1, [file], '', { framing: 'none' });
      sendFdsSync(q1, [file], '', { framing: 'none' });
      const stream = recvFdsSync(s2, { framing: 'none' });
      const record = recvFdsSync(q2, { framing: 'none' });
      expect([...stream.data]).toEqual([0]);
      expect(record.data.length).toBe(0);
      expect([...stream.fds, ...record.fds].map(contentOf)).toEqual(['empty', 'empty']);
      closeAll([...stream.fds, ...record.fds]);
    } finally {
      closeAll([s1, s2, q1, q2, file]);
    }
  });

  it('a datagram pair, whose refusal of the addressed attempt makes the send ask the type, still carries message and fd in both forms', async () => {
    const [a, b] = socketPair('dgram');
    const file = memfdWith('datagram');
    try {
      sendFdsSync(a, [file], 'sync');
      await sendFds(a, [file], 'promise');
      const first = recvFdsSync(b);
      const second = await recvFds(b);
      expect([first.data.toString(), second.data.toString()]).toEqual(['sync', 'promise']);
      expect([...first.fds, ...second.fds].map(contentOf)).toEqual(['datagram', 'datagram']);
      closeAll([...first.fds, ...second.fds]);
    } finally {
      closeAll([a, b, file]);
    }
  });

  it('a raw read of nothing asks the type to tell it: EOF on a stream and a seqpacket socket, an empty message on a datagram one', async () => {
    for (const type of ['stream', 'seqpacket'] as const) {
      const [a, b] = socketPair(type);
      fs.closeSync(a);
      expect(recvFdsSync(b, { framing: 'none' })).toMatchObject({ eof: true, fds: [] });
      expect(await recvFds(b, { framing: 'none' })).toMatchObject({ eof: true, fds: [] });
      fs.closeSync(b);
    }
    const [a, b] = socketPair('dgram');
    try {
      sendFdsSync(a, [], '', { framing: 'none' });
      const empty = recvFdsSync(b, { framing: 'none' });
      expect(empty.eof).toBe(false);
      expect(empty.data.length).toBe(0);
    } finally {
      closeAll([a, b]);
    }
  });

  it('a raw record longer than maxBytes is still a MessageTruncatedError with its real length, read without the type', () => {
    const [a, b] = socketPair('seqpacket');
    try {
      sendFdsSync(a, [], 'twelve bytes', { framing: 'none' });
      expect(() => recvFdsSync(b, { framing: 'none', maxBytes: 5 })).toThrow(expect.objectContaining({ code: 'ERR_LIVEUPDATE_MESSAGE_TRUNCATED', length: 12 }) as Error);
    } finally {
      closeAll([a, b]);
    }
  });

  it("a stream socket that is not connected gets the kernel's own error (ENOTCONN), as before", async () => {
    const listener = native.unixBind(native.SOCK_STREAM, `@liveupdate-fast-path-${process.pid}`);
    try {
      expect(() => sendFdsSync(listener, [], 'x')).toThrow(expect.objectContaining({ code: 'ENOTCONN', syscall: 'sendmsg' }) as Error);
      await expect(sendFds(listener, [], 'x')).rejects.toMatchObject({ code: 'ENOTCONN', syscall: 'sendmsg' });
    } finally {
      fs.closeSync(listener);
    }
  });
});

describe('a socket that is not a Unix socket is refused with a typed error, and its peer gets nothing', () => {
  // The kernel lets TCP and UDP sockets take SCM_RIGHTS and drops the fds
  // without a word: a send that "succeeded" there would lose them.
  const refused = { code: 'EAFNOSUPPORT', errno: -os.constants.errno.EAFNOSUPPORT, syscall: 'sendmsg', operation: 'sendFds' };

  it('TCP, with and without fds, in both forms', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise<void>((resolve) => client.once('connect', resolve));
    const peer = await accepted;
    peer.pause();
    const file = memfdWith('tcp');
    try {
      await expectNoFdLeak(async () => {
        const fd = handleFd(client);
        for (const fds of [[file], []]) {
          expect(() => sendFdsSync(fd, fds, 'x')).toThrow(expect.objectContaining(refused) as Error);
          expect(() => sendFdsSync(fd, fds, 'x')).toThrow(NotUnixSocketError);
          await expect(sendFds(fd, fds, 'x')).rejects.toBeInstanceOf(NotUnixSocketError);
          await expect(sendFds(fd, fds, 'x')).rejects.toMatchObject(refused);
        }
      });
      expect(nothingArrived(handleFd(peer))).toBe(true);
    } finally {
      fs.closeSync(file);
      client.destroy();
      peer.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('UDP, with and without fds, in both forms', async () => {
    const receiver = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => receiver.bind(0, '127.0.0.1', resolve));
    const sender = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => sender.connect(receiver.address().port, '127.0.0.1', resolve));
    const file = memfdWith('udp');
    try {
      const fd = handleFd(sender);
      for (const fds of [[file], []]) {
        expect(() => sendFdsSync(fd, fds, 'x')).toThrow(expect.objectContaining(refused) as Error);
        expect(() => sendFdsSync(fd, fds, 'x')).toThrow(/is not a Unix socket: fds pass over AF_UNIX sockets only/);
        await expect(sendFds(fd, fds, 'x')).rejects.toBeInstanceOf(NotUnixSocketError);
        await expect(sendFds(fd, fds, 'x')).rejects.toMatchObject(refused);
      }
      expect(nothingArrived(handleFd(receiver))).toBe(true);
    } finally {
      fs.closeSync(file);
      sender.close();
      receiver.close();
    }
  });

  it('a file that is not a socket is ENOTSOCK from the send itself', async () => {
    const [r, w] = native.pipe();
    try {
      expect(() => sendFdsSync(w, [], 'x')).toThrow(expect.objectContaining({ code: 'ENOTSOCK', syscall: 'sendmsg' }) as Error);
      expect(() => sendFdsSync(w, [], 'x')).toThrow(NotUnixSocketError);
      await expect(sendFds(w, [], 'x')).rejects.toMatchObject({ code: 'ENOTSOCK', syscall: 'sendmsg' });
    } finally {
      closeAll([r, w]);
    }
  });
});

describe('a receive done within its call writes into buffers of its own environment', () => {
  it('a Worker and the main thread receiving at the same time each read their own messages and fds', async () => {
    // Each environment registers its buffers once; were they shared, one
    // thread would read the other's bytes and fd numbers.
    const rounds = 2000;
    const script = `
const { parentPort } = require('node:worker_threads');
const lu = require(${JSON.stringify(DIST)});
const fs = require('fs');
const [a, b] = lu.socketPair('seqpacket');
const file = lu.memfd.createSync('worker');
fs.writeSync(file, 'worker');
let wrong = 0;
for (let i = 0; i < ${rounds}; i++) {
  lu.sendFdsSync(a, [file], 'worker ' + i);
  const got = lu.recvFdsSync(b);
  if (got.data.toString() !== 'worker ' + i || fs.readFileSync('/proc/self/fd/' + got.fds[0], 'utf8') !== 'worker') wrong++;
  fs.closeSync(got.fds[0]);
}
parentPort.postMessage(wrong);
`;
    const worker = new Worker(script, { eval: true });
    const done = new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const [a, b] = socketPair('seqpacket');
    const file = memfdWith('main');
    let wrong = 0;
    try {
      for (let i = 0; i < rounds; i++) {
        sendFdsSync(a, [file], `main ${i}`);
        const got = recvFdsSync(b);
        if (got.data.toString() !== `main ${i}` || contentOf(got.fds[0]!) !== 'main') wrong++;
        closeAll(got.fds);
        if (i % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      expect(wrong).toBe(0);
      expect(await done).toBe(0);
    } finally {
      closeAll([a, b, file]);
      await worker.terminate();
    }
  });

  it('the binding registers them once per environment: a second registration (another copy of the package) gets the first pair, and receives stay right', () => {
    const [a, b] = socketPair('seqpacket');
    sendFdsSync(a, [], 'x');
    expect(recvFdsSync(b).data.toString()).toBe('x'); // Registered by now, if not before.
    const [data, meta, args] = native.setRooms(Buffer.alloc(65536), new Int32Array(258), new Int32Array(258));
    expect(data.length).toBeGreaterThanOrEqual(65536);
    expect(meta).toBeInstanceOf(Int32Array);
    expect(args).toBeInstanceOf(Int32Array);
    const again = native.setRooms(Buffer.alloc(65536), new Int32Array(258), new Int32Array(258));
    expect(again[0]).toBe(data);
    expect(again[2]).toBe(args);
    sendFdsSync(a, [], 'y');
    expect(recvFdsSync(b).data.toString()).toBe('y');
    closeAll([a, b]);
  });

  it('the calls reading their numbers from the registered args check each as the positional forms do: RangeError, nothing sent', () => {
    const [a, b] = socketPair('seqpacket');
    try {
      sendFdsSync(a, [], 'x');
      recvFdsSync(b); // Registered by now.
      const args = native.setRooms(Buffer.alloc(65536), new Int32Array(258), new Int32Array(258))[2];
      const range = expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', name: 'RangeError' }) as unknown as Error;
      // A send's slots: fd, framing, timeout, length in data (-1: the argument), fd count, fds.
      const send = [a, 0, -1, 1, 1, a];
      for (const [slot, value] of [[0, -1], [1, 2], [2, -2], [3, -2], [3, 65537], [4, 254], [5, -1]] as const) {
        args.set(send);
        args[slot] = value;
        expect(() => native.sendFdsArgs(undefined)).toThrow(range);
      }
      // A receive's: fd, maxBytes, maxFds, framing, into.
      const recv = [b, 16, 1, 0, 1];
      for (const [slot, value] of [[0, -1], [1, -1], [2, 254], [3, 2], [4, 2]] as const) {
        args.set(recv);
        args[slot] = value;
        expect(() => native.recvFdsArgs()).toThrow(range);
      }
      expect(native.readableNow(b)).toBe(false);
    } finally {
      closeAll([a, b]);
    }
  });
});

/**
 * The syscalls the main thread makes between two marker writes while a
 * fresh node runs `body` (CommonJS: `lu` is the package, `a`, `b` a
 * socketpair of `type`, `file` a memfd), as strace sees them.
 */
function syscallsOf(type: string, body: string): string[] {
  const trace = path.join(tmp, `${type}.strace`);
  const script = `
const lu = require(${JSON.stringify(DIST)});
const fs = require('fs');
const [a, b] = lu.socketPair(${JSON.stringify(type)});
const file = lu.memfd.createSync('traced');
const round = () => { ${body} };
for (let i = 0; i < 100; i++) round();
fs.writeSync(1, 'BEGIN\\n');
round();
fs.writeSync(1, 'END\\n');
`;
  // Every syscall on a socket or an fd, not memory's (mmap takes an fd, and V8's heap may grow at any time).
  const traced = 'trace=%network,read,write,close,fcntl,ioctl,poll,ppoll,dup,dup3,fstat,newfstatat,statx,epoll_ctl';
  const out = spawnSync('strace', ['-f', '-qq', '-o', trace, '-e', traced, process.execPath, '-e', script], { encoding: 'utf8' });
  expect(out.status, out.stderr).toBe(0);
  const lines = fs.readFileSync(trace, 'utf8').split('\n');
  // The thread that wrote the markers is node's main thread (strace's
  // own pid is not node's: it starts node as its child).
  const begin = lines.findIndex((line) => line.includes('"BEGIN\\n"'));
  expect(begin).toBeGreaterThan(0);
  const thread = /^\d+/.exec(lines[begin]!)![0];
  const mainThread = (line: string): boolean => line.startsWith(`${thread} `);
  const end = lines.findIndex((line) => mainThread(line) && line.includes('"END\\n"'));
  return lines
    .slice(begin + 1, end)
    .filter(mainThread)
    .map((line) => /^\d+\s+(\w+)\(/.exec(line)?.[1] ?? line);
}

describe('the syscalls of a round trip, counted by strace', () => {
  const closing = 'const got = lu.recvFdsSync(b); fs.closeSync(got.fds[0]);';

  it('seqpacket: one sendmsg, then the receive asks the type (its framing depends on it) and makes one recvmsg', () => {
    expect(syscallsOf('seqpacket', `lu.sendFdsSync(a, [file], 'x'); ${closing}`)).toEqual(['sendmsg', 'getsockopt', 'recvmsg', 'close']);
  });

  it('stream: the refused sendmsg that tells the type, the frame, then the type and the header and body reads', () => {
    expect(syscallsOf('stream', `lu.sendFdsSync(a, [file], 'x'); ${closing}`)).toEqual(['sendmsg', 'sendmsg', 'getsockopt', 'recvmsg', 'recvmsg', 'close']);
  });

  it('raw bytes take one sendmsg and one recvmsg on any type: neither their layout nor their read depends on it', () => {
    const raw = `lu.sendFdsSync(a, [file], 'x', { framing: 'none' }); const got = lu.recvFdsSync(b, { framing: 'none' }); fs.closeSync(got.fds[0]);`;
    expect(syscallsOf('stream', raw)).toEqual(['sendmsg', 'recvmsg', 'close']);
    expect(syscallsOf('seqpacket', raw)).toEqual(['sendmsg', 'recvmsg', 'close']);
  });
});
