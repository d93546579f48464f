/**
 * `npm run bench`: builds the C side (bench/luo_bench.c, static), boots one
 * LUO kernel under QEMU once, runs the node and the C measurements in that
 * same guest run (scenario.ts), and prints a table, or with `--json` one JSON
 * object. Progress goes to stderr, results to stdout.
 *
 *   npm run bench -- [--json] [--quick] [--kernel 7.3|/path/bzImage]
 *
 * It never fails for slow numbers: it exits non-zero only when the run
 * itself broke (no kernel, a guest failure).
 * @internal
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { libraryRoot, packageRoot } from '../vm/initramfs.js';
import { findKernels, kernelRelease, NO_KERNEL_HELP, type KernelImage } from '../vm/kernels.js';
import { runVm, type VmRun } from '../vm/qemu.js';
import { compileStatic } from '../vm/static-program.js';
import { benchCmdline, FULL, GUEST_C_BENCH, QUICK, type BenchParams } from './params.js';
import { buildResult, formatTable, type BenchResult, type StageValues } from './report.js';

/** How to run the benchmark. */
export interface BenchOptions {
  /** `--quick`: fewer rounds and smaller sizes (CI). */
  readonly quick?: boolean;
  /** A kernel series ("7.2"), a release ("7.2.13") or a bzImage path; default 7.2, else the oldest found. */
  readonly kernel?: string;
  /** Guest memory; the large memfds of both sides must fit (default 4G). */
  readonly memory?: string;
  /** Progress lines (default: stderr). */
  readonly onProgress?: (line: string) => void;
}

const GUEST_CPUS = 2;
const DEFAULT_SERIES = '7.2';

/** Runs the benchmark; rejects when the run breaks (never for slow numbers). */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const progress = options.onProgress ?? ((line: string) => process.stderr.write(`[bench] ${line}\n`));
  const root = packageRoot();
  const params: BenchParams = options.quick === true ? QUICK : FULL;
  const kernel = pickKernel(options.kernel);
  const cBench = buildCBench(root, progress);
  const memory = options.memory ?? '4G';
  progress(`kernel ${kernel.release}, ${options.quick === true ? 'quick' : 'full'} run: ${JSON.stringify(params)}`);
  const run = await runVm({
    name: `bench-${kernel.release}`,
    kernels: [kernel.path], // every stage (three kernels) boots the same image
    scenarios: [path.join(root, 'dist', 'bench', 'scenario.js')],
    files: { [GUEST_C_BENCH]: cBench },
    cmdline: benchCmdline(params),
    memory,
    cpus: GUEST_CPUS,
    logDir: path.join(root, '.vm-out'),
    timeoutMs: options.quick === true ? 600_000 : 1_800_000,
    onProgress: progress,
  });
  if (!run.ok) throw new Error(`the benchmark run failed: ${run.reason}\n${run.report()}`);
  const info = {
    kernel: run.stages[0]?.release ?? kernel.release,
    mode: options.quick === true ? ('quick' as const) : ('full' as const),
    params,
    machine: { nproc: os.cpus().length, cpu: cpuModel(), accel: 'tcg', guest_memory: memory, guest_cpus: GUEST_CPUS },
    date: new Date().toISOString(),
  };
  return buildResult(info, valuesOf(run));
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

/** Compiles bench/luo_bench.c static into build/bench/. */
export function buildCBench(root: string, progress: (line: string) => void = () => {}): string {
  const out = compileStatic([path.join(root, 'bench', 'luo_bench.c')], path.join(root, 'build', 'bench', 'luo_bench'), ['-Werror', '-I', path.join(libraryRoot(), 'include')]);
  progress(`built ${path.relative(root, out)} (${Math.round(fs.statSync(out).size / 1024)} KiB, static)`);
  return out;
}

function cpuModel(): string {
  const match = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  return match?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
}

/** Command-line options of `npm run bench`. */
export function parseArgs(argv: readonly string[]): BenchOptions & { json: boolean } {
  let json = false;
  let quick = false;
  let kernel: string | undefined;
  let memory: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--json') json = true;
    else if (arg === '--quick') quick = true;
    else if (arg === '--kernel' || arg === '--memory') {
      const value = argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      if (arg === '--kernel') kernel = value;
      else memory = value;
    } else throw new Error(`unknown argument ${String(arg)}: use [--json] [--quick] [--kernel 7.2|7.3|/path/bzImage] [--memory 4G]`);
  }
  return { json, quick, ...(kernel === undefined ? {} : { kernel }), ...(memory === undefined ? {} : { memory }) };
}

async function main(): Promise<void> {
  const started = Date.now();
  const options = parseArgs(process.argv.slice(2));
  const result = await runBench(options);
  process.stderr.write(`[bench] done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  process.stdout.write(options.json ? `${JSON.stringify(result, null, 2)}\n` : `${formatTable(result)}\n`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`[bench] ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
