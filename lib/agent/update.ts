/**
 * The update as the agent runs it: checks, kexec load, waiting for every
 * client holding sessions to say ready (woken by their transitions, not by
 * polling), sealing the manifest, the kexec. Whatever ends it without a
 * jump leaves nothing loaded.
 * @internal
 */
import * as fs from 'node:fs';
import { agentError } from '../errors.js';
import * as kexec from '../kexec.js';
import type { LiveUpdate } from '../liveupdate.js';
import type { Session } from '../session.js';
import { kernelBoolParam, kernelParam } from '../diagnosis.js';
import type { Connection, Notifier } from './connection.js';
import { closeQuietly } from './fdstore.js';
import { writeManifest, MANIFEST_FORMAT, MANIFEST_TOKEN, MANIFEST_VERSION, type Manifest } from './manifest.js';
import { AGENT_SESSION_NAME } from './names.js';
import type { JsonValue, UpdateRequest } from './protocol.js';
import { manifestSession, TablePhase, type Entry, type SessionTable } from './sessions.js';

/** One check of an update, as reported. */
export interface UpdateCheck {
  /** What was checked (`kernel-readable`, `liveupdate-on`, ...). */
  name: string;
  /** Whether it passed. */
  ok: boolean;
  /** Why it failed, or what was found. */
  detail?: string;
}

/** A client that did not say ready, as the refusal names it. */
export interface NotReady {
  id: number;
  pid: number;
  uid: number;
}

/** What an update needs from the agent. */
export interface UpdateContext {
  /** The session table (the update moves its phase). */
  readonly table: SessionTable;
  /** The device, or null without one. */
  readonly device: LiveUpdate | null;
  /** The previous kernel's manifest, or null. */
  readonly previous: Manifest | null;
  /** Every live connection. */
  connections(): Iterable<Connection<Entry>>;
  /** Told of every connection transition. */
  readonly changes: Notifier;
  /** The asker, for the log. */
  readonly who: Record<string, JsonValue>;
  /** Logs one event. */
  event(name: string, fields: Record<string, JsonValue | undefined>): void;
  /** Sends the `phase: "kexec"` reply, just before the jump. */
  announce(checks: UpdateCheck[]): Promise<void>;
}

/** Runs one update; resolves only for a dry run (a jump never returns), rejects with the refusal or the failure. */
export async function runUpdate(ctx: UpdateContext, r: UpdateRequest): Promise<Record<string, JsonValue>> {
  const startedAt = Date.now();
  if (ctx.table.phase !== TablePhase.Open) throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', 'another update is in progress', { operation: 'agent.update' });
  ctx.table.enter(TablePhase.Updating);
  try {
    const checks = updateChecks(r, ctx.device !== null);
    const failed = checks.filter((x) => !x.ok);
    if (failed.length > 0) refuse(ctx, `check failed: ${failed.map((x) => x.name).join(', ')}`, { checks });
    if (r.dryRun) return { dryRun: true, checks: checks as unknown as JsonValue };
    await kexec.load({ kernel: r.kernel, cmdline: r.cmdline, ...(r.initrd === undefined ? {} : { initrd: r.initrd }) });
    checks.push({ name: 'kexec load', ok: true });
    ctx.event('kexec-loaded', { ...ctx.who, kernel: r.kernel });
    const notReady = await waitReady(ctx, r.timeoutMs);
    if (notReady.length > 0) {
      await kexec.unload();
      refuse(ctx, `${notReady.length} client(s) not ready within ${r.timeoutMs} ms: ${notReady.map((x) => `client ${x.id} (pid ${x.pid}, uid ${x.uid})`).join(', ')}`, { checks, notReady });
    }
    checks.push({ name: 'every client ready', ok: true });
    const own = await sealManifest(ctx, r, startedAt);
    try {
      await ctx.announce(checks);
      ctx.event('kexec', { ...ctx.who, kernel: r.kernel, sessions: ctx.table.outgoing.length });
      return await kexec.execute();
    } catch (error) {
      // No jump (the kexec failed, or the asker vanished): nothing of this attempt may stay behind.
      await own.close();
      await kexec.unload().catch(() => {});
      throw error;
    }
  } finally {
    ctx.table.enter(TablePhase.Open);
  }
}

function refuse(ctx: UpdateContext, why: string, details: Record<string, unknown>): never {
  ctx.event('update-refused', { ...ctx.who, why });
  throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', `the update was refused: ${why}`, { operation: 'agent.update' }, details);
}

/** Waits until no connection blocks the update, or the deadline; answers those still blocking. */
async function waitReady(ctx: UpdateContext, timeoutMs: number): Promise<NotReady[]> {
  const blocking = (): NotReady[] => [...ctx.connections()].filter((c) => c.blocksUpdate).map((c) => ({ id: c.id, pid: c.peer.pid, uid: c.peer.uid }));
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      timedOut = true;
      resolve();
    }, timeoutMs);
  });
  try {
    for (;;) {
      const notReady = blocking();
      if (notReady.length === 0 || timedOut) return notReady;
      await Promise.race([ctx.changes.changed(), deadline]);
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Writes the manifest into the agent's own session, the last step before the kexec. */
async function sealManifest(ctx: UpdateContext, r: UpdateRequest, startedAt: number): Promise<Session> {
  if (ctx.device === null) throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', 'the agent cannot use /dev/liveupdate', { operation: 'agent.update' });
  const own = await ctx.device.createSession(AGENT_SESSION_NAME);
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: [MANIFEST_VERSION.major, MANIFEST_VERSION.minor],
    kexecCount: (ctx.previous?.kexecCount ?? 0) + 1,
    updateStartedAt: startedAt,
    frozenAt: Date.now(),
    next: { kernel: r.kernel, cmdline: r.cmdline },
    sessions: ctx.table.outgoing.map(manifestSession),
  };
  const fd = writeManifest(manifest);
  try {
    await own.preserve(fd, MANIFEST_TOKEN);
  } catch (error) {
    await own.close();
    throw error;
  } finally {
    closeQuietly(fd);
  }
  return own;
}

/** The checks before anything is loaded: files readable, LUO and KHO kept on the next command line, the device owned. */
export function updateChecks(r: Pick<UpdateRequest, 'kernel' | 'initrd' | 'cmdline'>, haveDevice: boolean): UpdateCheck[] {
  const readable = (file: string): UpdateCheck => {
    try {
      fs.accessSync(file, fs.constants.R_OK);
      return { name: `readable: ${file}`, ok: true };
    } catch (error) {
      return { name: `readable: ${file}`, ok: false, detail: (error as Error).message };
    }
  };
  const liveupdate = kernelParam(r.cmdline, 'liveupdate');
  const kho = kernelParam(r.cmdline, 'kho');
  return [
    readable(r.kernel),
    ...(r.initrd === undefined ? [] : [readable(r.initrd)]),
    { name: 'liveupdate=on in the next command line', ok: kernelBoolParam(r.cmdline, 'liveupdate', false), detail: `liveupdate=${liveupdate ?? '(absent)'}` },
    {
      name: 'KHO not disabled in the next command line',
      // Absent, KHO is what the next kernel's CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT says: not knowable here.
      ok: kernelBoolParam(r.cmdline, 'kho', true),
      detail: kho === null ? 'kho= absent: the next kernel must enable KHO by default (CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT)' : `kho=${kho}`,
    },
    { name: 'the agent owns /dev/liveupdate', ok: haveDevice },
  ];
}
