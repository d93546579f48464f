/**
 * Installing and driving the agent as a systemd host runs it, for guest
 * scenarios on the systemd image (systemd as PID 1): the package's
 * executable and shipped units put where `npm install -g` and a copy of
 * units/ put them, users for the clients, and `systemctl`/`journalctl`
 * helpers. The kernel tests and the demo's systemd host share them.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The agent's executable, linked as `npm install -g` links it. */
export const AGENT_EXECUTABLE = '/usr/local/bin/liveupdate';
/** The agent's service unit as the package ships it. */
export const AGENT_UNIT = 'liveupdate-agent.service';
/** The file the shipped units read the agent's options from. */
export const AGENT_DEFAULTS = '/etc/default/liveupdate-agent';
/** The package files a systemd guest needs beyond dist/: the executable and the shipped units. */
const AGENT_PACKAGE_FILES = ['bin/liveupdate.js', 'units/liveupdate-agent.socket', 'units/liveupdate-agent.service', 'units/liveupdate-agent-standalone.service'];

/**
 * Host side: the `files` option of `runVm` that puts the package's executable
 * and units where npm installs them in the guest (the test bed's guest
 * carries only dist/).
 */
export function agentPackageFiles(packageRoot: string): Record<string, string> {
  return Object.fromEntries(AGENT_PACKAGE_FILES.map((file) => [`/lu/node_modules/liveupdate/${file}`, path.join(packageRoot, file)]));
}

/** Runs systemctl; throws with its stderr when it fails. */
export function systemctl(...args: string[]): string {
  const result = spawnSync('systemctl', args, { encoding: 'utf8' });
  if (result.error !== undefined) throw result.error;
  if (result.status !== 0) throw new Error(`systemctl ${args.join(' ')} failed (exit ${String(result.status)}): ${result.stderr.trim()}`);
  return result.stdout.trim();
}

/** `systemctl start UNIT`: 'started', or what systemctl said and the unit's last log lines. */
export function startUnit(unit: string): string {
  const result = spawnSync('systemctl', ['start', unit], { encoding: 'utf8' });
  if (result.status === 0) return 'started';
  return `exit ${String(result.status)}: ${result.stderr.trim()}\n${unitLog(unit, 15)}`;
}

/** A unit property (or the manager's, without a unit), as `systemctl show -P` prints it. */
export function unitProperty(name: string, unit?: string): string {
  return systemctl('show', '-P', name, ...(unit === undefined ? [] : [unit]));
}

/** The unit's last `lines` log lines of this boot. */
export function unitLog(unit: string, lines: number): string {
  return spawnSync('journalctl', ['-b', '-u', unit, '-n', String(lines), '-o', 'cat', '--no-pager'], { encoding: 'utf8' }).stdout.trim();
}

/** The JSON lines a unit logged this boot (the agent's events, a client's reports), in order. */
export function unitJsonLines<T = Record<string, unknown>>(unit: string): T[] {
  const shown = spawnSync('journalctl', ['-b', '-u', unit, '-o', 'cat', '--no-pager'], { encoding: 'utf8' });
  return shown.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as T);
}

/** Users with these uids (name `vmmUID`), as a host has them: systemd resolves a unit's User= in the user database. */
export function addUsers(uids: readonly number[]): void {
  for (const uid of uids) {
    if (fs.readFileSync('/etc/passwd', 'utf8').includes(`:${uid}:${uid}:`)) continue;
    fs.appendFileSync('/etc/passwd', `vmm${uid}:x:${uid}:${uid}::/tmp:/usr/sbin/nologin\n`);
    fs.appendFileSync('/etc/group', `vmm${uid}:x:${uid}:\n`);
  }
}

/**
 * What a host has after `npm install -g liveupdate` and copying the shipped
 * units into /etc/systemd/system (the package's bin/ and units/ are in the
 * guest where npm puts them: {@link agentPackageFiles}). Does not reload
 * systemd: the caller adds its own units first.
 */
export function installAgent(): void {
  const pkg = path.dirname(path.dirname(require.resolve('liveupdate')));
  fs.chmodSync(`${pkg}/bin/liveupdate.js`, 0o755);
  fs.rmSync(AGENT_EXECUTABLE, { force: true });
  fs.symlinkSync(`${pkg}/bin/liveupdate.js`, AGENT_EXECUTABLE);
  for (const unit of fs.readdirSync(`${pkg}/units`)) fs.copyFileSync(`${pkg}/units/${unit}`, `/etc/systemd/system/${unit}`);
}
