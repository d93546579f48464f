/**
 * The library on a systemd host, without the agent: runs in the systemd
 * guest image (systemd 262 as PID 1), in one boot and one `systemctl kexec`.
 *
 * Stage 1 installs three services (systemd-service.ts) as units with an fd
 * store kept across the kexec, starts them one after the other (each opens
 * the device at most for a moment), and reads what they did; the runner
 * then makes systemd's own orderly kexec. In stage 2 systemd has started
 * them again with their fds: the runner reads what they found, and the
 * manager's counters.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { JsonValue } from '../../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../../vm/scenario.js';
import { FDNAMES, RESULTS_DIR } from './systemd-service.js';

type Role = keyof typeof FDNAMES;
/** In start order: the one that opens the device first, then the LUOSession= unit, which needs it free. */
const ROLES: readonly Role[] = ['own-session', 'luo-session', 'memfd'];
const SERVICE = path.join(__dirname, 'systemd-service.js');
/** How long stage 2 waits for a service's result (systemd starts them before the runner, so normally none). */
const RESULT_WAIT_MS = 60_000;

/**
 * The unit of a role, as the README's "On a systemd host" section shows it:
 * Type=notify (ready once its file is stored), an fd store that survives the
 * kexec (FileDescriptorStorePreserve=yes; the default, restart, loses it).
 */
export function unitFile(role: Role): string {
  return [
    '[Unit]',
    `Description=liveupdate on systemd: ${role}`,
    '',
    '[Service]',
    'Type=notify',
    `ExecStart=/usr/bin/node ${SERVICE} ${role}`,
    'FileDescriptorStoreMax=4',
    'FileDescriptorStorePreserve=yes',
    ...(role === 'luo-session' ? [`LUOSession=${FDNAMES['luo-session']}`] : []),
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

function unitName(role: Role): string {
  return `lu-${role}.service`;
}

/** Runs systemctl; throws with its stderr when it fails. */
function systemctl(...args: string[]): string {
  const result = spawnSync('systemctl', args, { encoding: 'utf8' });
  if (result.error !== undefined) throw result.error;
  if (result.status !== 0) throw new Error(`systemctl ${args.join(' ')} failed (exit ${String(result.status)}): ${result.stderr.trim()}`);
  return result.stdout.trim();
}

/** A unit's (or, without one, the manager's) property. */
function property(name: string, unit?: string): string {
  return systemctl('show', '-P', name, ...(unit === undefined ? [] : [unit]));
}

function readResult(role: Role): Record<string, JsonValue> | undefined {
  const file = `${RESULTS_DIR}/${role}.json`;
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, JsonValue>) : undefined;
}

async function waitForResult(role: Role): Promise<Record<string, JsonValue> | undefined> {
  const deadline = Date.now() + RESULT_WAIT_MS;
  for (;;) {
    const result = readResult(role);
    if (result !== undefined || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** What systemd says about this boot: version, KExecCount, when PID 1 and multi-user.target started (ms after the kernel). */
function manager(ctx: StageContext): Record<string, JsonValue> {
  const facts = {
    version: systemctl('--version').split('\n')[0] ?? '',
    kexecCount: Number(property('KExecCount')),
    userspaceMs: Number(property('UserspaceTimestampMonotonic')) / 1000,
    multiUserMs: Number(property('ActiveEnterTimestampMonotonic', 'multi-user.target')) / 1000,
  };
  ctx.report('manager', facts);
  return facts;
}

/** Stage 1: install, enable and start each unit, one after the other; what each service did. */
async function beforeUpdate(ctx: StageContext): Promise<JsonValue> {
  const facts = manager(ctx);
  ctx.equal('KExecCount before any kexec', facts.kexecCount, 0);
  for (const role of ROLES) fs.writeFileSync(`/etc/systemd/system/${unitName(role)}`, unitFile(role));
  systemctl('daemon-reload');
  const services: Record<string, JsonValue> = {};
  for (const role of ROLES) {
    systemctl('enable', unitName(role));
    const started = spawnSync('systemctl', ['start', unitName(role)], { encoding: 'utf8' });
    ctx.equal(`${role}: unit started`, started.status === 0 ? 'started' : started.stderr.trim(), 'started');
    const result = readResult(role) ?? null;
    ctx.equal(`${role}: preserved before the kexec`, result?.['ok'] ?? null, true);
    services[role] = result;
  }
  return services;
}

/** Stage 2: what each service found after systemd started it again, and the manager's counters. */
async function afterUpdate(ctx: StageContext): Promise<JsonValue> {
  const facts = manager(ctx);
  ctx.equal('KExecCount after one kexec', facts.kexecCount, 1);
  const before = (ctx.previous ?? {}) as Record<string, Record<string, JsonValue> | null>;
  const services: Record<string, JsonValue> = {};
  for (const role of ROLES) {
    const result = (await waitForResult(role)) ?? null;
    services[role] = result;
    ctx.equal(`${role}: ran without error`, result?.['ok'] ?? null, true);
    // A service that got nothing back starts over ("before") and writes the same pattern again:
    // only the fd name it was handed tells a kept file from a new one.
    ctx.equal(`${role}: got its fd back`, [result?.['phase'] ?? null, result?.['received'] ?? null], ['after', [FDNAMES[role]]]);
    ctx.equal(`${role}: bytes intact`, result?.['sha256'] ?? null, before[role]?.['sha256'] ?? 'no stage 1 value');
    ctx.equal(`${role}: unit active`, property('ActiveState', unitName(role)), 'active');
  }
  return services;
}

export default defineScenario('systemd', [defineCase('library-without-agent', [beforeUpdate, afterUpdate])]);
