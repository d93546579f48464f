/**
 * Hostile conditions: Workers dying mid-call, peers claiming huge messages,
 * callers closing fds right after passing them, managers that never read,
 * kernel-added control messages, raw calls into the binding with numbers
 * that are not int32s, and streams left in the middle of a message. Each
 * test states the promise it checks; those that could take the test runner
 * down with them (an abort, a hang) run in a child process.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  recvFds,
  recvFdsSync,
  sendFds,
  sendFdsSync,
  socketPair,
  SocketBusyError,
  StreamOutOfStepError,
} from '../lib/fdpass.js';
import * as lu from '../lib/index.js';
import { native } from '../lib/native.js';
import { notify, notifySync } from '../lib/systemd.js';
import { ROOT } from './helpers/child.js';
import { closeAll, contentOf, expectNoFdLeak, memfdWith, openFds } from './helpers/fds.js';

const DIST = path.join(ROOT, 'dist', 'index.js');

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Outcome {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `script` (CommonJS; `dist` is the package's entry) in a fresh node,
 * optionally under a shell prefix. `plainBuild` drops the sanitizer build
 * (npm run test:asan) for this child: ASan reserves terabytes of address
 * space, which an address-space limit cannot allow.
 */
function runNode(script: string, options: { timeoutMs?: number; shell?: string; fds?: number[]; plainBuild?: boolean } = {}): Outcome {
  const prelude = `const dist = ${JSON.stringify(DIST)};\nconst nativePath = ${JSON.stringify(path.join(path.dirname(DIST), 'native.js'))};\n`;
  const file = path.join(tmp, `child-${crypto.randomUUID()}.js`);
  fs.writeFileSync(file, prelude + script);
  const command = options.shell === undefined ? [process.execPath, file] : ['bash', '-c', `${options.shell}; exec "$0" "$1"`, process.execPath, file];
  const [bin, ...args] = command as [string, ...string[]];
  const env = { ...process.env };
  if (options.plainBuild === true) {
    delete env['LD_PRELOAD'];
    delete env['LIVEUPDATE_ADDON'];
  }
  const result = spawnSync(bin, args, {
    env,
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 60_000,
    killSignal: 'SIGKILL',
    stdio: ['ignore', 'pipe', 'pipe', ...(options.fds ?? [])],
  });
  return { status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
}

function lastJson<T>(outcome: Outcome): T {
  const line = outcome.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`child printed no JSON (status ${outcome.status}, signal ${outcome.signal}); stderr: ${outcome.stderr.slice(0, 2000)}`);
  }
}

// ---- 1. Workers -----------------------------------------------------------------

// Each Worker starts Promise calls of every kind that goes through the
// thread pool or the event loop, then dies (terminate() or process.exit())
// while they are in flight. The main thread must live on with its fd count
// back where it was. The Worker closes each fd it receives; its socket pair
// is closed by the main thread once the Worker is gone.
const WORKER_CHURN = `
const { Worker } = require('worker_threads');
const fs = require('fs');
const count = () => fs.readdirSync('/proc/self/fd').length;
const body = \`
  const { parentPort, workerData } = require('worker_threads');
  const lu = require(workerData.dist);
  const { native } = require(workerData.nativePath);
  const [a, b] = lu.socketPair('stream');
  parentPort.postMessage([a, b]);
  const close = (fd) => native.close(fd);
  for (let i = 0; i < (workerData.warmUp ? 0 : 20); i++) {
    lu.memfd.create('w' + i).then(close, () => {});
    lu.kexec.isLoaded().catch(() => {});
    lu.recvFds(b).then((m) => m.fds.forEach(close), () => {});
    lu.sendFds(a, [a, b], 'x').catch(() => {});
    lu.memfd.getSeals(a).catch(() => {});
  }
  if (workerData.exit) setImmediate(() => process.exit(0));
\`;
async function round(options) {
  const w = new Worker(body, { eval: true, workerData: { dist, nativePath, ...options } });
  const exited = new Promise((resolve) => w.once('exit', resolve));
  const fds = await new Promise((resolve) => w.once('message', resolve));
  if (options.exit) await exited; else await w.terminate();
  for (const fd of fds) fs.closeSync(fd);
}
(async () => {
  await round({ warmUp: true }); // Node's own first-Worker fds are not ours to count.
  const baseline = count();
  for (let i = 0; i < 40; i++) await round({ exit: i % 2 === 1 });
  console.log(JSON.stringify({ baseline, after: count() }));
})();
`;

describe('worker threads', () => {
  it('Workers that die with Promise calls in flight never abort the process nor leave fds open', () => {
    const outcome = runNode(WORKER_CHURN, { timeoutMs: 120_000 });
    expect(outcome.stderr).not.toMatch(/terminate called|Abort|Error/);
    expect({ status: outcome.status, signal: outcome.signal }).toEqual({ status: 0, signal: null });
    const result = lastJson<{ baseline: number; after: number }>(outcome);
    expect(result.after).toBe(result.baseline);
  }, 150_000);

  it('several Workers use the package at once, and one dying mid-call does not disturb the others', () => {
    const outcome = runNode(
      `
const { Worker } = require('worker_threads');
const body = \`
  const { parentPort, workerData } = require('worker_threads');
  const fs = require('fs');
  const lu = require(workerData.dist);
  (async () => {
    if (workerData.doomed) {
      const [a, b] = lu.socketPair('seqpacket');
      lu.recvFds(b).catch(() => {});
      lu.memfd.create('doomed').catch(() => {});
      parentPort.postMessage({ doomed: true });
      return;
    }
    let ok = 0;
    for (let i = 0; i < 50; i++) {
      const m = await lu.memfd.create('w', { allowSealing: true });
      fs.writeSync(m, 'n' + i, 0);
      const [a, b] = lu.socketPair('seqpacket');
      await lu.sendFds(a, [m], 'i' + i);
      const got = await lu.recvFds(b);
      if (got.data.toString() === 'i' + i && fs.readFileSync('/proc/self/fd/' + got.fds[0], 'utf8') === 'n' + i) ok++;
      for (const fd of [m, a, b, ...got.fds]) fs.closeSync(fd);
    }
    parentPort.postMessage({ ok });
  })();
\`;
(async () => {
  const workers = [0, 1, 2, 3].map((i) => new Worker(body, { eval: true, workerData: { dist, doomed: i === 0 } }));
  const results = await Promise.all(workers.map(async (w, i) => {
    const message = await new Promise((resolve) => w.once('message', resolve));
    if (i === 0) await w.terminate();
    return message;
  }));
  for (const w of workers.slice(1)) await w.terminate();
  console.log(JSON.stringify(results));
})();
`,
      { timeoutMs: 120_000 },
    );
    expect(outcome.status).toBe(0);
    expect(lastJson(outcome)).toEqual([{ doomed: true }, { ok: 50 }, { ok: 50 }, { ok: 50 }]);
  }, 150_000);
});

// ---- 2. Memory follows the bytes that arrive ------------------------------------

// Under an address-space limit far below 2 GiB, a receive whose maxBytes is
// 2 GiB - 1 must neither abort nor fail: it takes a 1-byte datagram, and a
// stream peer's header claiming 2 GiB - 1 then closing is a short frame.
const MEMORY_SCRIPT = `
const lu = require(dist);
const out = {};
const [a, b] = lu.socketPair('dgram');
lu.sendFdsSync(a, [], 'x');
out.dgram = lu.recvFdsSync(b, { maxBytes: 0x7fffffff }).data.toString();
const [c, d] = lu.socketPair('seqpacket');
lu.sendFdsSync(c, [], 'y');
out.seqpacket = lu.recvFdsSync(d, { maxBytes: 0x7fffffff }).data.toString();
const [s, t] = lu.socketPair('stream');
const header = Buffer.from([0x4c, 0x55, 0x46, 0x44, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
lu.sendFdsSync(s, [], header, { framing: 'none' });
require('fs').closeSync(s);
try { lu.recvFdsSync(t, { maxBytes: 0x7fffffff }); out.stream = 'no error'; } catch (e) { out.stream = e.code; }
const [u, v] = lu.socketPair('stream');
lu.sendFdsSync(u, [], 'raw', { framing: 'none' });
out.raw = lu.recvFdsSync(v, { maxBytes: 0x7fffffff, framing: 'none' }).data.toString();
out.maxRssKiB = process.resourceUsage().maxRSS;
console.log(JSON.stringify(out));
`;

describe('buffers are sized by the bytes that arrive, never by maxBytes or a peer', () => {
  it('maxBytes 2 GiB - 1 under a 1.5 GiB address-space limit: a 1-byte datagram, a lying frame header', () => {
    const outcome = runNode(MEMORY_SCRIPT, { shell: 'ulimit -v 1500000', plainBuild: true });
    expect(outcome.stderr).not.toMatch(/bad_alloc|terminate called/);
    expect(outcome.status).toBe(0);
    const result = lastJson<Record<string, unknown>>(outcome);
    expect(result).toMatchObject({ dgram: 'x', seqpacket: 'y', stream: 'ERR_LIVEUPDATE_SHORT_FRAME', raw: 'raw' });
    // The whole process stays far below what the claims would have cost.
    expect(result['maxRssKiB']).toBeLessThan(300 * 1024);
  });
});

// ---- 3. The files given at call time ----------------------------------------------

/** A socket pair whose a-side cannot take another message until b is read. */
function fullPair(type: 'stream' | 'seqpacket'): [number, number] {
  const [a, b] = socketPair(type);
  const chunk = Buffer.alloc(4096);
  for (;;) {
    try {
      native.sendFds(a, chunk, [], 1, 0);
    } catch {
      return [a, b];
    }
  }
}

/** Whether `fd` has something to read (or hung up), without waiting. */
function readable(fd: number): boolean {
  try {
    return native.waitReadable(fd, 0);
  } catch {
    return false;
  }
}

/** Reads raw bytes from `fd` (between turns of the event loop) until `done()` and nothing is left, or EOF. */
async function drainUntil(fd: number, done: () => boolean): Promise<Buffer> {
  const parts: Buffer[] = [];
  while (!done() || readable(fd)) {
    if (!readable(fd)) {
      await new Promise((resolve) => setImmediate(resolve));
      continue;
    }
    const got = recvFdsSync(fd, { framing: 'none', maxBytes: 1 << 20 });
    if (got.eof) break;
    parts.push(got.data);
  }
  return Buffer.concat(parts);
}

describe('a call acts on the files it was given when it was made', () => {
  it('sendFds, then the caller closes the fd and the number is reused: the first file is sent', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = fullPair('seqpacket');
      const m1 = memfdWith('first file');
      const blocked = sendFds(a, [], 'blocked'); // Waits for room.
      const queued = sendFds(a, [m1], 'message'); // Waits its turn behind it.
      fs.closeSync(m1);
      const m2 = memfdWith('second file, a secret');
      expect(m2).toBe(m1); // The number was reused.
      let files: string[] = [];
      for (;;) {
        const got = await recvFds(b, { maxBytes: 1 << 20 });
        files = got.fds.map(contentOf);
        closeAll(got.fds);
        if (got.data.toString() === 'message') break;
      }
      await Promise.all([blocked, queued]);
      expect(files).toEqual(['first file']);
      closeAll([a, b, m2]);
    });
  });

  it('a queued send goes to the socket given, even once its number names another socket', async () => {
    await expectNoFdLeak(async () => {
      const [full, peer] = fullPair('stream');
      const sends = Promise.allSettled([sendFds(full, [], 'first'), sendFds(full, [], 'second')]);
      let settled = false;
      void sends.then(() => (settled = true));
      fs.closeSync(full);
      const [reused, other] = socketPair('stream');
      expect(reused).toBe(full);
      const bytes = await drainUntil(peer, () => settled);
      expect((await sends).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
      expect(bytes.subarray(-6).toString()).toBe('second');
      // Nothing went to the socket that took the number: it ends without a byte.
      fs.closeSync(reused);
      expect(recvFdsSync(other, { framing: 'none' }).eof).toBe(true);
      closeAll([peer, other]);
    });
  });

  it('memfd.addSeals queued on a busy thread pool seals the file given, not the one that took its number', async () => {
    await expectNoFdLeak(async () => {
      const x = await lu.memfd.create('x', { allowSealing: true });
      const keep = fs.openSync(`/proc/self/fd/${x}`, 'r'); // The same memfd, by another fd.
      // Occupy the pool's threads so the seal call waits in the queue.
      const busy = Array.from({ length: 8 }, () => new Promise((resolve) => crypto.pbkdf2('p', 's', 100_000, 32, 'sha512', resolve)));
      const sealing = lu.memfd.addSeals(x, lu.memfd.SEAL_WRITE);
      fs.closeSync(x);
      const y = lu.memfd.createSync('y', { allowSealing: true });
      expect(y).toBe(x);
      await sealing;
      await Promise.all(busy);
      expect(lu.memfd.getSealsSync(y) & lu.memfd.SEAL_WRITE).toBe(0);
      expect(lu.memfd.getSealsSync(keep) & lu.memfd.SEAL_WRITE).toBe(lu.memfd.SEAL_WRITE);
      closeAll([y, keep]);
    });
  }, 60_000);
});

// A full fd table: no copy can be made. The sync form uses the caller's own
// number, and so still answers; the Promise form needs a copy, and refuses.
const FULL_FD_TABLE = `
const lu = require(dist);
const fs = require('fs');
const memfd = lu.memfd.createSync('full-table', { allowSealing: true });
const filler = [];
for (;;) { try { filler.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; break; } }
const out = { filled: filler.length };
out.sync = lu.memfd.getSealsSync(memfd);
lu.memfd.getSeals(memfd).then((seals) => { out.promise = seals; }, (e) => { out.promise = e.code + ' ' + e.syscall; }).finally(() => {
  for (const fd of filler) fs.closeSync(fd);
  console.log(JSON.stringify(out));
});
`;

describe('a sync call acts on the caller\'s own fd, at once', () => {
  it('answers with the fd table full, where the Promise form (which needs a copy) refuses with EMFILE', () => {
    // plainBuild: the sanitizers' runtime checks memory through a pipe of its
    // own, which a full fd table refuses, and then reports a false error.
    const out = lastJson<{ filled: number; sync: number; promise: number | string }>(runNode(FULL_FD_TABLE, { shell: 'ulimit -n 128', plainBuild: true }));
    expect(out.filled).toBeGreaterThan(0);
    expect(out.sync).toBe(0);
    expect(out.promise).toBe('EMFILE fcntl');
  });
});

// ---- 4. A manager that never reads ------------------------------------------------

// The notify socket is bound and never read; its queue fills. Every call must
// come back with ETIMEDOUT within its timeout (or the default), not hang.
const NEVER_READ = `
const lu = require(dist);
const fs = require('fs');
const before = fs.readdirSync('/proc/self/fd').length;
const out = { filled: 0 };
(async () => {
  const sock = require(nativePath).native.unixBind(2 /* SOCK_DGRAM */, process.env.NOTIFY_SOCKET);
  for (;;) {
    try { lu.notifySync({ STATUS: 'x'.repeat(100) }, undefined, { timeout: 0 }); out.filled++; } catch (e) { out.fillError = e.code; break; }
    if (out.filled > 100000) break;
  }
  const t0 = Date.now();
  try { lu.notifySync({ READY: 1 }, undefined, { timeout: 300 }); } catch (e) { out.notifySync = e.code; }
  try { lu.barrierSync({ timeout: 300 }); } catch (e) { out.barrierSync = e.code; }
  try { await lu.barrier({ timeout: 300 }); } catch (e) { out.barrier = e.code; }
  try { await lu.notify({ READY: 1 }, undefined, { timeout: 300 }); } catch (e) { out.notify = e.code; }
  out.elapsedMs = Date.now() - t0;
  fs.closeSync(sock);
  out.fdsLeaked = fs.readdirSync('/proc/self/fd').length - before;
  console.log(JSON.stringify(out));
})();
`;

describe('notify and barrier when the manager never reads', () => {
  it('every form times out with ETIMEDOUT, nothing hangs, nothing leaks', () => {
    const address = path.join(tmp, `notify-${crypto.randomUUID()}`);
    const outcome = runNode(NEVER_READ, { timeoutMs: 30_000, shell: `export NOTIFY_SOCKET=${address}` });
    expect(outcome.signal).toBeNull();
    const result = lastJson<Record<string, number | string>>(outcome);
    expect(result).toMatchObject({ fillError: 'ETIMEDOUT', notifySync: 'ETIMEDOUT', barrierSync: 'ETIMEDOUT', barrier: 'ETIMEDOUT', notify: 'ETIMEDOUT', fdsLeaked: 0 });
    expect(result['filled']).toBeGreaterThan(0);
    // Four timeouts of 300 ms, and some slack for a loaded machine.
    expect(result['elapsedMs']).toBeLessThan(10_000);
  }, 40_000);
});

// ---- 5. Fds in other control messages ------------------------------------------------

const SO_PASSPIDFD = 76;
const SETSOCKOPT_C = `
#include <stdlib.h>
#include <sys/socket.h>
/* Sets an int socket option on fd 3 (inherited): options live on the socket, not the fd. */
int main(int argc, char **argv) {
  int on = 1;
  return setsockopt(3, SOL_SOCKET, atoi(argv[1]), &on, sizeof on) == 0 ? 0 : 1;
}
`;

describe('control messages that carry fds', () => {
  it('closes the pidfd SO_PASSPIDFD adds to every message', async () => {
    const source = path.join(tmp, 'setsockopt.c');
    const binary = path.join(tmp, 'setsockopt');
    fs.writeFileSync(source, SETSOCKOPT_C);
    execFileSync('gcc', ['-O1', '-o', binary, source]);
    for (const type of ['stream', 'seqpacket', 'dgram'] as const) {
      await expectNoFdLeak(async () => {
        const [a, b] = socketPair(type);
        const set = spawnSync(binary, [String(SO_PASSPIDFD)], { stdio: ['ignore', 'inherit', 'inherit', b] });
        expect(set.status).toBe(0);
        const m = memfdWith('with a pidfd');
        const before = openFds();
        sendFdsSync(a, [m], 'one');
        const got = recvFdsSync(b);
        expect(got.fds.map(contentOf)).toEqual(['with a pidfd']);
        closeAll(got.fds);
        await sendFds(a, [], 'two');
        expect((await recvFds(b)).data.toString()).toBe('two');
        expect(openFds()).toEqual(before);
        closeAll([a, b, m]);
      });
    }
  });
});

// ---- 6. sd_notify keys -----------------------------------------------------------------

describe('notify refuses what systemd would read otherwise than it looks', () => {
  const cases: Array<[string, () => unknown]> = [
    ['a repeated FDNAME= (systemd takes the first)', () => notifySync(['FDSTORE=1', 'FDNAME=a', 'FDNAME=b'], [0])],
    ['FDSTORE=1 repeated as FDSTORE=0', () => notifySync('FDSTORE=0\nFDNAME=a\nFDSTORE=1', [0])],
    ['FDSTORE=1 with FDSTOREREMOVE=1 (systemd removes)', () => notifySync({ FDSTORE: 1, FDSTOREREMOVE: 1, FDNAME: 'a' }, [0])],
    ['a repeated STATUS=', () => notifySync(['STATUS=a', 'STATUS=b'])],
  ];
  for (const [what, call] of cases) {
    it(`refuses ${what} with ERR_INVALID_ARG_VALUE before anything is sent`, async () => {
      const saved = process.env['NOTIFY_SOCKET'];
      process.env['NOTIFY_SOCKET'] = path.join(tmp, 'nobody-listens');
      try {
        expect(call).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }) as unknown as Error);
        await expect(notify(['STATUS=a', 'STATUS=b'])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
      } finally {
        if (saved === undefined) delete process.env['NOTIFY_SOCKET'];
        else process.env['NOTIFY_SOCKET'] = saved;
      }
    });
  }
});

// ---- 7. The binding refuses numbers that are not int32 --------------------------------

describe('the native argument readers refuse anything that is not an int32', () => {
  const bad: Array<[string, number]> = [
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['2**32 + 1', 2 ** 32 + 1],
    ['1.5', 1.5],
    ['2**31', 2 ** 31],
  ];
  for (const [what, value] of bad) {
    it(`${what}: RangeError ERR_OUT_OF_RANGE from every reader, nothing done`, async () => {
      await expectNoFdLeak(async () => {
        const m = memfdWith('target');
        const [a, b] = socketPair('seqpacket');
        try {
          const range = expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', name: 'RangeError' }) as unknown as Error;
          expect(() => native.getSeals(value)).toThrow(range);
          expect(() => native.memfdCreate('x', value)).toThrow(range);
          expect(() => native.addSeals(m, value)).toThrow(range);
          expect(() => native.sendFds(a, new Uint8Array(1), [value], 0)).toThrow(range);
          expect(() => native.sendFds(value, new Uint8Array(1), [], 0)).toThrow(range);
          expect(() => native.recvFds(b, value, 1, 0)).toThrow(range);
          expect(() => native.recvFds(b, 10, value, 0)).toThrow(range);
          expect(() => native.getSealsAsync(value)).toThrow(range);
          expect(() => native.preserveFdAsync(m, value, 1n)).toThrow(range);
          expect(() => native.setCloexec(value, true)).toThrow(range);
          // Nothing was sent.
          expect(readable(b)).toBe(false);
        } finally {
          closeAll([m, a, b]);
        }
      });
    });
  }

  it('a wrong type is a TypeError with ERR_INVALID_ARG_TYPE', () => {
    const type = expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError' }) as unknown as Error;
    expect(() => native.getSeals('3' as unknown as number)).toThrow(type);
    expect(() => native.sendFds(0, new Uint8Array(0), ['3' as unknown as number], 0)).toThrow(type);
    expect(() => native.preserveFd(0, 0, 1 as unknown as bigint)).toThrow(type);
  });
});

// ---- 8. Streams out of step ------------------------------------------------------------

/** A raw frame header for `length` bytes. */
function header(length: number): Buffer {
  const h = Buffer.alloc(8);
  h.write('LUFD', 0, 'latin1');
  h.writeUInt32BE(length, 4);
  return h;
}

describe('a stream left in the middle of a message is marked out of step', () => {
  it('a cancelled receive mid-frame makes every later receive reject with ERR_LIVEUPDATE_OUT_OF_STEP', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      try {
        sendFdsSync(a, [], Buffer.concat([header(100), Buffer.alloc(10, 1)]), { framing: 'none' });
        const controller = new AbortController();
        const pending = recvFds(b, { signal: controller.signal });
        await new Promise((resolve) => setTimeout(resolve, 20)); // It has read the header and 10 bytes.
        controller.abort();
        await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
        // The rest of the frame and a whole new one: neither can be told apart any more.
        sendFdsSync(a, [], Buffer.alloc(90, 2), { framing: 'none' });
        sendFdsSync(a, [], 'next');
        await expect(recvFds(b)).rejects.toBeInstanceOf(StreamOutOfStepError);
        expect(() => recvFdsSync(b)).toThrow(expect.objectContaining({ code: 'ERR_LIVEUPDATE_OUT_OF_STEP' }) as unknown as Error);
        // The mark is on the socket, not the number: a dup of it is refused too.
        const copy = native.pinFds([b]);
        expect(() => recvFdsSync(copy[0] ?? -1)).toThrow(StreamOutOfStepError);
        native.unpinFds(copy);
      } finally {
        closeAll([a, b]);
      }
    });
  });

  it('a synchronous receive while a Promise receive is pending is refused with ERR_LIVEUPDATE_SOCKET_BUSY', async () => {
    await expectNoFdLeak(async () => {
      const [a, b] = socketPair('stream');
      try {
        const pending = recvFds(b);
        expect(() => recvFdsSync(b)).toThrow(SocketBusyError);
        expect(() => recvFdsSync(b)).toThrow(expect.objectContaining({ code: 'ERR_LIVEUPDATE_SOCKET_BUSY' }) as unknown as Error);
        sendFdsSync(a, [], 'for the Promise');
        expect((await pending).data.toString()).toBe('for the Promise');
        // Once it settled, the synchronous form works again.
        sendFdsSync(a, [], 'for the sync call');
        expect(recvFdsSync(b).data.toString()).toBe('for the sync call');
      } finally {
        closeAll([a, b]);
      }
    });
  });
});
