/**
 * `npm run bench -- --fleet N`: one real rollout by Debian's
 * ansible-playbook (examples/ansible/rollout.yml) over N guests of the
 * systemd image, as the demo's `--fleet` runs it (../vm/fleet.ts boots the
 * hosts on the oldest test kernel, each with the agent and a VMM-like
 * client; the playbook rolls the newest kernel over them one at a time).
 * The hosts of the run are the samples: per host, the role's time on it
 * (the controller's clock) and the blackout its agent recorded (the
 * manifest's frozenAt to the agent back on the device), placed on the
 * host's clock by each kernel's clock samples (../vm/clock.ts: to the
 * millisecond), beside the same span as the role reports it (the two
 * kernels' wall clocks, each set from the emulated RTC: good to a second);
 * for the fleet, the playbook's run and the boot of the hosts.
 * @internal
 */
import { findKernels } from '../vm/kernels.js';
import type { GuestClockFit } from '../vm/clock.js';
import { blackoutOnHostMs, phaseLines, startFleet, type Fleet, type FleetHost, type PlaybookResult, type RolloutSummary } from '../vm/fleet.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP } from '../vm/systemd-image.js';
import { spanEstimates, type SpanEstimate } from './intervals.js';

/** One host's figures from the role's summary. */
export interface FleetHostSample {
  readonly host: string;
  readonly result: RolloutSummary['result'] | 'not reached';
  readonly release_before: string | null;
  readonly release_after: string | null;
  /** The role's start to its end on this host, ms (controller clock). */
  readonly host_ms: number | null;
  /** The agent's frozenAt to its first open in the new kernel, ms, on the host's clock (null without both kernels' clock samples). */
  readonly blackout_ms: number | null;
  /** The same span as the role's summary gives it (the two kernels' wall clocks, good to a second), ms. */
  readonly blackout_guest_wall_ms: number | null;
  readonly sessions_claimed: number | null;
  /** A failed host: the phase it stopped in and why (null otherwise). */
  readonly failure: string | null;
}

/** The group's result. */
export interface FleetRolloutResult {
  readonly hosts: number;
  readonly playbook_status: number | null;
  /** The hosts' boot before the playbook, s. */
  readonly fleet_boot_s: number;
  /** The whole playbook run, s. */
  readonly fleet_rollout_s: number;
  /** Per host, median over the hosts with its interval. */
  readonly per_host: SpanEstimate;
  readonly blackout: SpanEstimate;
  readonly samples: readonly FleetHostSample[];
}

/** A host's sample from its summary (or its absence) and its boots' clocks ({@link FleetHost.clocks}). Pure. */
export function fleetHostSample(host: string, s: RolloutSummary | undefined, clocks: ReadonlyArray<GuestClockFit | undefined> = []): FleetHostSample {
  const took = s?.controllerStartedAt !== undefined && s.controllerFinishedAt !== undefined ? s.controllerFinishedAt - s.controllerStartedAt : null;
  return {
    host,
    result: s?.result ?? 'not reached',
    release_before: s?.releaseBefore ?? null,
    release_after: s?.releaseAfter ?? null,
    host_ms: took,
    blackout_ms: s === undefined ? null : blackoutOnHostMs(s, clocks),
    blackout_guest_wall_ms: s?.blackoutMs ?? null,
    sessions_claimed: s?.sessionsClaimed ?? null,
    failure: s?.result === 'failed' ? `${s.phase ?? '?'}: ${s.reason ?? '?'}` : null,
  };
}

/** The fleet's figures from a playbook's result. Pure. */
export function combineFleet(hosts: readonly string[], result: Pick<PlaybookResult, 'status' | 'summaries' | 'elapsedMs'>, bootMs: number, clocks: Readonly<Record<string, ReadonlyArray<GuestClockFit | undefined>>> = {}): FleetRolloutResult {
  const samples = hosts.map((h) => fleetHostSample(h, result.summaries[h], clocks[h]));
  const marks = samples.map((s) => ({ zero: 0, host: s.host_ms, blackout: s.blackout_ms }));
  const [perHost, blackout] = spanEstimates(marks, [
    { name: 'time per host: the role\'s start to its end (preflight, update, reconnect, health gate)', from: 'zero', to: 'host' },
    { name: 'blackout per host: the agent\'s manifest to the agent back on the device (host clock)', from: 'zero', to: 'blackout' },
  ]);
  return { hosts: hosts.length, playbook_status: result.status, fleet_boot_s: Math.round(bootMs / 100) / 10, fleet_rollout_s: Math.round(result.elapsedMs / 100) / 10, per_host: perHost!, blackout: blackout!, samples };
}

/** Boots `size` hosts, rolls the update over them once, and stops them; rejects when the rollout reached no host. */
export async function runFleetRollout(size: number, progress: (line: string) => void): Promise<FleetRolloutResult> {
  const image = findSystemdImage();
  if (image === undefined) throw new Error(NO_SYSTEMD_IMAGE_HELP);
  const kernels = findKernels();
  const boot = kernels[0]!;
  const target = kernels.at(-1)!;
  progress(`fleet group: ${size} host(s) boot ${boot.release}; the playbook rolls ${target.release} over them`);
  let fleet: Fleet | undefined;
  try {
    const started = Date.now();
    fleet = await startFleet({ name: 'bench-fleet', systemdImage: image.path, kernels: { boot: boot.path, target: target.path }, hosts: size, onProgress: (line) => progress(line.replace(/^\[fleet\] /, 'fleet: ')) });
    const bootMs = Date.now() - started;
    const result = await fleet.playbook({ onEvent: phaseLines((line) => progress(`fleet: ${line}`)) });
    const clocks = Object.fromEntries(fleet.hosts.map((h) => [h.name, h.clocks] as const));
    const combined = combineFleet(fleet.hosts.map((h) => h.name), result, bootMs, clocks);
    // A rollout that stopped is a result too (the hosts it reached are samples); only one that reached no host broke the run.
    if (combined.samples.every((x) => x.host_ms === null)) throw new Error(`ansible-playbook exited ${String(result.status)} before any host: ${result.stdout.slice(-3000)}`);
    if (result.status !== 0) progress(`fleet: ansible-playbook exited ${String(result.status)}: ${combined.samples.map((x) => `${x.host} ${x.result}${x.failure === null ? '' : ` (${x.failure})`}`).join(', ')}`);
    progress(`fleet: rollout took ${combined.fleet_rollout_s} s; per host ${combined.samples.map((s) => `${s.host} ${((s.host_ms ?? Number.NaN) / 1000).toFixed(1)} s`).join(', ')}`);
    return combined;
  } finally {
    await fleet?.stop();
  }
}
