/**
 * The agent's commands: `liveupdate agent`, `liveupdate update` and
 * `liveupdate sessions`. Each takes its arguments and resolves to the exit
 * status.
 * @internal
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { AgentError, LiveUpdateError } from '../errors.js';
import { native } from '../native.js';
import { listenFds, notify } from '../systemd.js';
import { AgentClient } from './client.js';
import { readPolicy } from './policy.js';
import { DEFAULT_SOCKET, type SessionInfo } from './protocol.js';
import { Agent, MANIFEST_FDNAME, STATE_FDNAME, type AgentEvent, type RestoredState, type UpdateCheck } from './server.js';

/** Exit statuses of `liveupdate update` (and the other agent commands). */
export const EXIT = {
  ok: 0,
  /** A check failed (or the kexec itself failed). */
  refused: 1,
  usage: 2,
  /** A client with sessions did not say ready in time. */
  notReady: 3,
  /** EX_NOPERM: the policy does not allow it. */
  permission: 77,
  /** EX_UNAVAILABLE: no agent answers, or the agent has no device. */
  unavailable: 69,
} as const;

export const AGENT_USAGE = `  liveupdate agent [--socket PATH] [--policy FILE] [--device PATH]
      Run the agent: owns /dev/liveupdate and serves clients on a Unix socket
      (default ${DEFAULT_SOCKET}; or the socket systemd passes in LISTEN_FDS).
  liveupdate update --kernel PATH [--initrd PATH] (--cmdline ARGS | --reuse-cmdline)
                    [--timeout SECONDS] [--dry-run] [--json] [--socket PATH]
      Ask the agent to update: check, load, wait for every client to be ready, kexec.
      Exit 0 (dry run passed), 1 (a check failed), 3 (a client was not ready),
      69 (no agent), 77 (not permitted).
  liveupdate sessions [--json] [--socket PATH]
      The sessions you may see, their owners and states, and the manifest's times.`;

function jsonLine(event: AgentEvent): void {
  process.stderr.write(`${JSON.stringify(event)}\n`);
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

function isSeqpacket(fd: number): boolean {
  try {
    return native.socketType(fd) === native.SOCK_SEQPACKET;
  } catch {
    return false;
  }
}

/** `liveupdate agent`: runs until SIGTERM or SIGINT. */
export async function agentCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { socket: { type: 'string' }, policy: { type: 'string' }, device: { type: 'string' } } });
  const policy = values.policy === undefined ? undefined : readPolicy(values.policy);
  const passed = fromSystemd();
  let agent: Agent | undefined;
  const log = (event: AgentEvent): void => {
    jsonLine(event);
    if (agent !== undefined) void notify({ STATUS: agent.statusLine() }).catch(() => {});
  };
  agent = await Agent.start({
    ...(values.socket === undefined ? {} : { socket: values.socket }),
    ...(values.device === undefined ? {} : { devicePath: values.device }),
    ...(policy === undefined ? {} : { policy }),
    ...passed,
    log,
  });
  const running = agent;
  await notify({ READY: 1, STATUS: running.statusLine() });
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      jsonLine({ time: new Date().toISOString(), event: 'signal', signal });
      void notify({ STOPPING: 1 })
        .catch(() => {})
        // Under systemd the agent's references go to its fd store; without it, the clients hold their sessions.
        .then(() => running.stop({ park: process.env['NOTIFY_SOCKET'] !== undefined }))
        .then(resolve, (error: unknown) => {
          jsonLine({ time: new Date().toISOString(), event: 'stop-failed', message: (error as Error).message });
          resolve();
        });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return EXIT.ok;
}

function exitFor(error: unknown): number {
  if (!(error instanceof AgentError)) return EXIT.refused;
  switch (error.code) {
    case 'ERR_LIVEUPDATE_AGENT_PERMISSION':
    case 'ERR_LIVEUPDATE_AGENT_QUOTA':
      return EXIT.permission;
    case 'ERR_LIVEUPDATE_AGENT_UNAVAILABLE':
      return EXIT.unavailable;
    case 'ERR_LIVEUPDATE_UPDATE_REFUSED': {
      const details = error.details as { notReady?: unknown[] } | undefined;
      return (details?.notReady?.length ?? 0) > 0 ? EXIT.notReady : EXIT.refused;
    }
    default:
      return EXIT.refused;
  }
}

function formatChecks(checks: UpdateCheck[]): string {
  return checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}${c.detail === undefined ? '' : ` (${c.detail})`}`).join('\n');
}

/** `liveupdate update`. */
export async function updateCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      cmdline: { type: 'string' },
      'reuse-cmdline': { type: 'boolean' },
      timeout: { type: 'string' },
      'dry-run': { type: 'boolean' },
      json: { type: 'boolean' },
      socket: { type: 'string' },
    },
  });
  const usage = (text: string): number => {
    process.stderr.write(`liveupdate update: ${text}\n`);
    return EXIT.usage;
  };
  if (values.kernel === undefined) return usage('--kernel is required');
  if ((values.cmdline === undefined) === (values['reuse-cmdline'] !== true)) return usage('give exactly one of --cmdline and --reuse-cmdline');
  const cmdline = values['reuse-cmdline'] === true ? fs.readFileSync('/proc/cmdline', 'utf8').trim() : (values.cmdline ?? '');
  const timeout = values.timeout === undefined ? 60 : Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout < 0 || timeout > 86400) return usage('--timeout must be a number of seconds from 0 to 86400');
  const json = values.json === true;
  const print = (value: Record<string, unknown>, text: string): void => {
    process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);
  };
  try {
    const client = await AgentClient.connect({ ...(values.socket === undefined ? {} : { socket: values.socket }), name: 'liveupdate update' });
    const report = await client.update({
      kernel: values.kernel,
      ...(values.initrd === undefined ? {} : { initrd: values.initrd }),
      cmdline,
      timeoutMs: Math.round(timeout * 1000),
      dryRun: values['dry-run'] === true,
      onKexec: (checks) => print({ result: 'kexec', checks }, `${formatChecks(checks)}\nkexec now`),
    });
    print({ result: 'dry-run', checks: report.checks }, `${formatChecks(report.checks)}\ndry run: every check passed; nothing was loaded`);
    await client.close();
    return EXIT.ok;
  } catch (error) {
    if (!(error instanceof LiveUpdateError)) throw error;
    const details = error instanceof AgentError ? (error.details as { checks?: UpdateCheck[]; notReady?: unknown[] } | undefined) : undefined;
    const checks = details?.checks === undefined ? '' : `${formatChecks(details.checks)}\n`;
    print({ result: 'refused', code: error.code, message: error.message, ...(details === undefined ? {} : { details }) }, `${checks}${error.message}`);
    return exitFor(error);
  }
}

function formatSessions(sessions: SessionInfo[]): string {
  if (sessions.length === 0) return '(no sessions)';
  const time = (ms: number | undefined): string => (ms === undefined ? '-' : new Date(ms).toISOString());
  const rows = sessions.map((s) => [s.name, s.kernelName, String(s.owner), s.state, time(s.createdAt), time(s.claimedAt)]);
  const header = ['name', 'kernel name', 'owner', 'state', 'created', 'claimed'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((r) => r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** `liveupdate sessions`. */
export async function sessionsCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, socket: { type: 'string' } } });
  try {
    const client = await AgentClient.connect({ ...(values.socket === undefined ? {} : { socket: values.socket }), name: 'liveupdate sessions' });
    const report = await client.sessions();
    await client.close();
    if (values.json === true) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      const times = report.frozenAt === null ? '' : `\nfrozen ${new Date(report.frozenAt).toISOString()}, device opened again ${report.firstOpenAt === null ? '-' : new Date(report.firstOpenAt).toISOString()}`;
      process.stdout.write(`${formatSessions(report.sessions)}\nlive updates: ${report.kexecCount}${times}\n`);
    }
    return EXIT.ok;
  } catch (error) {
    if (!(error instanceof LiveUpdateError)) throw error;
    process.stderr.write(`liveupdate sessions: ${error.message}\n`);
    return exitFor(error);
  }
}
