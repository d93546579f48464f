/**
 * The demo's guest side, a two-stage scenario. Stage 1: the agent starts,
 * two VMM-like clients (uids 1001 and 1002) fill and preserve their guest
 * memory and say ready, then `liveupdate update` kexecs into the same
 * kernel. Stage 2: the agent starts again and reads its manifest, each
 * client claims its memory, checks it byte for byte and resumes its
 * counter. Progress goes to the host as `say` reports as it happens; the
 * stage 2 value is the summary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { AgentClient } from 'liveupdate';
import { AgentProcess } from '../harness/agent.js';
import { runCli } from '../harness/cli.js';
import { reportClockSamples } from '../vm/clock.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import { SESSION, type VmmEvent } from './vmm.js';

/** The kernel parameter that carries the memory size per VM (MiB) into both stages. */
export const MIB_PARAM = 'lu.demo_mib';
/** The two VMs: a name and the uid its VMM runs as. */
export const VMS = [
  { vm: 'alice', uid: 1001 },
  { vm: 'bob', uid: 1002 },
] as const;
/** The agent's socket (also where the shipped units put it). */
export const SOCKET = '/run/liveupdate/agent.sock';
const POLICY = '/tmp/demo-policy.json';
const VMM = path.join(__dirname, 'vmm.js');
/** How long `liveupdate update` may take before the kexec: its own --timeout of 60 s for the clients, and the load and freeze. */
const UPDATE_BOUND_MS = 180_000;

/** What stage 1 hands stage 2: each VM's counter when it said ready. */
export interface Before {
  mib: number;
  readyCounters: Record<string, string>;
}

/**
 * What the demo reports at the end (stage 2's value). The instants are the
 * agent's, on the guest wall clock of the kernel that read them: the old
 * kernel's for `frozenAt`, the new one's for the others. Each kernel set its
 * wall clock from the RTC, to a second: only the host relates them (blackout.ts).
 */
export interface DemoSummary {
  mib: number;
  kexecCount: number;
  /** The agent sealed its manifest, just before the kexec (old kernel's wall clock, ms). */
  frozenAt: number | null;
  /** The agent opened /dev/liveupdate in the new kernel (new kernel's wall clock, ms). */
  firstOpenAt: number | null;
  /** Per VM: the agent handed its session back (new kernel's wall clock, ms). */
  claimedAt: Record<string, number | null>;
  /** Per VM: the counter when it said ready, when the kernel went away, and after resuming. */
  counters: Record<string, { ready: string; stopped: string; resumed: string }>;
}

/** The memory size per VM from the kernel command line. */
export function mibFromCmdline(): number {
  const match = new RegExp(`(?:^|\\s)${MIB_PARAM.replace('.', '\\.')}=(\\d+)(?:\\s|$)`).exec(fs.readFileSync('/proc/cmdline', 'utf8'));
  if (match?.[1] === undefined) throw new Error(`${MIB_PARAM}=N is missing from the kernel command line`);
  return Number(match[1]);
}

/** `liveupdate agent` as its own process, serving the two VMs' users; resolves once it listens. */
function startAgent(): Promise<AgentProcess> {
  fs.writeFileSync(POLICY, JSON.stringify({ connect: { users: VMS.map((v) => v.uid) } }));
  return AgentProcess.start({ socket: SOCKET, policy: POLICY });
}

/** A VMM client as the scenario follows it: its VM, the events it says, its end. */
export interface VmmView {
  readonly vm: string;
  /** The first event of a kind; throws if the client failed or ended without saying it. */
  until<K extends VmmEvent['event']>(kind: K): Promise<Extract<VmmEvent, { event: K }>>;
  /** Resolves to the exit code once the client is gone. */
  exited(): Promise<number | null>;
}

/** A VMM client process and the events it has said so far. */
class Vmm implements VmmView {
  readonly events: VmmEvent[] = [];
  readonly #child: ChildProcess;
  readonly #waiters: Array<() => void> = [];

  constructor(mode: 'before' | 'after', readonly vm: string, uid: number, mib: number, onEvent: (vmm: Vmm, event: VmmEvent) => void) {
    this.#child = spawn(process.execPath, [VMM, mode, vm, String(mib), SOCKET], { uid, gid: uid, stdio: ['ignore', 'pipe', 'inherit'], env: { HOME: '/tmp' } });
    createInterface({ input: this.#child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as VmmEvent;
      this.events.push(event);
      onEvent(this, event);
      this.#waiters.splice(0).forEach((wake) => wake());
    });
    this.#child.on('exit', () => this.#waiters.splice(0).forEach((wake) => wake()));
  }

  /** The first event of a kind; throws if the client failed or exited without saying it. */
  async until<K extends VmmEvent['event']>(kind: K): Promise<Extract<VmmEvent, { event: K }>> {
    for (;;) {
      const found = this.events.find((e) => e.event === kind || e.event === 'failed');
      if (found?.event === 'failed') throw new Error(`${this.vm}'s VMM failed: ${found.message}`);
      if (found !== undefined) return found as Extract<VmmEvent, { event: K }>;
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) throw new Error(`${this.vm}'s VMM exited (${String(this.#child.exitCode ?? this.#child.signalCode)}) before '${kind}'`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Resolves to the exit code once the process is gone (after it released its session, in stage 2). */
  exited(): Promise<number | null> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return Promise.resolve(this.#child.exitCode);
    return new Promise((resolve) => this.#child.once('exit', (code) => resolve(code)));
  }
}

const mibs = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

/** Each client event as a progress line for the host. */
export function describe(vm: string, e: VmmEvent): string {
  switch (e.event) {
    case 'filled': return `${vm}: guest memory filled with ${vm}'s pattern in ${secs(e.ms)}`;
    case 'ready': return `${vm}: preserved as session ${e.kernelName} (${e.preserveMs} ms), said ready; counter running, at ${e.counter}`;
    case 'claimed': return `${vm}: claimed ${e.kernelName} back (${mibs(e.bytes)}, metadata ${JSON.stringify(e.metadata)}) at kernel uptime ${secs(e.uptimeMs)}`;
    case 'checked': return `${vm}: counter stopped at ${e.counter}${e.counterIntact ? '' : ' (TORN)'}; ${e.firstMismatch < 0 ? `every other byte matches the pattern (${secs(e.ms)})` : `MISMATCH at byte ${e.firstMismatch} (${e.badChunks} MiB differ)`}`;
    case 'resumed': return `${vm}: counter resumed from ${e.from}, now ${e.now}`;
    case 'failed': return `${vm}: FAILED: ${e.message}`;
  }
}

/** Relays each client event to the host as a progress line. */
export function relay(ctx: StageContext): (vmm: VmmView, event: VmmEvent) => void {
  return (vmm, event) => ctx.report('say', describe(vmm.vm, event));
}

/** Stage 1 once the VMMs run: both ready in their own sessions, then the jump through `liveupdate update`. */
export async function readyThenUpdate(ctx: StageContext, mib: number, vmms: readonly VmmView[]): Promise<JsonValue> {
  const ready = await Promise.all(vmms.map((v) => v.until('ready')));
  ctx.equal('each VMM preserved its memory in its own session', ready.map((r) => r.kernelName), VMS.map((v) => `u${v.uid}.${SESSION}`));
  // Before the jump: the host relates this kernel's wall clock (the manifest's frozenAt) to its own.
  await reportClockSamples(ctx.report);
  ctx.jumpWith(async (next) => {
    // Under systemd (no initrd: the guest boots from its disk) update exits 0 once systemd has the kexec, or is stopped with everything else on the way to it.
    const systemd = next.initrd === '';
    const run = await runCli(['update', '--socket', SOCKET, '--kernel', next.kernel, ...(systemd ? [] : ['--initrd', next.initrd]), '--cmdline', next.cmdline, '--timeout', '60'], { timeoutMs: UPDATE_BOUND_MS });
    if (systemd && (run.status === 0 || run.signal !== null)) return;
    throw new Error(`liveupdate update exited ${String(run.status ?? run.signal)} without a kexec: ${run.stderr}`);
  });
  const before: Before = { mib, readyCounters: Object.fromEntries(ready.map((r, i) => [VMS[i]!.vm, r.counter])) };
  return before as unknown as JsonValue;
}

async function beforeUpdate(ctx: StageContext): Promise<JsonValue> {
  const mib = mibFromCmdline();
  await startAgent();
  ctx.report('say', `agent: listening on ${SOCKET}; starting 2 VMMs (uids ${VMS.map((v) => v.uid).join(', ')}), ${mib} MiB of guest memory each`);
  const vmms = VMS.map(({ vm, uid }) => new Vmm('before', vm, uid, mib, relay(ctx)));
  return readyThenUpdate(ctx, mib, vmms);
}

/** Stage 2's account, for the agent's owner: what it read from its manifest. */
export async function manifestRead(ctx: StageContext): Promise<AgentClient> {
  const root = await AgentClient.connect({ socket: SOCKET });
  const report = await root.sessions();
  const carried = report.sessions.map((s) => s.kernelName).sort();
  // On a systemd host the clients' units may have claimed before this asks: they start once the agent is ready.
  const waiting = report.sessions.filter((s) => s.state === 'waiting').length;
  const still = waiting === carried.length ? 'all' : `${waiting} of ${carried.length}`;
  ctx.report('say', `agent: manifest read (kexec #${report.kexecCount}): ${carried.join(', ')} carried over, ${still} waiting to be claimed`);
  return root;
}

/** Stage 2 once the VMMs run again: each claim checked byte for byte, the counters, the blackout, every session released. */
export async function checkClaims(ctx: StageContext, before: Before, root: AgentClient, vmms: readonly VmmView[]): Promise<DemoSummary> {
  const counters: DemoSummary['counters'] = {};
  for (const vmm of vmms) {
    const claimed = await vmm.until('claimed');
    const checked = await vmm.until('checked');
    const resumed = await vmm.until('resumed');
    const ready = BigInt(before.readyCounters[vmm.vm] ?? '-1');
    ctx.equal(`${vmm.vm}: its own session, its whole memory`, [claimed.kernelName, claimed.bytes], [`u${VMS.find((v) => v.vm === vmm.vm)!.uid}.${SESSION}`, before.mib * 2 ** 20]);
    ctx.check(`${vmm.vm}: every byte as written`, checked.firstMismatch === -1, { firstMismatch: checked.firstMismatch, badChunks: checked.badChunks });
    ctx.check(`${vmm.vm}: the counter kept running after ready and survived intact`, checked.counterIntact && BigInt(checked.counter) >= ready, { ready: String(ready), stopped: checked.counter });
    ctx.check(`${vmm.vm}: the counter resumed where it stopped`, resumed.from === checked.counter && BigInt(resumed.now) > BigInt(resumed.from), resumed as unknown as JsonValue);
    ctx.equal(`${vmm.vm}: released its session and exited`, await vmm.exited(), 0);
    counters[vmm.vm] = { ready: String(ready), stopped: checked.counter, resumed: resumed.now };
  }
  const report = await root.sessions();
  await root.close();
  const claimedAt = Object.fromEntries(VMS.map(({ vm, uid }) => [vm, report.sessions.find((s) => s.kernelName === `u${uid}.${SESSION}`)?.claimedAt ?? null]));
  ctx.equal('every session was released', report.sessions.map((s) => s.state), VMS.map(() => 'finished'));
  await reportClockSamples(ctx.report);
  return { mib: before.mib, kexecCount: report.kexecCount, frozenAt: report.frozenAt, firstOpenAt: report.firstOpenAt, claimedAt, counters };
}

async function afterUpdate(ctx: StageContext): Promise<JsonValue> {
  const before = ctx.previous as unknown as Before;
  const agent = await startAgent();
  const root = await manifestRead(ctx);
  const vmms = VMS.map(({ vm, uid }) => new Vmm('after', vm, uid, before.mib, relay(ctx)));
  const summary = await checkClaims(ctx, before, root, vmms);
  ctx.equal('the agent stops on SIGTERM', await agent.stop(), 0);
  return summary as unknown as JsonValue;
}

/** @internal */
export default defineScenario('demo', [defineCase('guest-memory', [beforeUpdate, afterUpdate])]);
