/**
 * Spans between marks over independent samples (boots, or the hosts of one
 * fleet run): each sample is a set of named instants on one clock, a span
 * is the time from one mark to another, and each span is reported as its
 * median over the samples with a 95% bootstrap interval and the number of
 * samples it rests on. A sample lacking either mark of a span (an instant
 * not seen) is left out of that span only, and the count says so. Pure.
 * @internal
 */
import { medianEstimate, type Interval } from './stats.js';

/** One sample's instants, ms on one clock; null where a mark was not seen. */
export type Marks = Readonly<Record<string, number | null | undefined>>;

/** A span to report: from one mark to another. */
export interface SpanSpec {
  /** What the span is, in words (the row's label). */
  readonly name: string;
  readonly from: string;
  readonly to: string;
}

/** A span's figures over the samples. */
export interface SpanEstimate {
  readonly name: string;
  readonly from: string;
  readonly to: string;
  /** Median over the samples, ms (1 decimal). */
  readonly median_ms: number | null;
  /** Its 95% interval (percentile bootstrap, seeded), ms. */
  readonly ci95_ms: Interval | null;
  /** How many samples had both marks. */
  readonly n: number;
  /** Each sample's value in sample order, null where a mark was missing. */
  readonly values_ms: ReadonlyArray<number | null>;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

/** A sample's span, or null when either mark is missing. */
function spanOf(sample: Marks, spec: SpanSpec): number | null {
  const from = sample[spec.from];
  const to = sample[spec.to];
  return typeof from === 'number' && typeof to === 'number' && Number.isFinite(from) && Number.isFinite(to) ? to - from : null;
}

/** Each span's median and 95% interval over `samples`. */
export function spanEstimates(samples: readonly Marks[], specs: readonly SpanSpec[]): SpanEstimate[] {
  return specs.map((spec) => {
    const values = samples.map((s) => spanOf(s, spec));
    const seen = values.filter((v): v is number => v !== null);
    if (seen.length === 0) return { ...spec, median_ms: null, ci95_ms: null, n: 0, values_ms: values };
    const e = medianEstimate(seen);
    return { ...spec, median_ms: round1(e.median), ci95_ms: [round1(e.ci95[0]), round1(e.ci95[1])], n: seen.length, values_ms: values.map((v) => (v === null ? null : round1(v))) };
  });
}

/** A median with its interval and count as text: `1234 [1100, 1400] ms (n = 3)`, or "not measured". */
export function spanText(s: Pick<SpanEstimate, 'median_ms' | 'ci95_ms' | 'n'>, unit: 'ms' | 's' = 'ms'): string {
  if (s.median_ms === null || s.ci95_ms === null) return 'not measured';
  const f = (ms: number): string => (unit === 's' ? (ms / 1000).toFixed(2) : ms.toFixed(0));
  return `${f(s.median_ms)} [${f(s.ci95_ms[0])}, ${f(s.ci95_ms[1])}] ${unit} (n = ${s.n})`;
}

/** The machine's 1-minute load average at a group's start and end, and the cores it had. */
export interface LoadRecord {
  readonly start: number;
  readonly end: number;
  readonly nproc: number;
}

/** When and on what a group of the benchmark ran: each group records its own, as groups may run apart. */
export interface GroupRun {
  readonly date: string;
  readonly commit: string;
  readonly kernel: string;
  readonly elapsed_s: number;
  /** The highest load average either end of any run saw, when runs are pooled. */
  readonly loadavg: LoadRecord;
  /** When the samples of several runs are pooled (groups-merge.ts): each run. */
  readonly runs?: readonly GroupRun[];
}

/** A sample that broke: left out of the figures, kept in the report with why. */
export interface FailedSample {
  /** Which path or host, and which boot. */
  readonly what: string;
  readonly boot: number;
  /** The failure in a line: the first failed check, else the error's first line. */
  readonly reason: string;
}

/** A failure's reason in one line (at most 300 characters): the first failed case's line of a run report, else the first line. */
export function failureReason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const lines = text.split('\n');
  const line = lines.find((l) => /^- stage \d+/.test(l)) ?? lines[0] ?? '';
  return line.replace(/^- /, '').trim().slice(0, 300);
}

/**
 * Runs one sample; a failure is recorded in `failures` and yields undefined,
 * so one broken boot on a busy machine does not cost the boots around it.
 */
export async function sampleOrFailure<T>(what: string, boot: number, failures: FailedSample[], progress: (line: string) => void, work: () => Promise<T>): Promise<T | undefined> {
  try {
    return await work();
  } catch (error) {
    const failed: FailedSample = { what, boot, reason: failureReason(error) };
    failures.push(failed);
    progress(`${what}, boot ${boot}: FAILED, left out of the figures: ${failed.reason}`);
    return undefined;
  }
}

/** Throws when no sample of a group came through: then the run itself broke. */
export function someSamples(group: string, samples: number, failures: readonly FailedSample[]): void {
  if (samples === 0) throw new Error(`every boot of the ${group} group failed: ${failures.map((f) => `${f.what} boot ${f.boot}: ${f.reason}`).join('; ')}`);
}
