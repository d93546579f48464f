/**
 * The VMM-like client of each host of the fleet (fleet.ts), run in the guest
 * as a systemd unit: `node fleet-vmm.js CONFIG` keeps a guest's memory in a
 * memfd through the agent, across every live update of its host.
 *
 * At start it asks the agent for the session a previous kernel left for it:
 * found, it claims it, checks every byte and the counter (demo/memory.ts),
 * and carries the memory into a new session for the next update; not found
 * (the first boot), it fills a new memfd with its VM's pattern. Either way it
 * preserves the memory, keeps its counter running and says ready, unless its
 * config says `ready: false` (a client that holds an update back): it then
 * says ready only on SIGUSR1. What it did goes to {@link VMM_STATE} as JSON,
 * which `fleet-vmm.js --check` (the rollout's health command) reads.
 * A client that holds updates back does so on every boot.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { AgentClient, memfd, type AgentSession } from 'liveupdate';
import { compare, fill, readCounter, writeCounter, type Comparison } from '../demo/memory.js';

/** Where the client writes what it did (tmpfs: one file per boot). */
export const VMM_STATE = '/run/lu-vmm/state.json';
/** The session holding the guest memory (the agent prefixes it with the owner's uid). */
export const VMM_SESSION = 'guest-ram';
const TOKEN = 1n;
/**
 * How often the counter is written. Ten times a second keeps the memory
 * written until the freeze; at 100 a second each idle client took about
 * 8% of a core under emulation (three guests sharing the machine's two).
 */
const TICK_MS = 100;

/** The client's configuration, a JSON file the fleet writes into each host. */
export interface VmmConfig {
  /** The VM's name: its memory pattern is its own. */
  readonly vm: string;
  /** Guest memory in MiB. */
  readonly mib: number;
  /** Whether it says ready on its own (false: only on SIGUSR1). */
  readonly ready: boolean;
  /** The agent's socket. */
  readonly socket: string;
}

/** What the client did in this boot, at {@link VMM_STATE}. */
export interface VmmState {
  readonly vm: string;
  /** `fresh`: filled on the first boot; `claimed`: taken back from the previous kernel; `failed`. */
  readonly phase: 'fresh' | 'claimed' | 'failed';
  /** uname -r of this boot. */
  readonly release: string;
  /** Whether it has said ready (for the next update). */
  readonly ready: boolean;
  /** The kernel's name of the session its memory is preserved in now. */
  readonly kernelName?: string;
  /** The session it claimed, its metadata and size (claimed only). */
  readonly claimed?: { readonly kernelName: string; readonly metadata: unknown; readonly bytes: number };
  /** Every byte but the counter compared with the pattern (claimed only). */
  readonly comparison?: Comparison;
  /** The counter where the previous kernel left it, and whether it is whole (claimed only). */
  readonly counter?: { readonly value: string; readonly intact: boolean };
  /** Why it failed. */
  readonly message?: string;
}

/** Writes the state file (its directory is the unit's RuntimeDirectory=). */
function writeState(state: VmmState): void {
  fs.writeFileSync(`${VMM_STATE}.tmp`, `${JSON.stringify(state)}\n`);
  fs.renameSync(`${VMM_STATE}.tmp`, VMM_STATE);
}

/** The session the previous kernel left for this client, or null on a first boot. */
async function previousSession(client: AgentClient): Promise<AgentSession | null> {
  try {
    return await client.retrieveSession(VMM_SESSION);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/** Claims the previous kernel's memory: checks it, copies it into a memfd of this boot, lets the old session go. */
async function claim(client: AgentClient, previous: AgentSession, config: VmmConfig): Promise<{ fd: number; found: Partial<VmmState> }> {
  const old = await previous.session.retrieve(TOKEN);
  try {
    const bytes = fs.fstatSync(old).size;
    const counter = readCounter(old);
    const comparison = compare(old, config.vm, bytes);
    const fd = memfd.createSync(`${config.vm}-guest-ram`);
    const buffer = Buffer.alloc(1 << 20);
    for (let at = 0; at < bytes; at += buffer.length) {
      const n = fs.readSync(old, buffer, 0, Math.min(buffer.length, bytes - at), at);
      fs.writeSync(fd, buffer, 0, n, at);
    }
    await previous.session.finish();
    await previous.session.close();
    await client.release(VMM_SESSION);
    return {
      fd,
      found: {
        phase: 'claimed',
        claimed: { kernelName: previous.session.name, metadata: previous.metadata, bytes },
        comparison,
        counter: { value: String(counter.value), intact: counter.intact },
      },
    };
  } finally {
    fs.closeSync(old);
  }
}

async function run(config: VmmConfig): Promise<void> {
  const client = await AgentClient.connect({ socket: config.socket, name: `fleet vmm ${config.vm}` });
  const previous = await previousSession(client);
  let fd: number;
  let found: Partial<VmmState>;
  if (previous === null) {
    fd = memfd.createSync(`${config.vm}-guest-ram`);
    fill(fd, config.vm, config.mib * 2 ** 20);
    found = { phase: 'fresh' };
  } else {
    ({ fd, found } = await claim(client, previous, config));
  }
  const session = await client.createSession(VMM_SESSION, { metadata: { vm: config.vm, mib: config.mib } });
  await session.preserve(fd, TOKEN);
  // The guest keeps running while the update is prepared: the counter's writes land in the preserved pages.
  let counter = found.counter === undefined ? 0n : BigInt(found.counter.value);
  setInterval(() => writeCounter(fd, ++counter), TICK_MS);
  const state = (ready: boolean): VmmState => ({ vm: config.vm, phase: 'fresh', ...found, release: os.release(), ready, kernelName: session.name });
  const sayReady = async (): Promise<void> => {
    await client.ready();
    writeState(state(true));
  };
  process.on('SIGUSR1', () => void sayReady().catch(failed));
  if (config.ready) await sayReady();
  else writeState(state(false));
}

function failed(error: unknown): void {
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  try {
    writeState({ vm: 'unknown', phase: 'failed', release: os.release(), ready: false, message });
  } finally {
    process.stderr.write(`fleet vmm: ${message}\n`);
    process.exit(1);
  }
}

/**
 * `--check`: exit 0 when this boot's client claimed its memory intact (or
 * filled it fresh) and holds it in a new session. Whether it says ready is
 * the next update's business.
 */
function check(): number {
  let state: VmmState;
  try {
    state = JSON.parse(fs.readFileSync(VMM_STATE, 'utf8')) as VmmState;
  } catch (error) {
    process.stderr.write(`no client state at ${VMM_STATE}: ${(error as Error).message}\n`);
    return 1;
  }
  const intact = state.phase === 'fresh' || (state.comparison?.firstMismatch === -1 && state.counter?.intact === true);
  process.stdout.write(`${JSON.stringify(state)}\n`);
  return intact && state.kernelName !== undefined ? 0 : 1;
}

if (require.main === module) {
  const arg = process.argv[2];
  if (arg === '--check') {
    process.exitCode = check();
  } else if (arg === undefined) {
    process.stderr.write('usage: fleet-vmm.js CONFIG.json | --check\n');
    process.exitCode = 2;
  } else {
    try {
      run(JSON.parse(fs.readFileSync(arg, 'utf8')) as VmmConfig).catch(failed);
    } catch (error) {
      failed(error);
    }
  }
}
