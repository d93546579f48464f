/**
 * The conformance suite as the host sees it: which compiled scenario modules
 * it boots, in what order, and the cases they hold.
 * @internal
 */
import * as path from 'node:path';
import { scenarioOf } from '../vm/scenario.js';

/**
 * The scenario modules, in run order: what the kernel offers first, then
 * single-kernel cases (the API's, then the raw ioctls'), then the cases that cross one and two kexecs, then
 * the failure paths (last: one of them aborts a kexec in stage 1).
 */
export const SCENARIOS = ['luo', 'device', 'abi', 'scale', 'kexec', 'chain', 'fault'] as const;

/**
 * The systemd cases (`--systemd`), on the systemd guest image, one boot each
 * (both install units of the same names): the library on a systemd host
 * without the agent, then the agent's systemd mode.
 */
export const SYSTEMD_SCENARIOS = ['systemd', 'agent-systemd'] as const;

/** One case of the suite. */
export interface SuiteCase {
  /** "scenario/case". */
  readonly name: string;
  /** How many kernels the case runs in. */
  readonly stages: number;
}

/** Host paths of the compiled scenario modules (dist/conformance/scenarios/*.js). */
export function scenarioFiles(names: readonly string[] = SCENARIOS): string[] {
  return names.map((s) => path.join(__dirname, 'scenarios', `${s}.js`));
}

/** Every case of the suite (or of the scenarios named), in run order, read from the scenario modules themselves. */
export function suiteCases(names: readonly string[] = SCENARIOS): SuiteCase[] {
  return scenarioFiles(names).flatMap((file) => {
    // The modules are only known as paths at run time, hence require().
    const scenario = scenarioOf(require(file), file);
    return scenario.cases.map((c) => ({ name: `${scenario.name}/${c.name}`, stages: c.stages.length }));
  });
}
