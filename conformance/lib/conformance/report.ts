/**
 * Turns a test-bed run into the conformance report: one status per case, and
 * what the kernel lacks, in words. A case checks what the documented uAPI
 * promises: `pass` when the kernel kept it; `deviation` when the kernel did
 * something else instead (the case says what was promised and what it saw);
 * `fail` when a case broke or a check that is not about a documented promise
 * failed; `skip` when the kernel lacks what the case needs (with why), or
 * when the case is not applicable to this kernel (fault cases without the
 * test file handler), which does not count against the kernel. Where the
 * documentation promises nothing, what the kernel did is listed as observed.
 * @internal
 */
import type { CheckRecord, JsonValue } from '../vm/protocol.js';
import type { CaseResult, VmRun } from '../vm/qemu.js';
import { APPLIES_CHECK, DEVIATION_CHECK, OBSERVED_REPORT, REQUIRES_CHECK } from './support.js';
import type { SuiteCase } from './suite.js';

/** A case's outcome. */
export type CaseStatus = 'pass' | 'fail' | 'skip' | 'deviation';

/** One case in the report. */
export interface CaseReport {
  /** "scenario/case". */
  readonly name: string;
  readonly status: CaseStatus;
  /** Time spent in the case's stage functions, all kernels together. */
  readonly ms: number;
  /** Why it failed or was skipped, or what it deviated from. */
  readonly detail?: string;
  /** A skip because the case does not apply to this kernel (not held against it). */
  readonly notApplicable?: true;
  /** What the kernel did where its documentation promises nothing. */
  readonly observed?: Readonly<Record<string, JsonValue>>;
  /** With a next kernel, for a case that crosses a kexec: the release of each kernel it ran in. */
  readonly kernels?: readonly string[];
}

/** A kernel image and its release. */
export interface KernelRef {
  readonly path: string;
  readonly release: string;
}

/** The report `--json` prints. */
export interface ConformanceReport {
  readonly kernel: KernelRef;
  /** The kernel the first one kexecs into, when not itself (an upgrade or downgrade). */
  readonly nextKernel?: KernelRef;
  readonly cases: readonly CaseReport[];
  readonly passed: number;
  readonly failed: number;
  /** Every skip, the not applicable ones included. */
  readonly skipped: number;
  readonly notApplicable: number;
  readonly deviations: number;
}

/** What the human summary adds to the report. */
export interface RunSummary {
  /** The test bed's verdict on the run ("ok" or why not). */
  readonly reason: string;
  /** Whether the run itself (boots, kexecs, power-off) went through, whatever the cases did. */
  readonly runOk: boolean;
  /** Distinct reasons cases were skipped: what the kernel lacks. */
  readonly lacks: readonly string[];
  readonly elapsedMs: number;
  /** Host time from QEMU's start to each kernel's first record. */
  readonly stagesReachedMs: readonly number[];
}

/** Builds the report for `cases` from a finished run. */
export function buildReport(
  run: Pick<VmRun, 'result' | 'reason' | 'stages'>,
  cases: readonly SuiteCase[],
  kernel: KernelRef,
  nextKernel?: KernelRef,
): ConformanceReport {
  const releases = run.stages.map((s) => s.release);
  const reports = cases.map((c) => {
    const report = caseReport(run, c);
    // What survived from one kernel into the other: the kernels each crossing case ran in.
    return nextKernel === undefined || c.stages < 2 ? report : { ...report, kernels: releases.slice(0, c.stages) };
  });
  const count = (status: CaseStatus): number => reports.filter((r) => r.status === status).length;
  return {
    kernel,
    ...(nextKernel === undefined ? {} : { nextKernel }),
    cases: reports,
    passed: count('pass'),
    failed: count('fail'),
    skipped: count('skip'),
    notApplicable: reports.filter((r) => r.notApplicable === true).length,
    deviations: count('deviation'),
  };
}

/** The summary lines' facts. */
export function summarize(run: Pick<VmRun, 'reason' | 'completed' | 'elapsedMs' | 'stages'>, report: ConformanceReport): RunSummary {
  const lacks = [...new Set(report.cases.filter((c) => c.status === 'skip' && c.notApplicable !== true).map((c) => c.detail ?? 'unknown'))];
  return {
    reason: run.reason,
    runOk: run.completed,
    lacks,
    elapsedMs: run.elapsedMs,
    stagesReachedMs: run.stages.map((s) => s.reachedAtMs),
  };
}

function caseReport(run: Pick<VmRun, 'result' | 'reason'>, c: SuiteCase): CaseReport {
  const results: (CaseResult | undefined)[] = [];
  for (let stage = 1; stage <= c.stages; stage++) results.push(run.result(c.name, stage));
  const ms = results.reduce((sum, r) => sum + (r?.ms ?? 0), 0);
  const failedChecks = results.flatMap((r) => r?.checks ?? []).filter((k) => !k.ok);
  const notApplicable = failedChecks.find((k) => k.name.startsWith(APPLIES_CHECK));
  if (notApplicable !== undefined) {
    return { name: c.name, status: 'skip', ms, detail: `not applicable: ${String(notApplicable.detail ?? notApplicable.name)}`, notApplicable: true };
  }
  const missing = failedChecks.find((k) => k.name.startsWith(REQUIRES_CHECK));
  if (missing !== undefined) return { name: c.name, status: 'skip', ms, detail: String(missing.detail ?? missing.name) };
  const observed = observedOf(results);
  const bad = results.findIndex((r) => r === undefined || (!r.ok && !onlyDeviations(r)));
  if (bad >= 0) return { name: c.name, status: 'fail', ms, detail: failureDetail(run, results[bad], bad + 1), ...observed };
  const deviations = failedChecks.filter(isDeviation);
  if (deviations.length > 0) return { name: c.name, status: 'deviation', ms, detail: deviations.map(deviationText).join('; '), ...observed };
  return { name: c.name, status: 'pass', ms, ...observed };
}

const isDeviation = (k: CheckRecord): boolean => k.name.startsWith(DEVIATION_CHECK);

/** A stage that failed only by deviating from documented promises. */
function onlyDeviations(r: CaseResult): boolean {
  const failed = r.checks.filter((k) => !k.ok);
  return r.error === undefined && r.skipped === undefined && failed.length > 0 && failed.every(isDeviation);
}

function deviationText(k: CheckRecord): string {
  const d = (k.detail ?? {}) as { promised?: JsonValue; observed?: JsonValue };
  return `${k.name.slice(DEVIATION_CHECK.length)}: documented ${JSON.stringify(d.promised ?? null)}, this kernel ${JSON.stringify(d.observed ?? null)}`;
}

/** The `observed` field of a case's report: its observed values from every stage, if any. */
function observedOf(results: readonly (CaseResult | undefined)[]): { observed?: Record<string, JsonValue> } {
  const observed: Record<string, JsonValue> = {};
  for (const r of results) {
    for (const [key, value] of Object.entries(r?.reports ?? {})) {
      if (key.startsWith(OBSERVED_REPORT)) observed[key.slice(OBSERVED_REPORT.length)] = value;
    }
  }
  return Object.keys(observed).length === 0 ? {} : { observed };
}

function failureDetail(run: Pick<VmRun, 'reason'>, result: CaseResult | undefined, stage: number): string {
  if (result === undefined) return `stage ${stage} never ran: ${run.reason}`;
  if (result.error !== undefined) {
    const e = result.error;
    return `stage ${stage}: ${e.name}${e.code === undefined ? '' : ` [${e.code}]`}: ${e.message}`;
  }
  const failed = result.checks.filter((k) => !k.ok);
  if (failed.length === 0) return `stage ${stage}: ${result.skipped ?? 'failed without a failed check'}`;
  const shown = failed.slice(0, 3).map((k) => `check "${k.name}" failed: ${JSON.stringify(k.detail ?? null)}`);
  const more = failed.length > 3 ? `; and ${failed.length - 3} more` : '';
  return `stage ${stage}: ${shown.join('; ')}${more}`;
}
