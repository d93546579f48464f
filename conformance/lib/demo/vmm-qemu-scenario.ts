/**
 * A real VMM across a live update, the guest side (two stages, the systemd
 * guest image, whose Debian sid carries QEMU). Stage 1: the agent starts,
 * the QEMU VMM example (examples/qemu-vmm/, at /lu/qemu-vmm) boots the
 * counter guest under QEMU on a RAM memfd it preserves at once, and
 * subscribes to the agent's announcements; `liveupdate update` announces
 * `prepare`, the orchestrator stops the guest, saves the device state into
 * a second memfd, preserves it and says ready, and the agent kexecs.
 * Stage 2: the agent starts again, the orchestrator claims its session,
 * restores the guest into a new QEMU and checks it continues. Each of the
 * orchestrator's steps goes to the host as a `step` report as it happens;
 * those made during the update, when the runner no longer reports, are
 * also written to the disk (fsync'd), and stage 2 reports them as
 * `step-before`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { AgentClient } from 'liveupdate';
import { AgentProcess } from '../harness/agent.js';
import { runCli } from '../harness/cli.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import { COUNTER_GUEST, QEMU_VMM_DIR } from '../vm/vmm-qemu.js';

/** The kernel parameter that carries the guest's RAM (MiB) into both stages. */
export const VMM_MIB_PARAM = 'lu.vmm_mib';
/** The VM's name: its session's name at the agent. */
export const VM_NAME = 'counter-vm';
/** The case whose stage values the host reads. */
export const VMM_CASE = 'vmm-qemu/guest-resumed';
const SOCKET = '/run/liveupdate/agent.sock';
/**
 * The agent standalone, forced although systemd is PID 1: it holds the
 * device and makes the kexec itself, as the runner's child (systemd mode
 * wants the agent as a unit of its own: test/kernel/agent-systemd.test.ts).
 */
export const AGENT_ARGS = ['--mode', 'standalone', '--force'];
const MIB = 1 << 20;
/** QEMU inside this guest runs under TCG inside TCG: a small translation cache, and time. */
export const TB_SIZE_MIB = 16;
const STEP_WAIT_MS = 240_000;
/** Stage 1's steps, kept on the root filesystem across the kexec. */
const STEP_LOG = '/var/lib/lu/vmm-steps.jsonl';
const UPDATE_BOUND_MS = 240_000;

/** One step the orchestrator printed (`--json`). */
export interface Step {
  step: string;
  at: number;
  [field: string]: JsonValue;
}

/** What stage 1 hands stage 2. */
interface Started {
  mib: number;
}

/** What the orchestrator did before the kexec, from its steps (in stage 2's value). */
export interface BeforeUpdate {
  mib: number;
  qemu: string;
  method: string;
  countAtStop: number;
  stateBytes: number;
}

/** What stage 2 reports (its value). */
export interface AfterUpdate {
  before: BeforeUpdate;
  counterAtStop: number;
  counterAfterLoad: number;
  counterResumed: number;
  boots: number;
  /** Guest wall clock (ms) of the stop-side events the agent recorded in its manifest, stage 1's clock. */
  frozenAt: number | null;
  /** The agent's first open of /dev/liveupdate in this kernel (ms, this kernel's clock). */
  agentBackAt: number | null;
}

/** The guest RAM (MiB) from the kernel command line. */
export function mibFromCmdline(): number {
  const match = new RegExp(`(?:^|\\s)${VMM_MIB_PARAM.replace('.', '\\.')}=(\\d+)(?:\\s|$)`).exec(fs.readFileSync('/proc/cmdline', 'utf8'));
  if (match?.[1] === undefined) throw new Error(`${VMM_MIB_PARAM}=N is missing from the kernel command line`);
  return Number(match[1]);
}

/** The orchestrator as its own process, its steps collected as they come and relayed to the host. */
class Orchestrator {
  readonly steps: Step[] = [];
  readonly #child: ChildProcess;
  readonly #waiters: Array<() => void> = [];
  #stderr = '';

  constructor(ctx: StageContext, mib: number, log?: string) {
    const args = [`${QEMU_VMM_DIR}/main.js`, '--name', VM_NAME, '--guest', COUNTER_GUEST, '--ram-mib', String(mib), '--socket', SOCKET, '--accel', 'tcg', '--tb-size', String(TB_SIZE_MIB), '--json'];
    this.#child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.stderr!.on('data', (chunk: Buffer) => (this.#stderr = (this.#stderr + chunk.toString()).slice(-4096)));
    createInterface({ input: this.#child.stdout! }).on('line', (line) => {
      let step: Step;
      try {
        step = JSON.parse(line) as Step;
      } catch {
        step = { step: 'output', at: Date.now(), line };
      }
      this.steps.push(step);
      ctx.report('step', step);
      if (log !== undefined) appendDurably(log, `${JSON.stringify(step)}\n`);
      this.#wake();
    });
    this.#child.on('exit', () => this.#wake());
  }

  /** The first step named `name` (and matching `match`), waiting for it; throws if the orchestrator failed or exited first. */
  async until(name: string, match: (step: Step) => boolean = () => true): Promise<Step> {
    const deadline = Date.now() + STEP_WAIT_MS;
    for (;;) {
      const found = this.steps.find((s) => (s.step === name && match(s)) || s.step === 'failed');
      if (found?.step === 'failed') throw new Error(`the orchestrator failed: ${String(found['error'])} (${String(found['code'])}): ${String(found['message'])}`);
      if (found !== undefined) return found;
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) throw new Error(`the orchestrator exited (${String(this.#child.exitCode ?? this.#child.signalCode)}) before '${name}': ${this.#stderr}`);
      if (Date.now() > deadline) throw new Error(`no '${name}' from the orchestrator within ${STEP_WAIT_MS} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** SIGTERM, then its exit code. */
  async stop(): Promise<number | null> {
    const exited = new Promise<number | null>((resolve) => {
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) resolve(this.#child.exitCode);
      else this.#child.once('exit', (code) => resolve(code));
    });
    this.#child.kill('SIGTERM');
    return exited;
  }

  #wake(): void {
    this.#waiters.splice(0).forEach((wake) => wake());
  }
}

/** Appends to a file and waits until it is on the disk: the kexec that may follow does not unmount it. */
function appendDurably(file: string, text: string): void {
  const fd = fs.openSync(file, 'a');
  try {
    fs.writeSync(fd, text);
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The number a `count N` serial line printed. */
function printedCount(step: Step): number | undefined {
  const match = /^count (\d+)$/.exec(String(step['line'] ?? ''));
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/** QEMU processes still running in this guest. */
function qemuProcesses(): string[] {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qemu-system');
      } catch {
        return false;
      }
    });
}

/** SHA-256 of what the orchestrator wrote from 4 MiB to half the RAM, derived here from the example's documented fill (its VM name padded to 64 bytes). */
function expectedUntouchedSha256(mib: number): string {
  const pattern = `untouched RAM of ${VM_NAME} `;
  return createHash('sha256').update(Buffer.alloc((mib * MIB) / 2 - 4 * MIB, pattern + '.'.repeat(64 - pattern.length))).digest('hex');
}

async function beforeUpdate(ctx: StageContext): Promise<JsonValue> {
  const mib = mibFromCmdline();
  const version = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  ctx.check('QEMU is installed', version.status === 0, version.error?.message ?? version.stderr ?? null);
  ctx.report('say', `QEMU: ${version.stdout.split('\n')[0] ?? '?'}`);
  await AgentProcess.start({ socket: SOCKET, args: AGENT_ARGS });
  ctx.report('say', `agent: listening on ${SOCKET}; starting the orchestrator (${mib} MiB of guest RAM)`);
  fs.mkdirSync(path.dirname(STEP_LOG), { recursive: true });
  fs.rmSync(STEP_LOG, { force: true });
  const vmm = new Orchestrator(ctx, mib, STEP_LOG);
  await vmm.until('ram-preserved');
  await vmm.until('subscribed');
  // The guest prints a line each time its TSC's high word moves: two lines, and it is running for sure.
  const first = await vmm.until('serial', (s) => printedCount(s) !== undefined);
  await vmm.until('serial', (s) => (printedCount(s) ?? 0) > (printedCount(first) ?? 0));
  ctx.keep(vmm);
  // The agent announces the update to the orchestrator, which quiesces and says ready; then the agent kexecs.
  ctx.jumpWith(async (next) => {
    const update = await runCli(['update', '--socket', SOCKET, '--kernel', next.kernel, ...(next.initrd === '' ? [] : ['--initrd', next.initrd]), '--cmdline', next.cmdline, '--timeout', '60'], { timeoutMs: UPDATE_BOUND_MS });
    throw new Error(`liveupdate update exited ${String(update.status ?? update.signal)} without a kexec: ${update.stderr}`);
  });
  const started: Started = { mib };
  return started as unknown as JsonValue;
}

/** Stage 1's steps from the disk, reported again (those made during the update may be missing: the kexec can overtake their relay). */
function stepsBefore(ctx: StageContext): Step[] {
  const steps = fs.existsSync(STEP_LOG) ? fs.readFileSync(STEP_LOG, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Step) : [];
  for (const step of steps) if (step.step !== 'serial') ctx.report('step-before', step);
  return steps;
}

/** What the orchestrator did before the kexec: its first start's step, and the trailer it wrote at the stop (its `resumed` step). */
function beforeFrom(mib: number, steps: Step[], resumed: Step): BeforeUpdate {
  const running = steps.find((s) => s.step === 'guest-running');
  return {
    mib,
    qemu: String(running?.['qemu'] ?? '?'),
    method: String(running?.['method'] ?? '?'),
    countAtStop: Number(resumed['counterAtStop']),
    stateBytes: Number(resumed['stateBytes']),
  };
}

async function afterUpdate(ctx: StageContext): Promise<JsonValue> {
  const { mib } = ctx.previous as unknown as Started;
  const steps = stepsBefore(ctx);
  // The steps the update interrupted may not have reached the disk (the agent kexecs once it hears the ready):
  // those that did are the quiesce's first ones, in order, from the agent's prepare on.
  const quiesce = ['prepare', 'stopped', 'state-saved', 'qemu-ended', 'state-preserved', 'ready'];
  const seen = steps.map((s) => s.step).filter((name) => quiesce.includes(name));
  ctx.equal("the orchestrator quiesced on the agent's prepare, in order", seen, quiesce.slice(0, Math.max(1, seen.length)));
  ctx.report('say', 'agent: starting in the new kernel');
  const agent = await AgentProcess.start({ socket: SOCKET, args: AGENT_ARGS });
  ctx.report('agent-back', Date.now());
  const vmm = new Orchestrator(ctx, mib);
  const resumed = await vmm.until('resumed');
  const before = beforeFrom(mib, steps, resumed);
  ctx.check('the device state holds no RAM (under 1 MiB)', before.stateBytes > 0 && before.stateBytes < MIB, before.stateBytes);
  const loaded = await vmm.until('state-loaded');
  const verified = await vmm.until('ram-verified');
  await vmm.until('released');
  const firstLine = await vmm.until('serial');
  // Let it run a little: a resumed guest keeps counting and printing.
  const later = await vmm.until('serial', (s) => (printedCount(s) ?? 0) > Number(resumed['counter']));
  ctx.equal('the orchestrator ends on SIGTERM', await vmm.stop(), 0);

  ctx.equal('the guest resumed in the boot it stopped in (not started again)', resumed['boots'] ?? null, 1);
  ctx.equal('RAM after the load holds the counter where it stopped', loaded['counter'] ?? null, before.countAtStop);
  ctx.check('the counter continues past where it stopped', Number(resumed['counter']) > before.countAtStop, { stopped: before.countAtStop, resumed: resumed['counter'] ?? null });
  ctx.check('what the guest prints continues from the stop (no boot line)', !String(firstLine['line']).startsWith('counter-guest: boot') && (printedCount(later) ?? 0) > before.countAtStop, { first: firstLine['line'] ?? null, later: later['line'] ?? null });
  ctx.equal('the RAM the guest never touches is byte-identical', verified['untouchedSha256'] ?? null, expectedUntouchedSha256(before.mib));
  ctx.equal('no QEMU left running', qemuProcesses(), []);
  const root = await AgentClient.connect({ socket: SOCKET });
  const report = await root.sessions();
  await root.close();
  ctx.equal("the VM's session was finished and released", report.sessions.map((s) => [s.kernelName, s.state]), [[VM_NAME, 'finished']]);
  ctx.equal('the agent stops on SIGTERM', await agent.stop(), 0);
  const after: AfterUpdate = {
    before,
    counterAtStop: before.countAtStop,
    counterAfterLoad: Number(loaded['counter']),
    counterResumed: Number(resumed['counter']),
    boots: Number(resumed['boots']),
    frozenAt: report.frozenAt,
    agentBackAt: report.firstOpenAt ?? null,
  };
  return after as unknown as JsonValue;
}

/** @internal */
export default defineScenario('vmm-qemu', [defineCase('guest-resumed', [beforeUpdate, afterUpdate])]);
