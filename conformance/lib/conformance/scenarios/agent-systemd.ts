/**
 * The agent in systemd mode, on the systemd guest image (systemd 262 as PID
 * 1), in one boot and one kexec made by `liveupdate update`: everything runs
 * as units, the agent's from units/ as the package ships them.
 *
 * Stage 1: a standalone agent is refused on this host, and runs only when
 * forced (then `liveupdate status` says LUO is there through it); the agent
 * starts in systemd mode; two VMM-like clients of two uids (units running
 * this file as `client`) create a session each with metadata and preserve
 * known bytes; a stand-in database runs; an unrelated `LUOSession=` unit and
 * one storing a memfd start meanwhile (scenarios/systemd-service.ts);
 * `systemctl restart` of the agent keeps its sessions; `liveupdate update`
 * loads the next kernel and asks systemd for the orderly kexec.
 *
 * Stage 2: the database was stopped cleanly (its ExecStop ran), each client
 * claimed its session with its metadata and bytes, the other units got
 * theirs, and the manager counted one kexec.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient, AgentUnavailableError, kexec, LiveUpdate, memfd, notifySync, SessionNotFoundError } from 'liveupdate';
import { runCli } from '../../harness/cli.js';
import {
  addUsers,
  AGENT_DEFAULTS as DEFAULTS,
  AGENT_UNIT as AGENT,
  installAgent,
  startUnit as start,
  systemctl,
  unitJsonLines,
  unitLog,
  unitProperty as property,
} from '../../harness/systemd.js';
import type { JsonValue } from '../../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../../vm/scenario.js';
import { unitFile } from './systemd.js';
import { FDNAMES, RESULTS_DIR } from './systemd-service.js';

const SOCKET = '/run/liveupdate/agent.sock';
const POLICY = '/etc/liveupdate/policy.json';
const STANDALONE = 'liveupdate-agent-standalone.service';
/** The two client users. */
export const UIDS = [1001, 1002] as const;
/** Where the clients write what they did (the root filesystem: kept across the kexec, writable by both users). */
const CLIENT_RESULTS = '/var/lib/lu-vmm';
/** Where the stand-in database records each clean stop. */
const DATABASE_STOPS = '/var/lib/lu-database/stops';
/** The unrelated units of (b): a LUOSession= unit, and one storing a memfd. */
const OTHERS = ['luo-session', 'memfd'] as const;
/** Bytes each client preserves. */
const CLIENT_BYTES = 256 * 1024;
/** The bound on `liveupdate update` as a process. */
const UPDATE_BOUND_MS = 180_000;
const WAIT_MS = 90_000;

// ---- the client (a unit running `node agent-systemd.js client`) ------------------------

/** A client's known bytes: "uid N " repeated. */
export function clientPattern(uid: number): Buffer {
  return Buffer.alloc(CLIENT_BYTES, `uid ${uid} `);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** What a client does, with the public API only: claim its session after a kexec, or create one and say ready. */
async function clientRun(uid: number, keep: unknown[]): Promise<Record<string, JsonValue>> {
  const agent = await AgentClient.connect({ name: `vmm-${uid}` });
  keep.push(agent);
  try {
    const { session, metadata } = await agent.retrieveSession('vm');
    const fd = await session.retrieve(1);
    const bytes = fs.readFileSync(`/proc/self/fd/${fd}`);
    fs.closeSync(fd);
    await session.finish();
    await session.close();
    await agent.release('vm');
    return { ok: true, phase: 'after', kernelName: session.name, metadata, size: bytes.length, sha256: sha256(bytes) };
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
  }
  const ram = await memfd.create('guest-ram');
  const bytes = clientPattern(uid);
  fs.writeSync(ram, bytes, 0, bytes.length, 0);
  const session = await agent.createSession('vm', { metadata: { uid, memoryKiB: CLIENT_BYTES / 1024 } });
  await session.preserve(ram, 1);
  await agent.ready();
  keep.push(session, ram);
  return { ok: true, phase: 'before', kernelName: session.name, state: session.state, sha256: sha256(bytes) };
}

async function client(): Promise<void> {
  const uid = process.getuid?.() ?? -1;
  const keep: unknown[] = [];
  let result: Record<string, JsonValue>;
  try {
    result = await clientRun(uid, keep);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    result = { ok: false, error: { name: e.constructor.name, code: e.code ?? null, message: e.message } };
  }
  fs.writeFileSync(`${CLIENT_RESULTS}/${uid}-${String(result['phase'] ?? 'failed')}.json`, JSON.stringify(result));
  notifySync({ READY: 1 });
  // A VMM runs until it is stopped (the shutdown before the kexec), holding its fds.
  setInterval(() => keep.length, 1 << 30);
}

// ---- units and commands -----------------------------------------------------------------

const SELF = path.join(__dirname, 'agent-systemd.js');

/** A client's unit (a template: the instance is the uid), Type=notify: ready once its result is written. */
function clientUnit(): string {
  return [
    '[Unit]',
    'Description=a VMM-like client of the agent (uid %i)',
    'Requires=liveupdate-agent.socket',
    `After=liveupdate-agent.socket ${AGENT}`,
    '',
    '[Service]',
    'Type=notify',
    'User=%i',
    'Environment=HOME=/tmp',
    `ExecStart=/usr/bin/node ${SELF} client`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** The stand-in database: nothing to do but record that systemd stopped it cleanly (ExecStop ran). */
function databaseUnit(): string {
  return [
    '[Unit]',
    'Description=stand-in database: records each clean stop',
    '',
    '[Service]',
    'ExecStart=/usr/bin/sleep infinity',
    `ExecStop=/bin/sh -c 'echo stopped cleanly >> ${DATABASE_STOPS}'`,
    '',
  ].join('\n');
}

/** The agent's events of this boot, as its unit logged them (one JSON line each). */
function agentEvents(unit: string): Array<Record<string, JsonValue>> {
  return unitJsonLines<Record<string, JsonValue>>(unit);
}

/** Waits until `read` gives a value, or the bound. */
async function waitFor<T>(read: () => T | undefined, ms = WAIT_MS): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = read();
    if (value !== undefined || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function readJson(file: string): Record<string, JsonValue> | undefined {
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, JsonValue>) : undefined;
}

/** `liveupdate sessions --json` as root: [kernel name, owner, state, metadata] each, and the kexec count. */
async function listed(): Promise<{ sessions: JsonValue; kexecCount: number | null }> {
  const run = await runCli(['sessions', '--socket', SOCKET, '--json']);
  const report = run.json<{ sessions?: Array<{ kernelName: string; owner: number; state: string; metadata: JsonValue }>; kexecCount?: number }>();
  const sessions = (report.sessions ?? []).map((s) => [s.kernelName, s.owner, s.state, s.metadata]).sort() as unknown as JsonValue;
  return { sessions, kexecCount: report.kexecCount ?? null };
}

// ---- stage 1 ----------------------------------------------------------------------------

/** Installs what a host has after `npm install -g liveupdate` and copying the shipped units; the policy lets both users in. */
function install(): void {
  addUsers(UIDS);
  installAgent();
  fs.writeFileSync('/etc/systemd/system/lu-vmm@.service', clientUnit());
  fs.writeFileSync('/etc/systemd/system/lu-database.service', databaseUnit());
  for (const role of OTHERS) fs.writeFileSync(`/etc/systemd/system/lu-${role}.service`, unitFile(role));
  fs.mkdirSync(path.dirname(POLICY), { recursive: true });
  fs.writeFileSync(POLICY, JSON.stringify({ connect: { users: [...UIDS] }, quota: { sessions: 4, metadataBytes: 1024 } }));
  fs.mkdirSync(CLIENT_RESULTS, { recursive: true, mode: 0o1777 });
  fs.chmodSync(CLIENT_RESULTS, 0o1777);
  fs.mkdirSync(path.dirname(DATABASE_STOPS), { recursive: true });
  systemctl('daemon-reload');
}

/** (d) A standalone agent is refused on this host; forced, it runs, and status says LUO is there through it. */
async function standaloneRefused(ctx: StageContext): Promise<JsonValue> {
  install();
  ctx.equal('KExecCount before any kexec', Number(property('KExecCount')), 0);
  const refused = await runCli(['agent', '--mode', 'standalone', '--socket', '/run/lu-refused.sock']);
  ctx.equal('liveupdate agent --mode standalone exits 1', refused.status, 1);
  ctx.check('and says why, and how to force it', /PID 1 is systemd 26\d.*--mode systemd.*--force/s.test(refused.stderr), refused.stderr.trim());
  fs.writeFileSync(DEFAULTS, `LIVEUPDATE_AGENT_OPTIONS=--force --policy ${POLICY}\n`);
  ctx.equal('forced, the standalone unit starts', start(STANDALONE), 'started');
  const first = await waitFor(() => agentEvents(STANDALONE)[0]);
  ctx.equal('its first log line: standalone, forced', [first?.['event'] ?? null, first?.['mode'] ?? null, first?.['forced'] ?? null], ['mode', 'standalone', true]);
  const status = await runCli(['status', '--json']);
  const s = status.json<{ available?: boolean; agent?: { mode?: string; socket?: string | null } | null; deviceOwners?: Array<{ pid: number }> }>();
  ctx.equal('status exits 0: LUO is available through the agent holding the device', [status.status, s.available ?? null, s.agent?.mode ?? null, s.agent?.socket ?? null, (s.deviceOwners ?? []).length], [0, true, 'standalone', SOCKET, 1]);
  systemctl('stop', STANDALONE);
  return null;
}

/** (a) and (b): the agent in systemd mode, two clients, the database, and systemd's own units beside them. */
async function startEverything(ctx: StageContext): Promise<JsonValue> {
  fs.writeFileSync(DEFAULTS, `LIVEUPDATE_AGENT_OPTIONS=--policy ${POLICY}\n`);
  systemctl('enable', AGENT);
  ctx.equal('the agent unit starts', start(AGENT), 'started');
  const first = await waitFor(() => agentEvents(AGENT)[0]);
  ctx.equal('its first log line: systemd mode, and why', [first?.['event'] ?? null, first?.['mode'] ?? null, /PID 1 is systemd 26\d/.test(String(first?.['reason']))], ['mode', 'systemd', true]);
  const status = await runCli(['status', '--json']);
  const s = status.json<{ available?: boolean; agent?: { mode?: string } | null; deviceOwners?: unknown[] }>();
  ctx.equal('status: available, the agent in systemd mode, nobody holding the device', [status.status, s.available ?? null, s.agent?.mode ?? null, (s.deviceOwners ?? []).length], [0, true, 'systemd', 0]);
  const clients: Record<string, JsonValue> = {};
  for (const uid of UIDS) {
    systemctl('enable', `lu-vmm@${uid}.service`);
    ctx.equal(`client ${uid}: unit started`, start(`lu-vmm@${uid}.service`), 'started');
    const made = readJson(`${CLIENT_RESULTS}/${uid}-before.json`) ?? readJson(`${CLIENT_RESULTS}/${uid}-failed.json`) ?? null;
    ctx.equal(`client ${uid}: created its session and said ready`, [made?.['ok'] ?? null, made?.['kernelName'] ?? null, made?.['state'] ?? null], [true, `u${uid}.vm`, 'outgoing']) || ctx.report(`client ${uid}`, made);
    clients[uid] = made;
  }
  ctx.equal('the stand-in database starts', start('lu-database.service'), 'started');
  const others: Record<string, JsonValue> = {};
  for (const role of OTHERS) {
    systemctl('enable', `lu-${role}.service`);
    // The LUOSession= unit needs /dev/liveupdate free: the agent must not be holding it.
    ctx.equal(`${role}: unit started beside the agent`, start(`lu-${role}.service`), 'started');
    const result = readJson(`${RESULTS_DIR}/${role}.json`) ?? null;
    ctx.equal(`${role}: preserved before the kexec`, result?.['ok'] ?? null, true);
    others[role] = result;
  }
  return { clients, others };
}

/** (e) The agent restarted by systemd before the update keeps every session, with its metadata. */
async function restartKeeps(ctx: StageContext): Promise<JsonValue> {
  systemctl('restart', AGENT);
  const after = await listed();
  ctx.equal('after systemctl restart the agent lists both sessions, outgoing, with their metadata', after.sessions, UIDS.map((uid) => [`u${uid}.vm`, uid, 'outgoing', { uid, memoryKiB: CLIENT_BYTES / 1024 }]));
  const restored = await waitFor(() => agentEvents(AGENT).filter((e) => e['event'] === 'restored').pop());
  ctx.equal('it took them back from its fd store', restored?.['sessions'] ?? null, UIDS.length);
  return null;
}

/** The agent never holds the device for long, and waits a little for whoever does: a create goes through once the device is free, or fails naming the holder. */
async function deviceBusy(ctx: StageContext): Promise<JsonValue> {
  const client = await AgentClient.connect({ socket: SOCKET, name: 'busy-test' });
  try {
    let held = await LiveUpdate.open();
    const created = client.createSession('busy-retried');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await held.close();
    const session = await created.then((s) => s, (error: unknown) => error as Error);
    ctx.equal('a create while another process holds the device for a second goes through (the agent retried)', session instanceof Error ? session.message : session.state, 'outgoing');
    if (!(session instanceof Error)) await session.close();
    await client.release('busy-retried');
    held = await LiveUpdate.open();
    const refused = await client.createSession('busy-refused').then(() => null, (error: unknown) => error as Error);
    await held.close();
    ctx.check('held past the retries: AgentUnavailableError naming the holder', refused instanceof AgentUnavailableError && refused.message.includes(`stayed busy for 5000 ms: pid ${process.pid}`), refused?.message ?? 'created');
  } finally {
    await client.close();
  }
  return null;
}

/** systemd refusing the kexec (kexec.target masked): update exits 1, nothing stays loaded, the sessions stay. */
async function refusedJump(ctx: StageContext): Promise<JsonValue> {
  systemctl('mask', '--runtime', 'kexec.target');
  let run;
  try {
    run = await runCli(['update', '--socket', SOCKET, '--kernel', ctx.nextKernel ?? ctx.kernel, '--cmdline', 'console=ttyS0 liveupdate=on kho=on', '--timeout', '30'], { timeoutMs: UPDATE_BOUND_MS });
  } finally {
    systemctl('unmask', '--runtime', 'kexec.target');
  }
  ctx.equal('update exits 1 and says systemd did not start the kexec', [run.status, /systemd did not start the kexec/.test(run.stderr)], [1, true]) || ctx.report('update output', `${run.stdout}${run.stderr}`);
  ctx.equal('nothing stays loaded', await kexec.isLoaded(), false);
  ctx.equal('the agent still holds both sessions', (await listed()).sessions, UIDS.map((uid) => [`u${uid}.vm`, uid, 'outgoing', { uid, memoryKiB: CLIENT_BYTES / 1024 }]));
  return null;
}

/** (a) The runner's kexec is `liveupdate update`: checks, load, readiness, then systemd's orderly kexec. */
function updateThroughSystemd(ctx: StageContext): JsonValue {
  ctx.jumpWith(async (next) => {
    const run = await runCli(['update', '--socket', SOCKET, '--kernel', next.kernel, '--cmdline', next.cmdline, '--timeout', '60'], { timeoutMs: UPDATE_BOUND_MS });
    // Exit 0 once systemd has the kexec (the agent stopped on its way), or killed with this unit: either way systemd goes on.
    if (run.status === 0 || run.signal !== null) return;
    throw new Error(`liveupdate update exited ${String(run.status)} without a kexec: ${run.stdout} ${run.stderr}\nagent log:\n${JSON.stringify(agentEvents(AGENT))}`);
  });
  ctx.check('liveupdate update will make the kexec', true);
  return null;
}

// ---- stage 2 ----------------------------------------------------------------------------

/** After the kexec: the orderly shutdown, each client's claim, systemd's own units, the manager's count. */
async function afterUpdate(ctx: StageContext): Promise<void> {
  const before = ctx.previous as { clients: Record<string, Record<string, JsonValue> | null>; others: Record<string, Record<string, JsonValue> | null> };
  ctx.equal('KExecCount after one update', Number(property('KExecCount')), 1);
  const stops = fs.existsSync(DATABASE_STOPS) ? fs.readFileSync(DATABASE_STOPS, 'utf8').trim().split('\n') : [];
  ctx.equal('the database was stopped cleanly before the kexec (its ExecStop ran once)', stops, ['stopped cleanly']);
  for (const uid of UIDS) {
    const got = (await waitFor(() => readJson(`${CLIENT_RESULTS}/${uid}-after.json`) ?? readJson(`${CLIENT_RESULTS}/${uid}-failed.json`))) ?? null;
    if (got === null) ctx.report(`client ${uid} log`, unitLog(`lu-vmm@${uid}.service`, 20));
    ctx.equal(`client ${uid}: claimed its session, metadata and bytes intact`, [got?.['ok'] ?? null, got?.['kernelName'] ?? null, got?.['metadata'] ?? null, got?.['size'] ?? null, got?.['sha256'] ?? null], [
      true,
      `u${uid}.vm`,
      { uid, memoryKiB: CLIENT_BYTES / 1024 },
      CLIENT_BYTES,
      before.clients[uid]?.['sha256'] ?? 'no stage 1 value',
    ]) || ctx.report(`client ${uid}`, got);
  }
  for (const role of OTHERS) {
    const got = (await waitFor(() => readJson(`${RESULTS_DIR}/${role}.json`))) ?? null;
    ctx.equal(`${role}: got its own back`, [got?.['ok'] ?? null, got?.['phase'] ?? null, got?.['received'] ?? null, got?.['sha256'] ?? null], [true, 'after', [FDNAMES[role]], before.others[role]?.['sha256'] ?? 'no stage 1 value']);
  }
  const events = (await waitFor(() => (agentEvents(AGENT).some((e) => e['event'] === 'restored') ? agentEvents(AGENT) : undefined))) ?? [];
  const read = events.find((e) => e['event'] === 'manifest-read');
  const restored = events.find((e) => e['event'] === 'restored');
  ctx.report('agent events', events);
  ctx.equal('the agent read its manifest and took both sessions PID 1 handed back', [events[0]?.['mode'] ?? null, read?.['kexecCount'] ?? null, restored?.['handedBack'] ?? null], ['systemd', 1, UIDS.length]);
  const now = await listed();
  ctx.equal('sessions: both claimed and finished, one live update', [now.sessions, now.kexecCount] as JsonValue, [UIDS.map((uid) => [`u${uid}.vm`, uid, 'finished', { uid, memoryKiB: CLIENT_BYTES / 1024 }]), 1]);
}

/** @internal */
export default defineScenario('agent-systemd', [
  defineCase('standalone-refused', [standaloneRefused]),
  defineCase('update-through-systemd', [startEverything, afterUpdate]),
  defineCase('restart-keeps-sessions', [restartKeeps]),
  defineCase('device-busy', [deviceBusy]),
  defineCase('refused-jump', [refusedJump]),
  defineCase('update-kexecs', [updateThroughSystemd]),
]);

if (require.main === module && process.argv[2] === 'client') void client();
