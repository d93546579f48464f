/**
 * The baseline of the VMM downtime: the same counter guest restarted cold
 * across the kexec (the systemd guest image, two stages). Stage 1: the
 * agent starts (with no client it kexecs at once), QEMU boots the counter
 * guest on plain RAM; the jump kills QEMU (the guest's state is lost), then
 * `liveupdate update`. Stage 2: QEMU boots the guest again at once, which
 * starts counting from its boot. Steps go to the host as `step` reports
 * (`at`: this kernel's wall clock); the stop, made during the update, is
 * also written to the disk and reported again by stage 2 as `step-before`,
 * as the resumed path's steps are (../demo/vmm-qemu.ts reads both).
 * @internal
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { AgentProcess } from '../harness/agent.js';
import { runCli } from '../harness/cli.js';
import { SOCKET } from '../demo/scenario.js';
import { AGENT_ARGS, mibFromCmdline, TB_SIZE_MIB, type Step } from '../demo/vmm-qemu-scenario.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import { COUNTER_GUEST } from '../vm/vmm-qemu.js';

/** The case whose stage 2 value is the cold guest's first lines. */
export const VMM_COLD_CASE = 'vmm-cold/guest-restarted';
const STOP_LOG = '/var/lib/lu/vmm-cold-stop.json';
const LINE_WAIT_MS = 240_000;
const UPDATE_BOUND_MS = 240_000;

/** QEMU on the counter guest, as the example starts it but on plain RAM and without QMP; its serial lines as they come. */
class ColdGuest {
  readonly lines: string[] = [];
  readonly #child: ChildProcess;
  readonly #waiters: Array<() => void> = [];

  constructor(mib: number, onLine: (line: string) => void) {
    const args = ['-nodefaults', '-no-user-config', '-display', 'none', '-m', `${mib}M`, '-accel', `tcg,tb-size=${TB_SIZE_MIB}`, '-chardev', 'stdio,id=serial,signal=off', '-serial', 'chardev:serial', '-kernel', COUNTER_GUEST];
    this.#child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: this.#child.stdout! }).on('line', (raw) => {
      const line = raw.replace(/\r$/, '');
      this.lines.push(line);
      onLine(line);
      this.#waiters.splice(0).forEach((wake) => wake());
    });
    this.#child.on('exit', () => this.#waiters.splice(0).forEach((wake) => wake()));
  }

  /** Waits until the guest has printed `count` lines. */
  async printed(count: number): Promise<string[]> {
    const deadline = Date.now() + LINE_WAIT_MS;
    while (this.lines.length < count) {
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) throw new Error(`QEMU exited (${String(this.#child.exitCode ?? this.#child.signalCode)}) after ${this.lines.length} line(s)`);
      if (Date.now() > deadline) throw new Error(`the guest printed ${this.lines.length} line(s) in ${LINE_WAIT_MS} ms`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return this.lines.slice(0, count);
  }

  /** SIGKILL, and its end: a VM that is not preserved is lost at the stop. */
  kill(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return Promise.resolve();
    const gone = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.kill('SIGKILL');
    return gone;
  }
}

function step(ctx: StageContext, name: string, fields: Record<string, JsonValue> = {}): Step {
  const s: Step = { step: name, at: Date.now(), ...fields };
  ctx.report('step', s);
  return s;
}

async function beforeUpdate(ctx: StageContext): Promise<JsonValue> {
  const mib = mibFromCmdline();
  await AgentProcess.start({ socket: SOCKET, args: AGENT_ARGS });
  step(ctx, 'qemu-starting');
  const guest = new ColdGuest(mib, (line) => step(ctx, 'serial', { line }));
  await guest.printed(3);
  fs.mkdirSync(path.dirname(STOP_LOG), { recursive: true });
  ctx.jumpWith(async (next) => {
    await guest.kill();
    const stopped = step(ctx, 'stopped');
    fs.writeFileSync(STOP_LOG, JSON.stringify(stopped));
    const fd = fs.openSync(STOP_LOG, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const update = await runCli(['update', '--socket', SOCKET, '--kernel', next.kernel, ...(next.initrd === '' ? [] : ['--initrd', next.initrd]), '--cmdline', next.cmdline, '--timeout', '60'], { timeoutMs: UPDATE_BOUND_MS });
    throw new Error(`liveupdate update exited ${String(update.status ?? update.signal)} without a kexec: ${update.stderr}`);
  });
  return { mib };
}

async function afterUpdate(ctx: StageContext): Promise<JsonValue> {
  const { mib } = ctx.previous as { mib: number };
  step(ctx, 'qemu-started');
  let first: Step | undefined;
  const guest = new ColdGuest(mib, (line) => {
    const s = step(ctx, 'serial', { line });
    if (first === undefined) first = s;
  });
  const lines = await guest.printed(3);
  ctx.report('step', { ...first!, step: 'guest-running' });
  await guest.kill();
  ctx.report('step-before', JSON.parse(fs.readFileSync(STOP_LOG, 'utf8')) as JsonValue);
  ctx.check('the cold guest started again from its boot', lines.some((l) => l.startsWith('counter-guest: boot')), lines);
  return { mib, lines };
}

/** @internal */
export default defineScenario('vmm-cold', [defineCase('guest-restarted', [beforeUpdate, afterUpdate])]);
