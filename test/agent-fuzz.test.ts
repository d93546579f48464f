/**
 * A protocol fuzzer for the agent: a real Agent on this host (no LUO: it
 * serves without a device, as in agent.test.ts) fed random and mutated
 * messages over real sockets: valid envelopes with fields mutated, random
 * bytes, JSON too large or nested too deep, wrong types, fds attached,
 * connections dropped mid-request, several at once.
 *
 * For each seed (a few fixed ones and one random seed, printed as
 * `agent fuzz: random seed N`; replay one with LIVEUPDATE_FUZZ_SEED=N) it
 * asserts: the agent never throws or fails on a fault of its own (no
 * AgentInternalError, no unhandled rejection); every reply is JSON within
 * 64 KiB, with `ok` true or false and, when false, an error of a known
 * class; no fd is left open in the agent's process (this one: /proc/self/fd);
 * and a well-behaved client is served afterwards. Bounded for CI: a few
 * seconds in all.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { AgentClient } from '../lib/agent/client.js';
import { MAX_MESSAGE_BYTES } from '../lib/agent/protocol.js';
import { Agent, type AgentEvent } from '../lib/agent/server.js';
import { recvFds, sendFds } from '../lib/fdpass.js';
import * as memfd from '../lib/memfd.js';
import { native } from '../lib/native.js';
import { openFds } from './helpers/fds.js';
import { prng } from './helpers/prng.js';

const MESSAGES_PER_SEED = 200;
const FIXED_SEEDS = [1, 2, 0xa9e47];
const REPLAY = process.env['LIVEUPDATE_FUZZ_SEED'];
const RANDOM_SEED = Number(REPLAY ?? Math.floor(Math.random() * 2 ** 31));
const SEEDS = REPLAY === undefined ? [...FIXED_SEEDS, RANDOM_SEED] : [RANDOM_SEED];
/** How long a reply may take before the agent counts as stalled. */
const REPLY_WAIT_MS = 3000;

/** Every class a reply may name: the package's error classes and Node's argument errors. */
const KNOWN_CLASSES = new Set<string>([
  'TypeError',
  'RangeError',
  ...Object.values(lu)
    .filter((v): v is typeof lu.LiveUpdateError => typeof v === 'function' && (v === lu.LiveUpdateError || v.prototype instanceof lu.LiveUpdateError))
    .map((c) => c.name),
]);

let dir: string;
let socket: string;
let agent: Agent;
const events: AgentEvent[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-agent-fuzz-'));
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, 'kernel'), 'not a kernel');
  socket = path.join(dir, 'agent.sock');
  process.on('unhandledRejection', onUnhandled);
  agent = await Agent.start({ socket, devicePath: path.join(dir, 'no-such-device'), log: (e) => events.push(e), helloTimeoutMs: 1000, sendTimeoutMs: 1000 });
});

afterAll(async () => {
  await agent.stop();
  process.off('unhandledRejection', onUnhandled);
  fs.rmSync(dir, { recursive: true, force: true });
});

type Random = () => number;

/** One fuzzed message: its bytes, how many fds to attach, whether a hello goes first, and whether to hang up without reading. */
interface Case {
  bytes: Buffer;
  fds: number;
  hello: boolean;
  hangUp: boolean;
}

function generator(random: Random): () => Case {
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)] as T;
  const strings = ['', 'vm1', 'liveupdate-agent', 'u0.x', 'u1000~abc', 'x'.repeat(64), 'x'.repeat(256), 'a\0b', 'vm\x1b[31m', 'vm\nrow', '\ud800', 'ü'.repeat(40), '../../etc/passwd', '/proc/self/exe', path.join(dir, 'kernel')];
  const value = (depth = 0): unknown => {
    switch (int(depth > 3 ? 8 : 11)) {
      case 0:
        return pick([0, -1, 1, 2 ** 32, 2 ** 53, -(2 ** 31), 1.5, 1e308, -0]);
      case 1:
        return pick(strings);
      case 2:
        return null;
      case 3:
        return random() < 0.5;
      case 4:
        return int(100_000);
      case 5:
        return 'y'.repeat(int(70_000));
      case 6:
        return String(random());
      case 7:
        return pick(['hello', 'createSession', 'attach', 'retrieveSession', 'release', 'ready', 'subscribe', 'sessions', 'update', 'frobnicate', '__proto__', 'constructor']);
      case 8:
        return Array.from({ length: int(5) }, () => value(depth + 1));
      case 9:
        return Object.fromEntries(Array.from({ length: int(5) }, () => [pick(['name', 'v', 'id', 'op', '__proto__', 'metadata', 'kernel', 'x']), value(depth + 1)]));
      default:
        return { nested: value(depth + 1) };
    }
  };
  const valid = (): Record<string, unknown> => {
    const id = int(1000);
    return pick([
      { v: 1, id, op: 'hello', versions: [1], client: 'fuzz' },
      { v: 1, id, op: 'hello', versions: [1, 2], client: 'fuzz' },
      { v: 2, id, op: 'subscribe' },
      { v: 1, id, op: 'createSession', name: 'vm1', metadata: { ram: 64 } },
      { v: 1, id, op: 'attach', name: 'vm1' },
      { v: 1, id, op: 'retrieveSession', name: 'vm1' },
      { v: 1, id, op: 'release', name: 'vm1' },
      { v: 1, id, op: 'ready' },
      { v: 1, id, op: 'sessions' },
      { v: 1, id, op: 'update', kernel: path.join(dir, 'kernel'), cmdline: 'liveupdate=on', timeoutMs: 0, dryRun: true },
    ]);
  };
  const mutated = (): Buffer => {
    const message = valid();
    for (let i = 0, n = 1 + int(3); i < n; i++) {
      const keys = Object.keys(message);
      const key = random() < 0.8 ? pick(keys) : pick(['extra', 'fd', 'fds', 'uid', 'metadata']);
      if (random() < 0.25) delete message[key];
      else message[key] = value();
    }
    return Buffer.from(JSON.stringify(message));
  };
  const nested = (): Buffer => {
    const depth = pick([100, 5000, 50_000]);
    return Buffer.from(`{"v":1,"id":1,"op":"createSession","name":"vm1","metadata":${'['.repeat(depth)}${']'.repeat(depth)}}`);
  };
  const sized = (): Buffer => {
    const target = pick([MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, 200_000]);
    const head = `{"v":1,"id":3,"op":"sessions","pad":"`;
    return Buffer.from(`${head}${'p'.repeat(Math.max(0, target - head.length - 2))}"}`);
  };
  const bytes = (): Buffer => Buffer.from(Array.from({ length: int(2000) }, () => int(256)));
  return () => {
    const kind = int(10);
    const message = kind < 5 ? mutated() : kind === 5 ? nested() : kind === 6 ? sized() : kind === 7 ? bytes() : Buffer.from(JSON.stringify(valid()));
    return { bytes: message, fds: random() < 0.08 ? 1 + int(20) : 0, hello: random() < 0.6, hangUp: random() < 0.1 };
  };
}

/** Everything wrong with one reply, as text (empty: a good reply). */
function problems(data: Buffer): string[] {
  if (data.length > MAX_MESSAGE_BYTES) return [`a reply of ${data.length} bytes`];
  let body: unknown;
  try {
    body = JSON.parse(data.toString('utf8'));
  } catch {
    return ['a reply that is not JSON'];
  }
  const reply = body as { ok?: unknown; error?: { class?: unknown; code?: unknown; message?: unknown } } | null;
  if (typeof reply !== 'object' || reply === null) return ['a reply that is not an object'];
  if (reply.ok === true) return [];
  if (reply.ok !== false) return [`ok is ${JSON.stringify(reply.ok)}`];
  const { class: name, code, message } = reply.error ?? {};
  const found: string[] = [];
  if (typeof name !== 'string' || !KNOWN_CLASSES.has(name)) found.push(`an error of unknown class ${JSON.stringify(name)}`);
  if (typeof code !== 'string' || typeof message !== 'string') found.push('an error without code or message');
  if (code === 'ERR_LIVEUPDATE_AGENT_INTERNAL') found.push(`a fault of the agent's own: ${String(message)}`);
  return found;
}

/** Reads the reply, and a second message if one follows at once (there should be none, or EOF); returns what is wrong. */
async function readReplies(fd: number): Promise<string[]> {
  const found: string[] = [];
  for (let i = 0; i < 2; i++) {
    let message;
    try {
      message = await recvFds(fd, { maxBytes: 1 << 20, maxFds: 253, signal: AbortSignal.timeout(i === 0 ? REPLY_WAIT_MS : 20) });
    } catch (error) {
      if ((error as { name?: string }).name === 'AbortError') {
        if (i === 0) found.push('no reply and no hang-up');
        return found;
      }
      if (error instanceof lu.PeerClosedError) return found;
      return [...found, `the receive failed: ${(error as Error).message}`];
    }
    message.fds.forEach((f) => fs.closeSync(f));
    if (message.eof) return found;
    found.push(...problems(message.data));
  }
  return found;
}

/** One fuzzed connection; resolves to what went wrong. */
async function fuzzOnce(c: Case): Promise<string[]> {
  const fd = await native.unixConnectAsync(native.SOCK_SEQPACKET, socket);
  const files = Array.from({ length: c.fds }, () => memfd.createSync('fuzz-fd'));
  try {
    if (c.hello) {
      await sendFds(fd, [], JSON.stringify({ v: 1, id: 1, op: 'hello', versions: [1] }));
      const hello = await recvFds(fd, { maxBytes: 1 << 20, maxFds: 1 });
      if (hello.eof) return ['hello got no reply'];
      const wrong = problems(hello.data);
      if (wrong.length > 0) return wrong;
    }
    try {
      await sendFds(fd, files, c.bytes);
    } catch (error) {
      // A kernel that refuses fds to a listener that takes none (SO_PASSRIGHTS): EPERM, nothing was sent.
      if (c.fds > 0 && (error as { code?: string }).code === 'EPERM') return [];
      // The agent may have hung up already (a refused hello).
      if (error instanceof lu.PeerClosedError) return [];
      throw error;
    }
    if (c.hangUp) return [];
    return await readReplies(fd);
  } finally {
    files.forEach((f) => fs.closeSync(f));
    fs.closeSync(fd);
  }
}

async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still not true after ${ms} ms: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('agent protocol fuzz', () => {
  it('prints the random seed, for a replay', () => {
    console.log(`agent fuzz: random seed ${RANDOM_SEED} (replay: LIVEUPDATE_FUZZ_SEED=${RANDOM_SEED} npx vitest run test/agent-fuzz.test.ts)`);
    expect(Number.isInteger(RANDOM_SEED)).toBe(true);
  });

  it.each(SEEDS.map((seed) => [seed]))('seed %i: the agent survives, answers within the protocol, leaks no fd, and serves a good client afterwards', async (seed) => {
    const random = prng(seed);
    const next = generator(random);
    const before = openFds().length;
    const found: string[] = [];
    for (let i = 0; i < MESSAGES_PER_SEED; ) {
      // Now and then several connections at once.
      const batch = random() < 0.2 ? 4 : 1;
      const cases = Array.from({ length: batch }, () => next());
      const results = await Promise.all(cases.map((c) => fuzzOnce(c)));
      results.forEach((r, j) => r.forEach((p) => found.push(`message ${i + j} (${cases[j]?.bytes.subarray(0, 120).toString('utf8') ?? ''}): ${p}`)));
      i += batch;
    }
    expect(found, `seed ${seed}`).toEqual([]);
    expect(unhandled, `seed ${seed}: unhandled rejections`).toEqual([]);
    expect(events.filter((e) => e.event === 'accept-failed' || (e['code'] ?? '') === 'ERR_LIVEUPDATE_AGENT_INTERNAL')).toEqual([]);
    // Every connection closed on both sides: the agent's process holds no more fds than before.
    await until(() => openFds().length <= before);
    const client = await AgentClient.connect({ socket, timeoutMs: 5000 });
    await expect(client.sessions()).resolves.toMatchObject({ sessions: [] });
    await client.close();
  }, 60_000);
});
