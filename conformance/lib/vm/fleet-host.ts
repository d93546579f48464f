/**
 * The guest side of a host of the fleet (fleet.ts): the test bed's runner
 * runs this scenario under systemd on every boot of the host. It enables and
 * starts the agent's unit and the VMM-like client's unit (written into the
 * image by the fleet; a no-op once they run), waits until the client says
 * what it did in this boot, reports that to the fleet over the result
 * channel (after samples of this kernel's clocks), and then stays out of
 * the way: the host is driven over ssh from here on (ansible-playbook), and
 * its next kernel comes from the agent's own kexec. The case never returns,
 * so the runner never powers the host off.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { reportClockSamples } from './clock.js';
import { defineCase, defineScenario, type StageContext } from './scenario.js';
import type { JsonValue } from './protocol.js';
import { VMM_STATE, type VmmState } from './fleet-vmm.js';

/** The agent's unit and the client's, as the fleet installs them. */
export const FLEET_UNITS = { agent: 'liveupdate-agent.service', vmm: 'lu-vmm.service' } as const;
/** The name of the report a host sends once its client has said what it did in this boot. */
export const HOST_REPORT = 'host';
/** How long a boot may take for the client to say what it did. */
const VMM_WAIT_MS = 180_000;

/** What a host reports on each boot. */
export interface HostReport {
  readonly release: string;
  readonly bootId: string;
  /** The client's state file, or null when it said nothing in time. */
  readonly vmm: VmmState | null;
  /** `systemctl is-active` of each unit. */
  readonly units: Record<string, string>;
}

function systemctl(...args: string[]): { status: number | null; out: string } {
  const result = spawnSync('systemctl', args, { encoding: 'utf8' });
  return { status: result.status, out: `${result.stdout}${result.stderr}`.trim() };
}

/** What the client says it did in this boot; null when its unit failed or it said nothing in time. */
async function clientState(): Promise<VmmState | null> {
  const deadline = Date.now() + VMM_WAIT_MS;
  for (;;) {
    if (fs.existsSync(VMM_STATE)) return JSON.parse(fs.readFileSync(VMM_STATE, 'utf8')) as VmmState;
    if (Date.now() > deadline || systemctl('is-failed', '--quiet', FLEET_UNITS.vmm).status === 0) return null;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function serve(ctx: StageContext): Promise<JsonValue> {
  const units = Object.values(FLEET_UNITS);
  // The agent's unit brings its socket along (Also=).
  const enabled = systemctl('enable', '--now', 'liveupdate-agent.socket', ...units);
  ctx.check('the agent and the client are enabled and started', enabled.status === 0, enabled.out);
  const vmm = await clientState();
  // This kernel's clocks, for the host to place its instants (the agent's manifest times) on its own clock.
  await reportClockSamples((name, value) => ctx.report(name, value));
  const report: HostReport = {
    release: os.release(),
    bootId: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    vmm,
    units: Object.fromEntries(units.map((u) => [u, systemctl('is-active', u).out])),
  };
  ctx.report(HOST_REPORT, report as unknown as JsonValue);
  // Driven over ssh from here on: the kexec (or the fleet's power-off) ends this boot.
  setInterval(() => {}, 1 << 30);
  return new Promise<never>(() => {});
}

/** @internal */
export default defineScenario('fleet', [defineCase('host', [serve])]);
