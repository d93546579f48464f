/**
 * The agent's announcements on a real LUO kernel, across one kexec made by
 * `liveupdate update`: clients of two uids subscribe (each a connection of
 * its own, several in one process), each with a session holding 1 MiB of
 * known bytes. Before the kexec: an update with a client that never
 * answers its `prepare` is refused at the deadline and names it, the
 * others are told `resume`, nothing stays loaded; an update with a client
 * that closes its connection mid-prepare is refused as soon as it does,
 * naming it as disconnected. Then a slow client (it saves a state memfd
 * into its session 3 s after `prepare`, then says ready) lets the update
 * kexec. After it, every session comes back intact, the slow client's
 * state saved during the prepare with it.
 */
import * as fs from 'node:fs';
import { AgentClient, kexec } from 'liveupdate';
import { AgentProcess, defineCase, defineScenario, runCli, type JsonValue, type StageContext } from 'liveupdate-conformance';
import { ALICE, BOB, POLICY, SOCKET } from './agent.js';
import { Peer } from './agent-hostile.js';

/** The slow client's quiescing time: what it takes between `prepare` and `ready`. */
const SLOW_MS = 3000;
/** The readiness deadline of the update refused for a client that never answers (`--timeout`, s). */
const SHORT_TIMEOUT_S = 3;
/** The deadline of the other updates: far beyond anything a client here takes. */
const LONG_TIMEOUT_S = 60;
const CMDLINE = 'console=ttyS0 liveupdate=on kho=on';

/**
 * Connects a client, creates its session with 1 MiB of random bytes under
 * token 1, and subscribes. What it does when told `prepare` is its `mode`:
 * `prompt` says ready at once, `silent` never answers, `vanish` closes its
 * connection, `slow` waits `delayMs`, preserves a state memfd (token 2: what
 * it was told and when) and then says ready. Every event is recorded.
 */
const SUBSCRIBE = `
const crypto = require('node:crypto');
const c = await connect();
const session = await c.createSession(args.name, { metadata: { mode: args.mode } });
const ram = lu.memfd.createSync(args.name + '-ram');
const bytes = crypto.randomBytes(1 << 20);
fs.writeSync(ram, bytes, 0, bytes.length, 0);
await session.preserve(ram, 1n);
const events = [];
state.held.set(args.name, { client: c, session, events, ram });
const failed = (e) => events.push({ event: 'failed', message: e.message });
const quiesce = {
  prompt: () => c.ready().then(() => events.push({ event: 'ready' }), failed),
  silent: () => {},
  vanish: () => c.close().then(() => events.push({ event: 'closed' }), failed),
  slow: (told) => setTimeout(() => {
    const saved = lu.memfd.createSync(args.name + '-state');
    fs.writeSync(saved, JSON.stringify({ ...told, readyAt: Date.now() }));
    state.held.get(args.name).saved = saved;
    session.preserve(saved, 2n).then(() => c.ready()).then(() => events.push({ event: 'ready' }), failed);
  }, args.delayMs),
};
c.on('prepare', (e) => {
  const told = { event: 'prepare', at: Date.now(), deadline: e.deadline.getTime(), deadlineMs: e.deadlineMs, kernel: e.kernel };
  events.push(told);
  quiesce[args.mode](told);
});
c.on('resume', (e) => events.push({ event: 'resume', code: e.code ?? null, reason: e.reason }));
await c.subscribe();
return { clientId: c.clientId, version: c.protocolVersion, sha: crypto.createHash('sha256').update(bytes).digest('hex') };`;

/** The events a client recorded, once there are `args.count` (waiting up to 20 s: an announcement may still be on its way). */
const EVENTS = `
const events = state.held.get(args.name).events;
const until = Date.now() + 20000;
while (events.length < args.count && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
return events;`;

/** Closes a client's connection (its session stays with the agent). */
const LEAVE = `await state.held.get(args.name).client.close(); return null;`;

/** After the kexec: claims the session, hashes token 1, reads token 2 (if asked) as text; finishes and releases it. */
const CLAIM = `
const crypto = require('node:crypto');
const c = await connect();
const { session, metadata } = await c.retrieveSession(args.name);
const read = async (token) => {
  const fd = await session.retrieve(BigInt(token));
  const bytes = fs.readFileSync('/proc/self/fd/' + fd);
  fs.closeSync(fd);
  return bytes;
};
const sha = crypto.createHash('sha256').update(await read(1)).digest('hex');
const saved = args.state ? (await read(2)).toString() : null;
await session.finish();
await session.close();
await c.release(args.name);
await c.close();
return { metadata, sha, saved };`;

type Told = { event: string; kernel?: string; code?: string | null; deadlineMs?: number; at?: number; deadline?: number };
type Made = { clientId: number; version: number; sha: string };
type Refusal = { result?: string; details?: { notReady?: JsonValue[] } };

function writePolicy(): void {
  fs.writeFileSync(POLICY, JSON.stringify({ connect: { users: [ALICE, BOB] } }));
}

// Stage 1's processes, shared by its cases (they run one after another).
let agent: AgentProcess;
let alice: Peer;
let bob: Peer;

/** `liveupdate update` with a deadline of `seconds`, as JSON; and how long it took (ms). */
async function update(ctx: StageContext, seconds: number): Promise<{ status: number | null; report: Refusal; ms: number }> {
  const started = Date.now();
  const run = await runCli(['update', '--socket', SOCKET, '--kernel', ctx.nextKernel ?? ctx.kernel, '--cmdline', CMDLINE, '--timeout', String(seconds), '--json'], { timeoutMs: 180_000 });
  return { status: run.status, report: run.json<Refusal>(), ms: Date.now() - started };
}

/** The sessions the agent holds, as root sees them: kernel name and state. */
async function held(): Promise<JsonValue> {
  const root = await AgentClient.connect({ socket: SOCKET });
  try {
    return (await root.sessions()).sessions.map((s) => [s.kernelName, s.state]).sort() as unknown as JsonValue;
  } finally {
    await root.close();
  }
}

const names = (events: Told[]): string[] => events.map((e) => e.event);

// ---- stage 1 ---------------------------------------------------------------------

/** A silent and a prompt client: the update is refused at its deadline naming the silent one; both are told resume. */
async function neverAnswers(ctx: StageContext): Promise<JsonValue> {
  writePolicy();
  agent = await AgentProcess.start({ socket: SOCKET, policy: POLICY, env: {} });
  [alice, bob] = [new Peer(ALICE), new Peer(BOB)];
  const silent = await alice.value<Made>(SUBSCRIBE, { name: 'silent', mode: 'silent' });
  const prompt = await bob.value<Made>(SUBSCRIBE, { name: 'prompt', mode: 'prompt' });
  ctx.equal('both clients subscribed on protocol version 2', [silent.version, prompt.version], [2, 2]);
  const refused = await update(ctx, SHORT_TIMEOUT_S);
  ctx.report('update refused at the deadline (ms, the command included)', refused.ms);
  ctx.equal('update exits 3 naming only the client that never answered', [refused.status, refused.report.result ?? null, refused.report.details?.notReady ?? null] as JsonValue, [
    3,
    'refused',
    [{ id: silent.clientId, pid: alice.child.pid ?? -1, uid: ALICE }],
  ]);
  const toldPrompt = await bob.value<Told[]>(EVENTS, { name: 'prompt', count: 3 });
  ctx.equal('the prompt client was told prepare with the next kernel, said ready, then was told resume', toldPrompt.map((e) => [e.event, e.kernel ?? e.code ?? null]), [
    ['prepare', ctx.nextKernel ?? ctx.kernel],
    ['ready', null],
    ['resume', 'ERR_LIVEUPDATE_UPDATE_REFUSED'],
  ]);
  const toldSilent = await alice.value<Told[]>(EVENTS, { name: 'silent', count: 2 });
  ctx.equal('the silent client was told prepare and resume', names(toldSilent), ['prepare', 'resume']);
  ctx.check('the prepare carried the deadline', (toldSilent[0]?.deadlineMs ?? 0) > 0 && (toldSilent[0]?.deadlineMs ?? Infinity) <= SHORT_TIMEOUT_S * 1000, toldSilent[0] as JsonValue);
  ctx.equal('nothing stays loaded', await kexec.isLoaded(), false);
  ctx.equal('the agent still holds both sessions', await held(), [
    ['u1001.silent', 'outgoing'],
    ['u1002.prompt', 'outgoing'],
  ]);
  // It goes away before the next updates (it would refuse them all); its session stays with the agent.
  await alice.value(LEAVE, { name: 'silent' });
  return { silent: silent.sha, prompt: prompt.sha };
}

/** A client closes its connection when told prepare: the update is refused at once, naming it as disconnected. */
async function disconnectsMidPrepare(ctx: StageContext): Promise<JsonValue> {
  const vanish = await alice.value<Made>(SUBSCRIBE, { name: 'vanish', mode: 'vanish' });
  const refused = await update(ctx, LONG_TIMEOUT_S);
  ctx.equal('update exits 3 naming the client that left, as disconnected', [refused.status, refused.report.details?.notReady ?? null] as JsonValue, [
    3,
    [{ id: vanish.clientId, pid: alice.child.pid ?? -1, uid: ALICE, disconnected: true }],
  ]);
  ctx.check('refused when it left, long before the deadline', refused.ms < (LONG_TIMEOUT_S * 1000) / 2, refused.ms);
  ctx.equal('it was told prepare and closed', names(await alice.value<Told[]>(EVENTS, { name: 'vanish', count: 2 })), ['prepare', 'closed']);
  ctx.equal('the prompt client was told resume again', names(await bob.value<Told[]>(EVENTS, { name: 'prompt', count: 6 })).slice(3), ['prepare', 'ready', 'resume']);
  ctx.equal('nothing stays loaded', await kexec.isLoaded(), false);
  ctx.equal('the agent kept the session of the client that left', await held(), [
    ['u1001.silent', 'outgoing'],
    ['u1001.vanish', 'outgoing'],
    ['u1002.prompt', 'outgoing'],
  ]);
  return { sha: vanish.sha };
}

/** A slow client saves its state 3 s after prepare and says ready: the update, the runner's kexec, proceeds. */
async function slowProceeds(ctx: StageContext): Promise<JsonValue> {
  const slow = await alice.value<Made>(SUBSCRIBE, { name: 'slow', mode: 'slow', delayMs: SLOW_MS });
  ctx.jumpWith(async (next) => {
    const run = await runCli(['update', '--socket', SOCKET, '--kernel', next.kernel, '--initrd', next.initrd, '--cmdline', next.cmdline, '--timeout', String(LONG_TIMEOUT_S)], { timeoutMs: 180_000 });
    throw new Error(`liveupdate update exited ${String(run.status ?? run.signal)} without a kexec: ${run.stdout} ${run.stderr}\nagent log:\n${agent.output}`);
  });
  ctx.check('liveupdate update will make the kexec', true);
  return { sha: slow.sha, nextKernel: ctx.nextKernel ?? null };
}

// ---- stage 2 ---------------------------------------------------------------------

type Claimed = { metadata: JsonValue; sha: string; saved: string | null };

async function neverAnswersAfter(ctx: StageContext): Promise<void> {
  writePolicy();
  agent = await AgentProcess.start({ socket: SOCKET, policy: POLICY, env: {} });
  [alice, bob] = [new Peer(ALICE), new Peer(BOB)];
  const before = ctx.previous as { silent: string; prompt: string };
  const silent = await alice.value<Claimed>(CLAIM, { name: 'silent' });
  ctx.equal("the silent client's session arrives intact", [silent.metadata, silent.sha], [{ mode: 'silent' }, before.silent]);
  const prompt = await bob.value<Claimed>(CLAIM, { name: 'prompt' });
  ctx.equal("the prompt client's session arrives intact", [prompt.metadata, prompt.sha], [{ mode: 'prompt' }, before.prompt]);
}

async function disconnectsAfter(ctx: StageContext): Promise<void> {
  const vanish = await alice.value<Claimed>(CLAIM, { name: 'vanish' });
  ctx.equal('the session of the client that left arrives intact', vanish.sha, (ctx.previous as { sha: string }).sha);
}

async function slowAfter(ctx: StageContext): Promise<void> {
  const before = ctx.previous as { sha: string; nextKernel: string | null };
  const slow = await alice.value<Claimed>(CLAIM, { name: 'slow', state: true });
  ctx.equal("the slow client's memory arrives intact", slow.sha, before.sha);
  let saved: Told & { readyAt?: number } = { event: 'unreadable' };
  try {
    saved = JSON.parse(slow.saved ?? '') as Told & { readyAt?: number };
  } catch {
    // Checked below: the state did not come across.
  }
  ctx.equal('the state it saved while preparing came across', saved.event, 'prepare');
  ctx.equal('it had been told the kernel that was then loaded', saved.kernel ?? null, before.nextKernel);
  const waited = (saved.readyAt ?? 0) - (saved.at ?? 0);
  ctx.report('its prepare: ms left to the deadline when sent, ms it took to say ready', [saved.deadlineMs ?? null, waited]);
  ctx.check('it said ready after its 3 s, within the deadline', waited >= SLOW_MS && (saved.readyAt ?? Infinity) <= (saved.deadline ?? 0), saved as JsonValue);
  const code = await agent.stop();
  ctx.equal('the agent stops on SIGTERM', code, 0);
  for (const peer of [alice, bob]) peer.child.kill('SIGKILL');
}

/** @internal */
export default defineScenario('agent-announce', [
  defineCase('never-answers', [neverAnswers, neverAnswersAfter]),
  defineCase('disconnects-mid-prepare', [disconnectsMidPrepare, disconnectsAfter]),
  defineCase('slow-client-kexecs', [slowProceeds, slowAfter]),
]);
