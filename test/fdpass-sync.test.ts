/**
 * Fd passing at the kernel's speed, and the guarantees that survive it. The
 * synchronous forms act on the caller's own numbers and bytes (no copy), so
 * they work where no copy can be made; a Promise form is tried at once and
 * copies only when it has to wait, and then acts on its copies as before.
 * Results never share memory with one another, and a stream left out of step
 * is refused however little else the process tracks.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramingError, MessageTruncatedError, recvFds, recvFdsSync, sendFds, sendFdsSync, socketPair, StreamOutOfStepError } from '../lib/fdpass.js';
import { native } from '../lib/native.js';
import { ROOT } from './helpers/child.js';
import { closeAll, contentOf, expectNoFdLeak, memfdWith } from './helpers/fds.js';

const DIST = path.join(ROOT, 'dist', 'index.js');

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-sync-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * Runs `body` (CommonJS, `lu` is the package) in a fresh node with at most
 * 64 fds, the table filled up to `free` free slots, and returns the JSON it
 * printed last. The sanitizer build stays out: its runtime needs fds of its own.
 */
function withFullTable(free: number, body: string): Record<string, unknown> {
  const script = `
const lu = require(${JSON.stringify(DIST)});
const fs = require('fs');
const out = {};
const filler = [];
function fill() {
  for (;;) { try { filler.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; break; } }
  for (let i = 0; i < ${free}; i++) fs.closeSync(filler.pop());
}
(async () => {
${body}
})().then(() => console.log(JSON.stringify(out)), (e) => console.log(JSON.stringify({ crashed: String(e && e.stack) })));
`;
  const file = path.join(tmp, `child-${process.hrtime.bigint()}.js`);
  fs.writeFileSync(file, script);
  const env = { ...process.env };
  delete env['LD_PRELOAD'];
  delete env['LIVEUPDATE_ADDON'];
  const run = spawnSync('bash', ['-c', 'ulimit -n 64; exec "$0" "$1"', process.execPath, file], { env, encoding: 'utf8', timeout: 30_000 });
  const line = run.stdout.trim().split('\n').pop() ?? '';
  expect(line, run.stderr).not.toBe('');
  return JSON.parse(line) as Record<string, unknown>;
}

describe('the synchronous forms act on the caller\'s own fds', () => {
  it('send and receive with no fd to spare: a send needs no free slot, a receive only the one its fd arrives in', () => {
    const out = withFullTable(
      0,
      `
const m = lu.memfd.createSync('full');
fs.writeSync(m, 'the file');
const [a, b] = lu.socketPair('seqpacket');
fill();
try { lu.sendFdsSync(a, [m], 'one'); out.send = 'sent'; } catch (e) { out.send = e.code + ' ' + e.syscall; }
fs.closeSync(filler.pop()); // The one slot the received fd takes.
if (out.send === 'sent') try { const got = lu.recvFdsSync(b); const text = Buffer.alloc(8); fs.readSync(got.fds[0], text, 0, 8, 0); out.received = [got.data.toString(), text.toString()]; fs.closeSync(got.fds[0]); }
catch (e) { out.received = e.code + ' ' + e.syscall; }
for (const fd of filler) fs.closeSync(fd);
`,
    );
    expect(out).toEqual({ send: 'sent', received: ['one', 'the file'] });
  });

  it('a Promise send the socket has room for goes at once, with no copy; one that must wait needs copies, and with none to make it fails, sending nothing', () => {
    const out = withFullTable(
      0,
      `
const m = lu.memfd.createSync('full');
const [a, b] = lu.socketPair('seqpacket');
fill();
try { await lu.sendFds(a, [m], 'at once'); out.atOnce = 'sent'; } catch (e) { out.atOnce = e.code + ' ' + e.syscall; }
// Fill the socket: the next send has to wait for room.
let filled = 0;
for (;;) { try { lu.sendFdsSync(a, [], 'filler', { timeout: 0 }); filled++; } catch (e) { out.fullWith = e.code; break; } }
try { await lu.sendFds(a, [m], 'must wait'); out.mustWait = 'sent'; } catch (e) { out.mustWait = e.code + ' ' + e.syscall; }
for (const fd of filler) fs.closeSync(fd);
// What arrived: the first message with its fd, then the filler, and nothing else.
const { native } = require(${JSON.stringify(path.join(ROOT, 'dist', 'native.js'))});
if (out.atOnce !== 'sent') return;
const first = lu.recvFdsSync(b);
out.first = [first.data.toString(), first.fds.length];
first.fds.forEach((fd) => fs.closeSync(fd));
const rest = new Set();
for (let i = 0; i < filled; i++) rest.add(lu.recvFdsSync(b).data.toString());
out.rest = [...rest];
try { native.waitReadable(b, 0); out.more = 'a message more'; } catch (e) { out.more = e.code; }
`,
    );
    expect(out).toEqual({ atOnce: 'sent', fullWith: 'ETIMEDOUT', mustWait: 'EMFILE sendmsg', first: ['at once', 1], rest: ['filler'], more: 'ETIMEDOUT' });
  });
});

describe('a Promise form goes at once when it can', () => {
  it('a send with room is in the socket before its Promise settles', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('seqpacket');
      const m = memfdWith('sent at once');
      const sending = sendFds(a, [m], 'now');
      fs.closeSync(m); // Closed before the Promise settles: the file went already.
      expect(native.waitReadable(b, 0)).toBe(true);
      await sending;
      const got = recvFdsSync(b);
      expect([got.data.toString(), got.fds.map(contentOf)]).toEqual(['now', ['sent at once']]);
      closeAll([...got.fds, a, b]);
    });
  });

  it('a receive that waits acts on its own copy: the caller closing and reusing the number changes nothing', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('seqpacket');
      const waiting = recvFds(b);
      fs.closeSync(b);
      const [reused, otherPeer] = socketPair('seqpacket');
      expect(reused).toBe(b);
      sendFdsSync(otherPeer, [], 'for the new socket');
      const m = memfdWith('for the first socket');
      sendFdsSync(a, [m], 'first');
      const got = await waiting;
      expect([got.data.toString(), got.fds.map(contentOf)]).toEqual(['first', ['for the first socket']]);
      // The new socket's message is still there, unread.
      expect(recvFdsSync(reused).data.toString()).toBe('for the new socket');
      closeAll([...got.fds, m, a, reused, otherPeer]);
    });
  });
});

describe('results share no memory', () => {
  it('a second receive leaves the first one\'s bytes as they were, sync and Promise', async () => {
    await expectNoFdLeak(async () => {
      for (const type of ['seqpacket', 'stream'] as const) {
        const [a, b] = socketPair(type);
        sendFdsSync(a, [], 'first message');
        sendFdsSync(a, [], 'second, longer message');
        sendFdsSync(a, [], 'third');
        const one = recvFdsSync(b);
        const two = await recvFds(b);
        const three = recvFdsSync(b);
        expect([one.data.toString(), two.data.toString(), three.data.toString()], type).toEqual(['first message', 'second, longer message', 'third']);
        closeAll([a, b]);
      }
    });
  });

  it('a maxBytes above the default receives into memory of its own; one under the message refuses it with its length', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('seqpacket');
      const big = Buffer.alloc(100_000, 7);
      sendFdsSync(a, [], big);
      expect(recvFdsSync(b, { maxBytes: 1 << 20 }).data.equals(big)).toBe(true);
      sendFdsSync(a, [], 'x'.repeat(100));
      expect(() => recvFdsSync(b, { maxBytes: 10 })).toThrow(MessageTruncatedError);
      sendFdsSync(a, [], 'x'.repeat(100));
      await expect(recvFds(b, { maxBytes: 10 })).rejects.toMatchObject({ code: 'ERR_LIVEUPDATE_MESSAGE_TRUNCATED', length: 100 });
      closeAll([a, b]);
    });
  });
});

describe('a stream out of step is refused however little is tracked', () => {
  it('a synchronous receive of a bad frame, with no other socket queued or out of step, makes the next receive refuse', () => {
    const [a, b] = socketPair('stream');
    native.sendFds(a, Buffer.from('not a frame of this package'), [], 1);
    expect(() => recvFdsSync(b)).toThrow(FramingError);
    sendFdsSync(a, [], 'a real frame');
    expect(() => recvFdsSync(b)).toThrow(StreamOutOfStepError);
    closeAll([a, b]);
  });
});
