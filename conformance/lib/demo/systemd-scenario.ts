/**
 * The demo on a systemd host (the systemd guest image, systemd as PID 1),
 * a two-stage scenario. Stage 1: the agent is installed from the package's
 * shipped units and runs in its systemd mode; the two VMM-like clients run
 * as units of their own uids (1001 and 1002), fill and preserve their guest
 * memory and say ready; `liveupdate update` loads the same kernel and asks
 * systemd for the orderly kexec (`systemctl kexec`: every unit stopped,
 * the agent's sessions parked in its fd store). Stage 2: systemd starts the
 * agent again, which takes its sessions back from `LISTEN_FDS`, and then,
 * as a host's VMM units would be, each client unit enabled in stage 1: it
 * claims its memory, checks it byte for byte and resumes its counter.
 * The checks and the summary are the demo's own (./scenario.ts), with the
 * instants that take the systemd path apart ({@link SystemdMarks}).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addUsers, AGENT_DEFAULTS, AGENT_UNIT, installAgent, startUnit, systemctl, unitJsonLines, unitLog, unitProperty } from '../harness/systemd.js';
import { CONSOLE_CLOCK_TEXT, SHUTDOWN_MARK_TEXT, type SystemdMarks } from './blackout.js';
import { clockSample } from '../vm/clock.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import { checkClaims, manifestRead, mibFromCmdline, readyThenUpdate, relay, SOCKET, VMS, type Before, type VmmView } from './scenario.js';
import type { VmmEvent } from './vmm.js';

const POLICY = '/etc/liveupdate/policy.json';
const VMM = path.join(__dirname, 'vmm.js');
const POLL_MS = 250;
/** How long a client unit may go without saying what the demo waits for. */
const CLIENT_BOUND_MS = 600_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The unit running one VM's client in one mode. */
function vmmUnitName(vm: string, mode: 'before' | 'after'): string {
  return `demo-vmm-${vm}-${mode}.service`;
}

/**
 * A client's unit. The one that claims after the update is enabled before it
 * and started by systemd at boot, once the agent is ready (After=), as a
 * host's own VMM units come back: no test-bed step stands between the agent
 * and the claims.
 */
function vmmUnit(vm: string, uid: number, mode: 'before' | 'after', mib: number): string {
  return [
    '[Unit]',
    `Description=the demo's VMM of ${vm} (${mode} the update)`,
    'Requires=liveupdate-agent.socket',
    `After=liveupdate-agent.socket ${AGENT_UNIT}`,
    '',
    '[Service]',
    'Type=exec',
    `User=${uid}`,
    `Group=${uid}`,
    'Environment=HOME=/tmp',
    `ExecStart=/usr/bin/node ${VMM} ${mode} ${vm} ${mib} ${SOCKET}`,
    ...(mode === 'after' ? ['', '[Install]', 'WantedBy=multi-user.target'] : []),
    '',
  ].join('\n');
}

/**
 * A unit that marks on the console the instant systemd begins the orderly
 * shutdown: nothing is ordered after it, so its stop job runs in the first
 * wave of the kexec's transaction, and its ExecStop writes one kernel log
 * line (level notice: the console prints it, and the host stamps it). Late
 * by the fork and exec of echo (a few ms under TCG); it delays no other unit.
 */
const SHUTDOWN_MARK_UNIT = 'demo-shutdown-mark.service';
const SHUTDOWN_MARK = [
  '[Unit]',
  'Description=marks the start of the orderly shutdown on the console',
  '',
  '[Service]',
  'Type=oneshot',
  'RemainAfterExit=yes',
  'ExecStart=/bin/true',
  `ExecStop=/bin/echo "<5>${SHUTDOWN_MARK_TEXT}"`,
  'StandardOutput=file:/dev/kmsg',
  '',
].join('\n');

/** A client running as a unit: its events are the JSON lines it logs, its end the unit's. */
class VmmUnit implements VmmView {
  readonly #unit: string;
  #seen = 0;
  readonly #events: VmmEvent[] = [];

  constructor(readonly vm: string, mode: 'before' | 'after', private readonly onEvent: (vmm: VmmView, event: VmmEvent) => void) {
    this.#unit = vmmUnitName(vm, mode);
  }

  /** When its main process started (CLOCK_MONOTONIC ms): read while the unit is loaded (an enabled unit stays so once ended). */
  startedMono: number | null = null;

  /** Starts the unit (after a daemon-reload); throws with its log when systemd could not. */
  start(): void {
    const started = startUnit(this.#unit);
    if (started !== 'started') throw new Error(`${this.#unit}: ${started}`);
  }

  /** Reads when its main process started. */
  readStart(): void {
    this.startedMono = monotonicMs('ExecMainStartTimestampMonotonic', this.#unit);
  }

  #poll(): void {
    for (const event of unitJsonLines<VmmEvent>(this.#unit).slice(this.#seen)) {
      this.#seen++;
      this.#events.push(event);
      this.onEvent(this, event);
    }
  }

  #ended(): boolean {
    return ['inactive', 'failed'].includes(unitProperty('ActiveState', this.#unit));
  }

  async until<K extends VmmEvent['event']>(kind: K): Promise<Extract<VmmEvent, { event: K }>> {
    const deadline = Date.now() + CLIENT_BOUND_MS;
    for (;;) {
      const ended = this.#ended();
      this.#poll();
      const found = this.#events.find((e) => e.event === kind || e.event === 'failed');
      if (found?.event === 'failed') throw new Error(`${this.vm}'s VMM failed: ${found.message}`);
      if (found !== undefined) return found as Extract<VmmEvent, { event: K }>;
      if (ended) throw new Error(`${this.#unit} ended before '${kind}':\n${unitLog(this.#unit, 20)}`);
      if (Date.now() > deadline) throw new Error(`${this.#unit} said no '${kind}' in ${CLIENT_BOUND_MS} ms`);
      await sleep(POLL_MS);
    }
  }

  async exited(): Promise<number | null> {
    const deadline = Date.now() + CLIENT_BOUND_MS;
    while (!this.#ended() && Date.now() < deadline) await sleep(POLL_MS);
    return this.#ended() ? Number(unitProperty('ExecMainStatus', this.#unit)) : null;
  }
}

/** Writes both modes' client units; the ones of after the update are enabled for the next boot. */
function installVmms(mib: number): void {
  for (const { vm, uid } of VMS) {
    for (const mode of ['before', 'after'] as const) fs.writeFileSync(`/etc/systemd/system/${vmmUnitName(vm, mode)}`, vmmUnit(vm, uid, mode, mib));
  }
  systemctl('daemon-reload');
  systemctl('enable', ...VMS.map(({ vm }) => vmmUnitName(vm, 'after')));
}

/** The client units of before the update, started. */
function startVmms(ctx: StageContext): VmmUnit[] {
  const vmms = VMS.map(({ vm }) => new VmmUnit(vm, 'before', relay(ctx)));
  for (const vmm of vmms) vmm.start();
  // After every start, so that reading one's start does not delay the next.
  for (const vmm of vmms) vmm.readStart();
  return vmms;
}

/** The client units of after the update, which systemd started at boot. */
function startedVmms(ctx: StageContext): VmmUnit[] {
  const vmms = VMS.map(({ vm }) => new VmmUnit(vm, 'after', relay(ctx)));
  for (const vmm of vmms) vmm.readStart();
  return vmms;
}

async function beforeUpdate(ctx: StageContext): Promise<JsonValue> {
  const mib = mibFromCmdline();
  addUsers(VMS.map((v) => v.uid));
  installAgent();
  fs.mkdirSync(path.dirname(POLICY), { recursive: true });
  fs.writeFileSync(POLICY, JSON.stringify({ connect: { users: VMS.map((v) => v.uid) } }));
  fs.writeFileSync(AGENT_DEFAULTS, `LIVEUPDATE_AGENT_OPTIONS=--policy ${POLICY}\n`);
  fs.writeFileSync(`/etc/systemd/system/${SHUTDOWN_MARK_UNIT}`, SHUTDOWN_MARK);
  installVmms(mib);
  systemctl('enable', '--now', AGENT_UNIT);
  const marked = startUnit(SHUTDOWN_MARK_UNIT);
  if (marked !== 'started') throw new Error(`${SHUTDOWN_MARK_UNIT}: ${marked}`);
  const mode = unitJsonLines(AGENT_UNIT)[0];
  ctx.report('say', `agent: ${AGENT_UNIT} started from the shipped units (${String(mode?.['mode'])} mode: ${String(mode?.['reason'])}), listening on ${SOCKET}`);
  ctx.report('say', `starting 2 VMMs as units (uids ${VMS.map((v) => v.uid).join(', ')}), ${mib} MiB of guest memory each`);
  return readyThenUpdate(ctx, mib, startVmms(ctx));
}

/** Waits until systemd has started the agent again and it has taken its sessions back. */
async function agentRestored(): Promise<Record<string, JsonValue> | undefined> {
  const deadline = Date.now() + CLIENT_BOUND_MS;
  for (;;) {
    const restored = unitJsonLines<Record<string, JsonValue>>(AGENT_UNIT).find((e) => e['event'] === 'restored');
    if (restored !== undefined || Date.now() > deadline) return restored;
    await sleep(POLL_MS);
  }
}

async function afterUpdate(ctx: StageContext): Promise<JsonValue> {
  const before = ctx.previous as unknown as Before;
  ctx.equal('systemd counted one kexec', Number(unitProperty('KExecCount')), 1);
  const restored = await agentRestored();
  ctx.equal('the agent took back both sessions PID 1 handed it', restored?.['handedBack'] ?? null, VMS.length);
  const root = await manifestRead(ctx);
  const vmms = startedVmms(ctx);
  const summary = await checkClaims(ctx, before, root, vmms);
  await consoleClock();
  return { ...summary, systemd: systemdMarks(vmms) } as unknown as JsonValue;
}

/**
 * Writes this kernel's CLOCK_MONOTONIC to the console through the kernel
 * log, a few times spaced so each finds the line idle: the host checks its
 * placing of this clock (through the clock samples on the second serial
 * port) against the console's own crossing (./blackout.ts). After the timed part.
 */
async function consoleClock(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await sleep(15);
    fs.writeFileSync('/dev/kmsg', `<5>${CONSOLE_CLOCK_TEXT}${clockSample().mono.toFixed(3)}\n`);
  }
}

/** A unit's or the manager's `...TimestampMonotonic` property in ms, null when systemd never set it (0). */
function monotonicMs(property: string, unit?: string): number | null {
  const us = Number(unitProperty(property, unit));
  return Number.isFinite(us) && us > 0 ? us / 1000 : null;
}

/** This boot's instants of the systemd path, from PID 1's own timestamps and the units' (the host places them: ./blackout.ts). */
function systemdMarks(clients: readonly VmmUnit[]): SystemdMarks {
  return {
    userspace: monotonicMs('UserspaceTimestampMonotonic'),
    unitsLoaded: monotonicMs('UnitsLoadFinishTimestampMonotonic'),
    agentStart: monotonicMs('ExecMainStartTimestampMonotonic', AGENT_UNIT),
    clientStart: Object.fromEntries(clients.map((c) => [c.vm, c.startedMono])),
  };
}

/** @internal */
export default defineScenario('demo', [defineCase('guest-memory', [beforeUpdate, afterUpdate])]);
