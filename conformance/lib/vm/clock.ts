/**
 * One clock across kexecs: the host's. Each kernel starts its own clocks
 * (CLOCK_MONOTONIC and printk's from zero, the wall clock from the emulated
 * RTC, good to a second), so no guest clock relates instants of two kernels
 * to the millisecond. The host does: it stamps every console line and
 * record with its own monotonic clock as it arrives (qemu.ts). The kernel's
 * own instants (its last line before the jump, the new kernel's first line,
 * its /init) are those stamps: the console writes synchronously, and under
 * TCG a line crosses in well under a millisecond. Their printk times are no
 * use across the jump: printk's clock starts only once the kernel has set
 * its TSC up, after decompressing itself, and loses time while it boots.
 * The guest's monotonic and wall clocks are placed on the host clock from
 * clock samples a scenario reports ({@link reportClockSamples}): host = guest
 * + the least (arrival - guest time) over that kernel's samples, the sample
 * that crossed quickest. Every instant of a kernel is then late by that one
 * crossing (never early): differences within a kernel are exact, across the
 * kexec they are off by the difference of two quickest crossings (each a
 * line's delivery through QEMU; the samples' spread shows how busy the host
 * was, and how far a crossing could stretch).
 * Under TCG the guest's TSC is the host's: no drift within a kernel.
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
  /** When its first line (the banner) reached the host. */
  readonly firstLineAtMs: number;
  /** Its kernel lines: arrival on the host clock, printk time (ms) and text. */
  readonly lines: ReadonlyArray<{ readonly atMs: number; readonly printkMs: number; readonly text: string }>;
}

/** The kernels of a console, split at each banner. */
export function kernelBoots(console: readonly StampedLine[]): KernelBoot[] {
  const boots: Array<{ index: number; firstLineAtMs: number; lines: Array<{ atMs: number; printkMs: number; text: string }> }> = [];
  for (const line of console) {
    const m = PRINTK_LINE.exec(line.text);
    if (m === null) continue;
    const text = m[2] ?? '';
    if (KERNEL_BANNER.test(text) || boots.length === 0) boots.push({ index: boots.length + 1, firstLineAtMs: line.atMs, lines: [] });
    boots[boots.length - 1]!.lines.push({ atMs: line.atMs, printkMs: Number(m[1]) * 1000, text });
  }
  return boots;
}

/** When `boot`'s first line matching `pattern` reached the host, or undefined. */
export function kernelLineAt(boot: KernelBoot, pattern: RegExp): number | undefined {
  return boot.lines.find((l) => pattern.test(l.text))?.atMs;
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

/** The kernel's own instants of a kexec, as their lines reached the host: the old kernel's last line, the new one's first, its /init. */
export function kernelInstants(c: KexecClocks): Instant[] {
  const oldLast = kernelLineAt(c.old, KEXEC_LINE);
  const init = kernelLineAt(c.next, INIT_LINE);
  if (oldLast === undefined) throw new Error(`kernel ${c.old.index} printed no "Starting new kernel" line`);
  if (init === undefined) throw new Error(`kernel ${c.next.index} printed no "Run /init" line`);
  return [
    { name: 'old kernel jumps (its last line, after LUO froze the sessions)', atMs: oldLast, clock: 'host stamp' },
    { name: 'new kernel up (its first line)', atMs: c.next.firstLineAtMs, clock: 'host stamp' },
    { name: 'new kernel runs /init', atMs: init, clock: 'host stamp' },
  ];
}

/** The `[name, ms since `origin`]` pairs of `instants`, in their order, with 3 decimals. */
export function sinceOrigin(instants: readonly Instant[], origin: number): Array<[string, number]> {
  return instants.map((i) => [i.name, Math.round((i.atMs - origin) * 1000) / 1000]);
}

/**
 * From the kernel's "Run /init" line (console) to node's time origin in pid 1
 * (`initMono`, its monotonic clock, placed through the records), ms: the
 * exec of /init and node's loading (the dynamic linker, libnode) before its
 * clock starts, which no figure timed inside the guest from node's origin sees.
 */
export function initLineToOriginMs(boot: KernelBoot, fit: GuestClockFit, initMono: number): number {
  const init = kernelLineAt(boot, INIT_LINE);
  if (init === undefined) throw new Error(`kernel ${boot.index} printed no "Run /init" line`);
  return onHost(fit, 'mono', initMono) - init;
}

/** What the figures of a host-clock blackout say about their clock, for the output. */
export const HOST_CLOCK_NOTE =
  "host CLOCK_MONOTONIC (performance.now, 1 µs) stamping each serial line as it arrives: the kernel's lines as stamped; the guest's monotonic and wall clocks placed on it by each kernel's quickest clock sample (late by that sample's crossing, never early)";
