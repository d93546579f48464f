/**
 * The update as the agent runs it: checks, kexec load, waiting for every
 * client holding sessions to say ready (woken by their transitions, not by
 * polling), sealing the manifest, the kexec. Whatever ends it without a
 * jump leaves nothing loaded.
 * @internal
 */
import * as fs from 'node:fs';
import { agentError, LiveUpdateError, type UpdateRefusedDetails } from '../errors.js';
import { kernelBoolParam, kernelParam } from '../diagnosis.js';
import { inspectSync, type KernelPreflight } from '../kernel-image.js';
import { bounded } from './codec.js';
import type { PrepareRound } from './announcements.js';
import type { Connection, Notifier } from './connection.js';
import { KexecUnderway, type AgentHost, type KernelLoader } from './host.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type Manifest, type ManifestSession } from './manifest.js';
import type { JsonValue, NotReadyClient, UpdateCheck, UpdateRequest } from './protocol.js';
import { DEFAULT_POLICY, permits, type Peer, type Policy, type PreflightPolicy } from './policy.js';
import type { Entry, SessionTable } from './sessions.js';

/** The most clients a reply names (`notReady`, `proceededWithout`), so that it fits in one message whatever the number of connections; the message gives the count. */
export const MAX_LISTED_CLIENTS = 256;

/** What an update needs from the agent. */
export interface UpdateContext {
  /** The session table (the update moves its phase). */
  readonly table: SessionTable;
  /** The agent's policy. */
  readonly policy: Policy;
  /** The agent's host: its device, and how it jumps. */
  readonly host: AgentHost;
  /** The previous kernel's manifest, or null. */
  readonly previous: Manifest | null;
  /** Every live connection. */
  connections(): Iterable<Connection<Entry>>;
  /** Told of every connection transition. */
  readonly changes: Notifier;
  /** The asker. */
  readonly asker: Peer;
  /** The asker, for the log. */
  readonly who: Record<string, JsonValue>;
  /** Aborted when the agent stops: the update ends, unloading what it loaded. */
  readonly signal: AbortSignal;
  /** Logs one event. */
  event(name: string, fields: Record<string, JsonValue | undefined>): void;
  /** Sends the `phase: "kexec"` reply, just before the jump. */
  announce(body: Record<string, JsonValue>): Promise<void>;
  /** Tells every subscribed client (but the asker) that the update is coming, and what to wait for. */
  prepare(prepare: { deadline: number; kernel: string }): PrepareRound;
}

/** Runs one update; resolves only for a dry run (a jump never returns), rejects with the refusal or the failure. */
export async function runUpdate(ctx: UpdateContext, asked: UpdateRequest): Promise<Record<string, JsonValue>> {
  const startedAt = Date.now();
  // With kernels pinned, the files checked are the files loaded: their real paths, so no link swapped in between leads elsewhere.
  const r = ctx.policy.kernels === null ? asked : { ...asked, kernel: realPath(asked.kernel), ...(asked.initrd === undefined ? {} : { initrd: realPath(asked.initrd) }) };
  if (r.proceedWithout === true && ctx.asker.uid !== 0) {
    throw agentError('ERR_LIVEUPDATE_AGENT_PERMISSION', `uid ${ctx.asker.uid} may not use proceedWithout (root only)`, { operation: 'agent.update' });
  }
  ctx.table.beginUpdate();
  let underway = false;
  try {
    const { checks, kernel } = updateChecks(r, ctx.host.deviceError === null, { kernels: ctx.policy.kernels, waiting: waitingCount(ctx.table), preflight: ctx.policy.preflight, inspect: ctx.host.loader.preflight });
    const report = kernel === null ? {} : { kernel };
    const failed = checks.filter((x) => !x.ok);
    if (failed.length > 0) refuse(ctx, `check failed: ${failed.map((x) => x.name).join(', ')}`, { checks, notReady: [], ...report });
    if (r.dryRun) return { dryRun: true, checks: checks as unknown as JsonValue, ...(report as Record<string, JsonValue>) };
    // Announced before the load, so that the clients quiesce while the kernel is read; the deadline counts from here.
    const round = ctx.prepare({ deadline: Date.now() + r.timeoutMs, kernel: r.kernel });
    try {
      await ctx.host.loader.load({ kernel: r.kernel, cmdline: r.cmdline, ...(r.initrd === undefined ? {} : { initrd: r.initrd }) });
      // From here on, whatever ends the update without a jump unloads the kernel first.
      try {
        return await afterLoad(ctx, r, checks, startedAt, round);
      } catch (error) {
        // systemd's kexec under way jumps into the kernel loaded: only an update that ends without one unloads (and resumes the clients).
        underway = error instanceof KexecUnderway;
        if (!underway) await ctx.host.loader.unload().catch((unloadError: unknown) => ctx.event('unload-failed', { message: (unloadError as Error).message }));
        throw error;
      }
    } catch (error) {
      // Unloaded first: a client told to resume finds nothing loaded.
      if (!underway) round.resume(bounded(error instanceof Error ? error.message : String(error), 1024), error instanceof LiveUpdateError ? error.code : undefined);
      throw error;
    }
  } finally {
    // A kexec under way keeps the table sealed until the agent stops: no client's exit lets a session go meanwhile.
    if (!underway) ctx.table.endUpdate();
  }
}

async function afterLoad(ctx: UpdateContext, r: UpdateRequest, checks: UpdateCheck[], startedAt: number, round: PrepareRound): Promise<never> {
  checks.push({ name: 'kexec-loaded', ok: true });
  ctx.event('kexec-loaded', { ...ctx.who, kernel: bounded(r.kernel) });
  const { notReady, passed } = await waitReady(ctx, r, round);
  stopping(ctx, checks);
  const proceededWithout = r.proceedWithout === true ? [...passed, ...notReady] : passed;
  if (notReady.length > 0 && r.proceedWithout !== true) {
    const named = notReady.slice(0, MAX_LISTED_CLIENTS);
    const more = notReady.length > named.length ? ` and ${notReady.length - named.length} more` : '';
    const which = named.map((x) => `client ${x.id} (pid ${x.pid}, uid ${x.uid}${x.disconnected === true ? ', disconnected while preparing' : ''})`);
    // A client gone mid-prepare ends the wait at once: the deadline did not pass then.
    const when = notReady.some((x) => x.disconnected === true) ? '' : ` within ${r.timeoutMs} ms`;
    refuse(ctx, `${notReady.length} client(s) not ready${when}: ${which.join(', ')}${more}`, { checks, notReady: named });
  }
  // Nobody subscribing from here on is told prepare: the manifest is about to be sealed.
  round.close();
  checks.push({ name: 'clients-ready', ok: true, ...(proceededWithout.length === 0 ? {} : { detail: `went on without ${proceededWithout.length} client(s), their sessions kept` }) });
  const sessions = await ctx.table.beginSealing();
  stopping(ctx, checks);
  const manifest = manifestOf(ctx, r, startedAt, sessions);
  const listed = proceededWithout.slice(0, MAX_LISTED_CLIENTS) as unknown as JsonValue;
  const report = { phase: 'kexec', checks: checks as unknown as JsonValue, proceededWithout: listed };
  await ctx.announce(report);
  ctx.event('kexec', { ...ctx.who, kernel: bounded(r.kernel), sessions: sessions.length, proceededWithout: listed, mode: ctx.host.decision.mode });
  // Standalone: the manifest into the agent's own session, then reboot(); under systemd: `systemctl kexec`.
  return ctx.host.jump(manifest, ctx.signal);
}

/** Throws when the agent is stopping: the update ends there. */
function stopping(ctx: UpdateContext, checks: UpdateCheck[]): void {
  if (ctx.signal.aborted) refuse(ctx, 'the agent is stopping', { checks, notReady: [] });
}

function waitingCount(table: SessionTable): number {
  return table.incoming.filter((e) => e.state === 'waiting').length;
}

function refuse(ctx: UpdateContext, why: string, details: UpdateRefusedDetails): never {
  ctx.event('update-refused', { ...ctx.who, why });
  throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', `the update was refused: ${why}`, { operation: 'agent.update' }, { ...details });
}

/**
 * Waits until no connection the policy lets block the update is holding it
 * back, or the deadline, or the agent's stop; woken by every connection
 * transition. Answers those still not ready, and those the policy let the
 * update go on without (not among `waitFor`, or past `proceedAfterSeconds`).
 * A client told `prepare` that disconnects before saying ready is not ready
 * for good: without `proceedWithout` the wait ends there (its state may be
 * half saved; refusing keeps its sessions in this kernel, where it can
 * attach again).
 */
async function waitReady(ctx: UpdateContext, r: UpdateRequest, round: PrepareRound): Promise<{ notReady: NotReadyClient[]; passed: NotReadyClient[] }> {
  const { waitFor, proceedAfterSeconds } = ctx.policy.readiness;
  const graceMs = proceedAfterSeconds === null ? Infinity : proceedAfterSeconds * 1000;
  const startedAt = Date.now();
  const describe = (c: Connection<Entry>): NotReadyClient => ({ id: c.id, pid: c.peer.pid, uid: c.peer.uid, ...(c.leftWhilePreparing ? { disconnected: true } : {}) });
  const split = (): { notReady: NotReadyClient[]; passed: NotReadyClient[] } => {
    const gone = [...round.prepared].filter((c) => c.leftWhilePreparing) as Array<Connection<Entry>>;
    const blocking = [...[...ctx.connections()].filter((c) => c.blocksUpdate && !gone.includes(c)), ...gone];
    const graceOver = Date.now() - startedAt >= graceMs;
    const waited = (c: Connection<Entry>): boolean => !graceOver && (waitFor === null || permits(waitFor, c.peer));
    return { notReady: blocking.filter(waited).map(describe), passed: blocking.filter((c) => !waited(c)).map(describe) };
  };
  const timers: NodeJS.Timeout[] = [];
  const after = (ms: number): Promise<void> => new Promise((resolve) => timers.push(setTimeout(resolve, Math.min(ms, 2 ** 31 - 1))));
  const stopped = new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
  // The deadline announced with prepare, before the load: the load's time counts.
  const remainingMs = Math.max(0, round.deadline - Date.now());
  const deadline = after(remainingMs).then(() => 'deadline' as const);
  const events = [ctx.changes.changed(), stopped, deadline, ...(graceMs < remainingMs ? [after(graceMs)] : [])];
  try {
    for (;;) {
      const state = split();
      if (state.notReady.length === 0 || ctx.signal.aborted) return state;
      if (r.proceedWithout !== true && state.notReady.some((x) => x.disconnected === true)) return state;
      const woke = await Promise.race(events);
      if (woke === 'deadline') return split();
      events[0] = ctx.changes.changed();
    }
  } finally {
    timers.forEach(clearTimeout);
  }
}

/** The manifest handed to the next kernel's agent: sealed now, the start of the blackout. */
function manifestOf(ctx: UpdateContext, r: UpdateRequest, startedAt: number, sessions: ManifestSession[]): Manifest {
  return {
    format: MANIFEST_FORMAT,
    version: [MANIFEST_VERSION.major, MANIFEST_VERSION.minor],
    kexecCount: (ctx.previous?.kexecCount ?? 0) + 1,
    updateStartedAt: startedAt,
    frozenAt: Date.now(),
    next: { kernel: r.kernel, cmdline: r.cmdline },
    sessions,
  };
}

/** The checks before anything is loaded, and the kernel preflight's report (null when the image was not read). */
export interface UpdateChecks {
  /** Each check, in order. */
  checks: UpdateCheck[];
  /** What {@link inspectSync} found about the two kernels. */
  kernel: KernelPreflight | null;
}

/** The checks before anything is loaded: files readable, LUO and KHO kept on the next command line, the next kernel able to take the handover, the device owned. */
export function updateChecks(
  r: Pick<UpdateRequest, 'kernel' | 'initrd' | 'cmdline' | 'proceedWithout'>,
  haveDevice: boolean,
  agent: { kernels: readonly string[] | null; waiting: number; preflight?: PreflightPolicy; inspect?: KernelLoader['preflight'] } = { kernels: null, waiting: 0 },
): UpdateChecks {
  const readable = (name: 'kernel-readable' | 'initrd-readable', file: string): UpdateCheck => {
    try {
      fs.accessSync(file, fs.constants.R_OK);
      return { name, ok: true, detail: file };
    } catch (error) {
      return { name, ok: false, detail: (error as Error).message };
    }
  };
  const liveupdate = kernelParam(r.cmdline, 'liveupdate');
  const kho = kernelParam(r.cmdline, 'kho');
  const kernelReadable = readable('kernel-readable', r.kernel);
  // An unreadable image has failed already: the preflight would only say it again.
  const inspect = agent.inspect ?? ((kernel: string, cmdline: string) => kernelChecks(kernel, cmdline, agent.preflight ?? DEFAULT_POLICY.preflight));
  const preflight = kernelReadable.ok ? inspect(r.kernel, r.cmdline) : { checks: [], report: null };
  const checks: UpdateCheck[] = [
    kernelReadable,
    ...(r.initrd === undefined ? [] : [readable('initrd-readable', r.initrd)]),
    { name: 'liveupdate-on', ok: kernelBoolParam(r.cmdline, 'liveupdate', false), detail: `liveupdate=${liveupdate ?? '(absent)'}` },
    {
      name: 'kho-not-disabled',
      // Absent, KHO is what the next kernel's CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT says: not knowable here.
      ok: kernelBoolParam(r.cmdline, 'kho', true),
      detail: kho === null ? 'kho= absent: the next kernel must enable KHO by default (CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT)' : `kho=${kho}`,
    },
    ...preflight.checks,
    { name: 'device-owned', ok: haveDevice, detail: haveDevice ? 'the agent can use /dev/liveupdate (standalone: it owns it; systemd mode: it opens it for each create)' : 'the agent has no /dev/liveupdate' },
    ...(agent.kernels === null ? [] : [allowed('kernel-allowed', r.kernel, agent.kernels)]),
    ...(agent.kernels === null || r.initrd === undefined ? [] : [allowed('initrd-allowed', r.initrd, agent.kernels)]),
    {
      name: 'no-unclaimed-sessions',
      // The next kexec drops every incoming session nobody retrieved: only root's explicit proceedWithout lets that happen.
      ok: agent.waiting === 0 || r.proceedWithout === true,
      detail: agent.waiting === 0 ? 'none waits' : `${agent.waiting} wait${r.proceedWithout === true ? ': dropped by proceedWithout' : ''}`,
    },
  ];
  return { checks, kernel: preflight.report };
}

/**
 * The kernel preflight as checks: the image a bzImage, both kernels of one
 * handover format, LUO in the next one; the policy may make a release
 * change or a kernel whose config is not found fail them too.
 */
function kernelChecks(kernel: string, cmdline: string, policy: PreflightPolicy): { checks: UpdateCheck[]; report: KernelPreflight | null } {
  let report: KernelPreflight;
  try {
    report = inspectSync({ kernel, cmdline });
  } catch (error) {
    return { checks: [{ name: 'kernel-image', ok: false, detail: (error as Error).message }], report: null };
  }
  const { running, target } = report;
  const refusal = (code: string): string | undefined => report.refusals.find((x) => x.code === code)?.message;
  const crossing = policy.crossRelease === 'refuse' && running.release !== target.release;
  const unknown = policy.unknownKernel === 'refuse' && target.liveUpdate.present === null;
  const format = refusal('ERR_LIVEUPDATE_HANDOVER_FORMAT') ?? (crossing ? `kernel ${running.release} to ${target.release} changes release, which the policy refuses (preflight.crossRelease)` : undefined);
  const luo = refusal('ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO') ?? (unknown ? `whether kernel ${target.release} has LUO cannot be told (no build config found), which the policy refuses (preflight.unknownKernel)` : undefined);
  const formats = running.format === null
    ? `the running kernel ${running.release} has no LUO on: nothing to hand over`
    : `${running.release} writes ${running.format} (${running.formatSource}), ${target.release} reads ${target.format ?? (target.liveUpdate.present === false ? 'none (no LUO)' : 'an unknown format')}`;
  const built = target.liveUpdate.present === true ? `built with LUO (${target.liveUpdate.config})` : 'cannot tell: no build config found (a warning)';
  return {
    report,
    checks: [
      { name: 'kernel-image', ok: true, detail: `${target.release} (boot protocol ${target.bootProtocol}, ${target.compression})` },
      { name: 'kernel-format', ok: format === undefined, detail: format ?? formats },
      { name: 'kernel-luo', ok: luo === undefined, detail: luo ?? built },
    ],
  };
}

/** The path with every link resolved, or the path as given when it cannot be (the checks then say why). */
function realPath(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}

/** Whether the policy's `kernels` list allows `file` (its real path: a link cannot lead out of an allowed directory). */
function allowed(name: 'kernel-allowed' | 'initrd-allowed', file: string, kernels: readonly string[]): UpdateCheck {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch (error) {
    return { name, ok: false, detail: `${bounded(file)}: ${(error as NodeJS.ErrnoException).code ?? 'not found'}` };
  }
  const ok = kernels.some((k) => (k.endsWith('/') ? real.startsWith(k) : real === k));
  return { name, ok, detail: ok ? real : `${bounded(real)} is outside the policy's kernels` };
}
