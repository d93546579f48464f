/**
 * The blackout with systemd in the loop taken apart (lib/demo/blackout.ts,
 * lib/bench/systemd-blackout.ts, lib/bench/groups-report.ts), on a console
 * and records made up here whose truth is known: where each instant of the
 * systemd path lands on the host clock, which spans the standalone agent
 * has, and how BENCHMARKS.md shows them. No kernel, no timing.
 */
import { describe, expect, it } from 'vitest';
import { blackoutLines, blackoutMarkTimes, CONSOLE_CLOCK_TEXT, SHUTDOWN_MARK_TEXT, SYSTEMD_PATH_SPANS, type SystemdDemoSummary } from '../lib/demo/blackout.js';
import { combineBlackoutHost, newKernelClock, type BlackoutBoot, type BlackoutMarks, type SystemdBlackoutResult } from '../lib/bench/systemd-blackout.js';
import { groupSections, systemdPathSection } from '../lib/bench/groups-report.js';
import type { WithRun } from '../lib/bench/groups.js';
import { CLOCK_REPORT, type Arrivals, type StampedLine, type StampedRecord } from '../lib/vm/clock.js';

/** A kernel line as the console shows it, printed at `printkMs` of its kernel. */
const kline = (printkMs: number, text: string): string => `[${(printkMs / 1000).toFixed(6).padStart(12)}] ${text}`;
/** What systemd writes to the console before some of its lines: a terminal query, an OSC 3008 context. */
const ESCAPES = '\u001bP+q6E616D65\u001b\\\u001b[18t\u001b]3008;end=0127aac8\u001b\\';

const OLD_ZERO = 1000; // kernel 1's zero on the host clock
const NEW_ZERO = 70_000; // kernel 2's
const MONO_LAG = 1.5; // CLOCK_MONOTONIC starts this long after a kernel's zero
const FROZEN_MONO = 60_000; // the manifest, on kernel 1's monotonic clock
const WALL1 = 1_780_000_000_000;
const WALL2 = WALL1 + 69_000 - 700; // kernel 2's RTC left it 700 ms behind

/** Host instant of a monotonic time of kernel 2 (the truth the samples let the host recover). */
const newHost = (mono: number): number => NEW_ZERO + MONO_LAG + mono;
/** Where the host places the manifest: through kernel 1's quickest sample, which crossed in 0.5 ms. */
const frozenHost = OLD_ZERO + MONO_LAG + FROZEN_MONO + 0.5;

/** The console and records of one systemd boot; the systemd path's lines arrive at the host instants given. */
function systemdBoot(withShutdownLines = true): Arrivals {
  const console: StampedLine[] = [
    { atMs: OLD_ZERO + 300, text: kline(0, 'Linux version 7.3.4 (root@vm)') },
    { atMs: OLD_ZERO + 2000, text: kline(2000, 'Run /sbin/init as init process') },
    ...(withShutdownLines
      ? [
          { atMs: 61_200, text: kline(60_199, SHUTDOWN_MARK_TEXT) },
          { atMs: 62_900, text: `${ESCAPES}${kline(61_899, 'systemd-shutdown[1]: Syncing filesystems and block devices.')}` },
          { atMs: 63_000, text: kline(61_999, 'systemd-shutdown[1]: Sending SIGTERM to remaining processes...') },
          { atMs: 63_400, text: kline(62_399, "systemd-shutdown[1]: Preserved fd stores in LUO session 'systemd' for kexec.") },
        ]
      : []),
    { atMs: 63_430, text: kline(62_429, 'kexec_core: Starting new kernel') },
    { atMs: NEW_ZERO + 650, text: kline(0, 'Linux version 7.3.4 (root@vm)') },
    { atMs: NEW_ZERO + 2100, text: kline(2099, 'Run /sbin/init as init process') },
    // The new kernel's systemd-shutdown never runs: a line like it after the banner is not the old kernel's.
    { atMs: NEW_ZERO + 3000, text: `${ESCAPES}${kline(2999, 'systemd[1]: systemd 262.1-1 running in system mode (+PAM +AUDIT)')}` },
    { atMs: NEW_ZERO + 9500, text: kline(9499, 'systemd[1]: Queued start job for default target graphical.target.') },
    // After the claims the guest shows its monotonic clock on the console: these lines crossed in 0.75 and 2 ms.
    { atMs: newHost(41_000) + 0.75, text: kline(40_999, `${CONSOLE_CLOCK_TEXT}41000.000`) },
    { atMs: newHost(41_015) + 2, text: kline(41_014, `${CONSOLE_CLOCK_TEXT}41015.000`) },
  ];
  const records: StampedRecord[] = [];
  const sample = (stage: number, zero: number, wallAtZero: number, mono: number, latency: number): void => {
    records.push({ atMs: zero + MONO_LAG + mono + latency, record: { t: 'report', stage, case: 'demo/guest-memory', name: CLOCK_REPORT, value: { mono, wall: wallAtZero + mono } } });
  };
  for (const [mono, latency] of [[59_000, 2], [59_015, 0.5]] as const) sample(1, OLD_ZERO, WALL1, mono, latency);
  // Kernel 2's quickest sample crossed in 0.25 ms, the slowest 3.25 ms: the mapping is late by 0.25 ms.
  for (const [mono, latency] of [[40_000, 0.25], [40_015, 3.25], [40_030, 1]] as const) sample(2, NEW_ZERO, WALL2, mono, latency);
  return { console, records };
}

/** The summary the systemd scenario returns, its instants on the guests' clocks. */
const summary = (systemd = true): SystemdDemoSummary => ({
  mib: 16,
  kexecCount: 1,
  frozenAt: WALL1 + FROZEN_MONO,
  firstOpenAt: WALL2 + 20_000,
  claimedAt: { alice: WALL2 + 30_000, bob: WALL2 + 31_000 },
  counters: {},
  ...(systemd ? { systemd: { userspace: 2990, unitsLoaded: 9000, agentStart: 12_000, clientStart: { alice: 25_000, bob: 25_500 } } } : {}),
});

describe('the systemd path on the host clock', () => {
  it('places each instant of the orderly shutdown, PID 1, the agent unit and each client, from the manifest on', () => {
    const marks = blackoutMarkTimes(systemdBoot(), summary());
    const late = 0.25; // the new kernel's quickest sample
    const since = (host: number): number => Math.round((host - frozenHost) * 1000) / 1000;
    expect(marks).toEqual({
      frozen: 0,
      jump: since(63_430),
      kernel_up: since(NEW_ZERO + 650),
      init: since(NEW_ZERO + 2100),
      agent_back: since(newHost(20_000) + late),
      claim_alice: since(newHost(30_000) + late),
      claim_bob: since(newHost(31_000) + late),
      last_claim: since(newHost(31_000) + late),
      shutdown_begins: since(61_200),
      shutdown_exec: since(62_900),
      luo_stored: since(63_400),
      pid1_start: since(NEW_ZERO + 3000),
      pid1_userspace: since(newHost(2990) + late),
      pid1_units_loaded: since(newHost(9000) + late),
      pid1_retrieved: since(NEW_ZERO + 9500),
      agent_unit_start: since(newHost(12_000) + late),
      client_start_alice: since(newHost(25_000) + late),
      client_start_bob: since(newHost(25_500) + late),
    });
    // The new kernel's monotonic clock is placed through its quickest sample; the slowest came 3 ms after it; the
    // console's quickest line arrived 0.75 ms after its time, the mapping 0.25 ms late: the check reads 0.5 ms.
    expect(newKernelClock(systemdBoot())).toEqual({ samples: 3, jitter_ms: 3, console_check_ms: 0.5 });
    expect(newKernelClock(systemdBoot(false))?.console_check_ms).toBe(0.5);
  });

  it('has no systemd instants on the standalone path, and each claim by its VM', () => {
    const marks = blackoutMarkTimes(systemdBoot(false), summary(false));
    expect(Object.keys(marks).sort()).toEqual(['agent_back', 'claim_alice', 'claim_bob', 'frozen', 'init', 'jump', 'kernel_up', 'last_claim']);
    expect(marks['last_claim']).toBe(marks['claim_bob']);
  });

  it('leaves an instant out, not the boot, when its line never came or systemd recorded none', () => {
    const s = summary();
    const marks = blackoutMarkTimes(systemdBoot(false), { ...s, systemd: { ...s.systemd!, unitsLoaded: null } });
    expect([marks['shutdown_begins'], marks['shutdown_exec'], marks['luo_stored'], marks['pid1_units_loaded']]).toEqual([null, null, null, null]);
    expect(marks['pid1_start']).not.toBeNull();
  });

  it("prints the path span by span in the demo's summary, only for a systemd host", () => {
    const lines = blackoutLines(systemdBoot(), summary());
    expect(lines).toContain('  the systemd path, span by span:');
    expect(lines).toContain(`    the orderly shutdown: every unit stopped (the clients, the agent parking its sessions, journald), PID 1 handing its fd stores to systemd-shutdown: ${62_900 - 61_200} ms`);
    expect(lines).toContain(`    PID 1's first line to its units loaded (generators, unit files): ${(newHost(9000) + 0.25 - (NEW_ZERO + 3000)).toFixed(0)} ms`);
    expect(lines).toContain("    bob's client unit started to its claim (node's start, connect, claim): 5500 ms");
    expect(lines.at(-1)).toMatch(/^ {2}clock: /);
    expect(blackoutLines(systemdBoot(false), summary(false)).join('\n')).not.toContain('systemd path');
  });
});

const run = { date: '2026-12-05T07:00:00.000Z', commit: 'abc123', kernel: '7.3.4', elapsed_s: 900, loadavg: { start: 2.5, end: 2.9, nproc: 2 } };

/** A boot whose marks are `marks`, its new kernel's samples `jitter` ms apart. */
const boot = (host: BlackoutBoot['host'], marks: BlackoutMarks, jitter: number, check: number | null = null): BlackoutBoot => ({ host, marks, new_kernel_clock: { samples: 5, jitter_ms: jitter, console_check_ms: check }, node_floor_ms: 600, elapsed_s: 120 });

describe('BENCHMARKS.md: the systemd path taken apart', () => {
  const systemdMarks = (shift: number): BlackoutMarks => ({ ...blackoutMarkTimes(systemdBoot(), summary()), last_claim: 40_000 + shift }) as BlackoutMarks;
  const standaloneMarks: BlackoutMarks = { frozen: 0, jump: 300, kernel_up: 900, init: 2900, agent_back: 5900, claim_alice: 6900, claim_bob: 7200, last_claim: 7200 };
  const result: WithRun<SystemdBlackoutResult> = {
    client_mib: 16,
    clients: 2,
    failures: [],
    hosts: [combineBlackoutHost('standalone', [boot('standalone', standaloneMarks, 0.4), boot('standalone', standaloneMarks, 0.6)]), combineBlackoutHost('systemd', [boot('systemd', systemdMarks(0), 0.8, 0.4), boot('systemd', systemdMarks(100), 2.2, -0.2)])],
    run,
  };

  it("gives each span of the systemd path its figures, and says where the standalone agent has no such step instead of a number", () => {
    const text = systemdPathSection(result);
    expect(text).toMatch(/^## The systemd path taken apart/);
    expect(text).toContain('| ms, median [95% interval] (boots) | standalone | systemd |');
    expect(text).toContain(`| the orderly shutdown: every unit stopped (the clients, the agent parking its sessions, journald), PID 1 handing its fd stores to systemd-shutdown | no such step: no orderly shutdown (the agent kexecs itself) | 1700 [1700, 1700] ms (n = 2) |`);
    expect(text).toContain("| PID 1's start to its first line (its early setup) | no such step: the test bed's /init starts the agent | 8 [8, 8] ms (n = 2) |");
    expect(text).toContain("| alice's client unit started to its claim (node's start, connect, claim) | not measured: the client is /init's child, not a unit | 5000 [5000, 5000] ms (n = 2) |");
    // Spans both paths have: the standalone agent's figures beside systemd's; the sums in bold.
    expect(text).toContain("| the agent back to bob's claim (its client started: by the test bed standalone, by systemd at boot on the systemd host; its claim) | 1300 [1300, 1300] ms (n = 2) |");
    expect(text).toMatch(/\| \*\*manifest sealed to the old kernel's last line\*\* \| \*\*300 \[300, 300\] ms \(n = 2\)\*\* \| \*\*\d+ \[\d+, \d+\] ms \(n = 2\)\*\* \|/);
    expect(text).toMatch(/\| \*\*total: manifest sealed to the last claim\*\* \| \*\*7200 \[7200, 7200\] ms \(n = 2\)\*\* \| \*\*40050 \[40000, 40100\] ms \(n = 2\)\*\* \|/);
    expect(text.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| ms')).length).toBe(SYSTEMD_PATH_SPANS.length);
  });

  it("states the clock mapping's error: the new kernel's samples, their spread, and the console's check", () => {
    const text = systemdPathSection(result);
    expect(text).toContain('standalone: 5 samples per boot, the slowest 0.50 ms (median; at most 0.60 ms) after the quickest; systemd: 5 samples per boot, the slowest 1.50 ms (median; at most 2.20 ms) after the quickest');
    expect(text).toContain('A check of the mapping (systemd): the guest also wrote its CLOCK_MONOTONIC to the console through the kernel log after the claims, and the quickest of those lines arrived 0.10 ms (median; -0.20 to 0.40 ms, n = 2) after the mapping places the time it carries.');
    expect(text).not.toContain('A check of the mapping (standalone)');
  });

  it('comes after the blackout section, and not at all for a run from before the path was taken apart', () => {
    const sections = groupSections({ systemd: result });
    expect(sections.map((s) => s.split('\n')[0])).toEqual(['## Blackout on a systemd host', '## The systemd path taken apart', '## Where the time goes']);
    const older = { ...result, hosts: result.hosts.map(({ path: _path, ...h }) => h) };
    expect(groupSections({ systemd: older }).map((s) => s.split('\n')[0])).toEqual(['## Blackout on a systemd host', '## Where the time goes']);
  });
});
