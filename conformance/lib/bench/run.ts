/**
 * `npm run bench`: first the host cases (host.ts: the binding's own cost at
 * native speed against C, no LUO needed), then N independent boots of one
 * LUO kernel under QEMU, each running the node and the C measurements in the
 * same guest run (scenario.ts); the boots are combined into medians with
 * 95% intervals (boots.ts). Prints a table, or with `--json` one JSON
 * object. Progress goes to stderr, results to stdout.
 *
 *   npm run bench -- [--json] [--quick] [--boots N] [--host-only | --agent-only] [--kernel 7.3|/path/bzImage]
 *                    [--systemd] [--vmm] [--fleet N] [--group-boots N] [--groups-only] [--all]
 *
 * The groups (groups.ts) are opt-in, each its own boots on the newest
 * kernel: `--systemd` the blackout on a systemd host against the
 * standalone agent, `--vmm` a real QEMU guest's downtime, `--fleet N` one
 * rollout by ansible-playbook over N hosts; `--all` is all of them with
 * the rest (what BENCHMARKS.md records); `--groups-only` skips the rest.
 *
 * It never fails for slow numbers: it exits non-zero only when the run
 * itself broke (no kernel, a guest failure).
 * @internal
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { libraryRoot, packageRoot } from '../vm/initramfs.js';
import { findKernels, kernelRelease, NO_KERNEL_HELP, type KernelImage } from '../vm/kernels.js';
import { runVm, type VmRun } from '../vm/qemu.js';
import { AGENT_HOST_FULL, AGENT_HOST_QUICK, runAgentHost } from './agent-host.js';
import { AGENT_CASE, agentBoot, agentHostResult, combineAgent, type AgentBoot } from './agent-report.js';
import { combineBoots } from './boots.js';
import { HOST_FULL, HOST_QUICK, runHost } from './host.js';
import { errorsResult, fdPassResult, hostResult, hostTargets, promiseResult, type HostOnlyResult } from './host-report.js';
import { AGENT_FULL, AGENT_QUICK, agentCmdline, benchCmdline, FULL, GUEST_C_BENCH, GUEST_NODE_AGENT, QUICK, type BenchParams } from './params.js';
import { formatGroups } from './groups-report.js';
import { accelOf, agentTable, buildBoot, formatHostTable, formatTable, type BenchResult, type BootResult, type RunInfo, type StageValues } from './report.js';
import { compileC } from '../harness/compile.js';
import { anyGroup, FLEET_HOSTS, GROUP_BOOTS, runGroups, type GroupOptions, type GroupResults } from './groups.js';

/** How to run the benchmark. */
export interface BenchOptions {
  /** `--quick`: fewer rounds and smaller sizes (CI). */
  readonly quick?: boolean;
  /** A kernel series ("7.2"), a release ("7.2.13") or a bzImage path; default 7.2, else the oldest found. */
  readonly kernel?: string;
  /** Guest memory; the large memfds of both sides must fit (default 4G). */
  readonly memory?: string;
  /** Independent boots of the guest benchmark (default 5). */
  readonly boots?: number;
  /** Progress lines (default: stderr). */
  readonly onProgress?: (line: string) => void;
  /** The opt-in groups to run after the rest (default none). */
  readonly groups?: GroupOptions;
}

/** What `--groups-only` prints: the groups alone, with the machine they ran on. */
export interface GroupsOnlyResult {
  readonly mode: 'groups';
  readonly date: string;
  readonly commit: string;
  readonly machine: { readonly nproc: number; readonly cpu: string; readonly qemu: string };
  readonly groups: GroupResults;
}

const GUEST_CPUS = 2;
const DEFAULT_SERIES = '7.2';

const DEFAULT_BOOTS = 5;

/** Runs the host cases (no kernel needed). */
export async function runHostBench(options: Pick<BenchOptions, 'quick' | 'onProgress'> = {}): Promise<HostOnlyResult> {
  const progress = options.onProgress ?? defaultProgress;
  const root = packageRoot();
  const commit = commitOf(root); // before anything runs: what is measured is what was checked out then
  const date = new Date().toISOString();
  const raw = await runHost(root, options.quick === true ? HOST_QUICK : HOST_FULL, progress);
  const host = hostResult(raw);
  const fdpass = fdPassResult(raw);
  const promise = promiseResult(raw);
  const errors = errorsResult(raw);
  const agentHost = agentHostResult(await runAgentHost(options.quick === true ? AGENT_HOST_QUICK : AGENT_HOST_FULL, progress));
  return {
    mode: options.quick === true ? 'quick' : 'full',
    machine: { nproc: os.cpus().length, cpu: cpuModel(), host_clock_tick: hostClockTick() },
    date,
    commit,
    host,
    fdpass,
    promise,
    errors,
    agent: { host: agentHost },
    targets: [...hostTargets(host, fdpass, promise, errors), ...agentHost.targets],
  };
}

function defaultProgress(line: string): void {
  process.stderr.write(`[bench] ${line}\n`);
}

/** Runs the benchmark; rejects when the run breaks (never for slow numbers). */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const progress = options.onProgress ?? defaultProgress;
  const root = packageRoot();
  const params: BenchParams = options.quick === true ? QUICK : FULL;
  const kernel = pickKernel(options.kernel);
  const boots = options.boots ?? DEFAULT_BOOTS;
  if (!Number.isSafeInteger(boots) || boots < 1) throw new RangeError(`--boots must be a positive integer, not ${boots}`);
  const loadStart = os.loadavg()[0] ?? 0;
  const hostOnly = await runHostBench(options);
  const cBench = buildCBench(root, progress);
  const memory = options.memory ?? '4G';
  progress(`kernel ${kernel.release}, ${options.quick === true ? 'quick' : 'full'} run, ${boots} boot(s): ${JSON.stringify(params)}`);
  const agentCounts = options.quick === true ? AGENT_QUICK : AGENT_FULL;
  const results: BootResult[] = [];
  const agentBoots: AgentBoot[] = [];
  for (let boot = 1; boot <= boots; boot++) {
    progress(`boot ${boot}/${boots}`);
    const run = await runVm({
      name: `bench-${kernel.release}`,
      kernels: [kernel.path], // every stage (four kernels) boots the same image
      scenarios: [path.join(root, 'dist', 'bench', 'scenario.js')],
      files: { [GUEST_C_BENCH]: cBench, [GUEST_NODE_AGENT]: path.join(root, 'bench', 'blackout-agent.js') },
      cmdline: benchCmdline(params),
      memory,
      cpus: GUEST_CPUS,
      logDir: path.join(root, '.vm-out'),
      timeoutMs: options.quick === true ? 600_000 : 1_800_000,
      onProgress: progress,
    });
    if (!run.ok) throw new Error(`the benchmark run (boot ${boot}) failed: ${run.reason}\n${run.report()}`);
    results.push(buildBoot(run.stages[0]?.release ?? kernel.release, valuesOf(run)));
    agentBoots.push(await runAgentPath({ kernel, counts: agentCounts, cBench, quick: options.quick === true, boot, progress }));
  }
  const first = results[0] as BootResult;
  const guest = combineBoots(results);
  const info: RunInfo = {
    kernel: first.kernel,
    mode: options.quick === true ? 'quick' : 'full',
    params,
    machine: {
      nproc: hostOnly.machine.nproc,
      cpu: hostOnly.machine.cpu,
      accel: accelOf(first.guest.hypervisor),
      host_clock_tick: hostOnly.machine.host_clock_tick,
      guest_clock_tick: first.guest.clock_tick,
      guest_memory: memory,
      guest_cpus: GUEST_CPUS,
      qemu: qemuVersion(),
      loadavg: { start: loadStart, end: os.loadavg()[0] ?? 0 },
    },
    date: hostOnly.date,
    commit: hostOnly.commit,
  };
  const agent = combineAgent(agentCounts, agentBoots, hostOnly.agent.host);
  const groups = options.groups !== undefined && anyGroup(options.groups) ? await runGroups(options.groups, hostOnly.commit, progress) : undefined;
  return { ...info, ...(groups === undefined ? {} : { groups }), boots, ...guest, host: hostOnly.host, fdpass: hostOnly.fdpass, promise: hostOnly.promise, errors: hostOnly.errors, agent, targets: [...guest.targets, ...agent.targets, ...hostOnly.targets] };
}

/** What `--agent-only` gives: the agent path's boots and its host cases, nothing else. */
export interface AgentOnlyResult {
  readonly mode: 'agent';
  readonly date: string;
  readonly commit: string;
  readonly kernel: string;
  readonly boots: number;
  readonly loadavg: { readonly start: number; readonly end: number };
  readonly agent: ReturnType<typeof combineAgent>;
}

/**
 * The agent path alone (`--agent-only`): its host cases, then `boots` guest
 * runs of it (a kernel per client count and one more), for a change to the
 * agent measured without the rest of the guest benchmark's boots.
 */
export async function runAgentOnly(options: Pick<BenchOptions, 'quick' | 'boots' | 'kernel' | 'onProgress'> = {}): Promise<AgentOnlyResult> {
  const progress = options.onProgress ?? defaultProgress;
  const root = packageRoot();
  const commit = commitOf(root);
  const date = new Date().toISOString();
  const kernel = pickKernel(options.kernel);
  const boots = options.boots ?? DEFAULT_BOOTS;
  const loadStart = os.loadavg()[0] ?? 0;
  const host = agentHostResult(await runAgentHost(options.quick === true ? AGENT_HOST_QUICK : AGENT_HOST_FULL, progress));
  const cBench = buildCBench(root, progress);
  const counts = options.quick === true ? AGENT_QUICK : AGENT_FULL;
  const agentBoots: AgentBoot[] = [];
  for (let boot = 1; boot <= boots; boot++) agentBoots.push(await runAgentPath({ kernel, counts, cBench, quick: options.quick === true, boot, progress }));
  return { mode: 'agent', date, commit, kernel: kernel.release, boots, loadavg: { start: loadStart, end: os.loadavg()[0] ?? 0 }, agent: combineAgent(counts, agentBoots, host) };
}

/** `--agent-only`'s table, with its run's kernel, commit and load, and the agent's targets. */
function formatAgentOnly(r: AgentOnlyResult): string {
  const targets = [...r.agent.targets, ...r.agent.host.targets].map((t) => `  ${t.verdict.padEnd(9)} ${t.name} <= ${t.limit}: ${t.value} [${t.ci95.join(', ')}]`);
  return [`liveupdate benchmark, agent path only: kernel ${r.kernel}, ${r.boots} boot(s), ${r.date}, commit ${r.commit}, load average ${r.loadavg.start.toFixed(2)} -> ${r.loadavg.end.toFixed(2)}`, '', agentTable(r.agent, r.boots), '', 'targets:', ...targets].join('\n');
}

/** Runs the opt-in groups alone (`--groups-only`). */
export async function runGroupsOnly(groups: GroupOptions, onProgress: (line: string) => void = defaultProgress): Promise<GroupsOnlyResult> {
  const commit = commitOf(packageRoot());
  const date = new Date().toISOString();
  return { mode: 'groups', date, commit, machine: { nproc: os.cpus().length, cpu: cpuModel(), qemu: qemuVersion() }, groups: await runGroups(groups, commit, onProgress) };
}

/**
 * One boot of the agent path: its own guest run, because the agent owns
 * /dev/liveupdate for its whole life (a kernel per client count, and one more).
 */
async function runAgentPath(o: { kernel: KernelImage; counts: readonly number[]; cBench: string; quick: boolean; boot: number; progress: (line: string) => void }): Promise<AgentBoot> {
  const root = packageRoot();
  o.progress(`boot ${o.boot}: the agent path, ${o.counts.join(', ')} client(s), ${o.counts.length + 1} kernels`);
  const run = await runVm({
    name: `bench-agent-${o.kernel.release}`,
    kernels: [o.kernel.path],
    scenarios: [path.join(root, 'dist', 'bench', 'agent-scenario.js')],
    files: { [GUEST_C_BENCH]: o.cBench }, // for the guest's clock tick
    cmdline: agentCmdline(o.counts),
    cpus: GUEST_CPUS,
    logDir: path.join(root, '.vm-out'),
    timeoutMs: o.quick ? 600_000 : 1_800_000,
    onProgress: o.progress,
  });
  if (!run.ok) throw new Error(`the agent path (boot ${o.boot}) failed: ${run.reason}\n${run.report()}`);
  return agentBoot((stage) => run.result(AGENT_CASE, stage)?.value, o.counts, run.arrivals);
}

function valuesOf(run: VmRun): StageValues {
  return (caseName, stage) => run.result(caseName, stage)?.value;
}

/** The kernel to boot: `choice` as a path, release or series; else 7.2, else the oldest. */
export function pickKernel(choice: string | undefined, kernels: readonly KernelImage[] = findKernels()): KernelImage {
  if (choice !== undefined && fs.existsSync(choice) && fs.statSync(choice).isFile()) {
    return { path: path.resolve(choice), release: kernelRelease(choice) ?? path.basename(choice), source: 'LIVEUPDATE_KERNEL' };
  }
  if (kernels.length === 0) throw new Error(NO_KERNEL_HELP);
  const wanted = choice ?? DEFAULT_SERIES;
  const match = kernels.find((k) => k.release === wanted || k.release.startsWith(`${wanted}.`));
  if (match !== undefined) return match;
  if (choice !== undefined) throw new Error(`no kernel ${choice} among ${kernels.map((k) => k.release).join(', ')}`);
  return kernels[0] as KernelImage;
}

/**
 * Compiles bench/luo_bench.c static into build/bench/ (the guest has no C
 * library of its own). Needs a C compiler and a static libc (Debian: libc6-dev).
 */
export function buildCBench(root: string, progress: (line: string) => void = () => {}): string {
  const out = compileC({
    sources: [path.join(root, 'bench', 'luo_bench.c')],
    out: path.join(root, 'build', 'bench', 'luo_bench'),
    static: true,
    flags: ['-Werror', '-I', path.join(libraryRoot(), 'include'), '-I', path.join(root, 'vm')],
  });
  progress(`built ${path.relative(root, out)} (${Math.round(fs.statSync(out).size / 1024)} KiB, static)`);
  return out;
}

function qemuVersion(): string {
  try {
    return execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0]?.trim() ?? 'QEMU';
  } catch {
    return 'QEMU (version unknown)';
  }
}

/** The host's clock tick, from getconf (node has no sysconf). */
function hostClockTick(): number {
  const tick = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  if (!Number.isSafeInteger(tick) || tick <= 0) throw new Error('getconf CLK_TCK gave no clock tick');
  return tick;
}

/** The commit measured, or "unknown" outside a git checkout. */
function commitOf(root: string): string {
  try {
    return execFileSync('git', ['describe', '--always', '--dirty', '--abbrev=12'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

function cpuModel(): string {
  const match = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  return match?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
}

/** Command-line options of `npm run bench`. */
export function parseArgs(argv: readonly string[]): BenchOptions & { json: boolean; hostOnly: boolean; agentOnly: boolean; groupsOnly: boolean; groups: GroupOptions } {
  let json = false;
  let groupsOnly = false;
  let all = false;
  let groupBoots = GROUP_BOOTS;
  const asked = { systemd: false, vmm: false, fleet: 0 };
  let quick = false;
  let hostOnly = false;
  let agentOnly = false;
  let boots: number | undefined;
  let kernel: string | undefined;
  let memory: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--json') json = true;
    else if (arg === '--quick') quick = true;
    else if (arg === '--host-only') hostOnly = true;
    else if (arg === '--agent-only') agentOnly = true;
    else if (arg === '--groups-only') groupsOnly = true;
    else if (arg === '--all') all = true;
    else if (arg === '--systemd') asked.systemd = true;
    else if (arg === '--vmm') asked.vmm = true;
    else if (arg === '--fleet' || arg === '--group-boots') {
      const n = Number(argv[++i]);
      if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${arg} needs a positive integer`);
      if (arg === '--fleet') asked.fleet = n;
      else groupBoots = n;
    } else if (arg === '--boots') {
      boots = Number(argv[++i]);
      if (!Number.isSafeInteger(boots) || boots < 1) throw new Error('--boots needs a positive integer');
    } else if (arg === '--kernel' || arg === '--memory') {
      const value = argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      if (arg === '--kernel') kernel = value;
      else memory = value;
    } else throw new Error(`unknown argument ${String(arg)}: use [--json] [--quick] [--boots N] [--host-only | --agent-only] [--kernel 7.2|7.3|/path/bzImage] [--memory 4G] [--systemd] [--vmm] [--fleet N] [--group-boots N] [--groups-only] [--all]`);
  }
  const groups: GroupOptions = all
    ? { systemd: groupBoots, vmm: groupBoots, fleet: asked.fleet || FLEET_HOSTS }
    : { systemd: asked.systemd ? groupBoots : 0, vmm: asked.vmm ? groupBoots : 0, fleet: asked.fleet };
  if (groupsOnly && !anyGroup(groups)) throw new Error('--groups-only needs a group: --systemd, --vmm, --fleet N or --all');
  if (hostOnly && anyGroup(groups)) throw new Error('--host-only runs no guest: it takes no group');
  if (agentOnly && (hostOnly || groupsOnly || anyGroup(groups))) throw new Error('--agent-only runs the agent path alone: it takes no --host-only, --groups-only or group');
  return { json, quick, hostOnly, agentOnly, groupsOnly, groups, ...(boots === undefined ? {} : { boots }), ...(kernel === undefined ? {} : { kernel }), ...(memory === undefined ? {} : { memory }) };
}

async function main(): Promise<void> {
  const started = Date.now();
  const options = parseArgs(process.argv.slice(2));
  const [result, text] = options.hostOnly
    ? await runHostBench(options).then((r) => [r, formatHostTable(r)] as const)
    : options.agentOnly
      ? await runAgentOnly(options).then((r) => [r, formatAgentOnly(r)] as const)
    : options.groupsOnly
      ? await runGroupsOnly(options.groups).then((r) => [r, formatGroups(r.groups)] as const)
      : await runBench(options).then((r) => [r, [formatTable(r), ...(r.groups === undefined ? [] : [formatGroups(r.groups)])].join('\n\n')] as const);
  process.stderr.write(`[bench] done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  process.stdout.write(options.json ? `${JSON.stringify(result, null, 2)}\n` : `${text}\n`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`[bench] ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
