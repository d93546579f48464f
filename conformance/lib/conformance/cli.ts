/**
 * `liveupdate-conformance`: runs the conformance suite against a kernel image
 * under QEMU and reports each case.
 *
 *   liveupdate-conformance --kernel ./bzImage [--next-kernel ./other] [--initrd extra.cpio] [--systemd] [--json] [--junit FILE] [--timeout S]
 *
 * Progress goes to stderr; stdout holds only the report (JSON with --json).
 * Exit status: 0 when no case failed or was skipped for something the kernel
 * lacks (deviations and not applicable cases do not count), 1 otherwise (or
 * when the run broke), 2 for a usage or host problem.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { agentPackageFiles } from '../harness/systemd.js';
import { libraryRoot } from '../vm/initramfs.js';
import { kernelRelease } from '../vm/kernels.js';
import { runVm, type RunOptions, type VmRun } from '../vm/qemu.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP } from '../vm/systemd-image.js';
import { guestTools } from '../vm/static-program.js';
import { junitXml } from './junit.js';
import { buildReport, summarize, type ConformanceReport, type RunSummary } from './report.js';
import { scenarioFiles, suiteCases, SYSTEMD_SCENARIOS } from './suite.js';

/** The default hard limit for a whole run, in seconds: generous, since emulation speed varies widely. */
const DEFAULT_TIMEOUT_S = 1200;

const USAGE = `usage: liveupdate-conformance --kernel PATH [options]

Boots PATH (a bzImage built with CONFIG_LIVEUPDATE, CONFIG_KEXEC_HANDOVER,
CONFIG_KEXEC_FILE and CONFIG_LIVEUPDATE_MEMFD) under qemu-system-x86_64 with
software emulation, kexecs it into itself twice, and runs every conformance
case of Linux's Live Update Orchestrator through this package's API.

options:
  --kernel PATH     the kernel image to test (required)
  --next-kernel PATH  kexec from the first kernel into this one (an upgrade or a
                    downgrade): the cases that cross a kexec then say what
                    survived from one kernel into the other
  --initrd PATH     an extra initramfs (cpio, may be compressed) unpacked over the
                    guest's in every kernel, e.g. modules the kernel needs; repeatable
  --systemd         run the systemd cases instead, on the cached systemd guest image
                    (Debian sid, systemd 262 as PID 1; \`npm run vm:systemd-image\`
                    builds it): the library's fd-store and LUOSession= paths, and the
                    agent's systemd mode through \`systemctl kexec\`; one boot each
  --json            print the report as JSON on stdout
  --junit FILE      also write the report as JUnit XML to FILE
  --timeout S       give up after S seconds for the whole run (default ${DEFAULT_TIMEOUT_S})
  --memory SIZE     guest memory, QEMU syntax (default 3G)
  --cmdline TEXT    extra kernel command line parameters for every kernel
  --log DIR         save the guest's console (kernel log) in DIR
  -h, --help        this text

Statuses: PASS (the kernel kept the documented promise), DEVIATION (it did
something else instead: the case says what), FAIL, SKIP (the kernel lacks what
the case needs, or the case is not applicable: the fault/* cases need the
test-only file handler of vm/luo-test-handler). Where the documentation
promises nothing, what the kernel did is listed as "observed".

Exit status: 0 when no case failed or was skipped for something the kernel
lacks (deviations and not applicable cases do not count); 1 otherwise, or when
the run broke; 2 for a usage or host error.
Set LIVEUPDATE_QEMU to use another QEMU binary.`;

/** The parsed command line. */
export interface Options {
  readonly kernel: string;
  readonly nextKernel: string | undefined;
  readonly initrds: readonly string[];
  readonly json: boolean;
  readonly junit: string | undefined;
  readonly timeoutMs: number;
  readonly memory: string | undefined;
  readonly cmdline: string | undefined;
  readonly logDir: string | undefined;
  /** Run the systemd cases on the systemd guest image instead of the suite. */
  readonly systemd: boolean;
}

/** A usage error: printed with a hint to --help, exit status 2. */
export class UsageError extends Error {}

/** Parses and checks the arguments (without node and script); throws UsageError. */
export function parseOptions(argv: readonly string[]): Options | 'help' {
  const values = parseFlags(argv);
  if (values.help === true) return 'help';
  if (values.kernel === undefined) throw new UsageError('--kernel PATH is required');
  const kernel = checkImage(values.kernel, 'kernel image');
  const nextKernel = values['next-kernel'] === undefined ? undefined : checkImage(values['next-kernel'], 'next kernel image');
  if (values.systemd === true && values.initrd !== undefined) throw new UsageError('--initrd does not apply with --systemd (the systemd image boots from its own disk, without an initrd)');
  const timeout = values.timeout === undefined ? DEFAULT_TIMEOUT_S : Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new UsageError(`--timeout wants a positive number of seconds, not ${values.timeout ?? ''}`);
  return {
    kernel,
    nextKernel,
    initrds: (values.initrd ?? []).map((i) => checkFile(i, 'initrd')),
    json: values.json === true,
    junit: values.junit === undefined ? undefined : path.resolve(values.junit),
    timeoutMs: Math.round(timeout * 1000),
    memory: values.memory,
    cmdline: values.cmdline,
    logDir: values.log,
    systemd: values.systemd === true,
  };
}

/** The flags as node:util parses them; a UsageError for an unknown or malformed one. */
function parseFlags(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      options: {
        kernel: { type: 'string' },
        'next-kernel': { type: 'string' },
        initrd: { type: 'string', multiple: true },
        json: { type: 'boolean' },
        junit: { type: 'string' },
        timeout: { type: 'string' },
        memory: { type: 'string' },
        cmdline: { type: 'string' },
        log: { type: 'string' },
        systemd: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** A bzImage's absolute path; a UsageError for anything else. */
function checkImage(file: string, what: string): string {
  const image = checkFile(file, what);
  if (kernelRelease(image) === undefined) throw new UsageError(`${file} is not a bzImage (no Linux boot header): build one with make bzImage`);
  return image;
}

function checkFile(file: string, what: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new UsageError(`${what} not found: ${file}`);
  }
  if (!stat.isFile()) throw new UsageError(`${what} is not a file: ${file}`);
  return path.resolve(file);
}

/** Runs the suite (or the systemd cases) as `options` says; resolves with the report and the summary. */
export async function runSuite(options: Options, progress: (line: string) => void): Promise<{ report: ConformanceReport; summary: RunSummary }> {
  const release = kernelRelease(options.kernel) ?? path.basename(options.kernel);
  const next = options.nextKernel === undefined ? undefined : { path: options.nextKernel, release: kernelRelease(options.nextKernel) ?? path.basename(options.nextKernel) };
  const boots = options.systemd ? systemdBoots() : [{ scenarios: scenarioFiles(), cases: suiteCases(), vm: { files: tools(progress) } }];
  const cases = boots.flatMap((b) => b.cases);
  const into = next === undefined ? '' : ` kexecing into ${next.release}`;
  const on = options.systemd ? ` on the systemd guest image (${findSystemdImage()?.versions ?? '?'})` : '';
  progress(`[conformance] ${cases.length} cases on ${release}${into}${on}: ${boots.length === 1 ? 'one boot' : `${boots.length} boots`}, ${Math.max(...cases.map((c) => c.stages))} kernels each; this takes minutes under emulation`);
  const heartbeat = startHeartbeat(progress);
  try {
    const parts: Array<{ report: ConformanceReport; summary: RunSummary }> = [];
    for (const [i, boot] of boots.entries()) {
      const run: VmRun = await runVm({
        name: `conformance-${release}${next === undefined ? '' : `-to-${next.release}`}${boots.length === 1 ? '' : `-${i + 1}`}`,
        kernels: next === undefined ? [options.kernel] : [options.kernel, next.path],
        scenarios: boot.scenarios,
        ...boot.vm,
        timeoutMs: options.timeoutMs,
        onProgress: heartbeat.line,
        ...(options.initrds.length === 0 ? {} : { initrds: options.initrds }),
        ...(options.memory === undefined ? {} : { memory: options.memory }),
        ...(options.cmdline === undefined ? {} : { cmdline: options.cmdline }),
        ...(options.logDir === undefined ? {} : { logDir: options.logDir }),
      });
      const kernel = { path: options.kernel, release: run.stages[0]?.release ?? release };
      const report = buildReport(run, boot.cases, kernel, next === undefined ? undefined : { path: next.path, release: run.stages[1]?.release ?? next.release });
      parts.push({ report, summary: summarize(run, report) });
    }
    return combine(parts);
  } finally {
    heartbeat.stop();
  }
}

/** One boot per systemd scenario on the cached image, with the package's executable and units; a host error when the image is missing. */
function systemdBoots(): Array<{ scenarios: string[]; cases: ReturnType<typeof suiteCases>; vm: Pick<RunOptions, 'files' | 'systemdImage'> }> {
  const image = findSystemdImage();
  if (image === undefined) throw new Error(NO_SYSTEMD_IMAGE_HELP);
  return SYSTEMD_SCENARIOS.map((name) => ({ scenarios: scenarioFiles([name]), cases: suiteCases([name]), vm: { systemdImage: image.path, files: agentPackageFiles(libraryRoot()) } }));
}

/** The reports of several boots as one: their cases in order, the counts and times added up. */
function combine(parts: ReadonlyArray<{ report: ConformanceReport; summary: RunSummary }>): { report: ConformanceReport; summary: RunSummary } {
  const [first, ...rest] = parts;
  if (first === undefined) throw new Error('no boot ran');
  const sum = (count: (r: ConformanceReport) => number): number => parts.reduce((total, p) => total + count(p.report), 0);
  const report: ConformanceReport = {
    ...first.report,
    cases: parts.flatMap((p) => p.report.cases),
    passed: sum((r) => r.passed),
    failed: sum((r) => r.failed),
    skipped: sum((r) => r.skipped),
    notApplicable: sum((r) => r.notApplicable),
    deviations: sum((r) => r.deviations),
  };
  if (rest.length === 0) return { report, summary: first.summary };
  const summary: RunSummary = {
    reason: parts.map((p) => p.summary.reason).join('; '),
    runOk: parts.every((p) => p.summary.runOk),
    lacks: [...new Set(parts.flatMap((p) => p.summary.lacks))],
    elapsedMs: parts.reduce((total, p) => total + p.summary.elapsedMs, 0),
    stagesReachedMs: parts.flatMap((p) => p.summary.stagesReachedMs),
  };
  return { report, summary };
}

/**
 * The guest's C programs: the test file handler's control program and the
 * raw ioctl of the abi/* cases. Without them (no gcc or static libc here)
 * the fault/* and abi/* cases fail; say why.
 */
function tools(progress: (line: string) => void): Record<string, string> {
  try {
    return guestTools();
  } catch (error) {
    progress(`[conformance] the fault/* and abi/* cases will fail: ${error instanceof Error ? error.message : String(error)}`);
    return {};
  }
}

/** Passes progress lines on, and says "still running" when none came for a while. */
function startHeartbeat(progress: (line: string) => void): { line: (text: string) => void; stop: () => void } {
  const started = Date.now();
  let last = Date.now();
  let lastLine = '';
  const timer = setInterval(() => {
    if (Date.now() - last < 20_000) return;
    last = Date.now();
    progress(`[conformance ${((Date.now() - started) / 1000).toFixed(0)} s] still running (last: ${lastLine.replace(/^\[vm [^\]]*\]\s*/, '')})`);
  }, 5_000);
  return {
    line: (text) => {
      last = Date.now();
      lastLine = text;
      progress(text);
    },
    stop: () => clearInterval(timer),
  };
}

/** The human report: one line per case, then the summary. */
export function formatReport(report: ConformanceReport, summary: RunSummary): string {
  const width = Math.max(...report.cases.map((c) => c.name.length));
  const next = report.nextKernel === undefined ? '' : `, kexecing into ${report.nextKernel.release} (${report.nextKernel.path})`;
  const lines = [`kernel ${report.kernel.release} (${report.kernel.path})${next}`, ''];
  for (const c of report.cases) {
    const path = c.kernels === undefined ? '' : `  [${c.kernels.join(' → ')}]`;
    const head = `${c.status.toUpperCase().padEnd(9)}  ${c.name.padEnd(width)}  ${`${c.ms} ms`.padStart(9)}${path}`;
    lines.push(c.detail === undefined ? head : `${head}  ${c.detail}`);
    for (const [what, value] of Object.entries(c.observed ?? {})) lines.push(`${' '.repeat(11)}observed: ${what}: ${JSON.stringify(value)}`);
  }
  return `${lines.join('\n')}\n\n${summaryLines(report, summary)}`;
}

/** The verdict, what the kernel lacks, and why the run broke, if it did. */
function summaryLines(report: ConformanceReport, summary: RunSummary): string {
  const lines = [summaryLine(report, summary)];
  for (const why of summary.lacks) lines.push(`the kernel lacks something: ${why}`);
  // Failed and skipped cases carry their own reasons; otherwise say why the run itself broke.
  if (!summary.runOk && report.failed === 0 && report.skipped === report.notApplicable) lines.push(`the run did not complete: ${summary.reason}`);
  return `${lines.join('\n')}\n`;
}

function summaryLine(report: ConformanceReport, summary: RunSummary): string {
  const verdict = !succeeded(report, summary) ? 'DOES NOT CONFORM' : report.deviations > 0 ? 'CONFORMS WITH DEVIATIONS' : 'CONFORMS';
  const boots = summary.stagesReachedMs.map((ms) => `${(ms / 1000).toFixed(1)} s`).join(', ');
  const notApplicable = report.notApplicable > 0 ? ` (${report.notApplicable} not applicable)` : '';
  return (
    `${verdict}: ${report.passed} passed, ${report.deviations} deviated, ${report.failed} failed, ` +
    `${report.skipped} skipped${notApplicable} of ${report.cases.length} ` +
    `in ${(summary.elapsedMs / 1000).toFixed(1)} s (kernels reached at ${boots || 'none'})`
  );
}

/**
 * Whether the run counts as a success: it completed, and every case passed
 * or deviated from a documented promise or did not apply to this kernel.
 */
export function succeeded(report: ConformanceReport, summary: RunSummary): boolean {
  return report.failed === 0 && report.skipped === report.notApplicable && summary.runOk;
}

/** Runs the command; resolves with the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  let options: Options | 'help';
  try {
    options = parseOptions(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`liveupdate-conformance: ${error.message}\n(see liveupdate-conformance --help)\n`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const progress = (line: string): void => void process.stderr.write(`${line}\n`);
  let result: Awaited<ReturnType<typeof runSuite>>;
  try {
    result = await runSuite(options, progress);
  } catch (error) {
    // A host problem (no QEMU, no ldd, an unreadable file): not the kernel's fault.
    process.stderr.write(`liveupdate-conformance: ${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
  const { report, summary } = result;
  if (options.junit !== undefined) fs.writeFileSync(options.junit, junitXml(report, summary.elapsedMs));
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(formatReport(report, summary));
  if (options.json) process.stderr.write(summaryLines(report, summary));
  return succeeded(report, summary) ? 0 : 1;
}
