/**
 * `npm run bench -- --systemd`: the blackout of one live update with
 * systemd in the loop against the standalone agent, on the same kernel,
 * over independent boots. Each boot runs the demo's own client work (the
 * agent, two VMM-like clients of two uids each preserving a memfd through
 * it, `liveupdate update`, each client claiming and retrieving its memory
 * in the new kernel): once on the test bed's initramfs with the standalone
 * agent, once on the systemd image (systemd 262 as PID 1, the agent in its
 * systemd mode, `systemctl kexec`). The instants are the demo's
 * (../demo/blackout.ts), on the host's clock (../vm/clock.ts), the systemd
 * path's among them (the orderly shutdown, systemd-shutdown, PID 1's start
 * and retrieval, the agent's unit, each client's unit); `node -e 0` timed
 * in the new kernel afterwards is the floor under node's start.
 * @internal
 */
import * as path from 'node:path';
import { blackoutMarkTimes, consoleClockCheck, SYSTEMD_PATH_SPANS, type SystemdDemoSummary } from '../demo/blackout.js';
import { guestMemory } from '../demo/main.js';
import { MIB_PARAM } from '../demo/scenario.js';
import { systemdHostRun } from '../demo/systemd.js';
import { packageRoot } from '../vm/initramfs.js';
import type { KernelImage } from '../vm/kernels.js';
import { kexecClocks, type Arrivals } from '../vm/clock.js';
import { runVm, type RunOptions } from '../vm/qemu.js';
import { sampleOrFailure, someSamples, spanEstimates, type FailedSample, type Marks, type SpanEstimate, type SpanSpec } from './intervals.js';
import { medianEstimate, type Interval } from './stats.js';
import { NODE_FLOOR_CASE } from './node-floor-scenario.js';

/** The two ways a host runs the agent. */
export const BLACKOUT_HOSTS = ['standalone', 'systemd'] as const;
/** One of {@link BLACKOUT_HOSTS}. */
export type BlackoutHost = (typeof BLACKOUT_HOSTS)[number];

/** Guest memory per client: the blackout does not copy it, so small keeps a boot short. */
export const BLACKOUT_CLIENT_MIB = 16;
const DEMO_CASE = 'demo/guest-memory';

/**
 * One boot's instants (ms from the manifest's sealing, host clock): the
 * blackout's own, each client's claim (`claim_<vm>`) and, on systemd, the
 * systemd path's (null where not seen; absent on standalone).
 */
export type BlackoutMarks = {
  readonly frozen: 0;
  readonly jump: number;
  readonly kernel_up: number;
  readonly init: number;
  readonly agent_back: number;
  readonly last_claim: number;
} & Readonly<Record<string, number | null>>;

/** How the new kernel's CLOCK_MONOTONIC was placed on the host clock: its clock samples, how much later than the quickest the slowest arrived, and the console's check of it. */
export interface BootClock {
  readonly samples: number;
  readonly jitter_ms: number;
  /** The guest's monotonic time shown on the console, arrived this long after the mapping places it (the least over the lines; absent before it was checked). */
  readonly console_check_ms?: number | null;
}

/** One boot's instants and its node floor. */
export interface BlackoutBoot {
  readonly host: BlackoutHost;
  readonly marks: BlackoutMarks;
  /** The new kernel's clock samples (through which systemd's own timestamps are placed); absent in runs before it was recorded. */
  readonly new_kernel_clock?: BootClock | null;
  /** Median of `node -e 0` in the new kernel, ms (null if it was not measured). */
  readonly node_floor_ms: number | null;
  /** The boot's wall time, s. */
  readonly elapsed_s: number;
}

/** The spans each host's blackout is taken apart into. */
export const BLACKOUT_SPANS: readonly SpanSpec[] = [
  { name: 'manifest sealed to the old kernel\'s last line (on systemd the orderly shutdown and systemd-shutdown: taken apart below)', from: 'frozen', to: 'jump' },
  { name: 'the kexec and the new kernel\'s early boot: the old kernel\'s last line to the new one\'s first (its banner reaches the serial console once the console is up, not at its start)', from: 'jump', to: 'kernel_up' },
  { name: 'the new kernel\'s boot: its first line on the console to /init', from: 'kernel_up', to: 'init' },
  { name: '/init to the agent back on /dev/liveupdate (init, node\'s start, the manifest; on systemd PID 1\'s boot, its retrieval and the agent\'s unit too: taken apart below)', from: 'init', to: 'agent_back' },
  { name: 'the agent back to the last client holding its memory (the clients started by the test bed; on systemd, enabled units systemd starts once the agent is ready; their claims and retrieves)', from: 'agent_back', to: 'last_claim' },
  { name: 'total: manifest sealed to the last claim', from: 'frozen', to: 'last_claim' },
];

/** Where the time goes, in the three parts (plus what is neither). */
export const WHERE_SPANS: readonly SpanSpec[] = [
  { name: "the kernel's part (old kernel's last line to the new one's /init)", from: 'jump', to: 'init' },
  { name: 'user space before the agent answers (node\'s start among it)', from: 'init', to: 'agent_back' },
  { name: "the clients' part (the agent back to the last claim: the clients' start, their claims and retrieves)", from: 'agent_back', to: 'last_claim' },
  { name: 'before the jump (manifest to the old kernel\'s last line)', from: 'frozen', to: 'jump' },
];

/** One host's figures over its boots. */
export interface BlackoutHostResult {
  readonly host: BlackoutHost;
  readonly boots: number;
  readonly spans: readonly SpanEstimate[];
  /** The systemd path span by span ({@link SYSTEMD_PATH_SPANS}); absent in runs before it was taken apart. */
  readonly path?: readonly SpanEstimate[];
  readonly where: readonly SpanEstimate[];
  readonly node_floor: { readonly median_ms: number | null; readonly ci95_ms: Interval | null; readonly n: number };
  readonly samples: readonly BlackoutBoot[];
}

/** The group's result. */
export interface SystemdBlackoutResult {
  readonly client_mib: number;
  readonly clients: number;
  readonly hosts: readonly BlackoutHostResult[];
  /** Boots that broke, left out of the figures. */
  readonly failures: readonly FailedSample[];
}

/** One boot's marks from the demo's instants (the manifest, the kernel's three, the agent, each claim; the systemd path's on systemd). */
export function blackoutMarks(arrivals: Arrivals, summary: SystemdDemoSummary): BlackoutMarks {
  return blackoutMarkTimes(arrivals, summary) as BlackoutMarks;
}

/** The new kernel's clock samples of a run, or null when it sent none. */
export function newKernelClock(arrivals: Arrivals): BootClock | null {
  const clocks = kexecClocks(arrivals, 1);
  const fit = clocks.nextFit;
  return fit === undefined ? null : { samples: fit.samples, jitter_ms: Math.round(fit.jitterMs * 100) / 100, console_check_ms: consoleClockCheck(arrivals, clocks) };
}

/** Combines a host's boots. Pure. */
export function combineBlackoutHost(host: BlackoutHost, samples: readonly BlackoutBoot[]): BlackoutHostResult {
  const marks: Marks[] = samples.map((s) => s.marks);
  const floors = samples.map((s) => s.node_floor_ms).filter((x): x is number => x !== null);
  const floor = floors.length === 0 ? null : medianEstimate(floors);
  return {
    host,
    boots: samples.length,
    spans: spanEstimates(marks, BLACKOUT_SPANS),
    path: spanEstimates(marks, SYSTEMD_PATH_SPANS),
    where: spanEstimates(marks, WHERE_SPANS),
    node_floor: { median_ms: floor === null ? null : Math.round(floor.median * 10) / 10, ci95_ms: floor === null ? null : [Math.round(floor.ci95[0] * 10) / 10, Math.round(floor.ci95[1] * 10) / 10], n: floors.length },
    samples,
  };
}

/** The run options of one host's boot. */
function runOptions(host: BlackoutHost, root: string): Omit<RunOptions, 'name' | 'kernels'> {
  const floor = path.join(root, 'dist', 'bench', 'node-floor-scenario.js');
  const cmdline = `${MIB_PARAM}=${BLACKOUT_CLIENT_MIB}`;
  if (host === 'standalone') return { scenarios: [path.join(root, 'dist', 'demo', 'scenario.js'), floor], memory: guestMemory(BLACKOUT_CLIENT_MIB), cmdline };
  const systemd = systemdHostRun(BLACKOUT_CLIENT_MIB);
  if (typeof systemd === 'string') throw new Error(systemd);
  // no_timer_check: as the VMM run's, a busy host can make the new kernel's IO-APIC timer check miss.
  return { ...systemd, scenarios: [...(systemd.scenarios ?? []), floor], cmdline: `${cmdline} no_timer_check` };
}

/** One boot of one host. */
async function blackoutBoot(host: BlackoutHost, kernel: KernelImage, progress: (line: string) => void): Promise<BlackoutBoot> {
  const root = packageRoot();
  const run = await runVm({ name: `bench-blackout-${host}-${kernel.release}`, kernels: [kernel.path], ...runOptions(host, root), cpus: 2, logDir: path.join(root, '.vm-out'), timeoutMs: 900_000, onProgress: false });
  const summary = run.result(DEMO_CASE, 2)?.value as unknown as SystemdDemoSummary | undefined;
  if (!run.ok || summary === undefined) throw new Error(`the ${host} blackout boot failed: ${run.reason}\n${run.report()}`);
  const floor = run.result(NODE_FLOOR_CASE, 2)?.value;
  const boot: BlackoutBoot = { host, marks: blackoutMarks(run.arrivals, summary), new_kernel_clock: newKernelClock(run.arrivals), node_floor_ms: typeof floor === 'number' ? Math.round(floor * 10) / 10 : null, elapsed_s: Math.round(run.elapsedMs / 100) / 10 };
  progress(`${host}: blackout ${(boot.marks.last_claim / 1000).toFixed(2)} s (agent back at ${(boot.marks.agent_back / 1000).toFixed(2)} s), boot took ${boot.elapsed_s} s`);
  return boot;
}

/** Runs `boots` boots of each host, alternating which goes first; a broken boot is recorded and left out; rejects when none came through. */
export async function runSystemdBlackout(kernel: KernelImage, boots: number, progress: (line: string) => void): Promise<SystemdBlackoutResult> {
  const samples = new Map<BlackoutHost, BlackoutBoot[]>(BLACKOUT_HOSTS.map((h) => [h, []]));
  const failures: FailedSample[] = [];
  for (let boot = 1; boot <= boots; boot++) {
    const order = boot % 2 === 1 ? BLACKOUT_HOSTS : [...BLACKOUT_HOSTS].reverse();
    for (const host of order) {
      progress(`systemd group: boot ${boot}/${boots}, ${host} agent on ${kernel.release}`);
      const sample = await sampleOrFailure(host, boot, failures, progress, () => blackoutBoot(host, kernel, progress));
      if (sample !== undefined) samples.get(host)!.push(sample);
    }
  }
  someSamples('systemd', [...samples.values()].reduce((n, s) => n + s.length, 0), failures);
  return { client_mib: BLACKOUT_CLIENT_MIB, clients: 2, hosts: BLACKOUT_HOSTS.map((h) => combineBlackoutHost(h, samples.get(h)!)), failures };
}
