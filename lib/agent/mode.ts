/**
 * The agent's two modes, and which one a host gets.
 *
 * - **systemd**: PID 1 is systemd v261 or later, which takes part in every
 *   live update (it keeps the fd stores of its units across the kexec, and
 *   its own `LUOSession=` units need `/dev/liveupdate` free). The agent opens
 *   the device only for one create or retrieve at a time, keeps every
 *   session fd in its unit's fd store, and jumps with the orderly
 *   `systemctl kexec`.
 * - **standalone**: anywhere else. The agent owns the device the whole time
 *   and jumps with `reboot(LINUX_REBOOT_CMD_KEXEC)` itself.
 * @internal
 */
import * as fs from 'node:fs';
import { agentError, type AgentError } from '../errors.js';

/** How the agent keeps sessions and jumps (see the module's comment). */
export type AgentMode = 'systemd' | 'standalone';

/** The modes, as `--mode` takes them. */
export const AGENT_MODES: readonly AgentMode[] = ['systemd', 'standalone'];

/** The first systemd that keeps fd stores across a kexec (and opens /dev/liveupdate at shutdown). */
export const FIRST_LUO_SYSTEMD = 261;

/** What the choice of a mode depends on. */
export interface ModeFacts {
  /** PID 1's command name (`/proc/1/comm`), or null when it cannot be read. */
  pid1: string | null;
  /** The running manager's version (its major number) when PID 1 is systemd and says it, else null. */
  systemdVersion: number | null;
  /** Whether the kernel offers LUO's device. */
  luo: boolean;
}

/** The mode an agent runs in, and why (its first log line and `liveupdate status` say both). */
export interface ModeDecision {
  /** The mode. */
  mode: AgentMode;
  /** Why this mode, in words. */
  reason: string;
  /** True when a standalone agent was forced onto a systemd v261+ host. */
  forced: boolean;
}

/** What the caller asked for: a mode (or none: the host decides), and whether to force standalone under systemd. */
export interface ModeRequest {
  /** The mode asked for; undefined lets the host decide. */
  mode?: AgentMode | undefined;
  /** Run standalone even where systemd v261+ is PID 1. */
  force?: boolean | undefined;
}

function refused(text: string): AgentError {
  return agentError('ERR_LIVEUPDATE_AGENT_MODE', text, { operation: 'agent.start' });
}

/** PID 1 as the reasons name it. */
function describePid1(facts: ModeFacts): string {
  if (facts.pid1 !== 'systemd') return facts.pid1 === null ? 'PID 1 is unknown (/proc/1/comm unreadable)' : `PID 1 is ${facts.pid1}, not systemd`;
  return facts.systemdVersion === null ? 'PID 1 is systemd of an unknown version' : `PID 1 is systemd ${facts.systemdVersion}`;
}

/** Whether PID 1 is a systemd that takes part in live updates. */
export function systemdTakesPart(facts: ModeFacts): boolean {
  return facts.pid1 === 'systemd' && facts.systemdVersion !== null && facts.systemdVersion >= FIRST_LUO_SYSTEMD;
}

/**
 * The mode for `request` on a host with `facts`. Without a mode asked:
 * systemd when PID 1 is systemd v261+ and the kernel has LUO, else
 * standalone. Refused (AgentModeError): systemd mode where PID 1 is not such
 * a systemd, and standalone where it is, unless forced (a standalone agent
 * there holds the device, so every `LUOSession=` unit fails to start, and
 * its kexec skips the orderly shutdown).
 */
export function decideMode(facts: ModeFacts, request: ModeRequest = {}): ModeDecision {
  const pid1 = describePid1(facts);
  const takesPart = systemdTakesPart(facts);
  if (request.mode === 'systemd') {
    if (!takesPart) throw refused(`systemd mode needs systemd ${FIRST_LUO_SYSTEMD} or later as PID 1: ${pid1}. Run the agent standalone (--mode standalone)`);
    return { mode: 'systemd', reason: `asked for (--mode systemd); ${pid1}`, forced: false };
  }
  if (request.mode === 'standalone') {
    if (!takesPart) return { mode: 'standalone', reason: `asked for (--mode standalone); ${pid1}`, forced: false };
    if (request.force !== true) {
      throw refused(
        `${pid1}, which takes part in every live update: a standalone agent would hold /dev/liveupdate (units with LUOSession= then fail to start) ` +
          'and kexec without stopping the other units. Run it in systemd mode (--mode systemd, as units/liveupdate-agent.service does), or add --force',
      );
    }
    return { mode: 'standalone', reason: `forced (--mode standalone --force) although ${pid1}`, forced: true };
  }
  if (takesPart && facts.luo) return { mode: 'systemd', reason: `${pid1} (v${FIRST_LUO_SYSTEMD}+ keeps fd stores across a kexec) and the kernel has LUO`, forced: false };
  if (takesPart) return { mode: 'standalone', reason: `${pid1}, but the kernel has no LUO device`, forced: false };
  if (facts.pid1 === 'systemd' && facts.systemdVersion !== null) return { mode: 'standalone', reason: `${pid1}, older than ${FIRST_LUO_SYSTEMD} (it keeps no fd store across a kexec)`, forced: false };
  return { mode: 'standalone', reason: pid1, forced: false };
}

/** node:child_process (and node:net with it), loaded when systemctl is run, not with the package. */
function childProcess(): typeof import('node:child_process') {
  return require('node:child_process') as typeof import('node:child_process');
}

/** How a systemctl run ended: its exit status, or null when it was killed (a signal, the timeout) or could not run. */
export interface SystemctlResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs systemctl without blocking the agent; resolves with how it ended. */
export function systemctl(args: readonly string[], timeoutMs = 60_000): Promise<SystemctlResult> {
  return new Promise((resolve) => {
    childProcess().execFile('systemctl', args, { encoding: 'utf8', timeout: timeoutMs }, (error, stdout, stderr) => {
      const status = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : null;
      resolve({ status, stdout, stderr: stderr.trim() || (error?.message ?? '') });
    });
  });
}

/**
 * PID 1's own varlink socket (systemd 262 has it; where it is missing,
 * systemctl is asked instead): `org.varlink.service`, `io.systemd.Manager`
 * and `io.systemd.Unit` answer there without a process of their own. Under
 * emulation, while PID 1 boots, a systemctl run cost the agent's start 0.3
 * to 1.2 s, and a call here about 0.1 s.
 */
export const MANAGER_VARLINK = '/run/systemd/io.systemd.Manager';

/** The most bytes one reply of PID 1 may have (a unit's description is about 8 KiB). */
const MAX_VARLINK_REPLY = 1 << 20;

/** The parameters of a varlink reply (one JSON object, its NUL terminator cut), or null for an error reply or anything else. */
export function varlinkParameters(reply: Buffer): Record<string, unknown> | null {
  let message: unknown;
  try {
    message = JSON.parse(reply.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof message !== 'object' || message === null || 'error' in message) return null;
  const parameters = (message as { parameters?: unknown }).parameters;
  return typeof parameters === 'object' && parameters !== null && !Array.isArray(parameters) ? (parameters as Record<string, unknown>) : null;
}

/**
 * Calls one varlink method of PID 1 (`socketPath`, default
 * {@link MANAGER_VARLINK}); resolves with the reply's parameters, or null
 * when it cannot be asked so: no such socket (an older systemd), an error
 * reply, a reply over {@link MAX_VARLINK_REPLY}, or no reply within the
 * timeout. Callers fall back on systemctl.
 */
export function askManager(method: string, parameters: Record<string, unknown>, socketPath = MANAGER_VARLINK, timeoutMs = 10_000): Promise<Record<string, unknown> | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // node:net loads here, with the first question to PID 1, not with the package.
    const socket = (require('node:net') as typeof import('node:net')).connect({ path: socketPath });
    const timer = setTimeout(() => done(null), timeoutMs);
    let answer: Record<string, unknown> | null | undefined;
    // The first outcome counts; the promise settles once the socket is closed, so no fd of this call outlives it.
    function done(value: Record<string, unknown> | null): void {
      if (answer !== undefined) return;
      answer = value;
      clearTimeout(timer);
      socket.destroy();
    }
    socket.on('connect', () => socket.write(`${JSON.stringify({ method, parameters })}\0`));
    socket.on('data', (chunk: Buffer) => {
      const end = chunk.indexOf(0);
      const part = end === -1 ? chunk : chunk.subarray(0, end);
      size += part.length;
      chunks.push(part);
      if (size > MAX_VARLINK_REPLY) done(null);
      else if (end !== -1) done(varlinkParameters(Buffer.concat(chunks)));
    });
    socket.on('error', () => done(null));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(answer ?? null);
    });
  });
}

/** The value at `keys` in a JSON reply, or undefined. */
function fieldOf(value: unknown, keys: readonly string[]): unknown {
  let at = value;
  for (const key of keys) {
    if (typeof at !== 'object' || at === null) return undefined;
    at = (at as Record<string, unknown>)[key];
  }
  return at;
}

/** One property of PID 1: where its varlink says it, and the systemctl property that says the same. */
export interface ManagerQuestion {
  /** The varlink method, its parameters, and the path to the string in its reply. */
  readonly method: string;
  readonly parameters: Record<string, unknown>;
  readonly field: readonly string[];
  /** systemctl's name for it (`systemctl show --property=NAME --value [UNIT]`), and the unit (none: the manager's). */
  readonly property: string;
  readonly unit?: string;
}

/**
 * A property of PID 1, as it says it and `parse` reads it: over its varlink
 * socket (`socketPath`) where it answers there, else from systemctl; null
 * when neither says (or `parse` takes neither answer).
 */
export async function managerProperty<T>(question: ManagerQuestion, parse: (text: string) => T | null, socketPath = MANAGER_VARLINK): Promise<T | null> {
  const said = fieldOf(await askManager(question.method, question.parameters, socketPath), question.field);
  const parsed = typeof said === 'string' ? parse(said) : null;
  if (parsed !== null) return parsed;
  const shown = await systemctl(['show', `--property=${question.property}`, '--value', ...(question.unit === undefined ? [] : [question.unit])], 10_000);
  return shown.status === 0 ? parse(shown.stdout.trim()) : null;
}

/** The major version in systemd's `Version` property ("262.1-1" → 262), or null. */
export function parseSystemdVersion(text: string): number | null {
  const match = /^\s*(\d+)/.exec(text);
  return match?.[1] === undefined ? null : Number(match[1]);
}

/**
 * The running manager's major version, or null: the version PID 1's varlink
 * server gives (`org.varlink.service.GetInfo`, "262.1 (262.1-1)"), else
 * systemctl's `Version` property ("262.1-1").
 */
export function managerVersion(socketPath = MANAGER_VARLINK): Promise<number | null> {
  return managerProperty({ method: 'org.varlink.service.GetInfo', parameters: {}, field: ['version'], property: 'Version' }, parseSystemdVersion, socketPath);
}

/** What this host says: PID 1's name, systemd's version (asked of the running manager), and the device. */
export async function gatherModeFacts(devicePath: string): Promise<ModeFacts> {
  let pid1: string | null;
  try {
    pid1 = fs.readFileSync('/proc/1/comm', 'utf8').trim();
  } catch {
    pid1 = null;
  }
  const systemdVersion = pid1 === 'systemd' ? await managerVersion() : null;
  return { pid1, systemdVersion, luo: fs.existsSync(devicePath) };
}
