/**
 * `npm run demo`: a VM's memory surviving a kernel replacement, on a real
 * LUO kernel under QEMU. Builds or reuses the test kernel, boots it, and
 * runs the demo scenario (./scenario.ts): an agent, two VMM-like clients
 * filling and preserving their guest memory, `liveupdate update` kexecing
 * into the same kernel, and each client claiming its memory back, checking
 * it byte for byte and resuming its counter. Prints progress as it goes and
 * a summary; exits 0 only if everything held.
 *
 * With `--host systemd` the same runs on the systemd guest image (./systemd.ts).
 *
 *   node dist/demo/main.js [--memory MiB] [--host initramfs|systemd]
 *   node dist/demo/main.js --fleet N     (a rollout over N hosts by ansible-playbook: ./fleet.ts)
 *   node dist/demo/main.js --vmm qemu [--memory MiB]   (a QEMU guest resumed across the kexec: ./vmm-qemu.ts)
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { findKernels, type KernelImage } from '../vm/kernels.js';
import { hasQemu, qemuHelp } from '../vm/prerequisites.js';
import { runVm } from '../vm/qemu.js';
import type { GuestRecord } from '../vm/protocol.js';
import { packageRoot } from '../vm/initramfs.js';
import { MIB_PARAM, VMS, type DemoSummary } from './scenario.js';
import { blackoutLines } from './blackout.js';
import type { Arrivals } from '../vm/clock.js';
import { fleetDemo, MAX_FLEET } from './fleet.js';
import { vmmQemuDemo } from './vmm-qemu.js';
import { hostLine, parseHost, systemdHostRun, type DemoHost } from './systemd.js';

/** Guest memory per VM by default: fills, checks and kexecs in a couple of minutes under emulation. */
const DEFAULT_MIB = 256;
const CASE = 'demo/guest-memory';
const USAGE = `usage: npm run demo [-- --memory MiB] [--host initramfs|systemd]   (guest memory per VM, default ${DEFAULT_MIB}; systemd: systemd 262 as PID 1, the agent and VMMs as units)
       npm run demo -- --fleet N       (a rollout over N hosts by ansible-playbook, 1 to ${MAX_FLEET})
       npm run demo -- --vmm qemu [--memory MiB]   (a QEMU guest resumed across the kexec)`;

const started = Date.now();
function say(line: string): void {
  process.stdout.write(`[demo ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}\n`);
}

/** The parsed command line, or the text to print (usage: exit 0; a mistake: exit 2). */
export function parseDemoArgs(argv: readonly string[]): { mib: number; host: DemoHost } | { fleet: number } | string {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { memory: { type: 'string' }, host: { type: 'string' }, fleet: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (error) {
    return `${(error as Error).message}\n${USAGE}`;
  }
  if (values.help === true) return USAGE;
  if (values.fleet !== undefined) {
    const size = Number(values.fleet);
    return Number.isInteger(size) && size >= 1 && size <= MAX_FLEET ? { fleet: size } : `--fleet takes a whole number of hosts from 1 to ${MAX_FLEET}, got ${values.fleet}\n${USAGE}`;
  }
  const mib = Number(values.memory ?? DEFAULT_MIB);
  if (!Number.isInteger(mib) || mib < 1 || mib > 4096) return `--memory takes a whole number of MiB from 1 to 4096, got ${String(values.memory)}\n${USAGE}`;
  const host = parseHost(values.host);
  if (host !== 'initramfs' && host !== 'systemd') return `${host}\n${USAGE}`;
  return { mib, host };
}

/** The first LUO kernel found, else one built now (7.2: about 10 minutes on 2 cores, once). */
function kernel(): KernelImage | undefined {
  const found = findKernels()[0];
  if (found !== undefined) {
    say(`kernel: ${found.release} (${found.source === 'cache' ? 'cached' : 'LIVEUPDATE_KERNEL'}: ${found.path})`);
    return found;
  }
  say('kernel: none built yet; building the LUO test kernel (vm/build-kernel.sh 7.2: about 10 minutes on 2 cores, cached afterwards)');
  const build = spawnSync('bash', [path.join(packageRoot(), 'vm', 'build-kernel.sh'), '7.2'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (build.status !== 0) return undefined; // its last line says what is missing
  return kernel();
}

/** Guest RAM: room for node and the guest image (held several times over around a kexec) plus both VMs. */
export function guestMemory(mib: number): string {
  return `${2048 + VMS.length * mib}M`;
}

function onRecord(record: GuestRecord): void {
  if (record.t === 'report' && record.name === 'say' && typeof record.value === 'string') say(record.value);
  if (record.t === 'check' && !record.ok) say(`FAILED: ${record.name}: ${JSON.stringify(record.detail ?? null)}`);
  if (record.t === 'kexec') say(`jump: \`liveupdate update\` waits for both VMMs (ready), seals the agent's manifest and kexecs into ${path.basename(record.kernel)}`);
  if (record.t === 'boot') say(`stage ${record.stage}: ${record.release} up (kernel uptime ${(record.uptimeMs / 1000).toFixed(1)} s when the runner started)`);
}

function summary(s: DemoSummary, elapsedMs: number, arrivals: Arrivals): string[] {
  return [
    `PASSED in ${(elapsedMs / 1000).toFixed(0)} s: ${VMS.length} VMs x ${s.mib} MiB of guest memory survived a kexec byte for byte (kexec #${s.kexecCount})`,
    ...blackoutLines(arrivals, s),
    `counters: ${VMS.map(({ vm }) => `${vm} ${s.counters[vm]?.ready} at ready -> ${s.counters[vm]?.stopped} at the jump -> ${s.counters[vm]?.resumed} resumed`).join('; ')}`,
  ];
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.some((arg) => arg === '--vmm' || arg.startsWith('--vmm='))) return vmmQemuDemo(argv, say);
  const args = parseDemoArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write(`${args}\n`);
    return args === USAGE ? 0 : 2;
  }
  if ('fleet' in args) return fleetDemo(args.fleet, say);
  const { mib, host } = args;
  const systemd = host === 'systemd' ? systemdHostRun(mib) : undefined;
  if (typeof systemd === 'string') {
    process.stderr.write(`${systemd}\n`);
    return 3;
  }
  if (!hasQemu()) {
    process.stderr.write(`${qemuHelp()}\n`);
    return 3;
  }
  const image = kernel();
  if (image === undefined) return 3;
  const memory = systemd?.memory ?? guestMemory(mib);
  say(`boot: QEMU (software emulation, 2 vCPUs, ${memory} RAM) on ${hostLine(host)}; the first stage runs the agent and the VMMs`);
  const run = await runVm({
    name: 'demo',
    kernels: [image.path],
    scenarios: [path.join(__dirname, 'scenario.js')],
    ...systemd,
    cmdline: `${MIB_PARAM}=${mib}`,
    memory,
    timeoutMs: 900_000,
    onProgress: (line) => {
      if (/guest image|timed out|FAILED|fatal/.test(line)) say(line.replace(/^\[vm \S+\s+[\d.]+ s\] /, ''));
    },
    onRecord,
  });
  const value = run.result(CASE, 2)?.value as unknown as DemoSummary | undefined;
  if (!run.ok || value === undefined) {
    say(`FAILED: ${run.reason}`);
    process.stderr.write(`${run.report()}\n`);
    return 1;
  }
  for (const line of summary(value, run.elapsedMs, run.arrivals)) say(line);
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`demo: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
