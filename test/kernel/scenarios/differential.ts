/**
 * The differential scenario: one client's code, run against the real agent
 * on a LUO kernel (this module's default export, in the guest, across one
 * kexec made by the agent's `update`) and against the simulated agent on
 * the host (test/simulator-differential.test.ts and
 * test/kernel/differential.test.ts call {@link beforeKexec} and
 * {@link afterKexec} with the simulator). Each step records what the client
 * observes (values, error classes, codes, errnos, syscalls, states) into a
 * transcript; the two transcripts must be equal step by step.
 *
 * The client is the agent kernel scenario's (create a session, preserve
 * memfds, ready, update, claim, retrieve, finish, release) plus the misuse
 * cases the simulator promises to answer as the kernel does: duplicate and
 * bad names, tokens in use, a file preserved twice, files no handler takes,
 * fds not open, calls on the wrong direction of session, a preserved
 * memfd's frozen size, the single owner of the device, retrieving twice,
 * closed sessions not crossing the kexec. Nothing here depends on where it
 * runs (no fd numbers, pids, paths or times are recorded).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient, LiveUpdate, memfd, type JsonValue, type Session } from 'liveupdate';
import { startSimulatedAgent } from 'liveupdate/simulator';
import { AgentProcess, defineCase, defineScenario, memfdWith, type StageContext } from 'liveupdate-conformance';

/** One observed step: its name and what the client saw (a value, or the error's shape). */
export interface Step {
  step: string;
  result: JsonValue;
}

/** Where the client runs: the agent's socket, and how this host opens the LUO device (the single-owner check). */
export interface DifferentialEnv {
  socket: string;
  /** Opens the device and closes it again (it fails: the agent owns it). */
  openDevice(): Promise<void>;
}

/** What the first half leaves open until the kexec (the real kernel keeps what is open at the jump). */
export interface BeforeKexec {
  steps: Step[];
  keep: Array<AgentClient | Session | number>;
}

export const VM1 = 'diff-vm1';
export const VM2 = 'diff-vm2';
/** The longest name root may give: 63 bytes (the kernel's field is 64 with the NUL). */
export const LONGEST = `diff-${'n'.repeat(58)}`;
const RAM_BYTES = 65_536;

/** An error as the transcript records it: everything a caller may branch on, nothing that names this machine. */
function shapeOf(error: unknown): JsonValue {
  const e = error as { code?: unknown; errno?: unknown; syscall?: unknown };
  return {
    error: (error as Error).constructor.name,
    code: typeof e.code === 'string' ? e.code : null,
    errno: typeof e.errno === 'number' ? e.errno : null,
    syscall: typeof e.syscall === 'string' ? e.syscall : null,
  };
}

/** Records `step`: its value, or its error's shape. */
async function record(steps: Step[], step: string, run: () => JsonValue | Promise<JsonValue>): Promise<void> {
  try {
    steps.push({ step, result: { value: await run() } });
  } catch (error) {
    steps.push({ step, result: shapeOf(error) });
  }
}

function sha256(fd: number): string {
  return createHash('sha256').update(fs.readFileSync(`/proc/self/fd/${fd}`)).digest('hex');
}

/** The file position of `fd`, from the kernel (memfd_luo carries it across the kexec). */
function positionOf(fd: number): number {
  return Number(/^pos:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? -1);
}

/** What a file is, as the transcript records it. */
function fileFacts(fd: number): JsonValue {
  return { size: fs.fstatSync(fd).size, sha256: sha256(fd), seals: memfd.getSealsSync(fd), position: positionOf(fd) };
}

async function listed(client: AgentClient): Promise<JsonValue> {
  return (await client.sessions()).sessions.map((s) => [s.name, s.state]).sort() as unknown as JsonValue;
}

/** The first half, before the kexec: sessions created and filled, every misuse refused; everything still open is in `keep`. */
export async function beforeKexec(env: DifferentialEnv): Promise<BeforeKexec> {
  const steps: Step[] = [];
  const keep: BeforeKexec['keep'] = [];
  const client = await AgentClient.connect({ socket: env.socket, name: 'differential' });
  keep.push(client);
  await record(steps, 'hello', () => ({ version: client.protocolVersion, kexecCount: client.kexecCount }));

  let vm1: Session | undefined;
  await record(steps, 'create vm1', async () => {
    const created = await client.createSession(VM1, { metadata: { vm: 1 } });
    keep.push((vm1 = created));
    return { name: created.name, state: created.state };
  });
  if (vm1 === undefined) return { steps, keep };
  const session = vm1;
  await record(steps, 'create vm1 again: name in use', () => client.createSession(VM1).then(() => 'created'));
  await record(steps, 'create a 64-byte name', () => client.createSession(`${LONGEST}x`).then(() => 'created'));
  await record(steps, 'create an empty name', () => client.createSession('').then(() => 'created'));
  await record(steps, 'create the longest name', async () => {
    const s = await client.createSession(LONGEST);
    await client.release(LONGEST);
    await s.close();
    return s.name.length;
  });
  await record(steps, 'create the longest name again once closed: its name is free', async () => {
    const s = await client.createSession(LONGEST);
    keep.push(s);
    return s.state;
  });

  const ram = memfdWith('ram', Buffer.alloc(RAM_BYTES, 0x5a), { allowSealing: true });
  const other = memfdWith('other', 'other bytes', { allowSealing: true });
  keep.push(ram, other);
  await record(steps, 'preserve ram as 1', () => session.preserve(ram, 1n).then(() => 'preserved'));
  await record(steps, 'preserve ram again as 2: the file is preserved', () => session.preserve(ram, 2n).then(() => 'preserved'));
  await record(steps, 'preserve another file as 1: the token is in use', () => session.preserve(other, 1n).then(() => 'preserved'));
  const devNull = fs.openSync('/dev/null', 'r');
  await record(steps, 'preserve /dev/null: no handler', () => session.preserve(devNull, 3n).then(() => 'preserved'));
  fs.closeSync(devNull);
  await record(steps, 'preserve an fd that is not open', () => session.preserve(4000, 4n).then(() => 'preserved'));
  await record(steps, 'ftruncate the preserved ram: its size is frozen', () => (fs.ftruncateSync(ram, RAM_BYTES * 2), 'truncated'));
  await record(steps, 'write past the end of the preserved ram', () => fs.writeSync(ram, Buffer.from('tail'), 0, 4, RAM_BYTES));
  await record(steps, 'write inside the preserved ram', () => fs.writeSync(ram, Buffer.from('head'), 0, 4, 0));
  await record(steps, 'retrieve from an outgoing session', () => session.retrieve(1n).then(() => 'retrieved'));
  await record(steps, 'finish an outgoing session', () => session.finish().then(() => 'finished'));
  await record(steps, 'get the name', () => session.getName());
  await record(steps, 'open the device the agent owns', () => env.openDevice().then(() => 'opened'));

  // Position 100 of the file: memfd_luo carries the position across.
  fs.writeSync(other, Buffer.alloc(100, 0x61), 0, 100, null);
  await record(steps, 'preserve a second file as 2', () => session.preserve(other, 2n).then(() => 'preserved'));
  const sealed = memfdWith('sealed', 'sealed bytes', { allowSealing: true });
  memfd.addSealsSync(sealed, memfd.SEAL_WRITE | memfd.SEAL_SHRINK | memfd.SEAL_GROW | memfd.SEAL_SEAL);
  const plain = memfdWith('plain', 'plain bytes');
  keep.push(sealed, plain);
  await record(steps, 'preserve a fully sealed memfd as 3', () => session.preserve(sealed, 3n).then(() => 'preserved'));
  await record(steps, 'preserve a memfd born with SEAL_SEAL as 4', () => session.preserve(plain, 4n).then(() => 'preserved'));

  await record(steps, 'create vm2, preserve, release and close it', async () => {
    const s = await client.createSession(VM2);
    const file = memfdWith('vm2', 'gone');
    await s.preserve(file, 1n);
    await client.release(VM2);
    await s.close();
    fs.closeSync(file);
    return 'closed';
  });
  await record(steps, 'ready', () => client.ready().then(() => 'ready'));
  await record(steps, 'sessions before the kexec', () => listed(client));
  return { steps, keep };
}

/** The second half, after the kexec: each session claimed, its files retrieved and checked, every misuse refused. */
export async function afterKexec(env: DifferentialEnv): Promise<Step[]> {
  const steps: Step[] = [];
  const client = await AgentClient.connect({ socket: env.socket, name: 'differential' });
  try {
    await record(steps, 'hello', () => ({ version: client.protocolVersion, kexecCount: client.kexecCount }));
    await record(steps, 'sessions after the kexec', () => listed(client));
    await record(steps, 'claim a session that never was', () => client.retrieveSession('diff-nope').then(() => 'claimed'));
    await record(steps, 'claim vm2, closed before the kexec', () => client.retrieveSession(VM2).then(() => 'claimed'));
    let vm1: Session | undefined;
    await record(steps, 'claim vm1', async () => {
      const claimed = await client.retrieveSession(VM1);
      vm1 = claimed.session;
      return { state: vm1.state, metadata: claimed.metadata };
    });
    if (vm1 !== undefined) await filesOf(steps, vm1);
    await record(steps, 'release vm1', () => client.release(VM1).then(() => 'released'));
    await record(steps, 'claim vm1 again once finished', () => client.retrieveSession(VM1).then(() => 'claimed'));
    await record(steps, 'claim the longest name: an empty session crosses', async () => {
      const { session } = await client.retrieveSession(LONGEST);
      try {
        return await session.retrieve(1n).then(() => 'retrieved');
      } finally {
        await session.close();
      }
    });
    await record(steps, 'release the longest name', () => client.release(LONGEST).then(() => 'released'));
    await record(steps, 'sessions at the end', () => listed(client));
  } finally {
    await client.close();
  }
  return steps;
}

/** vm1's files: contents, sizes, positions and seals back, misuse refused, then finish. */
async function filesOf(steps: Step[], session: Session): Promise<void> {
  const opened: number[] = [];
  const take = async (token: bigint): Promise<number> => {
    const fd = await session.retrieve(token);
    opened.push(fd);
    return fd;
  };
  try {
    const late = memfdWith('late', 'late');
    await record(steps, 'preserve into an incoming session', () => session.preserve(late, 9n).then(() => 'preserved'));
    fs.closeSync(late);
    await record(steps, 'retrieve a token never preserved', () => session.retrieve(99n).then(() => 'retrieved'));
    let ram = -1;
    await record(steps, 'retrieve ram', async () => fileFacts((ram = await take(1n))));
    await record(steps, 'retrieve ram again: the same file', async () => fs.fstatSync(await take(1n)).ino === fs.fstatSync(ram).ino);
    await record(steps, 'ftruncate the retrieved ram: no longer frozen', () => (fs.ftruncateSync(ram, RAM_BYTES * 2), fs.fstatSync(ram).size));
    await record(steps, 'retrieve the second file', async () => fileFacts(await take(2n)));
    let sealed = -1;
    await record(steps, 'retrieve the sealed memfd: its seals are back', async () => fileFacts((sealed = await take(3n))));
    await record(steps, 'write into the sealed memfd', () => fs.writeSync(sealed, Buffer.from('x'), 0, 1, 0));
    await record(steps, 'retrieve the memfd born with SEAL_SEAL', async () => fileFacts(await take(4n)));
    await record(steps, 'get the name', () => session.getName());
    await record(steps, 'finish', () => session.finish().then(() => session.state));
    await record(steps, 'retrieve after finish', () => session.retrieve(2n).then(() => 'retrieved'));
  } finally {
    opened.forEach((fd) => fs.closeSync(fd));
    await session.close();
  }
}

/** Closes what the first half kept open (after a simulated kexec its sessions are dead fds; the real kernel's died with their process). */
function closeKept(keep: BeforeKexec['keep']): void {
  for (const k of keep) {
    if (typeof k === 'number') fs.closeSync(k);
    else k.closeSync();
  }
}

// ---- on the host: the simulated agent ---------------------------------------------

/** Both halves against the simulated agent, in this process, with its simulated kexec between them. */
export async function simulatedTranscript(): Promise<{ before: Step[]; after: Step[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-differential-'));
  const socket = path.join(dir, 'agent.sock');
  const simulated = await startSimulatedAgent({ socketPath: socket });
  try {
    const env: DifferentialEnv = { socket, openDevice: async () => simulated.openDevice().closeSync() };
    const { steps, keep } = await beforeKexec(env);
    try {
      await simulated.update();
    } finally {
      closeKept(keep);
    }
    return { before: steps, after: await afterKexec(env) };
  } finally {
    await simulated.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- in the guest: the real agent ------------------------------------------------

const SOCKET = '/run/liveupdate/agent.sock';
const GUEST: DifferentialEnv = { socket: SOCKET, openDevice: async () => (await LiveUpdate.open()).closeSync() };
let agent: AgentProcess;

async function realBefore(ctx: StageContext): Promise<JsonValue> {
  agent = await AgentProcess.start({ socket: SOCKET });
  const { steps, keep } = await beforeKexec(GUEST);
  ctx.keep(...keep);
  ctx.jumpWith(async (next) => {
    const client = await AgentClient.connect({ socket: SOCKET, name: 'update' });
    await client.update({ kernel: next.kernel, initrd: next.initrd, cmdline: next.cmdline, timeoutMs: 30_000 });
    throw new Error(`the update returned without a kexec; agent log:\n${agent.output}`);
  });
  return steps as unknown as JsonValue;
}

async function realAfter(): Promise<JsonValue> {
  agent = await AgentProcess.start({ socket: SOCKET });
  try {
    return (await afterKexec(GUEST)) as unknown as JsonValue;
  } finally {
    await agent.stop();
  }
}

export default defineScenario('differential', [defineCase('client', [realBefore, realAfter])]);
