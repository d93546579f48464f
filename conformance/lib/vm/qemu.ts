/**
 * Boots a guest image under qemu-system-x86_64 (software emulation: no KVM
 * is needed) and collects what the guest reports. The console (ttyS0) carries
 * the kernel log and the guest's own output; a second serial port (ttyS1)
 * carries the result records. The run ends when the guest powers off, when
 * QEMU exits for any other reason (a panic reboots, and -no-reboot turns that
 * into an exit), or at the hard timeout, when QEMU is killed.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { buildGuestImage, type GuestImage, type GuestImageOptions } from './initramfs.js';
import { buildRunDisk } from './systemd-image.js';
import { parseRecord, STAGE_PARAM, type CheckRecord, type ErrorInfo, type GuestRecord, type JsonValue } from './protocol.js';
import type { Arrivals, StampedLine, StampedRecord } from './clock.js';

/** The guest image's options a run passes on to {@link buildGuestImage}. */
type ImageOptions = Pick<GuestImageOptions, 'kernels' | 'scenarios' | 'packageRoot' | 'files' | 'stageParams' | 'systemDisk'>;

/** How to run a boot: the guest image (kernels per stage, scenarios, package, extra files), and QEMU's settings. */
export interface RunOptions extends ImageOptions {
  /** A label for progress lines and the console log's file name. */
  readonly name?: string;
  /** Hard limit for the whole run, all stages (default 300 s). QEMU is killed after it. */
  readonly timeoutMs?: number;
  /** Guest memory (default "3G"). */
  readonly memory?: string;
  /** Guest CPUs (default 2). */
  readonly cpus?: number;
  /** Extra kernel parameters for every stage. */
  readonly cmdline?: string;
  /** Directory for `<name>.console.log` (default: none written). */
  readonly logDir?: string;
  /** Progress lines (default: written to stderr); `false` silences them. */
  readonly onProgress?: ((line: string) => void) | false;
  /** Called with each guest record as it arrives (live progress of a long stage). */
  readonly onRecord?: (record: GuestRecord) => void;
  /** Called with each console line as it arrives (host-side timing of kernel and systemd messages). */
  readonly onConsoleLine?: (line: string) => void;
  /** The QEMU binary (default `$LIVEUPDATE_QEMU`, else qemu-system-x86_64). */
  readonly qemu?: string;
  /**
   * QEMU's accelerator (default `$LIVEUPDATE_QEMU_ACCEL`, else "tcg": software
   * emulation, which runs anywhere). "kvm" is many times faster where /dev/kvm exists.
   */
  readonly accel?: string;
  /** More QEMU arguments (e.g. `['-cpu', 'max']`), after the test bed's own. */
  readonly qemuArgs?: readonly string[];
  /**
   * Extra initramfs archives (cpio, compressed or not) appended to the guest
   * image: the kernel unpacks them over it, in every stage (the guest hands
   * its retained initrd on). For modules or firmware a kernel needs.
   */
  readonly initrds?: readonly string[];
  /**
   * Boot the systemd guest image at this path (see systemd-image.ts) instead
   * of the test bed's own initrd: systemd is PID 1, the runner is one of its
   * units, and each kexec is systemd's own (`systemctl kexec`).
   */
  readonly systemdImage?: string;
  /** With {@link systemdImage}: start the guest's sshd (default false: no test but the fleet reaches its guest over ssh). */
  readonly sshd?: boolean;
  /** Ends the run early: QEMU is killed when it aborts (a long-lived guest the caller powers off itself, say). */
  readonly signal?: AbortSignal;
}

/** What one case did in one stage. */
export interface CaseResult {
  readonly case: string;
  readonly stage: number;
  readonly ok: boolean;
  readonly ms: number;
  /** What the stage function returned. */
  readonly value: JsonValue | undefined;
  readonly error: ErrorInfo | undefined;
  /** Set when the case did not run because it failed in an earlier stage. */
  readonly skipped: string | undefined;
  readonly checks: readonly CheckRecord[];
  /** Named values from `ctx.report`. */
  readonly reports: Readonly<Record<string, JsonValue>>;
}

/** One kernel's part of the run. */
export interface StageResult {
  readonly stage: number;
  /** uname -r in the guest. */
  readonly release: string;
  /** Kernel uptime when the runner started: boot time to pid 1 plus node's start. */
  readonly uptimeMs: number;
  /** Host time from just before QEMU's start to this stage's first record (ms, monotonic). */
  readonly reachedAtMs: number;
  readonly cases: Readonly<Record<string, CaseResult>>;
}

/** The outcome of a boot. */
export interface VmRun {
  /** The guest reached its end, every case passed, and QEMU exited on its own. */
  readonly ok: boolean;
  /** The guest ran every stage to its end and QEMU exited on its own, whatever the cases' results. */
  readonly completed: boolean;
  /** Why it failed (or "ok"). */
  readonly reason: string;
  /** How many stages the guest said the run has (0 if it never started). */
  readonly stageCount: number;
  readonly stages: readonly StageResult[];
  readonly records: readonly GuestRecord[];
  /** The whole console: kernel log and guest output. */
  readonly console: string;
  /**
   * Every console line and record of the whole run (whatever view), each with
   * the host's monotonic instant it arrived at (see clock.ts).
   */
  readonly arrivals: Arrivals;
  readonly elapsedMs: number;
  readonly timedOut: boolean;
  readonly exitCode: number | null;
  readonly image: GuestImage;
  /** Path of the saved console log, if `logDir` was given. */
  readonly logFile: string | undefined;
  /** A case's result in a stage (stage defaults to the last stage it ran in). */
  result(caseName: string, stage?: number): CaseResult | undefined;
  /** A failure report: failed cases, guest output and the tail of the kernel log. */
  report(): string;
  /**
   * The same run seen through the cases of some scenarios only (by scenario
   * name): `ok`, `reason`, `stages` and `records` then ignore other cases, so
   * several tests can share one boot and still fail only for their own cases.
   */
  only(scenarios: readonly string[]): VmRun;
}

/** Parameters every boot gets. */
const BASE_CMDLINE = [
  'console=ttyS0',
  'liveupdate=on',
  'kho=on',
  // An init that dies panics; reboot at once, which -no-reboot turns into QEMU's exit.
  'panic=-1',
  // The guest builds the next initrd from this one (/sys/firmware/initrd).
  'retain_initrd',
  // Timestamps tell kernel lines from guest output in failure reports.
  'printk.time=1',
  // Under emulation on a busy machine (two kernel tests at once, a fleet of guests) the boot's IO-APIC
  // timer check can miss its interrupt and panic ("IO-APIC + timer doesn't work!"); the timer works.
  'no_timer_check',
];
/**
 * What the systemd guest image boots with besides: its root filesystem, no
 * colours on the console, and no console status lines (the journal has them).
 */
const SYSTEMD_CMDLINE = ['root=/dev/vda', 'rw', 'systemd.log_color=0', 'systemd.show_status=error'];
/** How long QEMU may take to exit once the guest said it powers off. */
const EXIT_GRACE_MS = 15_000;
/** How often the results file is read. */
const RESULTS_POLL_MS = 100;
/** Kernel console lines start with a printk timestamp. */
const KERNEL_LINE = /^\[\s*\d+\.\d+\]/;

/** The QEMU binary in use. */
export function qemuBinary(options: { qemu?: string } = {}): string {
  return options.qemu ?? process.env['LIVEUPDATE_QEMU'] ?? 'qemu-system-x86_64';
}

/**
 * Builds the guest image for `options` and boots it. Resolves when QEMU is
 * gone, with everything collected; never rejects for a guest failure (look
 * at `ok` and `report()`), only for a host problem such as a missing QEMU.
 */
export async function runVm(options: RunOptions): Promise<VmRun> {
  const name = options.name ?? 'vm';
  const started = Date.now();
  const progress = progressPrinter(name, started, options.onProgress);
  const { kernels, scenarios, packageRoot, files, stageParams, systemDisk } = options;
  const imageOptions = {
    kernels,
    scenarios,
    ...(packageRoot === undefined ? {} : { packageRoot }),
    ...(files === undefined ? {} : { files }),
    ...(stageParams === undefined ? {} : { stageParams }),
  };
  const kernel = options.kernels[0];
  if (kernel === undefined) throw new Error('runVm: no kernel image given');
  if (options.systemdImage !== undefined) return runSystemdImage(options, options.systemdImage, imageOptions, kernel, name, started, progress);
  const image = buildGuestImage({ ...imageOptions, ...(systemDisk === undefined ? {} : { systemDisk }) });
  progress(`guest image ${mb(fs.statSync(image.initrd).size)}${image.disk === undefined ? '' : ` + system disk ${mb(fs.statSync(image.disk).size)}`} ${image.cached ? 'from cache' : 'built'} in ${image.ms} ms`);
  const collector = new Collector(progress, options);
  const initrd = options.initrds?.length ? appendArchives(image.initrd, options.initrds) : image.initrd;
  let exit: Exit;
  try {
    exit = await boot(options, kernel, initrd, image.disk, collector, progress);
  } finally {
    if (initrd !== image.initrd) fs.rmSync(path.dirname(initrd), { recursive: true, force: true });
  }
  return collector.finish(image, exit, Date.now() - started, saveLog(options.logDir, name, collector.console));
}

/** {@link runVm} on a copy of the systemd guest image, removed afterwards. */
async function runSystemdImage(
  options: RunOptions,
  base: string,
  imageOptions: GuestImageOptions,
  kernel: string,
  name: string,
  started: number,
  progress: (line: string) => void,
): Promise<VmRun> {
  if (options.initrds?.length) throw new Error('runVm: initrds cannot be given with systemdImage (that guest boots without an initrd)');
  const run = buildRunDisk(base, imageOptions, options.sshd === undefined ? {} : { sshd: options.sshd });
  progress(`systemd image copied with this run's files in ${run.image.ms} ms`);
  const collector = new Collector(progress, options);
  try {
    const exit = await boot(options, kernel, undefined, run.disk, collector, progress);
    return collector.finish(run.image, exit, Date.now() - started, saveLog(options.logDir, name, collector.console));
  } finally {
    fs.rmSync(run.dir, { recursive: true, force: true });
  }
}

/**
 * Writes `base` and then each of `extras` into a new file in a new temporary
 * directory (the caller removes it), each followed by zeros up to a 4-byte
 * boundary: the kernel's unpacker skips zero padding between archives but
 * wants every cpio header aligned, including that of the state archive the
 * guest appends before each kexec. Returns the file's path.
 */
export function appendArchives(base: string, extras: readonly string[]): string {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-initrd-')), 'initrd.img');
  fs.copyFileSync(base, out);
  let length = fs.statSync(out).size;
  for (const extra of ['', ...extras]) {
    const bytes = extra === '' ? Buffer.alloc(0) : fs.readFileSync(extra);
    const padding = (4 - ((length + bytes.length) % 4)) % 4;
    fs.appendFileSync(out, Buffer.concat([bytes, Buffer.alloc(padding)]));
    length += bytes.length + padding;
  }
  return out;
}

/** How QEMU ended. */
interface Exit {
  readonly code: number | null;
  readonly timedOut: boolean;
  readonly stderr: string;
}

function qemuArgs(options: RunOptions, kernel: string, initrd: string | undefined, disk: string | undefined, resultsFile: string): string[] {
  const firstStage = options.stageParams?.[0];
  const systemd = options.systemdImage !== undefined;
  const cmdline = [...BASE_CMDLINE, ...(systemd ? SYSTEMD_CMDLINE : []), ...(options.cmdline ? [options.cmdline] : []), ...(firstStage ? [firstStage] : []), `${STAGE_PARAM}=1`].join(' ');
  return [
    '-accel', options.accel ?? process.env['LIVEUPDATE_QEMU_ACCEL'] ?? 'tcg',
    '-machine', 'pc',
    '-m', options.memory ?? '3G',
    '-smp', String(options.cpus ?? 2),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    // ttyS0: the console, on QEMU's stdout; ttyS1: result records, into a file.
    '-chardev', 'stdio,id=console,signal=off',
    '-serial', 'chardev:console',
    '-chardev', `file,id=results,path=${resultsFile}`,
    '-serial', 'chardev:results',
    '-kernel', kernel,
    ...(initrd === undefined ? [] : ['-initrd', initrd]),
    '-append', cmdline,
    // The system disk stays attached across the kexecs: every kernel mounts it
    // again. The systemd image's root filesystem is the run's own copy, written to.
    ...(disk === undefined ? [] : ['-drive', `file=${disk},format=raw,if=virtio,${systemd ? 'cache=unsafe' : 'readonly=on'}`]),
    ...(options.qemuArgs ?? []),
  ];
}

function boot(options: RunOptions, kernel: string, initrd: string | undefined, disk: string | undefined, collector: Collector, progress: (line: string) => void): Promise<Exit> {
  const qemu = qemuBinary(options);
  progress(`booting ${path.basename(path.dirname(kernel))}/${path.basename(kernel)} with ${qemu}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-vm-'));
  const resultsFile = path.join(dir, 'results');
  fs.writeFileSync(resultsFile, '');
  const results = followFile(resultsFile, (chunk) => collector.resultData(chunk));
  return new Promise<Exit>((resolve, reject) => {
    const child = spawn(qemu, qemuArgs(options, kernel, initrd, disk, resultsFile), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let timedOut = false;
    let grace: NodeJS.Timeout | undefined;
    const timeoutMs = options.timeoutMs ?? 300_000;
    const timer = setTimeout(() => {
      timedOut = true;
      progress(`timed out after ${timeoutMs / 1000} s: killing QEMU`);
      child.kill('SIGKILL');
    }, timeoutMs);
    // Records arrive through a file QEMU writes (a pipe would need a FIFO that
    // could block either side if the other never opens it): followed as it grows.
    const poll = setInterval(() => {
      results.read();
      // The guest powered off: QEMU should exit by itself; make sure it does.
      if (collector.ended && grace === undefined) grace = setTimeout(() => child.kill('SIGKILL'), EXIT_GRACE_MS);
    }, RESULTS_POLL_MS);
    // QEMU must not outlive this process (a test runner killing its worker, say), nor its caller's wish.
    const killOnExit = (): void => void child.kill('SIGKILL');
    process.once('exit', killOnExit);
    options.signal?.addEventListener('abort', killOnExit, { once: true });
    if (options.signal?.aborted === true) killOnExit();
    let cleaned = false;
    // A failed spawn emits both 'error' and 'close'.
    const cleanup = (): void => {
      if (cleaned) return;
      cleaned = true;
      process.removeListener('exit', killOnExit);
      options.signal?.removeEventListener('abort', killOnExit);
      clearTimeout(timer);
      clearInterval(poll);
      if (grace !== undefined) clearTimeout(grace);
      results.close();
      fs.rmSync(dir, { recursive: true, force: true });
    };
    child.stdout?.on('data', (chunk: Buffer) => collector.consoleData(chunk));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', (error: NodeJS.ErrnoException) => {
      cleanup();
      if (error.code === 'ENOENT') {
        reject(new Error(`${qemu} not found: install QEMU (apt-get install qemu-system-x86) or set LIVEUPDATE_QEMU`));
      } else {
        reject(error);
      }
    });
    child.on('close', (code) => {
      cleanup();
      resolve({ code, timedOut, stderr });
    });
  });
}

/** A file followed as it grows: {@link followFile}. */
export interface FollowedFile {
  /** Hands on whatever was appended since the last read. */
  read(): void;
  /** Reads the rest, then stops following. */
  close(): void;
}

/**
 * Follows `file` as it grows: `onData` gets each appended chunk as soon as
 * the kernel says the file changed (inotify), so that what it carries is
 * stamped within a millisecond of its arrival, not at the next poll. Where
 * the file cannot be watched the caller's polling `read()` still gets it all.
 * @internal
 */
export function followFile(file: string, onData: (chunk: Buffer) => void): FollowedFile {
  const fd = fs.openSync(file, 'r');
  const buffer = Buffer.allocUnsafe(64 * 1024);
  let offset = 0;
  let closed = false;
  const read = (): void => {
    if (closed) return;
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, buffer.length, offset);
      if (n === 0) return;
      offset += n;
      onData(Buffer.from(buffer.subarray(0, n)));
    }
  };
  let watcher: fs.FSWatcher | undefined;
  try {
    watcher = fs.watch(file, { persistent: false }, read);
    watcher.on('error', () => watcher?.close());
  } catch {
    watcher = undefined;
  }
  return {
    read,
    close: () => {
      read();
      closed = true;
      watcher?.close();
      fs.closeSync(fd);
    },
  };
}

/**
 * Accumulates console text and records as they arrive, each line stamped
 * with the host's monotonic clock (ms since the collector was made, just
 * before QEMU starts) when the chunk that completed it was read.
 * @internal
 */
export class Collector {
  console = '';
  readonly records: GuestRecord[] = [];
  ended = false;
  readonly #origin = performance.now();
  readonly #progress: (line: string) => void;
  readonly #reached = new Map<number, number>();
  readonly #consoleLines: StampedLine[] = [];
  readonly #stampedRecords: StampedRecord[] = [];
  #consoleLine = '';
  #resultLine = '';
  // One per stream: a character whose UTF-8 bytes two reads split stays whole.
  readonly #consoleText = new StringDecoder('utf8');
  readonly #resultText = new StringDecoder('utf8');
  readonly #onRecord: ((record: GuestRecord) => void) | undefined;
  readonly #onConsoleLine: ((line: string) => void) | undefined;

  constructor(progress: (line: string) => void, listeners: Pick<RunOptions, 'onRecord' | 'onConsoleLine'>) {
    this.#progress = progress;
    this.#onRecord = listeners.onRecord;
    this.#onConsoleLine = listeners.onConsoleLine;
  }

  consoleData(chunk: Buffer): void {
    const atMs = this.#now();
    const text = this.#consoleText.write(chunk);
    this.console += text;
    // Records fall back to the console when the guest has no second port.
    this.#consoleLine = this.#lines(this.#consoleLine + text, (line) => {
      this.#consoleLines.push({ atMs, text: line });
      this.#onConsoleLine?.(line);
      if (line.startsWith('@@LU ')) this.#record(line, atMs);
    });
  }

  resultData(chunk: Buffer): void {
    const atMs = this.#now();
    this.#resultLine = this.#lines(this.#resultLine + this.#resultText.write(chunk), (line) => this.#record(line, atMs));
  }

  finish(image: GuestImage, exit: Exit, elapsedMs: number, logFile: string | undefined): VmRun {
    if (this.#resultLine !== '') this.#record(this.#resultLine, this.#now());
    const consoleText = this.console + (exit.stderr === '' ? '' : `\n[qemu stderr]\n${exit.stderr}`);
    const arrivals = { console: this.#consoleLines, records: this.#stampedRecords };
    const run = assembleRun({ records: this.records, reached: this.#reached, console: consoleText, arrivals, exit, image, elapsedMs, logFile }, undefined);
    this.#progress(run.ok ? `passed in ${(elapsedMs / 1000).toFixed(1)} s` : `FAILED: ${run.reason}`);
    return run;
  }

  #lines(buffered: string, each: (line: string) => void): string {
    const parts = buffered.split('\n');
    const rest = parts.pop() ?? '';
    for (const part of parts) each(part.replace(/\r/g, ''));
    return rest;
  }

  #now(): number {
    return performance.now() - this.#origin;
  }

  #record(line: string, atMs: number): void {
    const record = parseRecord(line);
    if (record === undefined) return;
    this.records.push(record);
    this.#stampedRecords.push({ atMs, record });
    if (!this.#reached.has(record.stage)) this.#reached.set(record.stage, Math.round(atMs));
    this.#announce(record);
    this.#onRecord?.(record);
  }

  #announce(r: GuestRecord): void {
    if (r.t === 'boot') this.#progress(`stage ${r.stage}/${r.stages}: ${r.release} up, runner started at kernel uptime ${(r.uptimeMs / 1000).toFixed(1)} s, ${r.cases.length} case(s)`);
    if (r.t === 'case' && !r.ok) this.#progress(`stage ${r.stage}: case ${r.case} FAILED${r.error ? `: ${r.error.name}: ${r.error.message}` : r.skipped ? ` (${r.skipped})` : ''}`);
    if (r.t === 'kexec') this.#progress(`stage ${r.stage}: kexec into stage ${r.next} (initrd ${mb(r.initrdBytes)} written in ${r.writeMs} ms, loaded in ${r.ms - r.writeMs} ms)`);
    if (r.t === 'fatal') this.#progress(`stage ${r.stage}: fatal ${r.error.name}: ${r.error.message}`);
    if (r.t === 'end') {
      this.ended = true;
      this.#progress(`stage ${r.stage}: guest finished (${r.ok ? 'all cases passed' : 'some cases failed'}), powering off`);
    }
  }
}

/** Everything collected from one boot. */
interface RunData {
  readonly records: readonly GuestRecord[];
  readonly reached: ReadonlyMap<number, number>;
  readonly console: string;
  readonly arrivals: Arrivals;
  readonly exit: Exit;
  readonly image: GuestImage;
  readonly elapsedMs: number;
  readonly logFile: string | undefined;
}

/** The run as seen through the cases of `scenarios` (all cases when undefined). */
function assembleRun(data: RunData, scenarios: readonly string[] | undefined): VmRun {
  const mine = (name: string): boolean => scenarios === undefined || scenarios.some((s) => name.startsWith(`${s}/`));
  const records = data.records.filter((r) => !('case' in r) || mine(r.case));
  const boot = records.find((r) => r.t === 'boot');
  const stageCount = boot?.t === 'boot' ? viewStages(boot, mine) : 0;
  // Later stages ran only for other scenarios' cases.
  const stages = buildStages(records, data.reached).filter((s) => stageCount === 0 || s.stage <= stageCount);
  // A view of a scenario that reported nothing must not pass by having no failures.
  const silent = (scenarios ?? []).filter((s) => !records.some((r) => r.t === 'case' && r.case.startsWith(`${s}/`)));
  const failure = failureReason(records, stages, stageCount, data.exit);
  const reason = failure === 'ok' && silent.length > 0 ? `no case of scenario(s) ${silent.join(', ')} reported a result` : failure;
  const fatal = records.some((r) => r.t === 'fatal');
  const ended = records.some((r) => r.t === 'end');
  return {
    ok: reason === 'ok',
    completed: !fatal && ended && !data.exit.timedOut && data.exit.code === 0 && stages.length === stageCount,
    reason,
    stageCount,
    stages,
    records,
    console: data.console,
    arrivals: data.arrivals,
    elapsedMs: data.elapsedMs,
    timedOut: data.exit.timedOut,
    exitCode: data.exit.code,
    image: data.image,
    logFile: data.logFile,
    result: (caseName, stage) => findResult(stages, caseName, stage),
    report: () => failureReport(reason, stages, data.console, data.logFile),
    only: (names) => assembleRun(data, names),
  };
}

/** How many stages the boot's cases that `mine` selects have (the boot's count when it selects all). */
function viewStages(boot: Extract<GuestRecord, { t: 'boot' }>, mine: (name: string) => boolean): number {
  let count = 0;
  boot.cases.forEach((name, i) => {
    if (mine(name)) count = Math.max(count, boot.caseStages[i] ?? boot.stages);
  });
  return count === 0 ? boot.stages : count;
}

function buildStages(records: readonly GuestRecord[], reached: ReadonlyMap<number, number>): StageResult[] {
  const stages = new Map<number, { release: string; uptimeMs: number; cases: Record<string, CaseResult> }>();
  const checks = new Map<string, CheckRecord[]>();
  const reports = new Map<string, Record<string, JsonValue>>();
  for (const r of records) {
    if (r.t === 'boot') stages.set(r.stage, { release: r.release, uptimeMs: r.uptimeMs, cases: {} });
    const key = 'case' in r ? `${r.stage}\0${r.case}` : '';
    if (r.t === 'check') checks.set(key, [...(checks.get(key) ?? []), r]);
    if (r.t === 'report') reports.set(key, { ...(reports.get(key) ?? {}), [r.name]: r.value });
    if (r.t === 'case') {
      const stage = stages.get(r.stage);
      if (stage === undefined) continue;
      stage.cases[r.case] = {
        case: r.case,
        stage: r.stage,
        ok: r.ok,
        ms: r.ms,
        value: r.value,
        error: r.error,
        skipped: r.skipped,
        checks: checks.get(key) ?? [],
        reports: reports.get(key) ?? {},
      };
    }
  }
  return [...stages].sort(([a], [b]) => a - b).map(([stage, s]) => ({ stage, reachedAtMs: reached.get(stage) ?? 0, ...s }));
}

function failureReason(records: readonly GuestRecord[], stages: readonly StageResult[], stageCount: number, exit: Exit): string {
  const fatal = records.find((r) => r.t === 'fatal');
  if (fatal?.t === 'fatal') return `stage ${fatal.stage}: the guest runner failed: ${fatal.error.name}: ${fatal.error.message}`;
  if (exit.timedOut) return `timed out in stage ${stages.length === 0 ? 'boot' : String(stages.at(-1)?.stage)} (${lastStarted(records)})`;
  const failed = stages.flatMap((s) => Object.values(s.cases)).filter((c) => !c.ok);
  const end = records.find((r) => r.t === 'end');
  if (end === undefined) {
    const where = stages.length === 0 ? 'before the guest runner started' : `in stage ${String(stages.at(-1)?.stage)} of ${stageCount}`;
    return `the guest stopped ${where} without finishing (${lastStarted(records)}); QEMU exited with ${String(exit.code)}: see the kernel log`;
  }
  if (failed.length > 0) return `${failed.length} case result(s) failed: ${failed.map((c) => `${c.case} (stage ${c.stage})`).join(', ')}`;
  if (stages.length !== stageCount) return `expected ${stageCount} stages, saw ${stages.length}`;
  if (exit.code !== 0) return `QEMU exited with ${String(exit.code)} after the guest finished`;
  return 'ok';
}

function lastStarted(records: readonly GuestRecord[]): string {
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i];
    if (r?.t === 'case-start') {
      const done = records.slice(i).some((x) => x.t === 'case' && x.case === r.case && x.stage === r.stage);
      return done ? `after case ${r.case}` : `while running case ${r.case}`;
    }
    if (r?.t === 'kexec') return `after the kexec from stage ${r.stage}`;
  }
  return records.length === 0 ? 'no result records at all' : 'before any case';
}

function findResult(stages: readonly StageResult[], caseName: string, stage?: number): CaseResult | undefined {
  if (stage !== undefined) return stages.find((s) => s.stage === stage)?.cases[caseName];
  for (let i = stages.length - 1; i >= 0; i--) {
    const hit = stages[i]?.cases[caseName];
    if (hit !== undefined) return hit;
  }
  return undefined;
}

function failureReport(reason: string, stages: readonly StageResult[], consoleText: string, logFile: string | undefined): string {
  const out = [`VM run failed: ${reason}`];
  for (const s of stages) {
    for (const c of Object.values(s.cases)) {
      if (c.ok) continue;
      out.push(`- stage ${s.stage} (${s.release}) case ${c.case}: ${c.skipped ?? (c.error ? `${c.error.name}${c.error.code ? ` [${c.error.code}]` : ''}: ${c.error.message}` : 'a check failed')}`);
      if (c.error?.stack) out.push(indent(c.error.stack));
      for (const check of c.checks.filter((k) => !k.ok)) out.push(`    check ${check.name} failed: ${JSON.stringify(check.detail ?? null)}`);
    }
  }
  const lines = consoleText.split('\n').map((l) => l.replace(/\r/g, ''));
  const guest = lines.filter((l) => !KERNEL_LINE.test(l) && l.trim() !== '');
  const kernel = lines.filter((l) => KERNEL_LINE.test(l));
  out.push('', '--- guest output (last 60 lines) ---', ...guest.slice(-60));
  out.push('', '--- kernel log (last 60 lines) ---', ...kernel.slice(-60));
  if (logFile !== undefined) out.push('', `full console log: ${logFile}`);
  return out.join('\n');
}

function saveLog(dir: string | undefined, name: string, text: string): string | undefined {
  if (dir === undefined) return undefined;
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name.replace(/[^\w.-]+/g, '_')}.console.log`);
  fs.writeFileSync(file, text);
  return file;
}

function progressPrinter(name: string, started: number, sink: RunOptions['onProgress']): (line: string) => void {
  if (sink === false) return () => {};
  const write = sink ?? ((line: string) => process.stderr.write(`${line}\n`));
  return (line) => write(`[vm ${name} ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
}

function indent(text: string): string {
  return text.split('\n').map((l) => `      ${l}`).join('\n');
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
