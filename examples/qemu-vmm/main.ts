/**
 * The orchestrator: a QEMU guest that keeps running across the host's
 * kexec, through the liveupdate agent.
 *
 *   node main.js --name VM --guest IMAGE [--ram-mib N] [--socket PATH]
 *                [--qemu BINARY] [--accel auto|kvm|tcg] [--tb-size MiB] [--json]
 *
 * First start (the agent has no session of this name to hand back): a RAM
 * memfd of N MiB, a session from the agent with the RAM preserved in it at
 * once (pinning RAM takes time that must not be downtime), QEMU running the
 * guest from that RAM. When the update is announced: `stop`, the device
 * state into a second memfd over QMP, that memfd preserved too, `ready`.
 *
 * After the kexec (the agent hands the session back): both memfds
 * retrieved, a new QEMU on the same RAM with `-incoming defer`, the state
 * loaded, `cont`, and checked: same boot, counter past where it stopped,
 * untouched RAM identical. Only then is the session finished and released:
 * until the orchestrator says it is done, the agent keeps the guest's RAM.
 *
 * Each step is printed (a JSON object per line with --json) with `at`, the
 * wall clock in ms. Runs until SIGTERM or SIGINT, which end QEMU.
 * Exit status: 0 done, 69 no agent answers, 2 usage, 1 any other failure.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { AGENT_SOCKET, AgentClient, AgentUnavailableError, SessionNotFoundError, type Session } from 'liveupdate';
import { readCounters } from './guest.js';
import { Vm, type VmConfig } from './vm.js';

const EX_UNAVAILABLE = 69;
const EX_USAGE = 2;
/** The RAM memfd's token in the VM's session, and the state memfd's. */
const RAM_TOKEN = 1n;
const STATE_TOKEN = 2n;
const USAGE = 'usage: node main.js --name VM --guest IMAGE [--ram-mib N] [--socket PATH] [--qemu BINARY] [--accel auto|kvm|tcg] [--tb-size MiB] [--json]';

let json = false;
/** Prints one step: a line of text, or a JSON object with `step` and `at`. */
function step(name: string, fields: Record<string, unknown> = {}): void {
  const record = { step: name, at: Date.now(), ...fields };
  process.stdout.write(json ? `${JSON.stringify(record)}\n` : `${name}${Object.keys(fields).length === 0 ? '' : ` ${JSON.stringify(fields)}`}\n`);
}

/**
 * Resolves when the host announces an update. The agent's announcements
 * (protocol 2) are not in every agent yet: until then the orchestrator
 * takes the word `prepare` on its stdin as the announcement.
 */
function updateAnnounced(): Promise<void> {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin });
    lines.on('line', (line) => {
      if (line.trim() !== 'prepare') return;
      lines.close();
      resolve();
    });
  });
}

/** Resolves on SIGTERM or SIGINT. */
function stopRequested(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}

/** First start: boot the guest, preserve its RAM, and quiesce when the update comes. */
async function firstStart(agent: AgentClient, config: VmConfig, ramMib: number): Promise<void> {
  const session: Session = await agent.createSession(config.name, { metadata: { ramMib, guest: config.kernel } });
  const vm = await Vm.boot(config, ramMib << 20);
  const qemu = vm.qemu!;
  step('guest-running', { qemu: qemu.version, accelerator: qemu.accelerator, method: qemu.method, pid: qemu.pid ?? null, ramMib, counter: readCounters(vm.ram).count });
  let started = Date.now();
  await session.preserve(vm.ram, RAM_TOKEN);
  step('ram-preserved', { ms: Date.now() - started, session: session.name });

  await updateAnnounced();
  step('prepare', { counter: readCounters(vm.ram).count });
  const suspended = await vm.suspend();
  const { trailer, at } = suspended;
  step('stopped', { at: at['stopped'], counter: trailer.countAtStop });
  step('state-saved', { at: at['saved'], bytes: trailer.stateBytes, method: trailer.method });
  step('qemu-ended', { at: at['quit'] });
  started = Date.now();
  await session.preserve(suspended.state, STATE_TOKEN);
  step('state-preserved', { ms: Date.now() - started });
  await agent.ready();
  step('ready');
}

/** After the kexec: restore the guest from the session the agent handed back, check it, and only then let the session go. */
async function afterKexec(agent: AgentClient, config: VmConfig, session: Session): Promise<Vm> {
  step('claimed', { session: session.name });
  const ram = await session.retrieve(RAM_TOKEN);
  const state = await session.retrieve(STATE_TOKEN);
  step('retrieved', { ramBytes: fs.fstatSync(ram).size, stateBytes: fs.fstatSync(state).size });
  let resumed;
  try {
    resumed = await Vm.restore(config, ram, state);
  } catch (error) {
    fs.closeSync(ram); // the agent still holds the session: a later run can claim it again
    throw error;
  } finally {
    fs.closeSync(state);
  }
  const { vm, trailer, beforeCont, counting, at } = resumed;
  step('qemu-started', { at: at['qemuStarted'], qemu: vm.qemu?.version ?? null, method: vm.qemu?.method ?? null, pid: vm.qemu?.pid ?? null });
  step('state-loaded', { at: at['stateLoaded'], counter: beforeCont.count });
  step('cont', { at: at['cont'] });
  step('resumed', { at: at['counting'], counterAtStop: trailer.countAtStop, counter: counting.count, boots: counting.boots });
  step('ram-verified', { at: at['verified'], untouchedSha256: trailer.untouchedSha256 });
  await session.finish();
  await session.close();
  await agent.release(config.name);
  step('released');
  return vm;
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        name: { type: 'string' }, guest: { type: 'string' }, 'ram-mib': { type: 'string', default: '32' }, socket: { type: 'string' },
        qemu: { type: 'string' }, accel: { type: 'string', default: 'auto' }, 'tb-size': { type: 'string' }, json: { type: 'boolean', default: false },
      },
    }));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return EX_USAGE;
  }
  json = values.json;
  const ramMib = Number(values['ram-mib']);
  const accelerator = values.accel;
  if (values.name === undefined || values.guest === undefined || !Number.isInteger(ramMib) || (accelerator !== 'auto' && accelerator !== 'kvm' && accelerator !== 'tcg')) {
    process.stderr.write(`${USAGE}\n`);
    return EX_USAGE;
  }
  const config: VmConfig = {
    name: values.name,
    kernel: values.guest,
    runDir: os.tmpdir(),
    qemu: {
      accelerator,
      ...(values.qemu === undefined ? {} : { binary: values.qemu }),
      ...(values['tb-size'] === undefined ? {} : { tbSizeMiB: Number(values['tb-size']) }),
      onSerialLine: (line) => step('serial', { line }),
    },
  };
  const stopped = stopRequested();
  await using agent = await AgentClient.connect({ socket: values.socket ?? process.env['LIVEUPDATE_AGENT_SOCKET'] ?? AGENT_SOCKET, name: `qemu-vmm ${config.name}` });
  let session: Session | undefined;
  try {
    session = (await agent.retrieveSession(config.name)).session;
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
  }
  if (session === undefined) {
    await firstStart(agent, config, ramMib);
    step('stopping', { signal: await stopped });
    return 0;
  }
  const vm = await afterKexec(agent, config, session);
  step('stopping', { signal: await stopped });
  await vm.close();
  step('stopped-qemu');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    const e = error as Error & { code?: string };
    step('failed', { error: e.name ?? 'Error', code: e.code ?? null, message: e.message ?? String(error) });
    process.stderr.write(`${e.name} (${e.code ?? 'no code'}): ${e.message}\n`);
    process.exit(error instanceof AgentUnavailableError ? EX_UNAVAILABLE : 1);
  },
);
