/**
 * The guest runner: pid 1 of the test VM (started by /init). It mounts the
 * basic filesystems, finds its stage on the kernel command line, runs every
 * case's function for that stage, sends the results to the host as records,
 * then kexecs into the next stage through the package's own kexec API, or
 * powers the machine off after the last one.
 *
 * In the systemd guest image (systemd-image.ts) the same runner is a unit of
 * systemd (lu-runner.service, started once multi-user.target is reached):
 * systemd has mounted everything, the carried state waits on the root
 * filesystem, and the kexec is systemd's own: the runner loads the next
 * kernel, then asks for the orderly one with `systemctl kexec`.
 *
 * Anything thrown outside a case is fatal: it is reported and the machine
 * powers off. If even that fails, node exits, the kernel panics (init died),
 * and with `panic=-1` and QEMU's -no-reboot the VM ends: the host sees no
 * `end` record and reports the run as failed.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kexec } from 'liveupdate';
import { guest } from '../native.js';
import { writeNextInitrd } from './initramfs.js';
import {
  errorInfo,
  formatRecord,
  GUEST_MANIFEST,
  GUEST_RESULTS_TTY,
  GUEST_STATE,
  RETAINED_INITRD,
  STAGE_PARAM,
  type CarriedState,
  type GuestRecord,
  type JsonValue,
  type Manifest,
} from './protocol.js';
import { scenarioOf, stageCount, type Case, type NextStage, type StageContext } from './scenario.js';

const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
/** Where the next stage's initrd is written (tmpfs). */
const NEXT_INITRD = '/tmp/lu-next-initrd.img';

/** Where the runner under systemd keeps the carried state across the kexec (the root filesystem stays attached). */
const SYSTEMD_STATE = '/var/lib/lu/state.json';

/** What differs between the runner as pid 1 and the runner as a unit of systemd. */
interface Platform {
  /** Mounts what the runner needs. */
  readonly setUp: () => void;
  /** What the previous stage carried. */
  readonly readState: () => CarriedState;
  /** Into the next stage with `next` carried. */
  readonly jump: (r: StageRun, next: CarriedState) => Promise<never>;
}

/** A case with its full name. */
interface NamedCase {
  readonly name: string;
  readonly case: Case;
}

/** Everything a stage needs to know. */
interface StageRun {
  readonly stage: number;
  readonly stages: number;
  readonly manifest: Manifest;
  readonly cases: readonly NamedCase[];
  readonly state: CarriedState;
}

/** A case's own way into the next stage (StageContext.jumpWith), if one asked. */
let caseJump: ((next: NextStage) => Promise<void>) | undefined;
/** Objects cases asked to keep alive until the kexec. */
const kept: unknown[] = [];
let resultsFd = 1;
let currentStage = 0;

/** Entry point, called by /init. Never returns normally: it kexecs or powers off. */
export function main(): void {
  start({ setUp: mountBasics, readState: () => readStateFile(GUEST_STATE), jump });
}

/**
 * Entry point under systemd, called by /lu/runner.js (lu-runner.service).
 * Never returns normally: systemd kexecs, or the runner powers off.
 */
export function mainUnderSystemd(): void {
  start({ setUp: () => {}, readState: () => readStateFile(SYSTEMD_STATE), jump: jumpThroughSystemd });
}

function start(platform: Platform): void {
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  try {
    platform.setUp();
    resultsFd = openResults();
    run(platform).catch(fatal);
  } catch (error) {
    fatal(error);
  }
}

async function run(platform: Platform): Promise<void> {
  currentStage = stageFromCmdline(readText('/proc/cmdline'));
  const manifest = JSON.parse(readText(GUEST_MANIFEST)) as Manifest;
  guest.setrlimitNofile(manifest.nofile, manifest.nofile);
  const cases = loadCases(manifest.scenarios);
  const stages = stageCount(cases.map((c) => ({ name: c.name, cases: [c.case] })));
  const state = platform.readState();
  const r: StageRun = { stage: currentStage, stages, manifest, cases, state };
  emit({
    t: 'boot',
    stage: r.stage,
    stages,
    release: os.release(),
    uptimeMs: Math.round(os.uptime() * 1000),
    cases: cases.map((c) => c.name),
    caseStages: cases.map((c) => c.case.stages.length),
  });
  log(`stage ${r.stage}/${stages} on ${os.release()}: ${cases.length} case(s)`);
  const next = await runStage(r);
  if (r.stage < stages) await platform.jump(r, next);
  else finish(Object.keys(next.stopped).length === 0);
}

/** proc, sys, devtmpfs on /dev, tmpfs on /tmp; debugfs if the kernel has it. */
function mountBasics(): void {
  const mounts: [string, string, number, boolean][] = [
    ['proc', '/proc', MS_NOSUID | MS_NODEV | MS_NOEXEC, true],
    ['sysfs', '/sys', MS_NOSUID | MS_NODEV | MS_NOEXEC, true],
    ['devtmpfs', '/dev', MS_NOSUID, true],
    ['tmpfs', '/tmp', MS_NOSUID | MS_NODEV, true],
    ['debugfs', '/sys/kernel/debug', MS_NOSUID | MS_NODEV | MS_NOEXEC, false],
  ];
  for (const [fstype, target, flags, required] of mounts) {
    try {
      fs.mkdirSync(target, { recursive: true });
      guest.mount(fstype, target, fstype, flags, null);
    } catch (error) {
      if (required) throw error;
    }
  }
}

/** The second serial port if there is one, else stdout (the console). */
function openResults(): number {
  try {
    return fs.openSync(GUEST_RESULTS_TTY, fs.constants.O_WRONLY | fs.constants.O_NOCTTY);
  } catch {
    return 1;
  }
}

/** `lu.stage=N` from the kernel command line; 1 when absent. */
export function stageFromCmdline(cmdline: string): number {
  const match = new RegExp(`(?:^|\\s)${STAGE_PARAM.replace('.', '\\.')}=(\\d+)(?:\\s|$)`).exec(cmdline);
  return match?.[1] === undefined ? 1 : Number(match[1]);
}

/**
 * The command line for stage `next`: this one with `lu.stage` replaced, and
 * the parameters of one stage only (`stageParams`, index 0 = stage 1) those of `next`.
 */
export function nextCmdline(cmdline: string, next: number, stageParams: readonly string[] = []): string {
  const ofOneStage = new Set(stageParams.flatMap(splitWords));
  const words = splitWords(cmdline).filter((w) => !w.startsWith(`${STAGE_PARAM}=`) && !ofOneStage.has(w));
  return [...words, ...splitWords(stageParams[next - 1] ?? ''), `${STAGE_PARAM}=${next}`].join(' ');
}

function splitWords(text: string): string[] {
  return text.trim().split(/\s+/).filter((w) => w !== '');
}

function loadCases(modules: readonly string[]): NamedCase[] {
  const cases: NamedCase[] = [];
  for (const file of modules) {
    // Scenario paths are only known at run time, hence require().
    const scenario = scenarioOf(require(file), file);
    for (const c of scenario.cases) cases.push({ name: `${scenario.name}/${c.name}`, case: c });
  }
  return cases;
}

function readStateFile(file: string): CarriedState {
  if (!fs.existsSync(file)) return { values: {}, stopped: {} };
  return JSON.parse(readText(file)) as CarriedState;
}

/** Runs every case's function for this stage, in order; returns the state for the next. */
async function runStage(r: StageRun): Promise<CarriedState> {
  const values: Record<string, JsonValue> = {};
  const stopped: Record<string, string> = { ...r.state.stopped };
  for (const { name, case: c } of r.cases) {
    if (r.stage > c.stages.length) continue;
    const why = stopped[name];
    if (why !== undefined) {
      emit({ t: 'case', stage: r.stage, case: name, ok: false, ms: 0, skipped: why });
      continue;
    }
    const fn = c.stages[r.stage - 1];
    if (fn === null || fn === undefined) {
      const carried = r.state.values[name];
      if (carried !== undefined) values[name] = carried;
      continue;
    }
    const outcome = await runCase(r, name, fn);
    if (outcome.ok) values[name] = outcome.value;
    else stopped[name] = `failed in stage ${r.stage}`;
  }
  return { values, stopped };
}

async function runCase(
  r: StageRun,
  name: string,
  fn: NonNullable<Case['stages'][number]>,
): Promise<{ ok: boolean; value: JsonValue }> {
  emit({ t: 'case-start', stage: r.stage, case: name });
  let checksOk = true;
  const ctx = context(r, name, (ok) => {
    checksOk &&= ok;
  });
  const started = performance.now();
  try {
    const returned = await fn(ctx);
    // Round-trip now, so a value JSON cannot carry fails this case, not the run.
    const value = JSON.parse(JSON.stringify(returned ?? null)) as JsonValue;
    emit({ t: 'case', stage: r.stage, case: name, ok: checksOk, ms: elapsed(started), value });
    return { ok: checksOk, value };
  } catch (error) {
    emit({ t: 'case', stage: r.stage, case: name, ok: false, ms: elapsed(started), error: errorInfo(error) });
    log(`case ${name} failed in stage ${r.stage}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return { ok: false, value: null };
  }
}

function context(r: StageRun, name: string, onCheck: (ok: boolean) => void): StageContext {
  const kernelOf = (stage: number): string | undefined => {
    if (stage > r.stages) return undefined;
    return r.manifest.kernels[Math.min(stage, r.manifest.kernels.length) - 1];
  };
  const check = (checkName: string, ok: boolean, detail?: JsonValue): boolean => {
    onCheck(ok);
    emit({ t: 'check', stage: r.stage, case: name, name: checkName, ok, ...(detail === undefined ? {} : { detail: toJson(detail) }) });
    return ok;
  };
  return {
    stage: r.stage,
    stages: r.stages,
    caseName: name,
    previous: r.state.values[name],
    release: os.release(),
    kernel: kernelOf(r.stage) ?? '',
    nextKernel: kernelOf(r.stage + 1),
    check,
    equal: (checkName, actual, expected) => {
      const ok = JSON.stringify(actual ?? null) === JSON.stringify(expected ?? null);
      return check(checkName, ok, { actual: actual ?? null, expected: expected ?? null });
    },
    report: (reportName, value) => emit({ t: 'report', stage: r.stage, case: name, name: reportName, value: toJson(value) }),
    keep: (...values) => void kept.push(...values),
    jumpWith: (handler) => {
      caseJump = handler;
    },
  };
}

/** Writes the next stage's initrd (this one plus the new state) and kexecs into it with the package's own API. */
async function jump(r: StageRun, next: CarriedState): Promise<never> {
  const started = performance.now();
  const stage = r.stage + 1;
  const kernel = r.manifest.kernels[Math.min(stage, r.manifest.kernels.length) - 1];
  if (kernel === undefined) throw new Error('the manifest names no kernel');
  const initrdBytes = writeNextInitrd(RETAINED_INITRD, next, NEXT_INITRD);
  const writeMs = elapsed(started);
  const cmdline = nextCmdline(readText('/proc/cmdline'), stage, r.manifest.stageParams);
  if (caseJump !== undefined) {
    emit({ t: 'kexec', stage: r.stage, next: stage, kernel, initrdBytes, writeMs, ms: elapsed(started) });
    log(`a case makes the kexec into stage ${stage} (${kernel})`);
    closeResults();
    await caseJump({ kernel, initrd: NEXT_INITRD, cmdline });
    throw new Error(`the case's jump into stage ${stage} returned: no kexec happened`);
  }
  kexec.loadSync({ kernel, initrd: NEXT_INITRD, cmdline });
  fs.rmSync(NEXT_INITRD); // kexec_file_load copied it; free the tmpfs pages
  emit({ t: 'kexec', stage: r.stage, next: stage, kernel, initrdBytes, writeMs, ms: elapsed(started) });
  log(`kexec into stage ${stage} (${kernel})`);
  closeResults();
  kexec.executeSync();
}

/**
 * Under systemd: writes the carried state to the root filesystem, loads the
 * next kernel (no initrd: the root filesystem is the disk), and asks systemd
 * for the orderly kexec, which stops this unit with all the others. A case's
 * jumpWith does the last two itself (given an empty initrd) and may return
 * once systemd has the kexec job.
 */
async function jumpThroughSystemd(r: StageRun, next: CarriedState): Promise<never> {
  const started = performance.now();
  const stage = r.stage + 1;
  const kernel = r.manifest.kernels[Math.min(stage, r.manifest.kernels.length) - 1];
  if (kernel === undefined) throw new Error('the manifest names no kernel');
  fs.mkdirSync(path.dirname(SYSTEMD_STATE), { recursive: true });
  const fd = fs.openSync(SYSTEMD_STATE, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(next));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const writeMs = elapsed(started);
  const cmdline = nextCmdline(readText('/proc/cmdline'), stage, r.manifest.stageParams);
  if (caseJump !== undefined) {
    // The case's own way (the agent's `liveupdate update`): it loads the kernel and asks systemd for the kexec.
    emit({ t: 'kexec', stage: r.stage, next: stage, kernel, initrdBytes: 0, writeMs, ms: elapsed(started) });
    log(`a case makes the kexec into stage ${stage} (${kernel}) through systemd`);
    closeResults();
    await caseJump({ kernel, initrd: '', cmdline });
    return new Promise<never>(() => {});
  }
  kexec.loadSync({ kernel, cmdline });
  emit({ t: 'kexec', stage: r.stage, next: stage, kernel, initrdBytes: 0, writeMs, ms: elapsed(started) });
  log(`systemctl kexec into stage ${stage} (${kernel})`);
  closeResults();
  const result = spawnSync('systemctl', ['kexec'], { encoding: 'utf8', stdio: ['ignore', 'inherit', 'pipe'] });
  if (result.error !== undefined) throw result.error;
  if (result.status !== 0) throw new Error(`systemctl kexec failed (exit ${String(result.status)}): ${result.stderr.trim()}`);
  // systemd stops this unit on its way to the kexec.
  return new Promise<never>(() => {});
}

function finish(ok: boolean): never {
  emit({ t: 'end', stage: currentStage, ok });
  log(`done (${ok ? 'all cases passed' : 'some cases failed'}); powering off`);
  powerOff();
}

function fatal(error: unknown): never {
  try {
    emit({ t: 'fatal', stage: currentStage, error: errorInfo(error) });
    log(`fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  } finally {
    powerOff();
  }
}

function powerOff(): never {
  closeResults();
  try {
    guest.powerOff();
  } finally {
    // Power-off failed: exiting pid 1 panics the kernel, which ends the VM too.
    process.exit(1);
  }
}

/**
 * Closing the serial port waits until its output has left the UART, so the
 * last records are on the host before the kexec or power-off cuts the line.
 */
function closeResults(): void {
  if (resultsFd > 2) {
    try {
      fs.closeSync(resultsFd);
    } catch {
      // Nothing more to flush through a broken port.
    }
    resultsFd = 1;
  }
}

function emit(record: GuestRecord): void {
  const line = formatRecord(record);
  try {
    fs.writeSync(resultsFd, line);
  } catch {
    fs.writeSync(1, line); // the port failed: the host also reads records from the console
  }
}

/** Human-readable progress on the console. */
function log(text: string): void {
  try {
    fs.writeSync(1, `[lu-guest] ${text}\n`);
  } catch {
    // The console is gone; the records still carry everything.
  }
}

function toJson(value: unknown): JsonValue {
  try {
    return JSON.parse(JSON.stringify(value ?? null)) as JsonValue;
  } catch (error) {
    return `<not JSON: ${error instanceof Error ? error.message : String(error)}>`;
  }
}

function readText(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

function elapsed(since: number): number {
  return Math.round(performance.now() - since);
}
