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
 * guest from that RAM, and a subscription to the agent's announcements.
 * On `prepare` (an update is coming): `stop`, the device state into a
 * second memfd over QMP, that memfd preserved too, `ready`. On `resume`
 * (the update was refused or failed): the guest restored from the same two
 * memfds in this kernel, running again, and waiting for the next `prepare`.
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
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import { AGENT_SOCKET, AgentClient, AgentUnavailableError, SessionNotFoundError, TokenNotFoundError, type AgentClientEvents, type Session } from 'liveupdate';
import { readCounters } from './guest.js';
import { Vm, type VmConfig } from './vm.js';

const EX_UNAVAILABLE = 69;
const EX_USAGE = 2;
/**
 * The RAM memfd's token in the VM's session, and the first state memfd's.
 * A file cannot be taken out of a session once preserved: each update that
 * was announced, then refused, leaves its state behind, and the next one's
 * goes under the next token. After the kexec the last one is the state.
 */
const RAM_TOKEN = 1n;
const FIRST_STATE_TOKEN = 2n;
const USAGE = 'usage: node main.js --name VM --guest IMAGE [--ram-mib N] [--socket PATH] [--qemu BINARY] [--accel auto|kvm|tcg] [--tb-size MiB] [--json]';

let json = false;
/** The VM running now: a failure or a signal ends its QEMU, which would otherwise outlive this process. */
const current: { vm?: Vm } = {};
/** Prints one step: a line of text, or a JSON object with `step` and `at`. */
function step(name: string, fields: Record<string, unknown> = {}): void {
  const record = { step: name, at: Date.now(), ...fields };
  process.stdout.write(json ? `${JSON.stringify(record)}\n` : `${name}${Object.keys(fields).length === 0 ? '' : ` ${JSON.stringify(fields)}`}\n`);
}

/** The agent's next announcement of a kind. */
async function announced<K extends 'prepare' | 'resume'>(agent: AgentClient, kind: K): Promise<AgentClientEvents[K][0]> {
  const [event] = (await once(agent, kind)) as AgentClientEvents[K];
  return event;
}

/** Resolves on SIGTERM or SIGINT. */
function stopRequested(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}

/**
 * First start: boot the guest, preserve its RAM, and quiesce each time an
 * update is announced; resume the guest in this kernel when it is called off.
 * Never returns (the kexec ends the process).
 */
async function firstStart(agent: AgentClient, config: VmConfig, ramMib: number): Promise<never> {
  const session: Session = await agent.createSession(config.name, { metadata: { ramMib, guest: config.kernel } });
  let vm = (current.vm = await Vm.boot(config, ramMib << 20));
  const qemu = vm.qemu!;
  step('guest-running', { qemu: qemu.version, accelerator: qemu.accelerator, method: qemu.method, pid: qemu.pid ?? null, ramMib, counter: readCounters(vm.ram).count });
  let started = Date.now();
  await session.preserve(vm.ram, RAM_TOKEN);
  step('ram-preserved', { ms: Date.now() - started, session: session.name });
  await agent.subscribe();
  step('subscribed');
  for (let stateToken = FIRST_STATE_TOKEN; ; stateToken++) {
    const prepare = await announced(agent, 'prepare');
    step('prepare', { kernel: prepare.kernel, deadlineMs: prepare.deadlineMs, counter: readCounters(vm.ram).count });
    const suspended = await vm.suspend();
    const { trailer, at } = suspended;
    step('stopped', { at: at['stopped'], counter: trailer.countAtStop });
    step('state-saved', { at: at['saved'], bytes: trailer.stateBytes, method: trailer.method });
    step('qemu-ended', { at: at['quit'] });
    started = Date.now();
    await session.preserve(suspended.state, stateToken);
    step('state-preserved', { ms: Date.now() - started, token: String(stateToken) });
    await agent.ready();
    step('ready');
    const resume = await announced(agent, 'resume');
    step('resume', { reason: resume.reason, code: resume.code ?? null });
    const resumed = await Vm.restore(config, vm.ram, suspended.state);
    fs.closeSync(suspended.state);
    vm = current.vm = resumed.vm;
    step('guest-running', { counter: resumed.counting.count, afterRefusedUpdate: true });
  }
}

/** After the kexec: the state memfd is the one under the highest token (earlier ones were left by refused updates). */
async function retrieveState(session: Session): Promise<number> {
  let state: number | undefined;
  for (let token = FIRST_STATE_TOKEN; ; token++) {
    let fd: number;
    try {
      fd = await session.retrieve(token);
    } catch (error) {
      if (error instanceof TokenNotFoundError && state !== undefined) return state;
      throw error;
    }
    if (state !== undefined) fs.closeSync(state);
    state = fd;
  }
}

/** After the kexec: restore the guest from the session the agent handed back, check it, and only then let the session go. */
async function afterKexec(agent: AgentClient, config: VmConfig, session: Session): Promise<Vm> {
  step('claimed', { session: session.name });
  const ram = await session.retrieve(RAM_TOKEN);
  const state = await retrieveState(session);
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
  step('resumed', { at: at['counting'], counterAtStop: trailer.countAtStop, counter: counting.count, boots: counting.boots, stateBytes: trailer.stateBytes, savedBy: `QEMU ${trailer.qemu}, ${trailer.method}` });
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
    // The first start runs until the kexec, a signal, or the agent going away.
    const ended = await Promise.race([firstStart(agent, config, ramMib), stopped, once(agent, 'close').then(() => 'the agent connection ended')]);
    step('stopping', { why: ended });
    await current.vm?.close();
    return 0;
  }
  const vm = (current.vm = await afterKexec(agent, config, session));
  step('stopping', { why: await stopped });
  await vm.close();
  step('stopped-qemu');
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    const e = error as Error & { code?: string };
    step('failed', { error: e.name ?? 'Error', code: e.code ?? null, message: e.message ?? String(error) });
    process.stderr.write(`${e.name} (${e.code ?? 'no code'}): ${e.message}\n`);
    await current.vm?.qemu?.kill(); // the guest lives on in its RAM memfd, which the session preserves
    process.exit(error instanceof AgentUnavailableError ? EX_UNAVAILABLE : 1);
  },
);
