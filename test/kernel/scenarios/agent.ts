/**
 * The agent on a real LUO kernel, across a kexec made by `liveupdate update`:
 * the agent runs as its own process (under a stand-in service manager that
 * keeps its fd store), clients run as processes of two other uids. Before
 * the kexec: an agent restart loses nothing, each user's `vm1` is its own,
 * a killed client's session is re-attached, an update with a client that is
 * not ready is refused and names it. The update command then kexecs; in
 * the new kernel the agent starts again and every client gets its own
 * sessions back, bytes and metadata intact.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { createInterface } from 'node:readline';
import { AgentClient, kexec, LiveUpdate, memfd, recvFds, SessionNotFoundError } from 'liveupdate';
import { AgentProcess, defineCase, defineScenario, libraryBinding, runCli, type JsonValue, type StageContext } from 'liveupdate-conformance';

export const INDEX = require.resolve('liveupdate');
export const SOCKET = '/run/liveupdate/agent.sock';
export const POLICY = '/tmp/agent-policy.json';
const NOTIFY = '@lu-agent-notify';
export const ALICE = 1001;
export const BOB = 1002;
/** The bound on `liveupdate update` as a process: its own --timeout for the clients, and the load and freeze. */
const UPDATE_BOUND_MS = 180_000;

/** A client process: runs one AgentClient call per line of JSON on stdin and answers one line on stdout. */
const CLIENT = `
const lu = require(process.env.LU_INDEX);
const fs = require('node:fs');
const crypto = require('node:crypto');
const keep = [];
let client;
const hash = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');
function memfdWith(size) {
  const fd = lu.memfd.createSync('guest-ram');
  const bytes = crypto.randomBytes(size);
  fs.writeSync(fd, bytes, 0, bytes.length, 0);
  keep.push(fd);
  return { fd, sha: hash(bytes) };
}
const ops = {
  async connect() { client = await lu.AgentClient.connect({ socket: process.env.LU_SOCKET, name: 'vmm' }); return { clientId: client.clientId, peer: client.peer }; },
  async create({ name, metadata, token }) {
    const session = await client.createSession(name, { metadata });
    keep.push(session);
    const file = memfdWith(1 << 20);
    await session.preserve(file.fd, BigInt(token));
    return { kernelName: session.name, state: session.state, sha: file.sha };
  },
  async attach({ name, token }) {
    const { session, metadata } = await client.attach(name);
    keep.push(session);
    const file = memfdWith(4096);
    await session.preserve(file.fd, BigInt(token));
    return { kernelName: session.name, state: session.state, metadata, sha: file.sha };
  },
  async ready() { await client.ready(); return null; },
  async sessions() { return (await client.sessions()).sessions.map((s) => s.kernelName).sort(); },
  async retrieve({ name, tokens }) {
    const { session, metadata } = await client.retrieveSession(name);
    const shas = [];
    for (const token of tokens) {
      const fd = await session.retrieve(BigInt(token));
      shas.push(hash(fs.readFileSync('/proc/self/fd/' + fd)));
      fs.closeSync(fd);
    }
    await session.finish();
    await session.close();
    await client.release(name);
    return { kernelName: session.name, metadata, shas };
  },
};
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const { op, ...args } = JSON.parse(line);
  const out = (value) => process.stdout.write(JSON.stringify(value) + '\\n');
  ops[op](args).then((value) => out({ ok: true, value }), (e) => out({ ok: false, error: { class: e.constructor.name, code: e.code, message: e.message } }));
});
`;

/** A reply of a client process. */
type Answer = { ok: true; value: JsonValue } | { ok: false; error: { class: string; code: string; message: string } };

/** A client process of `uid`, driven one request at a time. */
class ClientProcess {
  readonly child: ChildProcess;
  readonly #answers: Answer[] = [];
  #waiting: ((answer: Answer) => void) | undefined;
  stderr = '';

  constructor(readonly uid: number) {
    this.child = spawn(process.execPath, ['-e', CLIENT], {
      uid,
      gid: uid,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, LU_INDEX: INDEX, LU_SOCKET: SOCKET, HOME: '/tmp' },
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const answer = JSON.parse(line) as Answer;
      if (this.#waiting === undefined) this.#answers.push(answer);
      else this.#waiting(answer);
      this.#waiting = undefined;
    });
    this.child.stderr?.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
  }

  /** One call; resolves to its answer (a failure is an answer too). */
  ask(op: string, args: Record<string, JsonValue> = {}): Promise<Answer> {
    this.child.stdin?.write(`${JSON.stringify({ op, ...args })}\n`);
    const queued = this.#answers.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => (this.#waiting = resolve));
  }

  /** The value of a call that must succeed; throws with the error otherwise. */
  async value<T extends JsonValue>(op: string, args: Record<string, JsonValue> = {}): Promise<T> {
    const answer = await this.ask(op, args);
    if (!answer.ok) throw new Error(`uid ${this.uid} ${op}: ${answer.error.class} ${answer.error.message}\n${this.stderr}`);
    return answer.value as T;
  }
}

/** A stand-in service manager: the notify socket, with READY=1 and an fd store (FDSTORE, FDSTOREREMOVE). */
export class Manager {
  readonly fd = libraryBinding().unixBind(libraryBinding().SOCK_DGRAM, NOTIFY);
  readonly store = new Map<string, number[]>();
  #readyCount = 0;
  #onReady: (() => void) | undefined;

  constructor() {
    void this.#loop();
  }

  async #loop(): Promise<void> {
    for (;;) {
      const { data, fds } = await recvFds(this.fd, { maxFds: 253 }).catch(() => ({ data: Buffer.alloc(0), fds: [] as number[], eof: true }));
      const fields = new Map(data.toString().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)] as const));
      const name = fields.get('FDNAME') ?? 'stored';
      if (fields.get('FDSTOREREMOVE') === '1') {
        (this.store.get(name) ?? []).forEach((fd) => fs.closeSync(fd));
        this.store.delete(name);
      }
      if (fields.get('FDSTORE') === '1') this.store.set(name, [...(this.store.get(name) ?? []), ...fds]);
      else fds.forEach((fd) => fs.closeSync(fd));
      if (fields.get('READY') === '1') {
        this.#readyCount++;
        this.#onReady?.();
      }
    }
  }

  /** Resolves when the `n`-th READY=1 has arrived; rejects if it has not within `timeoutMs`. */
  ready(n: number, timeoutMs = 60_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`READY=1 came ${this.#readyCount} time(s) in ${timeoutMs} ms, not ${n}`)), timeoutMs);
      const check = (): void => {
        if (this.#readyCount < n) return;
        clearTimeout(timer);
        resolve();
      };
      this.#onReady = check;
      check();
    });
  }
}

/** The policy (in /tmp, a tmpfs: written again in each kernel): alice and bob may connect. */
function writePolicy(): void {
  fs.writeFileSync(POLICY, JSON.stringify({ connect: { users: [ALICE, BOB] }, quota: { sessions: 8, metadataBytes: 1024 } }));
}

/** `liveupdate agent` under the stand-in manager (or none), with the fds `passed` by FDNAME; resolves once it listens. */
function startAgent(env: Record<string, string>, passed: Array<[string, number]> = []): Promise<AgentProcess> {
  return AgentProcess.start({ socket: SOCKET, policy: POLICY, env, listenFds: passed });
}

// Stage 1's processes, shared by its cases (they run one after another in this process).
let manager: Manager;
let agent: AgentProcess;
const clients: ClientProcess[] = [];

function client(uid: number): ClientProcess {
  const c = new ClientProcess(uid);
  clients.push(c);
  return c;
}

// ---- stage 1 ---------------------------------------------------------------------

/** Starts the agent under the stand-in manager; a client preserves `early` and exits; the agent restarts from its fd store. */
async function startAndRestart(ctx: StageContext): Promise<JsonValue> {
  writePolicy();
  manager = new Manager();
  agent = await startAgent({ NOTIFY_SOCKET: NOTIFY });
  await manager.ready(1);
  ctx.check('the agent said READY=1', true);
  const early = new ClientProcess(ALICE);
  await early.value('connect');
  const made = await early.value<{ sha: string }>('create', { name: 'early', metadata: { vm: 'early' }, token: 1 });
  await early.value('ready');
  early.child.kill('SIGKILL');
  const code = await agent.stop();
  ctx.equal('SIGTERM: the agent stopped cleanly', code, 0);
  const parked = [...manager.store.keys()].sort();
  ctx.check('it parked its state and the session in the fd store', parked.includes('agent-state') && parked.filter((n) => n.startsWith('luo-')).length === 1, parked);
  ctx.report('first agent log', agent.output);
  const passed = [...manager.store.entries()].flatMap(([name, fds]) => fds.map((fd) => [name, fd] as [string, number]));
  agent = await startAgent({ NOTIFY_SOCKET: NOTIFY }, passed);
  await manager.ready(2);
  const root = await AgentClient.connect({ socket: SOCKET });
  const listed = (await root.sessions()).sessions.map((s) => [s.kernelName, s.owner, s.state, s.metadata]);
  await root.close();
  ctx.equal('the restarted agent still holds the session', listed as unknown as JsonValue, [['u1001.early', ALICE, 'outgoing', { vm: 'early' }]]);
  return { sha: made.sha };
}

/** Two users each create `vm1`, preserve known bytes and say ready; neither can reach the other's. */
async function twoUsers(ctx: StageContext): Promise<JsonValue> {
  const alice = client(ALICE);
  const bob = client(BOB);
  const hello = [await alice.value<{ peer: { uid: number } }>('connect'), await bob.value<{ peer: { uid: number } }>('connect')];
  ctx.equal('the agent saw each uid (SO_PEERCRED)', hello.map((h) => h.peer.uid), [ALICE, BOB]);
  const a = await alice.value<{ kernelName: string; state: string; sha: string }>('create', { name: 'vm1', metadata: { owner: 'alice', ram: 1 }, token: 1 });
  const b = await bob.value<{ kernelName: string; state: string; sha: string }>('create', { name: 'vm1', metadata: { owner: 'bob', ram: 2 }, token: 1 });
  ctx.equal("each user's vm1 is its own kernel session", [a.kernelName, a.state, b.kernelName, b.state], ['u1001.vm1', 'outgoing', 'u1002.vm1', 'outgoing']);
  ctx.equal('bob sees only his sessions', await bob.value('sessions'), ['u1002.vm1']);
  const stolen = await bob.ask('attach', { name: 'u1001.vm1', token: 9 });
  ctx.equal("bob cannot attach to alice's vm1", stolen.ok ? 'attached' : [stolen.error.class, stolen.error.code], ['SessionNotFoundError', 'ENOENT']);
  await alice.value('ready');
  await bob.value('ready');
  return { alice: a.sha, bob: b.sha };
}

/** A client is killed after preserving; a new process of the same user re-attaches and adds a file. */
async function clientKilled(ctx: StageContext): Promise<JsonValue> {
  const first = client(ALICE);
  await first.value('connect');
  const made = await first.value<{ sha: string }>('create', { name: 'vm2', metadata: { owner: 'alice', disk: 'b' }, token: 1 });
  first.child.kill('SIGKILL');
  await new Promise((resolve) => first.child.once('exit', resolve));
  const again = client(ALICE);
  await again.value('connect');
  const attached = await again.value<{ kernelName: string; state: string; metadata: JsonValue; sha: string }>('attach', { name: 'vm2', token: 2 });
  ctx.equal('re-attached: the same outgoing session and its metadata', [attached.kernelName, attached.state, attached.metadata], ['u1001.vm2', 'outgoing', { owner: 'alice', disk: 'b' }]);
  await again.value('ready');
  return { shas: [made.sha, attached.sha] };
}

/** A client holding a session never says ready: the update is refused, names it, and leaves nothing loaded. */
async function notReadyRefused(ctx: StageContext): Promise<JsonValue> {
  const late = client(BOB);
  const hello = await late.value<{ clientId: number }>('connect');
  const made = await late.value<{ sha: string }>('create', { name: 'vm3', metadata: null, token: 1 });
  const run = await runCli(['update', '--socket', SOCKET, '--kernel', ctx.nextKernel ?? ctx.kernel, '--cmdline', 'console=ttyS0 liveupdate=on kho=on', '--timeout', '2', '--json']);
  const report = run.json<{ result?: string; details?: { notReady?: Array<{ id: number; pid: number; uid: number }> } }>();
  ctx.equal('update exits 3 (a client not ready)', run.status, 3) || ctx.report('update stderr', run.stderr);
  ctx.equal('the report names the client: id, pid, uid', [report.result ?? null, report.details?.notReady ?? null] as unknown as JsonValue, [
    'refused',
    [{ id: hello.clientId, pid: late.child.pid ?? -1, uid: BOB }],
  ]);
  ctx.equal('the kernel was unloaded', await kexec.isLoaded(), false);
  await late.value('ready');
  return { sha: made.sha };
}

/** The runner's kexec is `liveupdate update`, which waits for every client (all ready now) and jumps. */
function updateKexecs(ctx: StageContext): JsonValue {
  ctx.jumpWith(async (next) => {
    const run = await runCli(['update', '--socket', SOCKET, '--kernel', next.kernel, '--initrd', next.initrd, '--cmdline', next.cmdline, '--timeout', '30'], { timeoutMs: UPDATE_BOUND_MS });
    throw new Error(`liveupdate update exited ${String(run.status ?? run.signal)} without a kexec: ${run.stdout} ${run.stderr}\nagent log:\n${agent.output}`);
  });
  ctx.check('liveupdate update will make the kexec', true);
  return { clients: clients.length };
}

// ---- stage 2 ---------------------------------------------------------------------

/** The agent starts again, reads the manifest first, and lists every session as waiting. */
async function agentAgain(ctx: StageContext): Promise<void> {
  writePolicy();
  agent = await startAgent({});
  const run = await runCli(['sessions', '--socket', SOCKET, '--json']);
  const report = run.json<{ sessions?: Array<{ kernelName: string; owner: number; state: string }>; kexecCount?: number; frozenAt?: number; firstOpenAt?: number }>();
  const listed = (report.sessions ?? []).map((s) => [s.kernelName, s.owner, s.state]).sort();
  ctx.equal('sessions --json lists every session from the manifest, waiting', listed as unknown as JsonValue, [
    ['u1001.early', ALICE, 'waiting'],
    ['u1001.vm1', ALICE, 'waiting'],
    ['u1001.vm2', ALICE, 'waiting'],
    ['u1002.vm1', BOB, 'waiting'],
    ['u1002.vm3', BOB, 'waiting'],
  ]);
  ctx.equal('kexec count 1', report.kexecCount ?? null, 1);
  ctx.check('frozen before the device was opened again', (report.frozenAt ?? Infinity) <= (report.firstOpenAt ?? 0), { frozenAt: report.frozenAt ?? null, firstOpenAt: report.firstOpenAt ?? null });
  const alice = client(ALICE);
  await alice.value('connect');
  const early = await alice.value<{ shas: string[]; metadata: JsonValue }>('retrieve', { name: 'early', tokens: [1] });
  ctx.equal('the session kept through the agent restart is intact', [early.shas, early.metadata], [[(ctx.previous as { sha: string }).sha], { vm: 'early' }]);
}

async function twoUsersAfter(ctx: StageContext): Promise<void> {
  const before = ctx.previous as { alice: string; bob: string };
  const [alice, bob] = [client(ALICE), client(BOB)];
  await alice.value('connect');
  await bob.value('connect');
  const stolen = await bob.ask('retrieve', { name: 'u1001.vm1', tokens: [1] });
  ctx.equal("bob cannot retrieve alice's vm1", stolen.ok ? 'retrieved' : [stolen.error.class, stolen.error.code], ['SessionNotFoundError', 'ENOENT']);
  const a = await alice.value<{ kernelName: string; metadata: JsonValue; shas: string[] }>('retrieve', { name: 'vm1', tokens: [1] });
  const b = await bob.value<{ kernelName: string; metadata: JsonValue; shas: string[] }>('retrieve', { name: 'vm1', tokens: [1] });
  ctx.equal("alice's vm1: her metadata and bytes", [a.kernelName, a.metadata, a.shas], ['u1001.vm1', { owner: 'alice', ram: 1 }, [before.alice]]);
  ctx.equal("bob's vm1: his metadata and bytes", [b.kernelName, b.metadata, b.shas], ['u1002.vm1', { owner: 'bob', ram: 2 }, [before.bob]]);
}

async function clientKilledAfter(ctx: StageContext): Promise<void> {
  const alice = client(ALICE);
  await alice.value('connect');
  const got = await alice.value<{ shas: string[] }>('retrieve', { name: 'vm2', tokens: [1, 2] });
  ctx.equal('both files of the re-attached session arrive', got.shas, (ctx.previous as { shas: string[] }).shas);
}

async function notReadyAfter(ctx: StageContext): Promise<void> {
  const bob = client(BOB);
  await bob.value('connect');
  const got = await bob.value<{ shas: string[] }>('retrieve', { name: 'vm3', tokens: [1] });
  ctx.equal('the late client’s session arrives', got.shas, [(ctx.previous as { sha: string }).sha]);
}

async function everyoneBack(ctx: StageContext): Promise<void> {
  const root = await AgentClient.connect({ socket: SOCKET });
  const report = await root.sessions();
  await root.close();
  ctx.equal('every session was claimed and released', report.sessions.map((s) => s.state).sort(), ['finished', 'finished', 'finished', 'finished', 'finished']);
  const claims = report.sessions.map((s) => (s.claimedAt ?? 0) - (report.frozenAt ?? 0));
  ctx.report('ms from freeze to each claim', claims);
  ctx.report('uptime when every client held its fds (s)', os.uptime());
  const code = await agent.stop();
  ctx.equal('the agent stops on SIGTERM', code, 0) || ctx.report('agent log', agent.output);
  for (const c of clients) c.child.kill('SIGKILL');
}

// ---- a manifest of a newer major version (stages 2 and 3) -------------------------

const KEPT = 'u1001.kept-by-refusal';

/** With the agent stopped, plants a manifest of version 2.0 and a user's session, then the runner kexecs. */
async function plantNewerManifest(ctx: StageContext): Promise<JsonValue> {
  const luo = await LiveUpdate.open();
  const own = await luo.createSession('liveupdate-agent');
  const manifestFd = await memfd.create('manifest');
  const sessions = [{ kernelName: KEPT, name: 'kept-by-refusal', owner: ALICE, metadata: null, createdAt: Date.now() }];
  fs.writeSync(manifestFd, JSON.stringify({ format: 'liveupdate-agent-manifest', version: [2, 0], kexecCount: 1, updateStartedAt: 0, frozenAt: Date.now(), sessions }));
  await own.preserve(manifestFd, 0);
  const kept = await luo.createSession(KEPT);
  const file = await memfd.create('kept');
  fs.writeSync(file, 'kept bytes');
  await kept.preserve(file, 1);
  await luo.close();
  ctx.keep(own, kept, manifestFd, file);
  ctx.check('planted', true);
  return null;
}

/** The agent refuses the newer manifest, says why, serves nothing else, and leaves every session unfinished. */
async function refusedAfter(ctx: StageContext): Promise<void> {
  writePolicy();
  agent = await startAgent({});
  const run = await runCli(['sessions', '--socket', SOCKET, '--json']);
  const report = run.json<{ refused?: string | null }>();
  ctx.check('sessions says why the manifest is refused', /manifest version 2\.0/.test(report.refused ?? ''), report.refused ?? null);
  const alice = client(ALICE);
  await alice.value('connect');
  const refused = await alice.ask('retrieve', { name: 'kept-by-refusal', tokens: [1] });
  ctx.equal('a claim is refused with ManifestVersionError', refused.ok ? 'claimed' : [refused.error.class, refused.error.code], ['ManifestVersionError', 'ERR_LIVEUPDATE_MANIFEST_VERSION']);
  ctx.equal('the agent logged it', agent.log.find('manifest-refused') !== undefined, true);
  const code = await agent.stop();
  alice.child.kill('SIGKILL');
  ctx.equal('the refusing agent stops cleanly', code, 0);
  // Nothing was finished or discarded: the user's session is still there to retrieve, its file intact.
  const luo = await LiveUpdate.open();
  try {
    const kept = await luo.retrieveSession(KEPT);
    const fd = await kept.retrieve(1);
    ctx.equal("the user's session was left untouched", fs.readFileSync(`/proc/self/fd/${fd}`, 'utf8'), 'kept bytes');
    await kept.finish();
    await kept.close();
    fs.closeSync(fd);
  } catch (error) {
    ctx.check("the user's session was left untouched", false, error instanceof SessionNotFoundError ? 'gone' : String(error));
  } finally {
    await luo.close();
  }
}

/** @internal */
export default defineScenario('agent', [
  defineCase('restart-keeps-sessions', [startAndRestart, agentAgain]),
  defineCase('two-users-vm1', [twoUsers, twoUsersAfter]),
  defineCase('killed-client-reattaches', [clientKilled, clientKilledAfter]),
  defineCase('update-refused-not-ready', [notReadyRefused, notReadyAfter]),
  defineCase('update-kexecs', [updateKexecs, everyoneBack]),
  defineCase('newer-manifest-refused', [null, plantNewerManifest, refusedAfter]),
]);
