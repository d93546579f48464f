/**
 * The kernel preflight on a real LUO kernel, in one boot and no kexec: the
 * running kernel's handover format and KHO scratch as the kernel itself
 * exposes them; the agent's dry run into the other test kernel (accepted,
 * the cross-release warning given); an update into Debian's own kernel,
 * built without LUO, refused at the checks with nothing loaded; and the
 * library's preflight throwing the typed error for it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { kernel, KernelWithoutLiveUpdateError, readKernelLog } from 'liveupdate';
import { AgentProcess, defineCase, defineScenario, runCli, type JsonValue, type StageContext } from 'liveupdate-conformance';

/** Where the test puts the other test kernel (its build config `config` beside it). */
export const OTHER_KERNEL = '/boot/preflight/other/bzImage';
/** Where the test puts what the host read of the kernels, with its own code: `{ running, other, debian }` releases. */
export const EXPECTED = '/boot/preflight/expected.json';
/** Debian's images go where Debian installs them: /usr/lib/modules/RELEASE/{vmlinuz,config}. */
const MODULES = '/usr/lib/modules';
const SOCKET = '/run/liveupdate/agent.sock';
const KHO_OUT = '/sys/kernel/debug/kho/out';

interface Expected {
  running: string;
  other: string;
  debian: string;
}

interface UpdateJson {
  result: string;
  checks?: Array<{ name: string; ok: boolean }>;
  kernel?: kernel.KernelPreflight;
  details?: { checks: Array<{ name: string; ok: boolean }>; kernel?: kernel.KernelPreflight };
}

const expected = (): Expected => JSON.parse(fs.readFileSync(EXPECTED, 'utf8')) as Expected;
const debianImage = (): string => path.join(MODULES, expected().debian, 'vmlinuz');
const kexecLoaded = (): string => fs.readFileSync('/sys/kernel/kexec_loaded', 'utf8').trim();
const failedChecks = (checks: Array<{ name: string; ok: boolean }> | undefined): string[] | null => checks?.filter((c) => !c.ok).map((c) => c.name) ?? null;

/** Lines of `file` that match `pattern`, or why it cannot be read. */
function grep(file: string, pattern: RegExp): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => pattern.test(l));
  } catch (error) {
    return [`(${(error as Error).message})`];
  }
}

/** Where the kernel shows its KHO state: reported for the record, then the preflight against what debugfs says, read here on its own. */
function runningKernel(ctx: StageContext): void {
  ctx.report('debugfs kho/out', fs.existsSync(KHO_OUT) ? fs.readdirSync(KHO_OUT) : []);
  ctx.report('debugfs kho/out/sub_fdts', fs.existsSync(`${KHO_OUT}/sub_fdts`) ? fs.readdirSync(`${KHO_OUT}/sub_fdts`) : []);
  ctx.report('/proc/iomem lines naming KHO or scratch', grep('/proc/iomem', /kho|scratch/i));
  ctx.report('/proc/cmdline', fs.readFileSync('/proc/cmdline', 'utf8').trim());
  ctx.report('kernel log lines naming KHO or scratch', readKernelLog()?.split('\n').filter((l) => /KHO|scratch/i.test(l)) ?? ['(not readable)']);
  const lens = fs.readFileSync(`${KHO_OUT}/scratch_len`, 'utf8').trim().split('\n').map((l) => Number.parseInt(l, 16));
  const luoState = fs.readFileSync(`${KHO_OUT}/sub_fdts/LUO`);
  ctx.report('scratch_len', lens);
  const running = kernel.runningKernel();
  ctx.equal('the release is uname -r', running.release, expected().running);
  ctx.equal('the format is what the kernel wrote at the start of its outgoing LUO state', [running.format, running.formatSource], [luoState.toString('latin1', 0, luoState.indexOf(0)), 'debugfs']);
  ctx.equal('which is the format 7.2 and later write (luo-v5, from the 7.2.13 and 7.3.4 sources)', running.format, 'luo-v5');
  ctx.equal('the scratch reservation is what debugfs lists, area by area', running.scratch.areas?.map((a) => a.bytes) ?? null, lens);
  ctx.check('and it is not empty', (running.scratch.totalBytes ?? 0) > 0, running.scratch.totalBytes);
}

let agent: AgentProcess | undefined;

async function otherKernelAccepted(ctx: StageContext): Promise<void> {
  agent = await AgentProcess.start({ socket: SOCKET });
  const { running, other } = expected();
  const dry = await runCli(['update', '--socket', SOCKET, '--kernel', OTHER_KERNEL, '--cmdline', 'liveupdate=on kho=on kho_scratch=50%', '--dry-run', '--json']);
  ctx.equal('the dry run passes (exit 0)', dry.status, 0) || ctx.report('stderr', dry.stderr);
  const report = dry.json<UpdateJson>();
  ctx.equal('every check passed, the kernel preflight among them', [failedChecks(report.checks), report.checks?.filter((c) => c.name.startsWith('kernel-')).map((c) => c.name) ?? null], [[], ['kernel-readable', 'kernel-image', 'kernel-format', 'kernel-luo']]);
  const k = report.kernel;
  ctx.equal('both releases and formats', [k?.running.release, k?.running.format, k?.target.release, k?.target.format] as JsonValue, [running, 'luo-v5', other, 'luo-v5']);
  ctx.equal('LUO found in the config beside the image', [k?.target.liveUpdate.present, k?.target.liveUpdate.config] as JsonValue, [true, path.join(path.dirname(OTHER_KERNEL), 'config')]);
  const crossing = running !== other;
  ctx.equal('verdict: a warning exactly when the releases differ', [k?.verdict, k?.warnings.some((w) => w.includes(running) && w.includes(other) && /compatibility/.test(w))] as JsonValue, crossing ? ['warn', true] : ['accept', false]);
  ctx.equal("the next command line's scratch size is read", k?.target.scratchParameter, 'kho_scratch=50%');
  ctx.check("the running kernel's KHO scratch is in the report", (k?.running.scratch.totalBytes ?? 0) > 0, k?.running.scratch as unknown as JsonValue);
  ctx.report('preflight ms (in the agent)', k?.ms ?? null);
}

async function kernelWithoutLuoRefused(ctx: StageContext): Promise<void> {
  const { running, debian } = expected();
  ctx.equal('nothing is loaded before', kexecLoaded(), '0');
  const update = await runCli(['update', '--socket', SOCKET, '--kernel', debianImage(), '--cmdline', 'liveupdate=on kho=on', '--timeout', '5', '--json']);
  ctx.equal('a real update (not a dry run) is refused: exit 1', update.status, 1) || ctx.report('stderr', update.stderr);
  const report = update.json<UpdateJson>();
  ctx.equal('at the checks, kernel-luo the one that failed', [report.result, failedChecks(report.details?.checks)] as JsonValue, ['refused', ['kernel-luo']]);
  const refusal = report.details?.kernel?.refusals[0];
  ctx.equal('the refusal is KernelWithoutLiveUpdateError, naming the release and CONFIG_LIVEUPDATE', [refusal?.code, refusal?.message.includes(debian), refusal?.message.includes('CONFIG_LIVEUPDATE off')] as JsonValue, ['ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO', true, true]);
  ctx.equal('its config is the one Debian installs beside the image', report.details?.kernel?.target.liveUpdate.config, path.join(MODULES, debian, 'config'));
  ctx.equal('nothing was loaded (/sys/kernel/kexec_loaded)', kexecLoaded(), '0');
  const sessions = await runCli(['sessions', '--socket', SOCKET, '--json']);
  ctx.equal('the agent still serves', sessions.status, 0);
  let thrown: unknown;
  try {
    kernel.preflightSync({ kernel: debianImage(), cmdline: 'liveupdate=on kho=on' });
  } catch (error) {
    thrown = error;
  }
  const typed = thrown instanceof KernelWithoutLiveUpdateError ? thrown : undefined;
  ctx.check('kernel.preflightSync throws KernelWithoutLiveUpdateError', typed !== undefined, String(thrown));
  ctx.equal('with both releases and the options off', [typed?.running, typed?.target, typed?.missing] as JsonValue, [running, debian, ['CONFIG_KEXEC_HANDOVER', 'CONFIG_LIVEUPDATE', 'CONFIG_LIVEUPDATE_MEMFD']]);
  ctx.equal('the agent stops cleanly', await agent?.stop(), 0);
}

/** @internal */
export default defineScenario('preflight', [
  defineCase('running-kernel', [runningKernel]),
  defineCase('other-kernel-accepted', [otherKernelAccepted]),
  defineCase('kernel-without-luo-refused', [kernelWithoutLuoRefused]),
]);
