/**
 * How kernel scenarios are written. A scenario is a module whose default
 * export (or `scenario` export) comes from {@link defineScenario}: a named
 * group of cases, each an ordered list of stage functions. Stage 1 runs in
 * the first kernel, stage 2 in the kernel the guest kexecs into, and so on;
 * all cases of every scenario in one boot run in the same kernels, so dozens
 * of small cases share the cost of a boot.
 *
 * ```ts
 * export default defineScenario('memfd', [
 *   defineCase('survives', [
 *     (ctx) => { ...preserve...; ctx.keep(session); return { sha256 } },
 *     (ctx) => { ...retrieve...; ctx.equal('sha256', actual, ctx.previous) },
 *   ]),
 * ]);
 * ```
 */
import type { JsonValue } from './protocol.js';

/** What a stage function gets. */
export interface StageContext {
  /** This stage's number, from 1. */
  readonly stage: number;
  /** How many stages (kernels) the boot has. */
  readonly stages: number;
  /** The case's full name ("scenario/case"). */
  readonly caseName: string;
  /** What this case's previous stage returned (undefined in stage 1). */
  readonly previous: JsonValue | undefined;
  /** The running kernel's release (uname -r). */
  readonly release: string;
  /** Guest path of the kernel image of this stage. */
  readonly kernel: string;
  /** Guest path of the kernel image the guest kexecs into next, if any stage follows. */
  readonly nextKernel: string | undefined;
  /**
   * Records a named check. A false check fails the case but does not throw,
   * so one stage can report several findings. Returns `ok`.
   */
  check(name: string, ok: boolean, detail?: JsonValue): boolean;
  /** Records a check that `actual` equals `expected` (deep, as JSON). Returns whether it did. */
  equal(name: string, actual: JsonValue | undefined, expected: JsonValue | undefined): boolean;
  /** Records a named value for the host to read. */
  report(name: string, value: JsonValue): void;
  /**
   * Holds objects (sessions, fds) until the kexec: outgoing sessions must
   * stay open to be preserved, and nothing else references them.
   */
  keep(...values: unknown[]): void;
  /**
   * Lets the case make the kexec into the next stage itself (through a
   * command that kexecs, say): the runner writes the next stage's initrd as
   * usual, then calls `jump` with what to load instead of loading and
   * executing it. The last case to ask wins. A `jump` that returns or throws
   * is fatal: the next stage never starts. Under systemd (the systemd guest
   * image) `initrd` is empty, and `jump` returns once systemd has the kexec
   * job (it then stops every unit, the runner's included).
   */
  jumpWith(jump: (next: NextStage) => Promise<void>): void;
}

/** What the next stage boots: a kernel, its initrd and its command line (all guest paths). */
export interface NextStage {
  readonly kernel: string;
  readonly initrd: string;
  readonly cmdline: string;
}

/** One stage of a case. Its return value reaches the host and the case's next stage. */
export type StageFunction = (ctx: StageContext) => JsonValue | void | Promise<JsonValue | void>;

/** A named case: its stage functions in order; `null` skips a stage. */
export interface Case {
  readonly name: string;
  readonly stages: readonly (StageFunction | null)[];
}

/** A named group of cases. */
export interface Scenario {
  readonly name: string;
  readonly cases: readonly Case[];
}

/** Defines a case. */
export function defineCase(name: string, stages: readonly (StageFunction | null)[]): Case {
  if (name === '' || name.includes('/')) throw new TypeError(`bad case name ${JSON.stringify(name)}: non-empty, no "/"`);
  if (stages.length === 0) throw new TypeError(`case ${name} has no stages`);
  return { name, stages };
}

/** Defines a scenario from its cases. Case names must be unique. */
export function defineScenario(name: string, cases: readonly Case[]): Scenario {
  if (name === '' || name.includes('/')) throw new TypeError(`bad scenario name ${JSON.stringify(name)}: non-empty, no "/"`);
  const seen = new Set<string>();
  for (const c of cases) {
    if (seen.has(c.name)) throw new TypeError(`scenario ${name} has two cases named ${c.name}`);
    seen.add(c.name);
  }
  return { name, cases };
}

/** How many stages (kernels) a set of scenarios needs: its longest case. */
export function stageCount(scenarios: readonly Scenario[]): number {
  let count = 1;
  for (const s of scenarios) for (const c of s.cases) count = Math.max(count, c.stages.length);
  return count;
}

/**
 * The scenario a loaded module exports: its `scenario` or `default` export,
 * or the module itself (a CommonJS `module.exports = { name, cases }`).
 */
export function scenarioOf(module: unknown, where: string): Scenario {
  const m = module as { default?: unknown; scenario?: unknown } | null;
  for (const candidate of [m?.scenario, m?.default, m]) if (isScenario(candidate)) return candidate;
  throw new TypeError(`${where} exports no scenario (use \`export default defineScenario(...)\`)`);
}

function isScenario(value: unknown): value is Scenario {
  const v = value as Partial<Scenario> | null | undefined;
  return typeof v?.name === 'string' && Array.isArray(v.cases);
}
