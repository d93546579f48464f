/**
 * The benchmark's opt-in groups, each its own set of boots: `--systemd`
 * (the blackout on a systemd host against the standalone agent), `--vmm`
 * (a real QEMU guest's downtime), `--fleet N` (a rollout by ansible-playbook
 * over N hosts). `--all` is every group with the guest benchmark. Each group
 * records when, on what commit and kernel, and at what load it ran, since
 * groups may run apart from the rest (`--groups-only`).
 * @internal
 */
import * as os from 'node:os';
import { findKernels, NO_KERNEL_HELP, type KernelImage } from '../vm/kernels.js';
import type { GroupRun } from './intervals.js';
import { runSystemdBlackout, type SystemdBlackoutResult } from './systemd-blackout.js';
import { runVmmDowntime, type VmmDowntimeResult } from './vmm-downtime.js';
import { runFleetRollout, type FleetRolloutResult } from './fleet-rollout.js';

/** Which groups to run and how many samples each. */
export interface GroupOptions {
  /** Boots per host of the systemd group (0: not run). */
  readonly systemd: number;
  /** Boots per RAM size and path of the VMM group (0: not run). */
  readonly vmm: number;
  /** Hosts of the fleet group's one rollout (0: not run). */
  readonly fleet: number;
}

/** Boots of a group when its flag gives none, and with `--all`. */
export const GROUP_BOOTS = 3;
/** Hosts of the fleet with `--all`. */
export const FLEET_HOSTS = 3;

/** A group's result with the run it came from. */
export type WithRun<T> = T & { readonly run: GroupRun };

/** The groups' results (each only when it ran). */
export interface GroupResults {
  readonly systemd?: WithRun<SystemdBlackoutResult>;
  readonly vmm?: WithRun<VmmDowntimeResult>;
  readonly fleet?: WithRun<FleetRolloutResult>;
}

/** Whether any group is asked for. */
export function anyGroup(g: GroupOptions): boolean {
  return g.systemd > 0 || g.vmm > 0 || g.fleet > 0;
}

/** The newest cached kernel: the systemd image's groups need a 7.3 for systemd's own live update. */
function newestKernel(): KernelImage {
  const kernel = findKernels().at(-1);
  if (kernel === undefined) throw new Error(NO_KERNEL_HELP);
  return kernel;
}

async function timed<T>(kernel: string, commit: string, work: () => Promise<T>): Promise<WithRun<T>> {
  const start = os.loadavg()[0] ?? 0;
  const date = new Date().toISOString();
  const started = Date.now();
  const result = await work();
  const run: GroupRun = { date, commit, kernel, elapsed_s: Math.round((Date.now() - started) / 1000), loadavg: { start, end: os.loadavg()[0] ?? 0, nproc: os.cpus().length } };
  return { ...result, run };
}

/** Runs the groups asked for, one after the other; rejects when one breaks. */
export async function runGroups(g: GroupOptions, commit: string, progress: (line: string) => void): Promise<GroupResults> {
  const results: { -readonly [K in keyof GroupResults]: GroupResults[K] } = {};
  if (g.systemd > 0) {
    const kernel = newestKernel();
    results.systemd = await timed(kernel.release, commit, () => runSystemdBlackout(kernel, g.systemd, progress));
  }
  if (g.vmm > 0) {
    const kernel = newestKernel();
    results.vmm = await timed(kernel.release, commit, () => runVmmDowntime(kernel, g.vmm, progress));
  }
  if (g.fleet > 0) {
    const kernels = findKernels();
    if (kernels.length < 2) throw new Error('the fleet group rolls one kernel release over another: build both test kernels (npm run vm:kernel)');
    results.fleet = await timed(`${kernels[0]!.release} -> ${kernels.at(-1)!.release}`, commit, () => runFleetRollout(g.fleet, progress));
  }
  return results;
}
