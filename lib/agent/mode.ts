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
export function childProcess(): typeof import('node:child_process') {
  return require('node:child_process') as typeof import('node:child_process');
}

/** The major version in systemd's `Version` property ("262.1-1" → 262), or null. */
export function parseSystemdVersion(text: string): number | null {
  const match = /^\s*(\d+)/.exec(text);
  return match?.[1] === undefined ? null : Number(match[1]);
}

/** What this host says: PID 1's name, systemd's version (asked of the running manager), and the device. */
export function gatherModeFacts(devicePath: string): ModeFacts {
  let pid1: string | null;
  try {
    pid1 = fs.readFileSync('/proc/1/comm', 'utf8').trim();
  } catch {
    pid1 = null;
  }
  let systemdVersion: number | null = null;
  if (pid1 === 'systemd') {
    const asked = childProcess().spawnSync('systemctl', ['show', '--property=Version', '--value'], { encoding: 'utf8', timeout: 10_000 });
    if (asked.status === 0) systemdVersion = parseSystemdVersion(asked.stdout);
  }
  return { pid1, systemdVersion, luo: fs.existsSync(devicePath) };
}
