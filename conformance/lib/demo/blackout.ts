/**
 * The demo's blackout on one clock, the host's: from the agent sealing its
 * manifest in the old kernel to each VM's memory back in the new one, with
 * the kernel's part (its last line, the new kernel's start, /init) between.
 * The agent's instants are guest wall clocks, each placed on the host clock
 * through its own kernel's clock samples (../vm/clock.ts). On a systemd
 * host the path is taken further apart ({@link systemdPathMarks}): the
 * orderly shutdown and systemd-shutdown in the old kernel, PID 1's start,
 * its retrieval of the stored fd stores and the agent's unit in the new one,
 * and each client's own unit. Pure.
 */
import { HOST_CLOCK_NOTE, kernelInstants, kexecClocks, onHost, sinceOrigin, type Arrivals, type Instant, type KexecClocks, type StampedLine } from '../vm/clock.js';
import type { SpanSpec } from '../bench/intervals.js';
import { VMS, type DemoSummary } from './scenario.js';

/** The blackout's instants, the manifest's sealing first; throws when a clock or an instant is missing. */
export function demoInstants(arrivals: Arrivals, s: DemoSummary): Instant[] {
  if (s.frozenAt === null || s.firstOpenAt === null) throw new Error('the agent reported no frozenAt or firstOpenAt');
  const c = kexecClocks(arrivals, 1);
  const agent = (name: string, wall: number): Instant => ({ name, atMs: onHost(c.nextFit, 'wall', wall), clock: 'new kernel wall clock' });
  const claims = Object.entries(s.claimedAt).map(([vm, at]) => {
    if (at === null) throw new Error(`the agent reported no claim of ${vm}'s session`);
    return agent(`${vm}'s memory claimed`, at);
  });
  return [
    { name: 'agent seals its manifest (frozenAt)', atMs: onHost(c.oldFit, 'wall', s.frozenAt), clock: 'old kernel wall clock' },
    ...kernelInstants(c),
    agent('agent back on /dev/liveupdate', s.firstOpenAt),
    ...claims,
  ];
}

/** The summary's blackout lines: the figures, then where the time goes (on a systemd host, span by span), then the clocks. */
export function blackoutLines(arrivals: Arrivals, s: SystemdDemoSummary): string[] {
  let instants: Instant[];
  let path: string[];
  try {
    instants = demoInstants(arrivals, s);
    path = s.systemd === undefined ? [] : systemdPathLines(blackoutMarkTimes(arrivals, s));
  } catch (error) {
    return [`blackout: not measured (${(error as Error).message})`];
  }
  const [frozen, ...rest] = instants as [Instant, ...Instant[]];
  const secs = (i: Instant): string => `${((i.atMs - frozen.atMs) / 1000).toFixed(3)} s`;
  const named = (prefix: string): Instant => rest.find((i) => i.name.startsWith(prefix)) as Instant;
  const claims = rest.filter((i) => i.name.endsWith('memory claimed'));
  const c = kexecClocks(arrivals, 1);
  const fits = [c.oldFit, c.nextFit].map((fit, i) => (fit === undefined ? `kernel ${i + 1}: no samples` : `kernel ${i + 1}: ${fit.samples} samples, ${fit.jitterMs.toFixed(2)} ms apart at most`));
  const check = consoleClockCheck(arrivals, c);
  if (check !== null) fits.push(`kernel 2's monotonic clock shown on the console arrived ${check.toFixed(2)} ms after the mapping places it`);
  return [
    `blackout (agent manifest, frozenAt -> ...): agent back on /dev/liveupdate ${secs(named('agent back'))}; ${claims.map((i) => `${i.name} ${secs(i)}`).join(', ')}`,
    `  where it goes (ms after frozenAt): ${sinceOrigin(rest, frozen.atMs)
      .map(([name, ms]) => `${name} +${ms.toFixed(1)}`)
      .join('; ')}`,
    ...path,
    `  clock: ${HOST_CLOCK_NOTE}; ${fits.join('; ')}`,
  ];
}

/** The line the systemd demo's marker unit writes to the kernel log when the orderly shutdown begins. */
export const SHUTDOWN_MARK_TEXT = 'lu-demo: the orderly shutdown begins';

/** The kernel log line by which the systemd demo shows its CLOCK_MONOTONIC (ms) on the console: a check of the clock mapping. */
export const CONSOLE_CLOCK_TEXT = 'lu-demo: clock mono=';
const CONSOLE_CLOCK_LINE = new RegExp(`${CONSOLE_CLOCK_TEXT}(\\d+(?:\\.\\d+)?)`);

/**
 * A check of how the new kernel's CLOCK_MONOTONIC is placed on the host
 * clock (through its quickest clock sample on the second serial port): the
 * guest also wrote its monotonic time to the console through the kernel log,
 * and each such line arrived `console crossing - mapping's lateness` after
 * the mapping places that time. The least over the lines, ms: near zero when
 * both the mapping and the quickest console line are prompt; negative by at
 * least how late the mapping is. Null when the run wrote no such line.
 */
export function consoleClockCheck(arrivals: Arrivals, c: KexecClocks): number | null {
  const fit = c.nextFit;
  if (fit === undefined) return null;
  const gaps = arrivals.console.flatMap((line) => {
    const m = line.atMs >= c.next.firstLineAtMs ? CONSOLE_CLOCK_LINE.exec(line.text) : null;
    return m === null ? [] : [line.atMs - onHost(fit, 'mono', Number(m[1]))];
  });
  return gaps.length === 0 ? null : Math.round(Math.min(...gaps) * 100) / 100;
}

/**
 * The systemd path's instants in the new kernel as the systemd scenario
 * reads them after the claims: systemd's own timestamps (`systemctl show`),
 * CLOCK_MONOTONIC of that kernel in ms, null where systemd recorded none.
 */
export interface SystemdMarks {
  /** PID 1 started (the manager's UserspaceTimestampMonotonic). */
  readonly userspace: number | null;
  /** PID 1 finished loading its units (UnitsLoadFinishTimestampMonotonic). */
  readonly unitsLoaded: number | null;
  /** The agent unit's main process started (its ExecMainStartTimestampMonotonic). */
  readonly agentStart: number | null;
  /** Each client unit's main process started, by VM. */
  readonly clientStart: Readonly<Record<string, number | null>>;
}

/** The demo's summary from a systemd host: the demo's own and the systemd path's instants. */
export type SystemdDemoSummary = DemoSummary & { readonly systemd?: SystemdMarks };

/** One VM's claim as a mark name. */
export const claimMark = (vm: string): string => `claim_${vm}`;
/** One VM's client unit start as a mark name. */
export const clientStartMark = (vm: string): string => `client_start_${vm}`;

/** Console lines of the old kernel (systemd-shutdown's among them) and of PID 1 in the new one: the text can follow a terminal's escapes. */
const SHUTDOWN_EXEC_LINE = /systemd-shutdown\[1\]: /;
const LUO_STORED_LINE = /systemd-shutdown\[1\]: Preserved fd stores in LUO session/;
const PID1_FIRST_LINE = /systemd\[1\]: systemd \d+\S* running in system mode/;
/**
 * PID 1 done with its startup: logged once manager_startup() has returned.
 * PID 1 retrieves the fd stores it preserved in LUO within it: in systemd
 * 262's libsystemd-core, manager_startup() calls
 * manager_luo_restore_fd_stores() right after taking its units-load-finish
 * timestamp, before the coldplug. Its own lines about the retrieval are at
 * debug level, and a boot with systemd.log_level=debug is not the boot
 * measured: the retrieval is bracketed by UnitsLoadFinishTimestampMonotonic,
 * where it starts, and this line.
 */
const PID1_STARTED_LINE = /systemd\[1\]: Queued start job for default target/;

/** When the first console line matching `pattern` reached the host within [fromMs, toMs), or null. */
function consoleLineAt(console: readonly StampedLine[], pattern: RegExp, fromMs: number, toMs: number): number | null {
  return console.find((l) => l.atMs >= fromMs && l.atMs < toMs && pattern.test(l.text))?.atMs ?? null;
}

/**
 * The systemd path's marks on the host clock (ms, null where not seen):
 * from the console as stamped on arrival, the marker unit's line
 * (`shutdown_begins`), systemd-shutdown's first line (`shutdown_exec`: every
 * unit stopped) and its "Preserved fd stores in LUO session" (`luo_stored`)
 * in the old kernel, systemd's first line in the new one (`pid1_start`)
 * and its line once its startup is done, the stored fd stores retrieved
 * (`pid1_retrieved`); from systemd's own CLOCK_MONOTONIC timestamps placed
 * through the new kernel's quickest clock sample (late by that sample's
 * crossing of the second serial port, under a millisecond on an idle host:
 * the mapping's error: {@link consoleClockCheck}), PID 1's own start
 * (`pid1_userspace`), PID 1 done loading its units (`pid1_units_loaded`),
 * the agent's unit started, each client's unit started.
 */
export function systemdPathMarks(arrivals: Arrivals, c: KexecClocks, m: SystemdMarks): Record<string, number | null> {
  const boots = [c.old.firstLineAtMs, c.next.firstLineAtMs];
  const old = (pattern: RegExp): number | null => consoleLineAt(arrivals.console, pattern, boots[0]!, boots[1]!);
  const mono = (ms: number | null): number | null => (ms === null || c.nextFit === undefined ? null : onHost(c.nextFit, 'mono', ms));
  return {
    shutdown_begins: old(new RegExp(SHUTDOWN_MARK_TEXT)),
    shutdown_exec: old(SHUTDOWN_EXEC_LINE),
    luo_stored: old(LUO_STORED_LINE),
    pid1_start: consoleLineAt(arrivals.console, PID1_FIRST_LINE, boots[1]!, Infinity),
    pid1_userspace: mono(m.userspace),
    pid1_units_loaded: mono(m.unitsLoaded),
    pid1_retrieved: consoleLineAt(arrivals.console, PID1_STARTED_LINE, boots[1]!, Infinity),
    agent_unit_start: mono(m.agentStart),
    ...Object.fromEntries(Object.entries(m.clientStart).map(([vm, ms]) => [clientStartMark(vm), mono(ms)])),
  };
}

/**
 * Every mark of one demo run, ms after the manifest's sealing on the host
 * clock: the blackout's own (`frozen`, `jump`, `kernel_up`, `init`,
 * `agent_back`, each VM's claim, `last_claim`) and, from a systemd host, the
 * systemd path's. Throws when a clock or one of the blackout's own is missing.
 */
export function blackoutMarkTimes(arrivals: Arrivals, s: SystemdDemoSummary): Record<string, number | null> {
  const [frozen, jump, up, init, back, ...claims] = demoInstants(arrivals, s);
  if (frozen === undefined || jump === undefined || up === undefined || init === undefined || back === undefined || claims.length === 0) throw new Error('the demo gave fewer instants than a blackout has');
  const at = (ms: number | null): number | null => (ms === null ? null : Math.round((ms - frozen.atMs) * 1000) / 1000);
  const systemd = s.systemd === undefined ? {} : systemdPathMarks(arrivals, kexecClocks(arrivals, 1), s.systemd);
  return {
    frozen: 0,
    jump: at(jump.atMs),
    kernel_up: at(up.atMs),
    init: at(init.atMs),
    agent_back: at(back.atMs),
    ...Object.fromEntries(Object.keys(s.claimedAt).map((vm, i) => [claimMark(vm), at(claims[i]!.atMs)])),
    last_claim: at(Math.max(...claims.map((c) => c.atMs))),
    ...Object.fromEntries(Object.entries(systemd).map(([mark, ms]) => [mark, at(ms)])),
  };
}

/** A span of the systemd path taken apart: what the standalone path has instead when it has no such span, and whether it sums others. */
export interface PathSpanSpec extends SpanSpec {
  /** Said instead of a number for the standalone agent, where the span has no meaning there. */
  readonly standalone?: string;
  /** A sum of the rows above it (shown in bold). */
  readonly sum?: boolean;
}

const NO_SHUTDOWN = 'no such step: no orderly shutdown (the agent kexecs itself)';
const NO_PID1 = 'no such step: the test bed\'s /init starts the agent';
const NO_UNIT = 'not measured: the agent is /init\'s child, not a unit';
const NO_CLIENT_UNIT = 'not measured: the client is /init\'s child, not a unit';

/** The blackout with systemd in the loop, span by span, in the order they happen (the systemd marks of {@link systemdPathMarks}). */
export const SYSTEMD_PATH_SPANS: readonly PathSpanSpec[] = [
  { name: 'manifest sealed to systemd beginning the orderly shutdown (the agent runs `systemctl kexec`, systemd queues the job and forks its first stop)', from: 'frozen', to: 'shutdown_begins', standalone: NO_SHUTDOWN },
  { name: 'the orderly shutdown: every unit stopped (the clients, the agent parking its sessions, journald), PID 1 handing its fd stores to systemd-shutdown', from: 'shutdown_begins', to: 'shutdown_exec', standalone: NO_SHUTDOWN },
  { name: "systemd-shutdown: the remaining processes killed, file systems unmounted and synced, the fd stores preserved in LUO session 'systemd'", from: 'shutdown_exec', to: 'luo_stored', standalone: NO_SHUTDOWN },
  { name: "the kexec call: LUO freezing every session, to the old kernel's last line", from: 'luo_stored', to: 'jump', standalone: NO_SHUTDOWN },
  { name: "manifest sealed to the old kernel's last line", from: 'frozen', to: 'jump', sum: true },
  { name: "the kexec and the new kernel's early boot (its first line on the console)", from: 'jump', to: 'kernel_up' },
  { name: "the new kernel's boot to /init", from: 'kernel_up', to: 'init' },
  { name: "/init (systemd) executed to PID 1's own start (its UserspaceTimestamp: the exec, the dynamic linker)", from: 'init', to: 'pid1_userspace', standalone: NO_PID1 },
  { name: "PID 1's start to its first line (its early setup)", from: 'pid1_userspace', to: 'pid1_start', standalone: NO_PID1 },
  { name: "PID 1's first line to its units loaded (generators, unit files)", from: 'pid1_start', to: 'pid1_units_loaded', standalone: NO_PID1 },
  { name: "PID 1 retrieving the fd stores it preserved in LUO (session 'systemd', each fd to its unit's store), with its coldplug, to its default target queued", from: 'pid1_units_loaded', to: 'pid1_retrieved', standalone: NO_PID1 },
  { name: "PID 1 on to starting the agent's unit (the early units before it: journald, udev, mounts, the socket)", from: 'pid1_retrieved', to: 'agent_unit_start', standalone: NO_PID1 },
  { name: "the agent's unit started to the agent back (node's start, its sessions from LISTEN_FDS, its manifest)", from: 'agent_unit_start', to: 'agent_back', standalone: NO_UNIT },
  { name: '/init to the agent back', from: 'init', to: 'agent_back', sum: true },
  ...VMS.flatMap(({ vm }) => [
    { name: `the agent back to ${vm}'s claim (its client started: by the test bed standalone, by systemd at boot on the systemd host; its claim)`, from: 'agent_back', to: claimMark(vm) },
    { name: `${vm}'s client unit started to its claim (node's start, connect, claim)`, from: clientStartMark(vm), to: claimMark(vm), standalone: NO_CLIENT_UNIT },
  ]),
  { name: 'total: manifest sealed to the last claim', from: 'frozen', to: 'last_claim', sum: true },
];

/** The systemd path of one run, span by span (ms), for the demo's summary. */
export function systemdPathLines(marks: Readonly<Record<string, number | null>>): string[] {
  const ms = (spec: SpanSpec): string => {
    const from = marks[spec.from];
    const to = marks[spec.to];
    return typeof from === 'number' && typeof to === 'number' ? `${(to - from).toFixed(0)} ms` : 'not seen';
  };
  return ['  the systemd path, span by span:', ...SYSTEMD_PATH_SPANS.filter((s) => s.sum !== true).map((s) => `    ${s.name}: ${ms(s)}`)];
}
