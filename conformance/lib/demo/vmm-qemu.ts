/**
 * `npm run demo -- --vmm qemu`, and the kernel test's boot: a QEMU guest
 * kept running across a kexec, in the systemd guest image (Debian sid,
 * QEMU 11) on a LUO kernel. Boots it with the orchestrator
 * (examples/qemu-vmm/) and the counter guest, runs vmm-qemu-scenario.ts,
 * and takes the VM's downtime apart on the host's clock: the orchestrator's
 * steps are timed by the runner's stamps of their arrival (each stage's
 * guest clock is offset from the host's by its quickest step; clocks of
 * different kernels are not compared), the new kernel's start and its PID 1
 * by the stamps of their console lines (../vm/clock.ts).
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { findKernels, NO_KERNEL_HELP, type KernelImage } from '../vm/kernels.js';
import { packageRoot } from '../vm/initramfs.js';
import { hasQemu, qemuHelp } from '../vm/prerequisites.js';
import { INIT_LINE, kernelBoots, kernelLineAt, type Arrivals } from '../vm/clock.js';
import type { GuestRecord } from '../vm/protocol.js';
import { runVm, type VmRun } from '../vm/qemu.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP, type SystemdImage } from '../vm/systemd-image.js';
import { qemuVmmFiles } from '../vm/vmm-qemu.js';
import { VMM_CASE, VMM_MIB_PARAM, type AfterUpdate, type BeforeUpdate, type Step } from './vmm-qemu-scenario.js';

/** The guest RAM by default: small, since QEMU runs under TCG inside TCG. */
export const DEFAULT_VMM_MIB = 32;

/** The VM's downtime, its parts in order (host ms from the stop; null where a mark was not seen). */
export interface Downtime {
  stopped: 0;
  stateSaved: number | null;
  statePreserved: number | null;
  frozen: number | null;
  newKernel: number | null;
  init: number | null;
  agentBack: number | null;
  qemuStarted: number | null;
  stateLoaded: number | null;
  cont: number | null;
}

/** What a run shows. */
export interface VmmQemuRun {
  run: VmRun;
  before: BeforeUpdate | undefined;
  after: AfterUpdate | undefined;
  downtime: Downtime;
}

/** Options of {@link runVmmQemu}. */
export interface VmmQemuOptions {
  kernel: KernelImage;
  image: SystemdImage;
  mib?: number;
  /** Each orchestrator step and scenario message, as it arrives (stage, text). */
  onLine?: (line: string) => void;
  timeoutMs?: number;
}

/** One line for an orchestrator step. */
function describeStep(stage: number, s: Step): string {
  const fields = Object.entries(s)
    .filter(([k]) => k !== 'step' && k !== 'at')
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `stage ${stage}: ${s.step}${fields === '' ? '' : ` ${fields}`}`;
}

/** Boots the run and takes its downtime apart. */
export async function runVmmQemu(options: VmmQemuOptions): Promise<VmmQemuRun> {
  // The guest's serial output: its first three lines per stage are shown.
  const serialShown = new Map<number, number>();
  const onRecord = (record: GuestRecord): void => {
    if (record.t !== 'report') return;
    if (record.name === 'step') {
      const step = record.value as unknown as Step;
      const shown = step.step === 'serial' ? (serialShown.get(record.stage) ?? 0) + 1 : 0;
      if (step.step === 'serial') serialShown.set(record.stage, shown);
      if (shown <= 3) options.onLine?.(describeStep(record.stage, step));
    }
    if (record.name === 'say') options.onLine?.(`stage ${record.stage}: ${String(record.value)}`);
  };
  const run = await runVm({
    name: `vmm-qemu-${options.kernel.release}`,
    kernels: [options.kernel.path],
    // The compiled scenario, also when this module runs from its TypeScript source (a test).
    scenarios: [path.join(packageRoot(), 'dist', 'demo', 'vmm-qemu-scenario.js')],
    systemdImage: options.image.path,
    files: qemuVmmFiles(),
    cmdline: `${VMM_MIB_PARAM}=${options.mib ?? DEFAULT_VMM_MIB}`,
    timeoutMs: options.timeoutMs ?? 900_000,
    onProgress: false,
    onRecord,
  });
  const after = run.result(VMM_CASE, 2)?.value as unknown as AfterUpdate | undefined;
  return { run, before: after?.before, after, downtime: downtime(run.arrivals, after) };
}

/** Each step with the host's stamp of its arrival, and the agent's first answer in the new kernel, from the runner's stamped records. */
export function stampedSteps(arrivals: Arrivals): { steps: Array<{ stage: number; host: number; step: Step }>; agentBack: number | undefined } {
  const steps: Array<{ stage: number; host: number; step: Step }> = [];
  let agentBack: number | undefined;
  for (const { atMs, record } of arrivals.records) {
    if (record.t !== 'report') continue;
    if (record.name === 'step') steps.push({ stage: record.stage, host: atMs, step: record.value as unknown as Step });
    // Stage 1's steps made during the update, reported again by stage 2 (their arrival says nothing of when they happened).
    if (record.name === 'step-before') {
      const step = record.value as unknown as Step;
      if (!steps.some((s) => s.stage === 1 && s.step.step === step.step)) steps.push({ stage: 1, host: Number.NaN, step });
    }
    if (record.name === 'agent-back') agentBack = atMs;
  }
  return { steps, agentBack };
}

/** Host ms of a step of a stage, from its guest clock and the stage's offset to the host (taken at its first step). */
export function stepTimes(steps: ReadonlyArray<{ stage: number; host: number; step: Step }>, stage: number): (name: string) => number | undefined {
  const ofStage = steps.filter((s) => s.stage === stage);
  // The smallest arrival - guest time: the step that waited least on the serial line.
  const offset = Math.min(...ofStage.filter((s) => !Number.isNaN(s.host)).map((s) => s.host - s.step.at));
  return (name) => {
    const found = ofStage.find((s) => s.step.step === name);
    return found === undefined ? undefined : found.step.at + offset;
  };
}

function downtime(arrivals: Arrivals, after: AfterUpdate | undefined): Downtime {
  const { steps, agentBack } = stampedSteps(arrivals);
  const next = kernelBoots(arrivals.console)[1];
  const one = stepTimes(steps, 1);
  const two = stepTimes(steps, 2);
  const stopped = one('stopped');
  const since = (t: number | undefined): number | null => (t === undefined || stopped === undefined ? null : t - stopped);
  const stoppedGuest = steps.find((s) => s.stage === 1 && s.step.step === 'stopped')?.step.at;
  // The agent's frozenAt is stage 1's clock (it wrote the manifest then): placed after the stop on that clock.
  const frozen = after?.frozenAt === null || after?.frozenAt === undefined || stoppedGuest === undefined || stopped === undefined ? undefined : stopped + (after.frozenAt - stoppedGuest);
  return {
    stopped: 0,
    stateSaved: since(one('state-saved')),
    // Its last step before ready: the agent kexecs as soon as it hears the ready, and the `ready` line may be lost.
    statePreserved: since(one('state-preserved')),
    frozen: since(frozen),
    newKernel: since(next?.firstLineAtMs),
    init: since(next === undefined ? undefined : kernelLineAt(next, INIT_LINE)),
    agentBack: since(agentBack),
    qemuStarted: since(two('qemu-started')),
    stateLoaded: since(two('state-loaded')),
    cont: since(two('cont')),
  };
}

/** The downtime as lines: each mark, the part since the previous one, and the total. */
export function downtimeLines(d: Downtime): string[] {
  const marks: Array<[keyof Downtime, string]> = [
    ['stopped', 'stop'],
    ['stateSaved', 'state saved'],
    ['statePreserved', 'state preserved (then ready)'],
    ['frozen', 'frozen (agent manifest)'],
    ['newKernel', "new kernel's first line"],
    ['init', "new kernel's /init (systemd)"],
    ['agentBack', 'agent back'],
    ['qemuStarted', 'QEMU started'],
    ['stateLoaded', 'state loaded'],
    ['cont', 'cont'],
  ];
  const s = (ms: number | null): string => (ms === null ? '?' : `${(ms / 1000).toFixed(3)} s`);
  let previous = 0;
  return marks.map(([key, label]) => {
    const t = d[key];
    const part = t === null ? null : t - previous;
    if (t !== null) previous = t;
    return `${label.padEnd(30)} at ${s(t).padStart(9)}  (+${s(part)})`;
  });
}

const DEMO_USAGE = `usage: npm run demo -- --vmm qemu [--memory MiB]   (guest RAM, default ${DEFAULT_VMM_MIB}; QEMU runs under TCG inside the test VM)`;

/**
 * The demo's `--vmm qemu` path: on the newest LUO kernel and the systemd
 * image, prints each step and the downtime; resolves to the exit status
 * (0 only if the guest resumed with its state).
 */
export async function vmmQemuDemo(argv: readonly string[], say: (line: string) => void): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { vmm: { type: 'string' }, memory: { type: 'string' } } }));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${DEMO_USAGE}\n`);
    return 2;
  }
  const mib = Number(values.memory ?? DEFAULT_VMM_MIB);
  if (values.vmm !== 'qemu' || !Number.isInteger(mib) || mib < 16 || mib > 4096) {
    process.stderr.write(`${DEMO_USAGE}\n`);
    return 2;
  }
  const kernel = findKernels().at(-1);
  const image = findSystemdImage();
  if (!hasQemu() || kernel === undefined || image === undefined) {
    process.stderr.write(`${[!hasQemu() ? qemuHelp() : '', kernel === undefined ? NO_KERNEL_HELP : '', image === undefined ? NO_SYSTEMD_IMAGE_HELP : ''].filter((l) => l !== '').join('\n')}\n`);
    return 3;
  }
  say(`boot: ${kernel.release}, systemd image (${image.versions}); the counter guest gets ${mib} MiB of RAM under QEMU inside it`);
  const { run, before, after, downtime: d } = await runVmmQemu({ kernel, image, mib, onLine: say });
  if (!run.ok || before === undefined || after === undefined) {
    say(`FAILED: ${run.reason}`);
    process.stderr.write(`${run.report()}\n`);
    return 1;
  }
  say(`PASSED in ${(run.elapsedMs / 1000).toFixed(0)} s: QEMU ${before.qemu} (${before.method}) resumed the guest after the kexec: counter ${after.counterAtStop} at the stop, ${after.counterAfterLoad} after the load, ${after.counterResumed} running again (boot ${after.boots}); device state ${before.stateBytes} bytes for ${mib} MiB of RAM`);
  say('downtime (host clock, from the stop):');
  for (const line of downtimeLines(d)) say(`  ${line}`);
  return 0;
}
