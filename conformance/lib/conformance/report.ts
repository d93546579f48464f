/**
 * Turns a test-bed run into the conformance report: one status per case
 * (pass, fail, or skip when the kernel lacks what the case needs), and what
 * the kernel lacks, in words.
 * @internal
 */
import type { CaseResult, VmRun } from '../vm/qemu.js';
import { REQUIRES_CHECK } from './support.js';
import type { SuiteCase } from './suite.js';

/** A case's outcome. */
export type CaseStatus = 'pass' | 'fail' | 'skip';

/** One case in the report. */
export interface CaseReport {
  /** "scenario/case". */
  readonly name: string;
  readonly status: CaseStatus;
  /** Time spent in the case's stage functions, all kernels together. */
  readonly ms: number;
  /** Why it failed or was skipped. */
  readonly detail?: string;
}

/** The report `--json` prints. */
export interface ConformanceReport {
  readonly kernel: { readonly path: string; readonly release: string };
  readonly cases: readonly CaseReport[];
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
}

/** What the human summary adds to the report. */
export interface RunSummary {
  /** The test bed's verdict on the run ("ok" or why not). */
  readonly reason: string;
  /** Whether the run itself (boots, kexecs, power-off) went through. */
  readonly runOk: boolean;
  /** Distinct reasons cases were skipped: what the kernel lacks. */
  readonly lacks: readonly string[];
  readonly elapsedMs: number;
  /** Host time from QEMU's start to each kernel's first record. */
  readonly stagesReachedMs: readonly number[];
}

/** Builds the report for `cases` from a finished run. */
export function buildReport(run: Pick<VmRun, 'result' | 'reason'>, cases: readonly SuiteCase[], kernel: { path: string; release: string }): ConformanceReport {
  const reports = cases.map((c) => caseReport(run, c));
  const count = (status: CaseStatus): number => reports.filter((r) => r.status === status).length;
  return { kernel, cases: reports, passed: count('pass'), failed: count('fail'), skipped: count('skip') };
}

/** The summary lines' facts. */
export function summarize(run: Pick<VmRun, 'reason' | 'ok' | 'elapsedMs' | 'stages'>, report: ConformanceReport): RunSummary {
  const lacks = [...new Set(report.cases.filter((c) => c.status === 'skip').map((c) => c.detail ?? 'unknown'))];
  return {
    reason: run.reason,
    runOk: run.ok,
    lacks,
    elapsedMs: run.elapsedMs,
    stagesReachedMs: run.stages.map((s) => s.reachedAtMs),
  };
}

function caseReport(run: Pick<VmRun, 'result' | 'reason'>, c: SuiteCase): CaseReport {
  const results: (CaseResult | undefined)[] = [];
  for (let stage = 1; stage <= c.stages; stage++) results.push(run.result(c.name, stage));
  const ms = results.reduce((sum, r) => sum + (r?.ms ?? 0), 0);
  const missing = results.flatMap((r) => r?.checks ?? []).find((k) => !k.ok && k.name.startsWith(REQUIRES_CHECK));
  if (missing !== undefined) return { name: c.name, status: 'skip', ms, detail: String(missing.detail ?? missing.name) };
  const bad = results.findIndex((r) => r === undefined || !r.ok);
  if (bad < 0) return { name: c.name, status: 'pass', ms };
  return { name: c.name, status: 'fail', ms, detail: failureDetail(run, results[bad], bad + 1) };
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
