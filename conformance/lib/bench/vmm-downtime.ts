/**
 * `npm run bench -- --vmm`: a real VM's downtime across the kexec, over
 * independent boots. The resumed path is the demo's `--vmm qemu` run
 * (../demo/vmm-qemu.ts: QEMU 11 in the systemd image, the example
 * orchestrator of examples/qemu-vmm/ stopping the counter guest, saving its
 * device state into a memfd, preserving both through the agent, and
 * restoring it after the kexec) at 64 MiB and 1 GiB of guest RAM: RAM is
 * never copied, so the state part must not grow with it. The baseline is
 * the same guest restarted cold (./vmm-cold-scenario.ts). Every mark is on
 * the host's clock, read as the demo reads it.
 * @internal
 */
import * as path from 'node:path';
import { runVmmQemu, stampedSteps, stepTimes, type Downtime } from '../demo/vmm-qemu.js';
import { VMM_MIB_PARAM } from '../demo/vmm-qemu-scenario.js';
import { INIT_LINE, kernelBoots, kernelLineAt, type Arrivals } from '../vm/clock.js';
import { packageRoot } from '../vm/initramfs.js';
import type { KernelImage } from '../vm/kernels.js';
import { runVm } from '../vm/qemu.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP, type SystemdImage } from '../vm/systemd-image.js';
import { qemuVmmFiles } from '../vm/vmm-qemu.js';
import { sampleOrFailure, someSamples, spanEstimates, type FailedSample, type Marks, type SpanEstimate, type SpanSpec } from './intervals.js';

/** Guest RAM sizes of the resumed path, MiB. */
export const VMM_RESUMED_MIB = [64, 1024] as const;
/** Guest RAM of the cold restart, MiB (a cold guest never reads its RAM: its size only sizes QEMU's allocation). */
export const VMM_COLD_MIB = 64;

/** The resumed path's downtime taken apart (marks of ../demo/vmm-qemu.ts's Downtime). */
export const RESUMED_SPANS: readonly SpanSpec[] = [
  { name: 'stop to device state saved (QEMU migrates its state, not RAM)', from: 'stopped', to: 'stateSaved' },
  { name: 'state saved to both memfds preserved (then ready)', from: 'stateSaved', to: 'statePreserved' },
  { name: 'ready to the agent\'s manifest sealed', from: 'statePreserved', to: 'frozen' },
  { name: 'manifest to the new kernel\'s first console line (load, freeze, kexec, its early boot)', from: 'frozen', to: 'newKernel' },
  { name: 'the new kernel\'s first line to /init (systemd)', from: 'newKernel', to: 'init' },
  { name: '/init to the agent back', from: 'init', to: 'agentBack' },
  { name: 'agent back to QEMU started (claim, retrieve, QEMU\'s start)', from: 'agentBack', to: 'qemuStarted' },
  { name: 'QEMU started to state loaded', from: 'qemuStarted', to: 'stateLoaded' },
  { name: 'state loaded to cont', from: 'stateLoaded', to: 'cont' },
  { name: 'total downtime: stop to cont', from: 'stopped', to: 'cont' },
];

/** The cold restart taken apart. */
export const COLD_SPANS: readonly SpanSpec[] = [
  { name: 'stop (QEMU killed) to the new kernel\'s first console line (update, kexec, its early boot)', from: 'stopped', to: 'newKernel' },
  { name: 'the new kernel\'s first line to /init (systemd)', from: 'newKernel', to: 'init' },
  { name: '/init to QEMU started', from: 'init', to: 'qemuStarted' },
  { name: 'QEMU started to the guest\'s first line (its boot)', from: 'qemuStarted', to: 'guestRunning' },
  { name: 'total downtime: stop to the guest running again, from its boot', from: 'stopped', to: 'guestRunning' },
];

/** One path at one RAM size over its boots. */
export interface VmmPathResult {
  readonly path: 'resumed' | 'cold';
  readonly mib: number;
  readonly boots: number;
  readonly spans: readonly SpanEstimate[];
  /** Resumed: the device state's size per boot, bytes. */
  readonly state_bytes: readonly number[];
  readonly samples: ReadonlyArray<{ readonly marks: Marks; readonly elapsed_s: number }>;
}

/** The group's result. */
export interface VmmDowntimeResult {
  readonly qemu: string;
  readonly method: string;
  readonly paths: readonly VmmPathResult[];
  /** Boots that broke, left out of the figures. */
  readonly failures: readonly FailedSample[];
}

/** A cold boot's marks, ms from the stop on the host clock (null where not seen). */
export function coldMarks(arrivals: Arrivals): Marks {
  const { steps } = stampedSteps(arrivals);
  const one = stepTimes(steps, 1);
  const two = stepTimes(steps, 2);
  const next = kernelBoots(arrivals.console)[1];
  const stopped = one('stopped');
  const since = (t: number | undefined): number | null => (t === undefined || stopped === undefined ? null : t - stopped);
  return {
    stopped: since(stopped),
    newKernel: since(next?.firstLineAtMs),
    init: since(next === undefined ? undefined : kernelLineAt(next, INIT_LINE)),
    qemuStarted: since(two('qemu-started')),
    guestRunning: since(two('guest-running')),
  };
}

function image(): SystemdImage {
  const found = findSystemdImage();
  if (found === undefined) throw new Error(NO_SYSTEMD_IMAGE_HELP);
  return found;
}

async function coldBoot(kernel: KernelImage, systemd: SystemdImage, mib: number): Promise<{ marks: Marks; elapsed_s: number }> {
  const root = packageRoot();
  const run = await runVm({
    name: `bench-vmm-cold-${kernel.release}`,
    kernels: [kernel.path],
    scenarios: [path.join(root, 'dist', 'bench', 'vmm-cold-scenario.js')],
    systemdImage: systemd.path,
    files: qemuVmmFiles(),
    cmdline: `${VMM_MIB_PARAM}=${mib} no_timer_check`,
    logDir: path.join(root, '.vm-out'),
    timeoutMs: 900_000,
    onProgress: false,
  });
  if (!run.ok) throw new Error(`the cold restart boot failed: ${run.reason}\n${run.report()}`);
  return { marks: coldMarks(run.arrivals), elapsed_s: Math.round(run.elapsedMs / 100) / 10 };
}

/** One boot of the resumed path (the demo's `--vmm qemu` run); rejects when it breaks. */
async function resumedBoot(kernel: KernelImage, systemd: SystemdImage, mib: number): Promise<{ marks: Marks; elapsed_s: number; stateBytes: number; qemu: string; method: string }> {
  const r = await runVmmQemu({ kernel, image: systemd, mib, timeoutMs: 1_200_000 });
  if (!r.run.ok || r.before === undefined) throw new Error(`the VMM boot at ${mib} MiB failed: ${r.run.reason}\n${r.run.report()}`);
  const marks: Record<keyof Downtime, number | null> = r.downtime;
  return { marks, elapsed_s: Math.round(r.run.elapsedMs / 100) / 10, stateBytes: r.before.stateBytes, qemu: r.before.qemu, method: r.before.method };
}

/** Runs `boots` boots of each path and size, interleaved (the cold restart first); a broken boot is recorded and left out; rejects when none came through. */
export async function runVmmDowntime(kernel: KernelImage, boots: number, progress: (line: string) => void): Promise<VmmDowntimeResult> {
  const systemd = image();
  const resumed = new Map<number, Array<{ marks: Marks; elapsed_s: number; stateBytes: number }>>(VMM_RESUMED_MIB.map((m) => [m, []]));
  const cold: Array<{ marks: Marks; elapsed_s: number }> = [];
  const failures: FailedSample[] = [];
  let qemu = '?';
  let method = '?';
  for (let boot = 1; boot <= boots; boot++) {
    progress(`vmm group: boot ${boot}/${boots}, cold restart at ${VMM_COLD_MIB} MiB`);
    const c = await sampleOrFailure(`cold ${VMM_COLD_MIB} MiB`, boot, failures, progress, () => coldBoot(kernel, systemd, VMM_COLD_MIB));
    if (c !== undefined) {
      cold.push(c);
      progress(`cold ${VMM_COLD_MIB} MiB: downtime ${((c.marks['guestRunning'] ?? Number.NaN) / 1000).toFixed(2)} s, boot took ${c.elapsed_s} s`);
    }
    for (const mib of VMM_RESUMED_MIB) {
      progress(`vmm group: boot ${boot}/${boots}, resumed at ${mib} MiB on ${kernel.release}`);
      const r = await sampleOrFailure(`resumed ${mib} MiB`, boot, failures, progress, () => resumedBoot(kernel, systemd, mib));
      if (r === undefined) continue;
      ({ qemu, method } = r);
      resumed.get(mib)!.push(r);
      progress(`resumed ${mib} MiB: downtime ${((r.marks['cont'] ?? Number.NaN) / 1000).toFixed(2)} s, state ${r.stateBytes} bytes, boot took ${r.elapsed_s} s`);
    }
  }
  someSamples('vmm', cold.length + [...resumed.values()].reduce((n, s) => n + s.length, 0), failures);
  const paths: VmmPathResult[] = [
    ...VMM_RESUMED_MIB.map((mib): VmmPathResult => {
      const samples = resumed.get(mib)!;
      return { path: 'resumed', mib, boots: samples.length, spans: spanEstimates(samples.map((s) => s.marks), RESUMED_SPANS), state_bytes: samples.map((s) => s.stateBytes), samples: samples.map(({ marks, elapsed_s }) => ({ marks, elapsed_s })) };
    }),
    { path: 'cold', mib: VMM_COLD_MIB, boots: cold.length, spans: spanEstimates(cold.map((s) => s.marks), COLD_SPANS), state_bytes: [], samples: cold },
  ];
  return { qemu, method, paths, failures };
}
