/**
 * The agent's commands for the `liveupdate` command table (lib/cli.ts):
 * `agent`, `update` and `sessions`. They run until they are done, so each
 * resolves to its exit status.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command, OptionValues, Output } from '../cli.js';
import { UsageError } from '../cli.js';
import { AgentPermissionError, AgentUnavailableError, LiveUpdateError, UpdateRefusedError } from '../errors.js';
import { onFirstUse } from '../lazy.js';
import { native } from '../native.js';
import type { AgentInfo } from '../status.js';
import { listenFds, notify } from '../systemd.js';
import type { AgentClient, SessionsReport } from './client.js';
import type * as ClientModule from './client.js';
import { DEVICE_PATH } from '../device.js';
import { AGENT_MODES, gatherModeFacts, type AgentMode } from './mode.js';
import { readPolicy, type Policy } from './policy.js';
import { AGENT_INFO_PATH, printable } from './names.js';
import type { KernelPreflight } from '../kernel-image.js';
import { DEFAULT_SOCKET, type SessionInfo, type UpdateCheck, type UpdateRequest } from './protocol.js';
import { MANIFEST_FDNAME, STATE_FDNAME, type RestoredState } from './fdstore.js';
import { EventLines } from './event-lines.js';
import type { Agent, AgentEvent } from './server.js';
import type * as ServerModule from './server.js';
import type * as UpdateModule from './update.js';

/** Exit statuses of the agent's commands beyond the table's 0, 1 and 2. */
export const EXIT = {
  ok: 0,
  /** A check failed (or the kexec itself failed). */
  refused: 1,
  /** A client with sessions did not say ready in time. */
  notReady: 3,
  /** EX_UNAVAILABLE: no agent answers (or it stalled), or the agent has no device. */
  unavailable: 69,
  /** EX_NOPERM: the policy (or the socket's mode) does not allow it. */
  permission: 77,
} as const;

/** The exit statuses only the agent's commands use, for the main help. */
export const AGENT_EXIT_STATUSES: ReadonlyArray<readonly [number, string]> = [
  [EXIT.notReady, 'update: a client was not ready'],
  [EXIT.unavailable, 'no agent answers (or it stalled, or has no device)'],
  [EXIT.permission, 'the agent does not permit it'],
];

// Each command loads what it runs on first use: the agent's server for `agent`, the client
// for the commands that ask an agent, the update's checks for a dry run without one.
function serverModule(): typeof ServerModule {
  return onFirstUse('agent/server', () => require('./server.js') as typeof ServerModule);
}

function clientModule(): typeof ClientModule {
  return onFirstUse('agent/client', () => require('./client.js') as typeof ClientModule);
}

function updateModule(): typeof UpdateModule {
  return onFirstUse('agent/update', () => require('./update.js') as typeof UpdateModule);
}

function text(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

/** Splits what systemd passed: the listening socket, the state memfd and the parked session fds. */
function fromSystemd(): { listenFd?: number; restored?: RestoredState } {
  const passed = listenFds({ unsetEnvironment: true });
  const fds = new Map<string, number>();
  let listenFd: number | undefined;
  let stateFd: number | undefined;
  for (const [name, list] of passed) {
    for (const fd of list) {
      if (name === STATE_FDNAME) stateFd = fd;
      else if (name.startsWith('luo-') || name === MANIFEST_FDNAME) fds.set(name, fd);
      else if (listenFd === undefined && isSeqpacket(fd)) listenFd = fd;
    }
  }
  return { ...(listenFd === undefined ? {} : { listenFd }), ...(stateFd === undefined && fds.size === 0 ? {} : { restored: { stateFd, fds } }) };
}

/** The path a passed listening socket is bound to (from /proc/net/unix, by its inode), or null. */
function boundPath(fd: number): string | null {
  try {
    const inode = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`))?.[1];
    const line = fs.readFileSync('/proc/net/unix', 'utf8').split('\n').find((l) => l.split(/\s+/)[6] === inode);
    return line?.split(/\s+/)[7] ?? null;
  } catch {
    return null;
  }
}

/**
 * Says who the agent is in {@link AGENT_INFO_PATH}, for `liveupdate status`
 * (root only: the directory is root's); a failure is logged, not fatal.
 */
function writeInfo(info: AgentInfo, log: (event: AgentEvent) => void): () => void {
  if (process.getuid?.() !== 0) return () => {};
  try {
    fs.mkdirSync(path.dirname(AGENT_INFO_PATH), { recursive: true, mode: 0o755 });
    fs.writeFileSync(`${AGENT_INFO_PATH}.${process.pid}`, `${JSON.stringify(info)}\n`, { mode: 0o644 });
    fs.renameSync(`${AGENT_INFO_PATH}.${process.pid}`, AGENT_INFO_PATH);
  } catch (error) {
    log({ time: new Date().toISOString(), event: 'info-not-written', path: AGENT_INFO_PATH, message: (error as Error).message });
    return () => {};
  }
  return () => fs.rmSync(AGENT_INFO_PATH, { force: true });
}

function isSeqpacket(fd: number): boolean {
  try {
    return native.socketType(fd) === native.SOCK_SEQPACKET;
  } catch {
    return false;
  }
}

/** `liveupdate agent --simulate`: the agent on a simulated device (liveupdate/simulator, loaded only then). */
function startSimulated(socketPath: string, policy: Policy | undefined, log: (event: AgentEvent) => void): Promise<Pick<Agent, 'socketPath' | 'mode' | 'statusLine' | 'stop'>> {
  const simulator = require('../simulator/index.js') as typeof import('../simulator/index.js');
  return simulator.startSimulatedAgent({ socketPath, log, ...(policy === undefined ? {} : { policy }) });
}

/** `liveupdate agent`: runs until SIGTERM or SIGINT. */
async function runAgent(values: OptionValues): Promise<number> {
  const policyFile = text(values, 'policy');
  const socket = text(values, 'socket');
  const device = text(values, 'device');
  const mode = text(values, 'mode');
  if (mode !== undefined && !AGENT_MODES.includes(mode as AgentMode)) throw new UsageError(`--mode must be ${AGENT_MODES.join(' or ')}`);
  const force = values['force'] === true;
  if (force && mode !== 'standalone') throw new UsageError('--force goes with --mode standalone only');
  const simulate = values['simulate'] === true;
  if (simulate && (mode !== undefined || device !== undefined)) throw new UsageError('--simulate takes no --mode or --device: its device is simulated');
  const policy = policyFile === undefined ? undefined : readPolicy(policyFile);
  const passed = fromSystemd();
  let agent: Pick<Agent, 'socketPath' | 'mode' | 'statusLine' | 'stop'> | undefined;
  // STATUS= once per turn of the event loop, not once per event: a burst of clients logs thousands.
  let statusDue = false;
  const sendStatus = (): void => {
    statusDue = false;
    if (agent !== undefined) void notify({ STATUS: agent.statusLine() }).catch(() => {});
  };
  const lines = new EventLines();
  // An exit by an uncaught error or process.exit still writes what waits.
  process.once('exit', () => lines.flush());
  // Without a service manager to tell, no status line is made at all.
  const notifying = (process.env['NOTIFY_SOCKET'] ?? '') !== '';
  const log = (event: AgentEvent): void => {
    lines.add(event);
    if (!notifying || agent === undefined || statusDue) return;
    statusDue = true;
    setImmediate(sendStatus);
  };
  // PID 1's answers for the mode come while the server compiles: under a busy boot each takes a second or more.
  const modeFacts = simulate ? undefined : gatherModeFacts(device ?? DEVICE_PATH);
  const { Agent, tuneHeapForConnections, compileToBaselineFromNowOn } = serverModule();
  // V8's flags matter once clients come in a burst, and node:v8 (with the streams it loads) is
  // tens of milliseconds under emulation: the first answer does not wait for it.
  const onBurst = (): void => {
    tuneHeapForConnections();
    compileToBaselineFromNowOn();
  };
  // The simulator's agent takes no onBurst: its heap is tuned from the start.
  if (simulate) tuneHeapForConnections();
  // The handlers come before the start: a SIGTERM just after `listening` must stop the agent cleanly, not kill it.
  let received: string | null = null;
  let onSignal = (signal: string): void => {
    received = signal;
  };
  const onTerm = (): void => onSignal('SIGTERM');
  const onInt = (): void => onSignal('SIGINT');
  process.once('SIGTERM', onTerm);
  process.once('SIGINT', onInt);
  try {
    agent = simulate ? await startSimulated(socket ?? DEFAULT_SOCKET, policy, log) : await Agent.start({
      ...(socket === undefined ? {} : { socket }),
      ...(device === undefined ? {} : { devicePath: device }),
      ...(policy === undefined ? {} : { policy }),
      ...passed,
      mode: mode as AgentMode | undefined,
      force,
      modeFacts: await modeFacts,
      log,
      onBurst,
    });
  } catch (error) {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    throw error;
  }
  const running = agent;
  const socketPath = running.socketPath ?? (passed.listenFd === undefined ? null : boundPath(passed.listenFd));
  const removeInfo = writeInfo({ pid: process.pid, mode: running.mode.mode, reason: running.mode.reason, socket: socketPath }, log);
  await notify({ READY: 1, STATUS: running.statusLine() });
  await new Promise<void>((resolve) => {
    onSignal = (signal: string): void => {
      lines.add({ time: new Date().toISOString(), event: 'signal', signal });
      void notify({ STOPPING: 1 })
        .catch(() => {})
        // Under systemd the agent's references go to its fd store; without it, the clients hold their sessions.
        .then(() => running.stop({ park: process.env['NOTIFY_SOCKET'] !== undefined }))
        .then(resolve, (error: unknown) => {
          lines.add({ time: new Date().toISOString(), event: 'stop-failed', message: (error as Error).message });
          resolve();
        })
        .finally(removeInfo);
    };
    if (received !== null) onSignal(received);
  });
  return EXIT.ok;
}

function exitFor(error: unknown): number {
  if (error instanceof AgentPermissionError) return EXIT.permission;
  if (error instanceof AgentUnavailableError) return EXIT.unavailable;
  if (error instanceof UpdateRefusedError && error.details.notReady.length > 0) return EXIT.notReady;
  return EXIT.refused;
}

function formatCheck(c: UpdateCheck): string {
  return `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}${c.detail === undefined ? '' : `: ${printable(c.detail)}`}`;
}

/** The kernel preflight as lines: both kernels, the running one's KHO scratch, each warning. */
function kernelLines(kernel: KernelPreflight | undefined): string[] {
  if (kernel === undefined) return [];
  const { running, target } = kernel;
  const { scratch } = running;
  const areas = scratch.totalBytes === null ? scratch.source : `${scratch.areas?.length} areas, ${(scratch.totalBytes / 2 ** 20).toFixed(1)} MiB`;
  return [
    `kernel: ${running.release} (${running.format ?? 'no LUO'}) -> ${printable(target.release)} (${target.format ?? 'no LUO'}): ${kernel.verdict}`,
    `kho scratch of the running kernel: ${areas}${scratch.parameter === null ? '' : ` (${printable(scratch.parameter)})`}`,
    ...kernel.warnings.map((w) => `warning: ${printable(w)}`),
  ];
}

/** `{ kernel }` when there is a kernel report, for a JSON report. */
function withKernel(kernel: KernelPreflight | null | undefined): { kernel?: KernelPreflight } {
  return kernel === null || kernel === undefined ? {} : { kernel };
}

/** The report, on stdout: JSON, or the checks as lines, the kernel preflight's (and a last line when given). */
function report(out: Output, json: boolean, value: Record<string, unknown>, checks: readonly UpdateCheck[], last?: string, kernel?: KernelPreflight | null): void {
  if (json) {
    out.stdout(`${JSON.stringify(value)}\n`);
    return;
  }
  const lines = [...checks.map(formatCheck), ...kernelLines(kernel ?? undefined), ...(last === undefined ? [] : [last])];
  if (lines.length > 0) out.stdout(`${lines.join('\n')}\n`);
}

/** A failed update: the report on stdout (the checks made; with --json the error too), the message on stderr. */
function updateFailed(out: Output, json: boolean, error: LiveUpdateError): number {
  const refused = error instanceof UpdateRefusedError ? error.details : undefined;
  const details = refused === undefined ? {} : { details: refused };
  report(out, json, { result: refused === undefined ? 'failed' : 'refused', code: error.code, message: error.message, ...details }, refused?.checks ?? [], undefined, refused?.kernel);
  return failed(out, 'update', error);
}

/** The message on stderr, escaped for the terminal; returns the exit status. */
function failed(out: Output, command: string, error: LiveUpdateError): number {
  out.stderr(`liveupdate ${command}: ${printable(error.message)}\n`);
  return exitFor(error);
}

/** Whether connecting found no agent at all (as opposed to one that refused or failed). */
function noAgent(error: unknown): error is AgentUnavailableError {
  return error instanceof AgentUnavailableError && error.operation === 'agent.connect';
}

/**
 * `update --dry-run` with no agent to ask: the checks this process can make
 * itself, as the calling user. The agent's own (the device) fails, saying
 * why; the exit status is 1 if another check failed, else 69.
 */
function dryRunHere(out: Output, json: boolean, request: Pick<UpdateRequest, 'kernel' | 'initrd' | 'cmdline'>, error: AgentUnavailableError): number {
  const made = updateModule().updateChecks(request, false);
  const checks = made.checks.map((c) => (c.name === 'device-owned' ? { ...c, detail: `no agent answers (${error.code}): these checks were made by this process` } : c));
  const failedHere = checks.some((c) => !c.ok && c.name !== 'device-owned');
  const last = `dry run without an agent: ${failedHere ? 'a check failed' : 'every check this process can make passed'}`;
  report(out, json, { result: 'dry-run', agent: false, checks, ...withKernel(made.kernel) }, checks, last, made.kernel);
  const noAgentStatus = failed(out, 'update', error);
  return failedHere ? EXIT.refused : noAgentStatus;
}

/** `liveupdate update`. */
async function runUpdate(values: OptionValues, out: Output): Promise<number> {
  const kernel = text(values, 'kernel');
  if (kernel === undefined) throw new UsageError('--kernel is required');
  const reuse = values['reuse-cmdline'] === true;
  if ((text(values, 'cmdline') === undefined) === !reuse) throw new UsageError('give exactly one of --cmdline and --reuse-cmdline');
  const cmdline = reuse ? fs.readFileSync('/proc/cmdline', 'utf8').trim() : (text(values, 'cmdline') ?? '');
  const timeout = text(values, 'timeout') === undefined ? 60 : Number(text(values, 'timeout'));
  if (!Number.isFinite(timeout) || timeout < 0 || timeout > 86400) throw new UsageError('--timeout must be a number of seconds from 0 to 86400');
  const json = values['json'] === true;
  const dryRun = values['dry-run'] === true;
  const initrd = text(values, 'initrd');
  const request = { kernel, ...(initrd === undefined ? {} : { initrd }), cmdline };
  let client: AgentClient;
  let kexecStarted = false;
  try {
    client = await clientModule().AgentClient.connect({ socket: text(values, 'socket') ?? DEFAULT_SOCKET, name: 'liveupdate update' });
  } catch (error) {
    if (dryRun && noAgent(error)) return dryRunHere(out, json, request, error);
    if (!(error instanceof LiveUpdateError)) throw error;
    return updateFailed(out, json, error);
  }
  try {
    const result = await client.update({
      ...request,
      timeoutMs: Math.round(timeout * 1000),
      dryRun,
      proceedWithout: values['proceed-without'] === true,
      onKexec: (checks) => {
        kexecStarted = true;
        report(out, json, { result: 'kexec', checks }, checks, 'kexec now');
      },
    });
    report(out, json, { result: 'dry-run', checks: result.checks, ...withKernel(result.kernel) }, result.checks, 'dry run: every check passed; nothing was loaded', result.kernel);
    return EXIT.ok;
  } catch (error) {
    if (!(error instanceof LiveUpdateError)) throw error;
    // systemd mode: the agent announced the kexec, asked systemd for it, and was stopped on the way.
    if (kexecStarted && error instanceof AgentUnavailableError) {
      out.stderr('liveupdate update: the agent stopped after starting the kexec (systemd stops every unit on its way to it)\n');
      return EXIT.ok;
    }
    return updateFailed(out, json, error);
  } finally {
    client.closeSync();
  }
}

function formatSessions(sessions: SessionInfo[]): string {
  if (sessions.length === 0) return '(no sessions)';
  const time = (ms: number | undefined): string => (ms === undefined ? '-' : new Date(ms).toISOString());
  // Names are the clients' own: shown escaped, so that they cannot act on root's terminal or forge rows.
  const rows = sessions.map((s) => [printable(s.name), printable(s.kernelName), String(s.owner), s.state, time(s.createdAt), time(s.claimedAt)]);
  const header = ['name', 'kernel name', 'owner', 'state', 'created', 'claimed'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((r) => r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** The most pages `sessions` follows: an agent whose cursors never end cannot keep the command running. */
const MAX_PAGES = 10_000;

/** Every page of the agent's list, as one report. */
async function everySession(client: AgentClient): Promise<SessionsReport> {
  const first = await client.sessions();
  const sessions = [...first.sessions];
  const seen = new Set<string>();
  for (let next = first.next; next !== null && !seen.has(next) && seen.size < MAX_PAGES; ) {
    seen.add(next);
    const page = await client.sessions({ cursor: next });
    sessions.push(...page.sessions);
    next = page.next;
  }
  return { ...first, sessions, next: null };
}

/** `liveupdate sessions`. */
async function runSessions(values: OptionValues, out: Output): Promise<number> {
  const json = values['json'] === true;
  let listed: SessionsReport;
  try {
    await using client = await clientModule().AgentClient.connect({ socket: text(values, 'socket') ?? DEFAULT_SOCKET, name: 'liveupdate sessions' });
    listed = await everySession(client);
  } catch (error) {
    if (!(error instanceof LiveUpdateError)) throw error;
    return failed(out, 'sessions', error);
  }
  if (json) {
    out.stdout(`${JSON.stringify(listed)}\n`);
  } else {
    const times = listed.frozenAt === null ? '' : `\nfrozen ${new Date(listed.frozenAt).toISOString()}, device opened again ${listed.firstOpenAt === null ? '-' : new Date(listed.firstOpenAt).toISOString()}`;
    out.stdout(`${formatSessions(listed.sessions)}\nlive updates: ${listed.kexecCount}${times}\n`);
  }
  return EXIT.ok;
}

const socketOption = { socket: { type: 'string' } } as const;

/** The agent's entries of the command table. */
export const AGENT_COMMANDS: readonly Command[] = [
  {
    name: 'agent',
    summary: 'Run the agent: the one owner of /dev/liveupdate, serving clients on a Unix socket.',
    synopsis: '[--mode systemd|standalone [--force] | --simulate] [--socket PATH] [--policy FILE] [--device PATH]',
    details: `  --mode MODE     systemd: open the device only for each create, keep the sessions in the
                  unit's fd store, kexec with systemctl kexec (units/liveupdate-agent.service);
                  standalone: hold the device, kexec itself (units/liveupdate-agent-standalone.service).
                  Default: systemd where PID 1 is systemd 261 or later and the kernel has LUO
  --force         with --mode standalone: run so even where systemd 261+ is PID 1 (refused
                  otherwise: LUOSession= units would fail, and the kexec would stop no unit)
  --socket PATH   where to listen (default ${DEFAULT_SOCKET}); a SOCK_SEQPACKET socket
                  passed by systemd in LISTEN_FDS is used instead
  --policy FILE   who may connect and update, quotas (AGENT-PROTOCOL.md; default: root only)
  --device PATH   the LUO device (default /dev/liveupdate)
  --simulate      serve on a simulated LUO device, for tests on hosts without one: an update
                  makes a simulated kexec (README, "Testing without a LUO host")
Logs one JSON line per event on stderr, the first saying the mode and why; READY=1 and
STATUS= to systemd. Runs until SIGTERM (under systemd its session references wait in the
fd store). Exit status 0 after a clean stop, 1 when it cannot start (a mode that does not fit).`,
    options: { ...socketOption, policy: { type: 'string' }, device: { type: 'string' }, mode: { type: 'string' }, force: { type: 'boolean' }, simulate: { type: 'boolean' } },
    reports: false,
    run: (values) => runAgent(values),
  },
  {
    name: 'update',
    summary: 'Ask the agent to update: check, load, wait for every client to be ready, kexec.',
    synopsis: '--kernel PATH [--initrd PATH] (--cmdline ARGS | --reuse-cmdline) [--timeout S] [--proceed-without] [--dry-run] [--socket PATH]',
    details: `  --kernel PATH      the next kernel image
  --initrd PATH      its initramfs
  --cmdline ARGS     its command line (must keep liveupdate=on, must not turn KHO off)
  --reuse-cmdline    this kernel's command line
  --timeout S        how long to wait for the clients to say ready (default 60)
  --proceed-without  root, where the agent supports it: after --timeout, go on without the
                     clients not ready (their sessions are kept) instead of refusing
  --dry-run          stop after the checks; with no agent answering, make the checks this
                     process can (files, command line) and report them (exit 69 if they pass)
  --json             print { result, checks, kernel?, code?, message?, details? } as JSON on stdout
                     (kernel: both kernels' releases and handover formats, the verdict, warnings,
                     the running kernel's KHO scratch; in details for a refusal)
The report goes to stdout, errors to stderr. An agent in systemd mode kexecs with
systemctl kexec: systemd stops every unit first, the agent too, and update exits 0 then.
Exit status 0 (dry run passed; a kexec does not return), 1 (a check or the kexec failed),
3 (a client was not ready: the report names it), 69 (no agent answers, or it stalled),
77 (not permitted), 2 (usage).`,
    options: {
      ...socketOption,
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      cmdline: { type: 'string' },
      'reuse-cmdline': { type: 'boolean' },
      timeout: { type: 'string' },
      'proceed-without': { type: 'boolean' },
      'dry-run': { type: 'boolean' },
    },
    reports: true,
    run: (values, out) => runUpdate(values, out),
  },
  {
    name: 'sessions',
    summary: "The agent's sessions you may see: owners, states, the manifest's times.",
    synopsis: '[--socket PATH]',
    details: `  --socket PATH   the agent's socket (default ${DEFAULT_SOCKET})
  --json          print { sessions, next, kexecCount, updateStartedAt, frozenAt, firstOpenAt, refused }
                  (every page of the agent's list, so next is null)
Names are shown with control characters escaped (\x1b, \u{202e}; a backslash doubled);
--json gives them exactly. Errors go to stderr.
Exit status 0, 1 (another failure), 69 (no agent answers, or it stalled), 77 (not permitted).`,
    options: socketOption,
    reports: true,
    run: (values, out) => runSessions(values, out),
  },
];
