/**
 * One clock across kexecs: the host's. Each kernel starts its own clocks
 * (CLOCK_MONOTONIC and printk's from zero, the wall clock from the emulated
 * RTC, good to a second), so no guest clock relates instants of two kernels
 * to the millisecond. The host does: it stamps every console line and
 * record with its own monotonic clock as it arrives (qemu.ts), and relates
 * each kernel's clocks to it:
 * - printk's clock, from the kernel's console lines (`[  1.234567] ...`):
 *   the kernel's zero on the host clock is the least of (arrival - printk
 *   time) over that kernel's lines, the line that reached the host fastest;
 * - the guest's monotonic and wall clocks, from clock samples a scenario
 *   reports ({@link reportClockSamples}): the same least difference over the
 *   samples of that kernel.
 * A guest instant is then placed on the host clock within the serial line's
 * quickest delivery (no more than it: the estimate never puts an instant
 * later than the line that told of it arrived). Under TCG the guest's TSC is
 * the host's, so no clock drifts apart within a kernel's few seconds.
 * The guest side here is the sampling; the rest is pure, for the host.
 * @internal
 */
import type { GuestRecord, JsonValue } from './protocol.js';

/** A console line and the host's instant it arrived at (ms since the run's start, monotonic). */
export interface StampedLine {
  readonly atMs: number;
  readonly text: string;
}

/** A record and the host's instant it arrived at (ms since the run's start, monotonic). */
export interface StampedRecord {
  readonly atMs: number;
  readonly record: GuestRecord;
}

/** Everything that arrived from a run's guest, stamped. */
export interface Arrivals {
  readonly console: readonly StampedLine[];
  readonly records: readonly StampedRecord[];
}

/** The report name of a clock sample. */
export const CLOCK_REPORT = 'clock';

/** A guest's two clocks read at one instant, in ms. */
export interface ClockSample {
  /** CLOCK_MONOTONIC (process.hrtime): counts from this kernel's boot. */
  readonly mono: number;
  /** CLOCK_REALTIME (Date.now()): set from the RTC at this kernel's boot. */
  readonly wall: number;
}

/** Reads both clocks now (in the guest). */
export function clockSample(): ClockSample {
  return { mono: Number(process.hrtime.bigint()) / 1e6, wall: Date.now() };
}

/** Samples a scenario sends by default: more samples, a quicker line among them. */
const SAMPLES = 5;
/** Time between samples, so that each finds the serial line idle. */
const SAMPLE_GAP_MS = 15;

/**
 * Reports `count` clock samples, spaced so that each leaves on an idle line
 * (in the guest, outside any timed part: it takes about count × 15 ms).
 */
export async function reportClockSamples(report: (name: string, value: JsonValue) => void, count = SAMPLES): Promise<void> {
  for (let i = 0; i < count; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, SAMPLE_GAP_MS));
    report(CLOCK_REPORT, { ...clockSample() });
  }
}

/** How one kernel's monotonic and wall clocks sit on the host clock. */
export interface GuestClockFit {
  readonly stage: number;
  readonly samples: number;
  /** Host ms = guest CLOCK_MONOTONIC ms + this. */
  readonly monoOffsetMs: number;
  /** Host ms = guest wall ms + this. */
  readonly wallOffsetMs: number;
  /** How much slower than the quickest the slowest sample arrived: the line's jitter, ms. */
  readonly jitterMs: number;
}

function isSample(value: JsonValue): value is { mono: number; wall: number } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && typeof value['mono'] === 'number' && typeof value['wall'] === 'number';
}

/** Each stage's fit from the clock samples among `records` (stages without samples have none). */
export function guestClockFits(records: readonly StampedRecord[]): Map<number, GuestClockFit> {
  const byStage = new Map<number, Array<{ atMs: number; sample: ClockSample }>>();
  for (const { atMs, record } of records) {
    if (record.t !== 'report' || record.name !== CLOCK_REPORT || !isSample(record.value)) continue;
    byStage.set(record.stage, [...(byStage.get(record.stage) ?? []), { atMs, sample: record.value }]);
  }
  const fits = new Map<number, GuestClockFit>();
  for (const [stage, samples] of byStage) {
    const mono = samples.map((s) => s.atMs - s.sample.mono);
    const wall = samples.map((s) => s.atMs - s.sample.wall);
    fits.set(stage, { stage, samples: samples.length, monoOffsetMs: Math.min(...mono), wallOffsetMs: Math.min(...wall), jitterMs: Math.max(...mono) - Math.min(...mono) });
  }
  return fits;
}

/** A kernel console line: its printk time (s) and text. */
const PRINTK_LINE = /^\[\s*(\d+\.\d+)\]\s?(.*)$/;
/** The first line every kernel prints. */
const KERNEL_BANNER = /^Linux version /;

/** One kernel's part of the console. */
export interface KernelBoot {
  /** 1-based, in boot order: the stage it ran. */
  readonly index: number;
  /** Its printk zero on the host clock (ms): the least of arrival - printk time. */
  readonly zeroAtMs: number;
  /** When its first line reached the host (the console comes up well after its zero). */
  readonly firstLineAtMs: number;
  /** Its kernel lines: printk time (ms) and text. */
  readonly lines: ReadonlyArray<{ readonly printkMs: number; readonly text: string }>;
}

/** The kernels of a console, split at each banner. */
export function kernelBoots(console: readonly StampedLine[]): KernelBoot[] {
  const boots: Array<{ zeroAtMs: number; firstLineAtMs: number; lines: Array<{ printkMs: number; text: string }> }> = [];
  for (const line of console) {
    const m = PRINTK_LINE.exec(line.text);
    if (m === null) continue;
    const printkMs = Number(m[1]) * 1000;
    const text = m[2] ?? '';
    if (KERNEL_BANNER.test(text) || boots.length === 0) boots.push({ zeroAtMs: Infinity, firstLineAtMs: line.atMs, lines: [] });
    const boot = boots[boots.length - 1]!;
    boot.lines.push({ printkMs, text });
    // Lines stamped 0 come before the kernel's clock runs.
    if (printkMs > 0) boot.zeroAtMs = Math.min(boot.zeroAtMs, line.atMs - printkMs);
  }
  return boots.filter((b) => Number.isFinite(b.zeroAtMs)).map((b, i) => ({ index: i + 1, ...b }));
}

/** The host instant of `boot`'s first line matching `pattern` (its printk time on the host clock), or undefined. */
export function kernelLineAt(boot: KernelBoot, pattern: RegExp): number | undefined {
  const line = boot.lines.find((l) => pattern.test(l.text));
  return line === undefined ? undefined : boot.zeroAtMs + line.printkMs;
}

/** The old kernel's last line before it jumps: printed after LUO froze every session (kernel/kexec_core.c). */
export const KEXEC_LINE = /kexec_core: Starting new kernel/;
/** The new kernel handing over to user space. */
export const INIT_LINE = /Run \S+ as init process/;

/** A named instant of a blackout, on the host clock. */
export interface Instant {
  readonly name: string;
  readonly atMs: number;
  /** Which clock it was read on, and how it came to the host. */
  readonly clock: string;
}

/** The clocks a kexec's blackout is read on: the consoles of both kernels and their samples. */
export interface KexecClocks {
  readonly old: KernelBoot;
  readonly next: KernelBoot;
  readonly oldFit: GuestClockFit | undefined;
  readonly nextFit: GuestClockFit | undefined;
}

/** The clocks of the kexec from stage `from` into the next, or an error saying what is missing. */
export function kexecClocks(arrivals: Arrivals, from: number): KexecClocks {
  const boots = kernelBoots(arrivals.console);
  const old = boots[from - 1];
  const next = boots[from];
  if (old === undefined || next === undefined) throw new Error(`the console shows ${boots.length} kernel(s): no kexec from stage ${from}`);
  const fits = guestClockFits(arrivals.records);
  return { old, next, oldFit: fits.get(from), nextFit: fits.get(from + 1) };
}

/** Where the host clock places guest instants: by kernel (stage) and clock. */
export function onHost(fit: GuestClockFit | undefined, clock: 'mono' | 'wall', guestMs: number): number {
  if (fit === undefined) throw new Error('no clock samples from that kernel: its guest clocks cannot be placed on the host clock');
  return guestMs + (clock === 'mono' ? fit.monoOffsetMs : fit.wallOffsetMs);
}

/** The kernel's own instants of a kexec: the old kernel's last line, the new one's zero, its first line on the host, /init. */
export function kernelInstants(c: KexecClocks): Instant[] {
  const oldLast = kernelLineAt(c.old, KEXEC_LINE);
  const init = kernelLineAt(c.next, INIT_LINE);
  if (oldLast === undefined) throw new Error(`kernel ${c.old.index} printed no "Starting new kernel" line`);
  if (init === undefined) throw new Error(`kernel ${c.next.index} printed no "Run /init" line`);
  return [
    { name: 'old kernel jumps (its last line, after LUO froze the sessions)', atMs: oldLast, clock: 'old kernel printk' },
    { name: 'new kernel starts (its printk zero)', atMs: c.next.zeroAtMs, clock: 'new kernel printk' },
    { name: "new kernel's console comes up (its first line arrives)", atMs: c.next.firstLineAtMs, clock: 'host stamp' },
    { name: 'new kernel runs /init', atMs: init, clock: 'new kernel printk' },
  ];
}

/** The `[name, ms since `origin`]` pairs of `instants`, in their order, with 3 decimals. */
export function sinceOrigin(instants: readonly Instant[], origin: number): Array<[string, number]> {
  return instants.map((i) => [i.name, Math.round((i.atMs - origin) * 1000) / 1000]);
}

/**
 * Says how well the two channels agree in kernel `fit.stage`: its printk
 * zero (console, ttyS0) against its monotonic clock's zero (records, ttyS1),
 * ms. Both clocks count from the kernel's start on the same TSC, so a
 * difference beyond a millisecond or two means a channel was late.
 */
export function channelsAgreeMs(boot: KernelBoot, fit: GuestClockFit): number {
  return fit.monoOffsetMs - boot.zeroAtMs;
}

/** What the figures of a host-clock blackout say about their clock, for the output. */
export const HOST_CLOCK_NOTE =
  "host CLOCK_MONOTONIC (1 µs) stamping each serial line as it arrives; each kernel's printk, monotonic and wall clocks placed on it by the quickest of its lines (to within the serial line's delivery, under a millisecond)";
