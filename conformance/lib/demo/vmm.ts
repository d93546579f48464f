/**
 * A VMM-like client of the demo, run as its own process (and uid) in the
 * guest: `node vmm.js before|after VM MIB SOCKET`. It talks to the agent
 * like a real VMM would, and writes one JSON event per line on stdout for
 * the scenario to relay.
 *
 * before: fills a memfd of MIB MiB with the VM's pattern, preserves it in
 * its session through the agent, says ready, and keeps its counter running
 * (one tick every 10 ms) until the kexec ends it.
 * after: claims the session back, reads the counter where it stopped,
 * compares every other byte with the pattern, resumes counting, and
 * releases the session.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { AgentClient, memfd } from 'liveupdate';
import { compare, fill, readCounter, writeCounter } from './memory.js';

/** The session each VM keeps its memory in (the agent prefixes it with the owner's uid). */
export const SESSION = 'guest-ram';
/** The memfd's token in that session. */
const TOKEN = 1n;
const TICK_MS = 10;
/** How many ticks the resumed counter runs before the client reports (and exits). */
const RESUMED_TICKS = 50;

/** What the client tells the scenario, one per line. */
export type VmmEvent =
  | { event: 'filled'; ms: number }
  | { event: 'ready'; kernelName: string; preserveMs: number; counter: string }
  | { event: 'claimed'; kernelName: string; metadata: unknown; bytes: number; uptimeMs: number }
  | { event: 'checked'; counter: string; counterIntact: boolean; firstMismatch: number; badChunks: number; ms: number }
  | { event: 'resumed'; from: string; now: string }
  | { event: 'failed'; message: string };

function say(event: VmmEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function before(vm: string, bytes: number, socket: string): Promise<void> {
  const client = await AgentClient.connect({ socket, name: `vmm ${vm}` });
  const fd = memfd.createSync(`${vm}-guest-ram`);
  let started = Date.now();
  fill(fd, vm, bytes);
  say({ event: 'filled', ms: Date.now() - started });
  let counter = 0n;
  writeCounter(fd, counter);
  const session = await client.createSession(SESSION, { metadata: { vm, mib: bytes / 2 ** 20 } });
  started = Date.now();
  await session.preserve(fd, TOKEN);
  const preserveMs = Date.now() - started;
  // The guest keeps running while the update is prepared: writes after preserve still land in the preserved pages.
  setInterval(() => writeCounter(fd, ++counter), TICK_MS);
  await client.ready();
  say({ event: 'ready', kernelName: session.name, preserveMs, counter: String(counter) });
}

async function after(vm: string, bytes: number, socket: string): Promise<void> {
  const client = await AgentClient.connect({ socket, name: `vmm ${vm}` });
  const { session, metadata } = await client.retrieveSession(SESSION);
  const fd = await session.retrieve(TOKEN);
  say({ event: 'claimed', kernelName: session.name, metadata, bytes: fs.fstatSync(fd).size, uptimeMs: Math.round(os.uptime() * 1000) });
  const stopped = readCounter(fd);
  const started = Date.now();
  const result = compare(fd, vm, bytes);
  say({ event: 'checked', counter: String(stopped.value), counterIntact: stopped.intact, ...result, ms: Date.now() - started });
  let counter = stopped.value;
  for (let i = 0; i < RESUMED_TICKS; i++) {
    writeCounter(fd, ++counter);
    await new Promise((resolve) => setTimeout(resolve, TICK_MS));
  }
  say({ event: 'resumed', from: String(stopped.value), now: String(readCounter(fd).value) });
  fs.closeSync(fd);
  await session.finish();
  await session.close();
  await client.release(SESSION);
  await client.close();
}

if (require.main === module) {
  const [mode, vm, mib, socket] = process.argv.slice(2);
  const run = mode === 'before' ? before : mode === 'after' ? after : undefined;
  if (run === undefined || vm === undefined || socket === undefined || !(Number(mib) > 0)) {
    say({ event: 'failed', message: 'usage: vmm.js before|after VM MIB SOCKET' });
    process.exit(2);
  }
  run(vm, Number(mib) * 2 ** 20, socket).catch((error: unknown) => {
    say({ event: 'failed', message: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
    process.exit(1);
  });
}
