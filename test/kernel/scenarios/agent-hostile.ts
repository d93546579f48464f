/**
 * The agent against hostile users and its own failures, on a real LUO
 * kernel, in one boot with one kexec: concurrent creates across
 * connections (quota, names), `sessions` paging, release semantics, every
 * update failure path leaving nothing loaded (/sys/kernel/kexec_loaded),
 * `onClientExit: "release"` across an agent restart, a client lost during
 * an update, a corrupt state memfd and the fd store's limit; then an update
 * that goes on without a client the policy does not wait for, and after it
 * the released session, the claims and the dry run that refuses while
 * handed-over sessions wait.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { createInterface } from 'node:readline';
import { AgentClient, LiveUpdate, memfd, recvFds, sendFds, type Session } from 'liveupdate';
import { AgentProcess, defineCase, defineScenario, libraryBinding, runCli, type CliResult, type JsonValue, type StageContext } from 'liveupdate-conformance';
import { ALICE, BOB, INDEX, Manager, POLICY, SOCKET } from './agent.js';

const NOTIFY = { NOTIFY_SOCKET: '@lu-agent-notify' };

/** `liveupdate ARGS`, with room for an update that waits up to two minutes for its clients. */
function cli(args: string[]): Promise<CliResult> {
  return runCli(args, { timeoutMs: 180_000 });
}

/** `liveupdate agent` (under the stand-in manager with `env`), given the fds `passed`; resolves once it answers. */
function launch(env: Record<string, string>, passed: Array<[string, number]> = []): Promise<AgentProcess> {
  return AgentProcess.start({ socket: SOCKET, policy: POLICY, env, listenFds: passed });
}
const MAX_MESSAGE_BYTES = 65536;

/** A client process of one uid that runs the JavaScript it is sent (an async function body) and answers its result. */
const PEER = `
const lu = require(process.env.LU_INDEX);
const fs = require('node:fs');
const state = { clients: [], held: new Map() };
const connect = async () => { const c = await lu.AgentClient.connect({ socket: process.env.LU_SOCKET }); state.clients.push(c); return c; };
const AsyncFunction = (async () => {}).constructor;
const out = (value) => process.stdout.write(JSON.stringify(value) + '\\n');
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const { code, args } = JSON.parse(line);
  new AsyncFunction('lu', 'fs', 'state', 'connect', 'args', code)(lu, fs, state, connect, args)
    .then((value) => out({ ok: true, value: value ?? null }), (e) => out({ ok: false, error: { class: e.constructor.name, code: e.code, message: e.message } }));
});
`;

type Answer = { ok: true; value: JsonValue } | { ok: false; error: { class: string; code: string; message: string } };

/** A client process of `uid` that runs the code it is sent (also used by the announcements scenario). */
export class Peer {
  readonly child: ChildProcess;
  readonly #waiting: Array<(answer: Answer) => void> = [];

  constructor(readonly uid: number) {
    this.child = spawn(process.execPath, ['-e', PEER], { uid, gid: uid, stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, LU_INDEX: INDEX, LU_SOCKET: SOCKET, HOME: '/tmp' } });
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.#waiting.shift()?.(JSON.parse(line) as Answer));
  }

  /** Runs `code` in the process; resolves to its answer. */
  run(code: string, args: JsonValue = null): Promise<Answer> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      this.child.stdin?.write(`${JSON.stringify({ code, args })}\n`);
    });
  }

  /** Like run, for code that must succeed. */
  async value<T extends JsonValue>(code: string, args: JsonValue = null): Promise<T> {
    const answer = await this.run(code, args);
    if (!answer.ok) throw new Error(`uid ${this.uid}: ${answer.error.class} ${answer.error.message}`);
    return answer.value as T;
  }
}

/** Creates each name on its own new connection, all at once; answers 'ok' or the error class per name. */
const BURST = `
const cs = await Promise.all(args.names.map(() => connect()));
const results = await Promise.allSettled(cs.map((c, i) => c.createSession(args.names[i], { metadata: args.metadata })));
return results.map((r, i) => {
  if (r.status === 'rejected') return r.reason.constructor.name;
  state.held.set(args.names[i], { client: cs[i], session: r.value });
  return 'ok';
});`;
/** Connects `args.n` clients (each says hello) for a later {@link FIRE}. */
const CONNECT_N = `state.burst = await Promise.all(Array.from({ length: args.n }, () => connect())); return null;`;
/** Sends one create per name on the clients of {@link CONNECT_N}, all at once; answers as BURST does. */
const FIRE = `
const results = await Promise.allSettled(state.burst.map((c, i) => c.createSession(args.names[i], { metadata: null })));
return results.map((r, i) => {
  if (r.status === 'rejected') return r.reason.constructor.name;
  state.held.set(args.names[i], { client: state.burst[i], session: r.value });
  return 'ok';
});`;
const RELEASE_KEEPING_FD = `await state.held.get(args.name).client.release(args.name); return null;`;
const CLOSE_FD = `state.held.get(args.name).session.closeSync(); return null;`;
const ATTACH = `const c = await connect(); const { session } = await c.attach(args.name); state.held.set(args.name, { client: c, session }); return c.clientId;`;
const DISCONNECT = `await state.held.get(args.name).client.close(); return null;`;
const READY = `const c = state.held.get(args.name).client; await c.ready(); return null;`;
const FORGET_CONNECTIONS = `state.clients.length = 0; return null;`;
const CLOSE_CONNECTIONS = `for (const c of state.clients.splice(0)) await c.close(); return null;`;
const CLAIM_TWICE = `
const [a, b] = [await connect(), await connect()];
const got = await Promise.allSettled([a.retrieveSession(args.name), b.retrieveSession(args.name)]);
return got.map((r) => (r.status === 'fulfilled' ? r.value.session.name : r.reason.constructor.name));`;

interface Policy {
  onClientExit?: 'keep' | 'release';
  fdStoreMax?: number;
  unclaimed?: { afterSeconds: number; action: 'keep' | 'finish' };
}

/** After the kexec, sessions nobody claims are finished this long after the agent's start. */
const UNCLAIMED_SECONDS = 20;

function writePolicy(extra: Policy = {}): void {
  const policy = { connect: { users: [ALICE, BOB] }, quota: { sessions: 4, metadataBytes: 16384 }, readiness: { waitFor: { users: [ALICE] } }, ...extra };
  fs.writeFileSync(POLICY, JSON.stringify(policy));
}

function kexecLoaded(): string {
  return fs.readFileSync('/sys/kernel/kexec_loaded', 'utf8').trim();
}

/** Every fd the stand-in manager holds, as LISTEN_FDS would pass them. */
function stored(manager: Manager): Array<[string, number]> {
  return [...manager.store.entries()].flatMap(([name, fds]) => fds.map((fd) => [name, fd] as [string, number]));
}

/** A session as the raw `sessions` reply lists it. */
interface Listed {
  kernelName: string;
  state: string;
  owner: number;
}

/** Sends raw `sessions` requests as root, following `next`; answers every reply's size and every session listed. */
async function pageThrough(limit?: number): Promise<{ sizes: number[]; names: string[]; sessions: Listed[] }> {
  const addon = libraryBinding() as ReturnType<typeof libraryBinding> & { unixConnect(type: number, path: string): number; readonly SOCK_SEQPACKET: number };
  const fd = addon.unixConnect(addon.SOCK_SEQPACKET, SOCKET);
  const ask = async (request: Record<string, JsonValue>): Promise<{ size: number; body: Record<string, JsonValue> }> => {
    await sendFds(fd, [], JSON.stringify({ v: 1, id: 1, ...request }));
    // Room for a reply over the limit, so that the check sees its size.
    const { data } = await recvFds(fd, { maxBytes: 4 * MAX_MESSAGE_BYTES, maxFds: 1 });
    return { size: data.length, body: JSON.parse(data.toString()) as Record<string, JsonValue> };
  };
  try {
    await ask({ op: 'hello', versions: [1] });
    const sizes: number[] = [];
    const sessions: Listed[] = [];
    let cursor: string | null = null;
    do {
      const { size, body }: { size: number; body: Record<string, JsonValue> } = await ask({ op: 'sessions', ...(cursor === null ? {} : { cursor }), ...(limit === undefined ? {} : { limit }) });
      sizes.push(size);
      sessions.push(...((body['sessions'] ?? []) as unknown as Listed[]));
      cursor = (body['next'] ?? null) as string | null;
    } while (cursor !== null && sizes.length < 100);
    return { sizes, names: sessions.map((x) => x.kernelName), sessions };
  } finally {
    fs.closeSync(fd);
  }
}

/** Waits until the agent logged `event` (up to 20 s). */
function logged(agent: AgentProcess, event: string): Promise<boolean> {
  return agent.log.waitFor(event, 20_000).then(
    () => true,
    () => false,
  );
}

// Stage 1's processes, shared by its cases (they run one after another).
let manager: Manager;
let agent: AgentProcess;
let alice: Peer;
let bob: Peer;
let root: AgentClient;
/** A session named as the agent's own, made before the agent started: sealing the manifest then fails. */
let blocker: Session | null = null;
/** Alice's names that passed the quota, the first one released with its fd kept across the kexec. */
let aliceNames: string[] = [];

/** READY=1 messages the stand-in manager has seen: one per agent start. */
let readies = 0;

/** Every session the agent lists (of `uid`, or all). */
async function sessionsOf(uid: number | null): Promise<Listed[]> {
  return (await pageThrough()).sessions.filter((s) => uid === null || s.owner === uid);
}

/** Starts an agent under the stand-in manager with what its store holds, and waits for it. */
async function startAgent(policy: Policy): Promise<void> {
  writePolicy(policy);
  agent = await launch(NOTIFY, stored(manager));
  await manager.ready(++readies);
  await alice.value(FORGET_CONNECTIONS);
}

// ---- stage 1 ---------------------------------------------------------------------

/**
 * Alice creates `names`, one per connection, so that the agent reads every
 * request before it answers any: the agent is stopped (SIGSTOP) while she
 * sends them, and continued once they wait in its sockets.
 */
async function createAtOnce(names: string[]): Promise<string[]> {
  await alice.value(CONNECT_N, { n: names.length });
  const pid = agent.child.pid ?? 0;
  process.kill(pid, 'SIGSTOP');
  const fired = alice.value<string[]>(FIRE, { names });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  process.kill(pid, 'SIGCONT');
  return fired;
}

async function concurrentCreates(ctx: StageContext): Promise<JsonValue> {
  writePolicy();
  // Before the agent owns the device: a session under the agent's own name, so that sealing a manifest fails (EEXIST).
  const luo = await LiveUpdate.open();
  blocker = await luo.createSession('liveupdate-agent');
  await luo.close();
  manager = new Manager();
  alice = new Peer(ALICE);
  agent = await launch(NOTIFY);
  await manager.ready(++readies);
  bob = new Peer(BOB);
  root = await AgentClient.connect({ socket: SOCKET });
  const same = await createAtOnce(['same', 'same', 'same', 'same']);
  ctx.equal('four concurrent creates of one name: one wins, the others SessionExistsError', [...same].sort(), ['SessionExistsError', 'SessionExistsError', 'SessionExistsError', 'ok']);
  const names = Array.from({ length: 12 }, (_, i) => `q${i}`);
  const burst = await createAtOnce(names);
  ctx.equal('twelve concurrent creates on twelve connections stay within the quota of 4', [burst.filter((r) => r === 'ok').length, burst.filter((r) => r === 'AgentQuotaError').length], [3, 9]);
  aliceNames = names.filter((_, i) => burst[i] === 'ok');
  ctx.equal('the agent holds exactly 4 of her sessions', (await sessionsOf(ALICE)).length, 4);
  return null;
}

async function paging(ctx: StageContext): Promise<JsonValue> {
  const big = { blob: 'x'.repeat(16000) };
  const made = await bob.value<string[]>(BURST, { names: ['b0', 'b1', 'b2', 'b3'], metadata: big });
  ctx.equal('bob fills his quota with 16 KB of metadata per session', made, ['ok', 'ok', 'ok', 'ok']);
  const deep = await bob.run(`const c = await connect(); let m = null; for (let i = 0; i < 100; i++) m = [m]; await c.createSession('deep', { metadata: m });`);
  ctx.equal('metadata nested 100 deep is refused with a TypeError at the codec', deep.ok ? 'accepted' : [deep.error.class, deep.error.code], ['TypeError', 'ERR_INVALID_ARG_VALUE']);
  const listed = await cli(['sessions', '--socket', SOCKET, '--json']);
  ctx.equal("root's liveupdate sessions still answers", listed.status, 0) || ctx.report('sessions stderr', listed.stderr);
  const pages = await pageThrough();
  ctx.check('every sessions reply fits in 64 KiB', pages.sizes.every((n) => n <= MAX_MESSAGE_BYTES), pages.sizes);
  ctx.equal('the pages list every session once', [...pages.names].sort(), ['b0', 'b1', 'b2', 'b3', 'same', ...aliceNames].map((n) => (n.startsWith('b') ? `u${BOB}.${n}` : `u${ALICE}.${n}`)).sort());
  ctx.check('more than one page was needed', pages.sizes.length > 1, pages.sizes);
  const limited = await pageThrough(1);
  ctx.equal('limit 1 gives one session per page', limited.sizes.length, 8);
  return null;
}

async function releaseKeepsQuota(ctx: StageContext): Promise<JsonValue> {
  await alice.value(RELEASE_KEEPING_FD, { name: 'same' });
  const state = (await sessionsOf(ALICE)).find((s) => s.kernelName === `u${ALICE}.same`)?.state ?? 'gone';
  ctx.equal('a session released while its client keeps the fd is listed as released', state, 'released');
  const over = await alice.value<string[]>(BURST, { names: ['extra'], metadata: null });
  ctx.equal('it still counts against the quota', over, ['AgentQuotaError']);
  await alice.value(CLOSE_FD, { name: 'same' });
  const after = await alice.value<string[]>(BURST, { names: ['extra'], metadata: null });
  ctx.equal('once the client closes it, the quota is free again', after, ['ok']);
  return null;
}

async function updateFailures(ctx: StageContext): Promise<JsonValue> {
  const next = ctx.nextKernel ?? ctx.kernel;
  const cmdline = 'console=ttyS0 liveupdate=on kho=on';
  // Sealing fails: the agent's own session name is taken.
  // Each of her connections says ready (one an earlier case failed to make is skipped: this case checks the update).
  for (const name of [...aliceNames, 'extra']) await alice.run(READY, { name });
  // Nobody holds the update back: bob's connections go (the agent keeps his sessions).
  await bob.value(CLOSE_CONNECTIONS);
  const sealed = await cli(['update', '--socket', SOCKET, '--kernel', next, '--cmdline', cmdline, '--timeout', '20', '--json']);
  ctx.check('an update whose manifest cannot be sealed fails there (EEXIST)', sealed.status === 1 && /EEXIST/.test(sealed.stdout + sealed.stderr), { code: sealed.status, stdout: sealed.stdout.slice(0, 400) });
  ctx.equal('a failure while sealing the manifest leaves nothing loaded', kexecLoaded(), '0');
  blocker?.closeSync();
  blocker = null;
  // SIGTERM while the update waits for a client that is not ready.
  await alice.value(ATTACH, { name: 'extra' });
  const update = cli(['update', '--socket', SOCKET, '--kernel', next, '--cmdline', cmdline, '--timeout', '120', '--json']);
  ctx.check('the update loaded the kernel and waits', await logged(agent, 'kexec-loaded'));
  const stoppedAt = Date.now();
  const code = await agent.stop();
  const ended = await update;
  ctx.equal('SIGTERM during an update: the agent stops cleanly', code, 0);
  ctx.check('the update ends with the agent, refused', ended.status !== 0 && Date.now() - stoppedAt < 20_000, { code: ended.status, stdout: ended.stdout.slice(0, 400) });
  ctx.equal('SIGTERM during an update leaves nothing loaded', kexecLoaded(), '0');
  ctx.report('log of the agent stopped during an update', agent.output);
  return null;
}

/** Attaches each of alice's sessions on a connection of its own. */
async function aliceAttaches(names: readonly string[]): Promise<void> {
  for (const name of names) await alice.value(ATTACH, { name });
}

async function releaseOnExit(ctx: StageContext): Promise<JsonValue> {
  await startAgent({ onClientExit: 'release' });
  const before = (await sessionsOf(null)).length;
  await aliceAttaches([...aliceNames, 'extra']);
  const code = await agent.stop();
  ctx.equal('onClientExit release: SIGTERM under the manager stops cleanly', code, 0) || ctx.report('release policy: log', agent.output);
  await startAgent({ onClientExit: 'release' });
  ctx.equal('onClientExit release + a restart: every session is parked and back', (await sessionsOf(null)).length, before);
  // A client lost while an update waits for another: released when the update ends.
  const [lost, waiting] = aliceNames.slice(1);
  await aliceAttaches([lost ?? '', waiting ?? '']);
  const update = cli(['update', '--socket', SOCKET, '--kernel', ctx.nextKernel ?? ctx.kernel, '--cmdline', 'liveupdate=on', '--timeout', '4', '--json']);
  await logged(agent, 'kexec-loaded');
  await alice.value(DISCONNECT, { name: lost ?? '' });
  const refused = await update;
  ctx.equal('the update is refused for the client still not ready', refused.status, 3);
  const state = (await sessionsOf(ALICE)).find((s) => s.kernelName === `u${ALICE}.${lost}`)?.state ?? 'gone';
  ctx.equal('with release, a client lost during an update loses its sessions when the update ends', state, 'released');
  ctx.equal('nothing stays loaded', kexecLoaded(), '0');
  return null;
}

async function fdStore(ctx: StageContext): Promise<JsonValue> {
  const before = (await sessionsOf(null)).filter((s) => s.state === 'outgoing').length;
  await agent.stop();
  const garbage = memfd.createSync('garbage');
  fs.writeSync(garbage, '{"sessions": [ this is not json');
  manager.store.get('agent-state')?.forEach((fd) => fs.closeSync(fd));
  manager.store.set('agent-state', [garbage]);
  // fdStoreMax: the sessions held now, one more, and the two the agent parks beside them.
  await startAgent({ fdStoreMax: before + 1 + 2 });
  ctx.equal('a corrupt state memfd: every parked session is still taken back', (await sessionsOf(null)).filter((s) => s.state === 'outgoing').length, before);
  ctx.check('the corrupt state is reported', agent.log.find('restore-failed') !== undefined);
  root = await AgentClient.connect({ socket: SOCKET });
  const first = await root.createSession('r1').then(() => 'ok', (e: Error) => e.constructor.name);
  const second = await root.createSession('r2').then(() => 'ok', (e: Error) => e.constructor.name);
  ctx.equal('fdStoreMax: one more session fits, the next is refused', [first, second], ['ok', 'AgentQuotaError']);
  return null;
}

/** The kexec: bob never says ready, and the policy waits only for alice (and root). */
async function jump(ctx: StageContext): Promise<JsonValue> {
  // aliceNames[1] was released during the update in release-on-exit, and the corrupt state lost it: the others remain.
  const [kept, , other] = aliceNames;
  const others = [other ?? '', 'extra'];
  await aliceAttaches([kept ?? '', ...others]);
  for (const name of others) await alice.value(READY, { name });
  // Released with the fd kept by alice's process: it must cross the kexec for her to claim.
  await alice.value(RELEASE_KEEPING_FD, { name: kept ?? '' });
  await root.ready();
  // Bob holds his sessions and never says ready; the policy does not wait for him.
  await bob.value(FORGET_CONNECTIONS);
  await bob.value(ATTACH, { name: 'b0' });
  ctx.keep(root, alice, bob);
  ctx.jumpWith(async (nextStage) => {
    const run = await cli(['update', '--socket', SOCKET, '--kernel', nextStage.kernel, '--initrd', nextStage.initrd, '--cmdline', nextStage.cmdline, '--timeout', '30', '--json']);
    throw new Error(`liveupdate update exited ${run.status} without a kexec: ${run.stdout} ${run.stderr}\nagent log:\n${agent.output}`);
  });
  ctx.check('liveupdate update will make the kexec without bob', true);
  return { kept: kept ?? null, other: other ?? null };
}

// ---- stage 2 ---------------------------------------------------------------------

async function afterKexec(ctx: StageContext): Promise<void> {
  writePolicy({ unclaimed: { afterSeconds: UNCLAIMED_SECONDS, action: 'finish' } });
  const startedAt = Date.now();
  agent = await launch({});
  const waiting = await sessionsOf(BOB);
  ctx.equal("the update went on without bob, who was not ready: his sessions were kept", waiting.map((s) => [s.kernelName, s.state]).sort() as unknown as JsonValue, ['b0', 'b1', 'b2', 'b3'].map((n) => [`u${BOB}.${n}`, 'waiting']));
  const dry = await cli(['update', '--socket', SOCKET, '--kernel', ctx.kernel, '--cmdline', 'liveupdate=on kho=on', '--dry-run', '--json']);
  const failed = (JSON.parse(dry.stdout || '{}') as { details?: { checks?: Array<{ name: string; ok: boolean }> } }).details?.checks?.filter((c) => !c.ok).map((c) => c.name);
  ctx.equal('a second update is refused while handed-over sessions wait', [dry.status, failed ?? null] as unknown as JsonValue, [1, ['no-unclaimed-sessions']]);
  alice = new Peer(ALICE);
  const { kept, other } = ctx.previous as { kept: string; other: string };
  {
    const claimed = await alice.run(`const c = await connect(); const { session } = await c.retrieveSession(args.name); return session.name;`, { name: kept });
    ctx.equal('a session released with its fd kept crossed the kexec, and its owner claims it', claimed.ok ? claimed.value : claimed.error.class, `u${ALICE}.${kept}`);
  }
  const twice = await alice.value<string[]>(CLAIM_TWICE, { name: other });
  ctx.check('two concurrent claims of one session are both served', twice.every((n) => n.startsWith(`u${ALICE}.`)), twice);
  let unclaimed = await sessionsOf(BOB);
  while (unclaimed.some((s) => s.state !== 'finished') && Date.now() - startedAt < (UNCLAIMED_SECONDS + 30) * 1000) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    unclaimed = await sessionsOf(BOB);
  }
  ctx.check('sessions nobody claimed are finished after unclaimed.afterSeconds, not before', unclaimed.every((s) => s.state === 'finished') && Date.now() - startedAt >= UNCLAIMED_SECONDS * 1000, {
    states: unclaimed.map((s) => s.state),
    afterMs: Date.now() - startedAt,
  });
  const code = await agent.stop();
  ctx.equal('the agent stops cleanly', code, 0) || ctx.report('agent log', agent.output);
  alice.child.kill('SIGKILL');
}

/** @internal */
export default defineScenario('agent-hostile', [
  defineCase('concurrent-creates', [concurrentCreates, null]),
  defineCase('sessions-paging', [paging, null]),
  defineCase('release-keeps-quota', [releaseKeepsQuota, null]),
  defineCase('update-failures-unload', [updateFailures, null]),
  defineCase('release-on-exit', [releaseOnExit, null]),
  defineCase('fd-store', [fdStore, null]),
  defineCase('update-without-bob', [jump, afterKexec]),
]);
