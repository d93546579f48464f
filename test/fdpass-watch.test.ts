/**
 * The readiness watcher kept across waits (native ReadableWatch), which the
 * agent keeps per connection and per listening socket and the agent client
 * per connection: its waits, its fds (one copy of the socket per watch and
 * one epoll fd while any watch is open, however many waits), the file it
 * watches (the one its fd was when it was made, never another that later
 * took the number), and what holds the event loop and what closes it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentInProcess, type AgentLog } from '../conformance/lib/harness/agent.js';
import { AgentClient } from '../lib/agent/client.js';
import { Agent } from '../lib/agent/server.js';
import { native, type NativeReadableWatch } from '../lib/native.js';
import { ROOT } from './helpers/child.js';
import { openFds } from './helpers/fds.js';

/** A connected seqpacket pair, closed after `fn`. */
async function withPair<T>(fn: (a: number, b: number) => Promise<T>): Promise<T> {
  const [a, b] = native.socketPair(native.SOCK_SEQPACKET);
  try {
    return await fn(a, b);
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
}

/** Whether `pending` settled within a few turns of the event loop (its value then). */
async function settledSoon<T>(pending: Promise<T>): Promise<{ settled: boolean; value?: T }> {
  let out: { settled: boolean; value?: T } = { settled: false };
  void pending.then((value) => (out = { settled: true, value }));
  for (let i = 0; i < 5; i++) await turn();
  await new Promise((resolve) => setTimeout(resolve, 20));
  for (let i = 0; i < 5; i++) await turn();
  return out;
}

/** The number of fds open in this process whose link matches `kind`. */
function openOf(kind: RegExp): number {
  let n = 0;
  for (const fd of openFds()) {
    try {
      if (kind.test(fs.readlinkSync(`/proc/self/fd/${fd}`))) n++;
    } catch {
      // The listing's own fd, gone.
    }
  }
  return n;
}

const EPOLL = /^anon_inode:\[?eventpoll\]?$/;

describe('a ReadableWatch waits for its socket, wait after wait', () => {
  it('says true when a message is there and when the peer hangs up, false once cancelled or closed', async () => {
    await withPair(async (a, b) => {
      const watch = new native.ReadableWatch(a);
      try {
        const first = watch.wait();
        expect((await settledSoon(first)).settled).toBe(false);
        fs.writeSync(b, 'x');
        expect(await first).toBe(true);
        // Level, not edge: the message is still unread, so the next wait says so again.
        expect(await watch.wait()).toBe(true);
        native.recvFds(a, 16, 0, 0);
        const cancelled = watch.wait();
        expect(() => watch.wait()).toThrow(/already pending/);
        watch.cancel();
        expect(await cancelled).toBe(false);
        const closed = watch.wait();
        watch.close();
        expect(await closed).toBe(false);
        expect(await watch.wait()).toBe(false);
        watch.close(); // Twice is nothing.
      } finally {
        watch.close();
      }
    });
  });

  it('reports a hang-up of the peer as readable', async () => {
    const [a, b] = native.socketPair(native.SOCK_SEQPACKET);
    const watch = new native.ReadableWatch(a);
    try {
      const waiting = watch.wait();
      fs.closeSync(b);
      expect(await waiting).toBe(true);
    } finally {
      watch.close();
      fs.closeSync(a);
    }
  });

  it('refuses what is not an fd, and an fd that is not open, before it holds anything', () => {
    const before = openFds();
    expect(() => new native.ReadableWatch(-1)).toThrow(RangeError);
    expect(() => new native.ReadableWatch('3' as unknown as number)).toThrow(TypeError);
    let unused = 1000;
    while (before.includes(String(unused))) unused++;
    expect(() => new native.ReadableWatch(unused)).toThrow(expect.objectContaining({ code: 'EBADF' }) as Error);
    expect(openFds()).toEqual(before);
  });

  it('holds one copy of its socket however many waits it serves, and the set one epoll fd while any watch is open', async () => {
    const epollsBefore = openOf(EPOLL);
    const before = openFds();
    await withPair(async (a, b) => {
      const watch = new native.ReadableWatch(a);
      const other = new native.ReadableWatch(b);
      try {
        const during = openFds();
        // Two copies and one epoll fd for both watches.
        expect(during.length - before.length).toBe(2 + 2 + 1);
        expect(openOf(EPOLL)).toBe(epollsBefore + 1);
        for (let i = 0; i < 200; i++) {
          const waiting = watch.wait();
          fs.writeSync(b, `m${i}`);
          expect(await waiting).toBe(true);
          expect(native.recvFds(a, 16, 0, 0).data.toString()).toBe(`m${i}`);
        }
        expect(openFds()).toEqual(during);
      } finally {
        watch.close();
        other.close();
      }
    });
    // Closed: its copies, and the epoll fd with the last watch.
    expect(openFds()).toEqual(before);
    expect(openOf(EPOLL)).toBe(epollsBefore);
  });

  it('holds its file open until closed: the peer sees the hang-up only then', async () => {
    const [a, b] = native.socketPair(native.SOCK_SEQPACKET);
    const watch = new native.ReadableWatch(a);
    try {
      fs.closeSync(a);
      // The watch's copy keeps the socket's end open: no EOF for the peer yet.
      expect(native.readableNow(b)).toBe(false);
      watch.close();
      expect(native.readableNow(b)).toBe(true);
      expect(native.recvFds(b, 16, 0, 0).status).toBe(1); // EOF
    } finally {
      watch.close();
      fs.closeSync(b);
    }
  });

  it('watches the file its fd was when it was made, not the one that took the number after a close', async () => {
    const [a, b] = native.socketPair(native.SOCK_SEQPACKET);
    const watch = new native.ReadableWatch(a);
    let reused: number[] = [];
    try {
      fs.closeSync(a);
      reused = native.socketPair(native.SOCK_SEQPACKET);
      // The lowest free number: the caller's old one, now another socket's end.
      expect(reused[0]).toBe(a);
      const waiting = watch.wait();
      fs.writeSync(reused[1]!, 'for the new socket');
      expect(native.readableNow(a)).toBe(true);
      expect((await settledSoon(waiting)).settled).toBe(false);
      fs.writeSync(b, 'for the watched one');
      expect(await waiting).toBe(true);
    } finally {
      watch.close();
      fs.closeSync(b);
      reused.forEach((fd) => fs.closeSync(fd));
    }
  });
});

/** Runs `script` in a fresh node with the addon as `addon` (the build the package loads: a prebuild where there is no source build); its stdout and its exit status. */
function runNode(script: string, args: string[] = []): { stdout: string; status: number | null } {
  const loader = JSON.stringify(path.join(ROOT, 'dist', 'native.js'));
  const out = spawnSync(process.execPath, [...args, '-e', `const addon = require(${loader}).loadNative();\n${script}`], { encoding: 'utf8', timeout: 20_000 });
  if (out.stderr !== '') throw new Error(out.stderr);
  return { stdout: out.stdout, status: out.status };
}

describe('what a ReadableWatch holds: the event loop, and its fds when dropped', () => {
  it('a pending wait holds the event loop until it settles; a watch with no wait pending does not', () => {
    // The peer writes from an unref'd timer: only the pending wait keeps the process alive until then.
    const waited = runNode(`
      const [a, b] = addon.socketPair(addon.SOCK_SEQPACKET);
      const watch = new addon.ReadableWatch(a);
      watch.wait().then((readable) => { console.log('woke ' + readable); watch.close(); });
      setTimeout(() => require('node:fs').writeSync(b, 'x'), 300).unref();
    `);
    expect(waited.stdout.trim()).toBe('woke true');
    const idle = runNode(`
      const [a] = addon.socketPair(addon.SOCK_SEQPACKET);
      const watch = new addon.ReadableWatch(a);
      setTimeout(() => console.log('held'), 5000).unref();
      globalThis.keep = watch;
    `);
    // Held, the loop would have run the timer and printed: an exit with nothing printed is a loop let go.
    expect(idle.stdout).toBe('');
    expect(idle.status).toBe(0);
  });

  it('a watch dropped without close() closes its copy and the epoll fd when collected', () => {
    const out = runNode(
      `
      const fs = require('node:fs');
      const count = () => fs.readdirSync('/proc/self/fd').length;
      const [a, b] = addon.socketPair(addon.SOCK_SEQPACKET);
      const before = count();
      (() => { new addon.ReadableWatch(a).wait().then(() => {}); })();
      const during = count();
      // The pending wait holds the watch: a collection now leaves it, and a message settles it.
      globalThis.gc();
      fs.writeSync(b, 'x');
      setTimeout(async () => {
        for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
        console.log(JSON.stringify({ before, during, after: count() }));
      }, 50);
    `,
      ['--expose-gc'],
    );
    const { before, during, after } = JSON.parse(out.stdout) as { before: number; during: number; after: number };
    expect(during - before).toBe(2); // Its copy, the set's epoll fd.
    expect(after).toBe(before);
  });
});

describe('a ReadableWatch that cannot be made', () => {
  it('throws when its epoll set cannot be opened (no fd left after its copy), and keeps no fd', () => {
    const out = runNode(`
      const fs = require('node:fs');
      const [a] = addon.socketPair(addon.SOCK_SEQPACKET);
      const count = () => fs.readdirSync('/proc/self/fd').length;
      const before = count();
      // Every fd but one taken: the watch's copy takes the last, and its set finds none.
      const filler = [];
      for (;;) { try { filler.push(fs.openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; break; } }
      fs.closeSync(filler.pop());
      const held = filler.length;
      let failed = null;
      try { new addon.ReadableWatch(a); } catch (e) { failed = e.code + ' ' + e.syscall; }
      for (const fd of filler) fs.closeSync(fd);
      // Collections too: a half-made watch must not wait for one to give its copy back.
      globalThis.gc();
      console.log(JSON.stringify({ failed, held, before, after: count() }));
    `, ['--expose-gc']);
    const seen = JSON.parse(out.stdout) as { failed: string; held: number; before: number; after: number };
    expect(seen.failed).toBe('EMFILE epoll_create1');
    expect(out.status).toBe(0);
    expect(seen.after).toBe(seen.before);
  });
});

describe('the agent and its client keep one watcher per connection', () => {
  let dir: string;
  let socket: string;
  let agent: Agent;
  let log: AgentLog;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-watch-'));
    socket = path.join(dir, 'agent.sock');
    ({ agent, log } = await startAgentInProcess((options) => Agent.start(options), { socket }));
  });

  afterAll(async () => {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('requests that each wait on both sides leave the fds as they were after the first, and the close returns them', async () => {
    const before = openFds();
    const client = await AgentClient.connect({ socket });
    await client.sessions();
    const settled = openFds();
    for (let i = 0; i < 50; i++) {
      // A pause between requests: the agent waits for each on its watcher, the client for each reply on its own.
      await new Promise((resolve) => setTimeout(resolve, 2));
      await client.sessions();
      await client.ready();
    }
    expect(openFds()).toEqual(settled);
    const disconnected = log.events.filter((e) => e.event === 'disconnected').length;
    await client.close();
    await log.waitFor((e) => e.event === 'disconnected' && log.events.filter((d) => d.event === 'disconnected').length > disconnected);
    // The agent's end, its watch's copy, the client's end and its watch's copy: all closed.
    expect(openFds()).toEqual(before);
  });

  it('a raw peer that goes quiet between requests costs the agent the same fds at every wait, none once it hangs up', async () => {
    const before = openFds();
    const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
    const ask = async (id: number): Promise<void> => {
      const request = id === 1 ? { op: 'hello', versions: [1] } : { op: 'sessions' };
      native.sendFds(fd, Buffer.from(JSON.stringify({ v: 1, id, ...request })), [], 0);
      expect(await waiter.wait()).toBe(true);
      const reply = native.recvFds(fd, 65536, 4, 0);
      expect(JSON.parse(reply.data.toString()), reply.data.toString()).toMatchObject({ id, ok: true });
    };
    const waiter: NativeReadableWatch = new native.ReadableWatch(fd);
    try {
      await ask(1);
      const settled = openFds();
      for (let id = 2; id < 40; id++) {
        await new Promise((resolve) => setTimeout(resolve, 2));
        await ask(id);
      }
      expect(openFds()).toEqual(settled);
    } finally {
      waiter.close();
    }
    const disconnected = log.events.filter((e) => e.event === 'disconnected').length;
    fs.closeSync(fd);
    await log.waitFor((e) => e.event === 'disconnected' && log.events.filter((d) => d.event === 'disconnected').length > disconnected);
    expect(openFds()).toEqual(before);
  });
});
