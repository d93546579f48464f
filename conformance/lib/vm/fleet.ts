/**
 * A fleet of LUO hosts for a real `ansible-playbook`: N guests of the
 * systemd image (systemd-image.ts) booted at once, each with sshd reachable
 * on a loopback port of its own (QEMU's user-mode network, the guest
 * configured by the kernel's `ip=`, which every kexec passes on), the
 * agent as the repository ships its units (units/: systemd mode, the
 * orderly `systemctl kexec`) and one VMM-like client (fleet-vmm.ts) holding a
 * memfd pattern through the agent. An ssh key made for the run goes into
 * each copy of the image as root's authorized key; the inventory names the
 * hosts `host-1` ... `host-N`.
 *
 * Each host's runner (fleet-host.ts) reports every boot over the result
 * channel: its release, boot id and what its client did (filled, or claimed
 * with every byte checked), after samples of that kernel's clocks, which
 * place the boot's instants on the host's clock ({@link FleetHost.clocks}).
 * {@link Fleet.stop} kills every QEMU and removes every temporary file,
 * whatever happened before.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { runProcess, type ProcessResult } from '../harness/process.js';
import { CLOCK_REPORT, guestClockFits, onHost, type GuestClockFit, type StampedRecord } from './clock.js';
import { FLEET_UNITS, HOST_REPORT, type HostReport } from './fleet-host.js';
import type { VmmConfig } from './fleet-vmm.js';
import { libraryRoot, packageRoot } from './initramfs.js';
import { kernelRelease } from './kernels.js';
import { GUEST_PACKAGE, GUEST_ROOT, type GuestRecord } from './protocol.js';
import { runVm, type VmRun } from './qemu.js';

/** The guest's address on QEMU's user-mode network, and the kernel's `ip=` that sets it before any userspace runs. */
const GUEST_IP = 'ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off';
/** The agent's socket in the guests (the shipped liveupdate-agent.socket). */
const AGENT_SOCKET = '/run/liveupdate/agent.sock';
/** The user the VMM-like client runs as (made by systemd-sysusers at boot; the agent's policy lets it connect). */
const VMM_USER = { name: 'lu-vmm', uid: 1001 } as const;
/** Where the `liveupdate` command is in the guests. */
export const GUEST_LIVEUPDATE = '/usr/local/bin/liveupdate';
/** The client's `--check` as a command the rollout's health gate runs. */
export const GUEST_VMM_CHECK = `/usr/bin/node ${GUEST_PACKAGE}/dist/vm/fleet-vmm.js --check`;
/** How long a host may take from QEMU's start to its client's first report and sshd answering. */
const BOOT_TIMEOUT_MS = 420_000;

/** One host of the fleet as asked for. */
export interface FleetHostSpec {
  /** Its client says ready on its own (default), or only when told ({@link Fleet.sayReady}). */
  readonly clientReady?: boolean;
}

/** What {@link startFleet} boots. */
export interface FleetOptions {
  /** The systemd image (findSystemdImage). */
  readonly systemdImage: string;
  /** The kernel every host boots, and the kernel the rollout jumps to (both are in every host's /boot). */
  readonly kernels: { readonly boot: string; readonly target: string };
  /** How many hosts (default 3), or one spec per host. */
  readonly hosts?: number | readonly FleetHostSpec[];
  /** Guest memory per host (default 1536M). */
  readonly memory?: string;
  /** vCPUs per host (default 1: the hosts share the machine's cores). */
  readonly cpus?: number;
  /** More files for every host: guest path → host path (another kernel to try, say). */
  readonly files?: Readonly<Record<string, string>>;
  /** Each client's guest memory in MiB (default 16). */
  readonly clientMib?: number;
  /** A label for temp dirs and console logs (default "fleet"). */
  readonly name?: string;
  /** Where each host's console log goes (`<name>-host-N.console.log`). */
  readonly logDir?: string;
  /** Progress lines (default: stderr). */
  readonly onProgress?: (line: string) => void;
  /** Every record a host sends (its boot reports among them). */
  readonly onRecord?: (host: FleetHost, record: GuestRecord) => void;
  /** Hard limit for each host's whole life (default 1800 s): QEMU is killed after it. */
  readonly timeoutMs?: number;
}

/** One running host. */
export interface FleetHost {
  /** `host-1` ... */
  readonly name: string;
  /** The loopback port its sshd is forwarded to. */
  readonly port: number;
  /** Its guest path of the kernel the rollout jumps to. */
  readonly targetKernel: string;
  /** What it reported on each boot so far, in order. */
  readonly boots: HostReport[];
  /**
   * Each boot's clocks on the host's (`performance.now()`), from the clock
   * samples that came before its report; undefined for a boot that sent none.
   */
  readonly clocks: Array<GuestClockFit | undefined>;
  /** Resolves when its QEMU is gone. */
  readonly run: Promise<VmRun>;
}

/** One line of ansible-playbook's progress: a task's result on a host. */
export interface PlaybookEvent {
  readonly host: string;
  /** The task's name as the role gives it (`preflight | ...`). */
  readonly task: string;
  /** ok, changed, skipping, failed, fatal, unreachable... */
  readonly status: string;
}

/** What the rollout role writes per host (examples/ansible, `liveupdate_summary_dir`). */
export interface RolloutSummary {
  readonly host: string;
  readonly result: 'updated' | 'already-on-target' | 'failed';
  /** Failed: the phase it stopped in, and why. */
  readonly phase?: string;
  readonly reason?: string;
  readonly releaseBefore?: string;
  readonly releaseAfter?: string;
  /** The host's boot id before the update (`liveupdate status --json`) and after it (the same on a host it did not update). */
  readonly bootBefore?: string;
  readonly bootAfter?: string;
  readonly kexecCount?: number;
  /** The host's own clock (ms since the epoch): the agent's manifest, and the end of the health gate. */
  readonly updateStartedAt?: number | null;
  readonly frozenAt?: number | null;
  readonly firstOpenAt?: number | null;
  readonly healthyAt?: number;
  /** frozenAt to the agent back on the device in the new kernel. */
  readonly blackoutMs?: number | null;
  /** The agent's sessions after the jump, as `liveupdate sessions --json` lists them. */
  readonly sessions?: ReadonlyArray<{ name: string; kernelName: string; owner: number; state: string; claimedAt?: number }>;
  readonly sessionsClaimed?: number;
  /** The controller's clock (ms): the role's start and end on this host. */
  readonly controllerStartedAt?: number;
  readonly controllerFinishedAt?: number;
}

/** How a playbook run ended. */
export interface PlaybookResult extends ProcessResult {
  /** Per host, what the role wrote (hosts it never reached have none). */
  readonly summaries: Record<string, RolloutSummary>;
  readonly elapsedMs: number;
}

/** Options of {@link Fleet.playbook}. */
export interface PlaybookOptions {
  /** The playbook (default: examples/ansible/rollout.yml of this repository). */
  readonly playbook?: string;
  /** Extra variables; the fleet adds the target kernel, its release, the summary dir and the client check. */
  readonly vars?: Readonly<Record<string, unknown>>;
  /** Each task result as it happens. */
  readonly onEvent?: (event: PlaybookEvent) => void;
  /** Bound on the whole run (default 1800 s). */
  readonly timeoutMs?: number;
}

/** A running fleet. */
export interface Fleet {
  readonly hosts: readonly FleetHost[];
  /** The ansible inventory (INI). */
  readonly inventory: string;
  /** The release of the target kernel (what `uname -r` says once a host runs it). */
  readonly targetRelease: string;
  /** Runs a shell command on a host as root. */
  ssh(host: FleetHost, command: string, timeoutMs?: number): Promise<ProcessResult>;
  /** Resolves with the host's `n`-th boot report (1-based), or rejects after `timeoutMs`. */
  boot(host: FleetHost, n: number, timeoutMs?: number): Promise<HostReport>;
  /** Tells a host's client to say ready (SIGUSR1). */
  sayReady(host: FleetHost): Promise<void>;
  /** Runs ansible-playbook over the fleet. */
  playbook(options?: PlaybookOptions): Promise<PlaybookResult>;
  /** Kills every QEMU and removes every temporary file. */
  stop(): Promise<void>;
}

/** A free TCP port on the loopback interface (the kernel's pick; QEMU binds it right after). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The repository's shipped unit files (units/): the agent runs as they ship, in systemd mode. */
function shippedUnit(name: string): string {
  return path.join(fs.realpathSync(libraryRoot()), 'units', name);
}

function vmmUnit(): string {
  return [
    '[Unit]',
    'Description=VMM-like client of the fleet: guest memory kept through the agent',
    `After=${FLEET_UNITS.agent}`,
    `Requires=${FLEET_UNITS.agent}`,
    '',
    '[Service]',
    `User=${VMM_USER.name}`,
    `Group=${VMM_USER.name}`,
    // Where it writes what it did: /run/lu-vmm, owned by its user.
    'RuntimeDirectory=lu-vmm',
    'Environment=HOME=/tmp',
    `ExecStart=/usr/bin/node ${GUEST_PACKAGE}/dist/vm/fleet-vmm.js /etc/lu-fleet/vmm.json`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** `liveupdate` in the guest: the library's CLI module run by the guest's node (the image carries dist/, not bin/). */
function cliWrapper(): string {
  return `#!/usr/bin/node
'use strict';
Promise.resolve(require('${GUEST_ROOT}/node_modules/liveupdate/dist/cli.js').main(process.argv.slice(2))).then((status) => {
  process.exitCode = status;
});
`;
}

/** Writes the files every host gets and the one that differs per host; returns guest path → host path. */
function hostFiles(dir: string, publicKey: string, vmm: VmmConfig): Record<string, string> {
  const write = (name: string, text: string, mode: number): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text, { mode });
    fs.chmodSync(file, mode);
    return file;
  };
  return {
    // debugfs takes each file's mode: sshd's StrictModes wants the key file not writable by others.
    '/root/.ssh/authorized_keys': write('authorized_keys', publicKey, 0o600),
    [GUEST_LIVEUPDATE]: write('liveupdate', cliWrapper(), 0o755),
    '/etc/sysusers.d/lu-vmm.conf': write('sysusers.conf', `u ${VMM_USER.name} ${VMM_USER.uid} "fleet VMM" /nonexistent\n`, 0o644),
    '/etc/liveupdate/policy.json': write('policy.json', JSON.stringify({ connect: { users: [VMM_USER.uid] } }), 0o644),
    [`/etc/systemd/system/${FLEET_UNITS.agent}`]: shippedUnit(FLEET_UNITS.agent),
    '/etc/systemd/system/liveupdate-agent.socket': shippedUnit('liveupdate-agent.socket'),
    // The shipped unit takes the agent's options from here.
    '/etc/default/liveupdate-agent': write('liveupdate-agent.default', 'LIVEUPDATE_AGENT_OPTIONS=--policy /etc/liveupdate/policy.json\n', 0o644),
    [`/etc/systemd/system/${FLEET_UNITS.vmm}`]: write('vmm.service', vmmUnit(), 0o644),
    '/etc/lu-fleet/vmm.json': write('vmm.json', JSON.stringify(vmm), 0o644),
  };
}

/** How many times ansible tries a connection that ssh gave up on (exit 255) again. */
const SSH_RETRIES = 3;

function sshArgs(key: string, port: number): string[] {
  return [
    '-i', key, '-p', String(port),
    '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
    // A host that kexecs drops its connections silently: notice it within seconds.
    '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3',
  ];
}

function inventoryText(hosts: readonly FleetHost[], key: string): string {
  return [
    '[liveupdate]',
    ...hosts.map((h) => `${h.name} ansible_host=127.0.0.1 ansible_port=${h.port}`),
    '',
    '[liveupdate:vars]',
    'ansible_user=root',
    `ansible_ssh_private_key_file=${key}`,
    `ansible_ssh_common_args='${sshArgs(key, 0).slice(4).join(' ')}'`,
    // Three guests under emulation on two cores can leave one unanswering for longer than the
    // keepalive allows: a connection that ssh gives up (exit 255) is tried again, as the
    // role's README advises, instead of failing the host UNREACHABLE in the middle of a phase.
    `ansible_ssh_retries=${SSH_RETRIES}`,
    'ansible_python_interpreter=/usr/bin/python3',
    '',
  ].join('\n');
}

/** The target's build config where a Debian host keeps it (/boot/config-RELEASE), so the agent's preflight can tell it has LUO. */
function targetConfig(image: string, release: string): Record<string, string> {
  const config = path.join(path.dirname(image), 'config');
  return fs.existsSync(config) ? { [`/boot/config-${release}`]: config } : {};
}

/** The kernel release an image reports, from its own header. */
function releaseOf(image: string): string {
  const release = kernelRelease(image);
  if (release === undefined) throw new Error(`cannot read the kernel release of ${image}`);
  return release;
}

/**
 * Boots the fleet and resolves once every host's client has reported its
 * first boot and its sshd answers; on any failure on the way, stops what
 * it started and rejects.
 */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const name = options.name ?? 'fleet';
  const specs: readonly FleetHostSpec[] = typeof options.hosts === 'object' ? options.hosts : Array.from({ length: options.hosts ?? 3 }, () => ({}));
  const progress = options.onProgress ?? ((line: string) => process.stderr.write(`${line}\n`));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `liveupdate-${name}-`));
  const abort = new AbortController();
  const hosts: FleetHost[] = [];
  const waiters = new Set<() => void>();
  const stop = async (): Promise<void> => {
    abort.abort();
    await Promise.allSettled(hosts.map((h) => h.run));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const key = path.join(dir, 'id_ed25519');
    const keygen = await runProcess('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `liveupdate ${name}`, '-f', key]);
    if (keygen.status !== 0) throw new Error(`ssh-keygen failed: ${keygen.stderr}`);
    const publicKey = fs.readFileSync(`${key}.pub`, 'utf8');
    const targetRelease = releaseOf(options.kernels.target);
    const scenario = path.join(packageRoot(), 'dist', 'vm', 'fleet-host.js');
    for (const [i, spec] of specs.entries()) {
      const hostName = `host-${i + 1}`;
      const hostDir = path.join(dir, hostName);
      fs.mkdirSync(hostDir);
      const port = await freePort();
      const files = hostFiles(hostDir, publicKey, { vm: hostName, mib: options.clientMib ?? 16, ready: spec.clientReady ?? true, socket: AGENT_SOCKET });
      const boots: HostReport[] = [];
      const clocks: Array<GuestClockFit | undefined> = [];
      let samples: StampedRecord[] = [];
      const host: FleetHost = {
        name: hostName,
        port,
        // planPayload places each distinct kernel as /boot/kernel-N.bzImage, in order.
        targetKernel: options.kernels.target === options.kernels.boot ? '/boot/kernel-0.bzImage' : '/boot/kernel-1.bzImage',
        boots,
        clocks,
        run: runVm({
          name: `${name}-${hostName}`,
          kernels: [options.kernels.boot, options.kernels.target],
          scenarios: [scenario],
          systemdImage: options.systemdImage,
          sshd: true,
          files: { ...files, ...targetConfig(options.kernels.target, targetRelease), ...options.files },
          memory: options.memory ?? '1536M',
          cpus: options.cpus ?? 1,
          cmdline: `${GUEST_IP} net.ifnames=0 systemd.hostname=${hostName}`,
          qemuArgs: ['-nic', `user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:${port}-:22`],
          timeoutMs: options.timeoutMs ?? 1_800_000,
          signal: abort.signal,
          // Once the fleet is stopped, a killed QEMU is no news.
          onProgress: (line) => {
            if (!abort.signal.aborted) progress(line);
          },
          onRecord: (record) => {
            if (record.t === 'report' && record.name === CLOCK_REPORT) samples.push({ atMs: performance.now(), record });
            if (record.t === 'report' && record.name === HOST_REPORT) {
              // Every sample since the previous report is this boot's (all of one stage: the fleet's kexecs keep lu.stage).
              clocks.push([...guestClockFits(samples).values()][0]);
              samples = [];
              boots.push(record.value as unknown as HostReport);
              waiters.forEach((wake) => wake());
            }
            options.onRecord?.(host, record);
          },
          ...(options.logDir === undefined ? {} : { logDir: options.logDir }),
        }),
      };
      // A host whose QEMU ended wakes every waiter: it will report nothing more.
      void host.run.finally(() => waiters.forEach((wake) => wake()));
      hosts.push(host);
    }
    const fleet = makeFleet(hosts, dir, key, targetRelease, waiters, stop);
    await Promise.all(hosts.map(async (h) => {
      const first = await fleet.boot(h, 1, BOOT_TIMEOUT_MS);
      if (first.vmm?.phase !== 'fresh') throw new Error(`${h.name}: its client did not start: ${JSON.stringify(first)}`);
      await waitForSsh(fleet, h);
      progress(`[fleet] ${h.name}: up on ${first.release}, sshd on 127.0.0.1:${h.port}, client ${first.vmm.vm} ${first.vmm.ready ? 'ready' : 'holding its memory, not ready'}`);
    }));
    return fleet;
  } catch (error) {
    await stop();
    throw error;
  }
}

async function waitForSsh(fleet: Fleet, host: FleetHost): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const result = await fleet.ssh(host, 'true', 30_000).catch((error: Error) => ({ status: null, stderr: error.message }));
    if (result.status === 0) return;
    if (Date.now() > deadline) throw new Error(`${host.name}: sshd on 127.0.0.1:${host.port} does not answer: ${result.stderr.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function makeFleet(hosts: FleetHost[], dir: string, key: string, targetRelease: string, waiters: Set<() => void>, stop: () => Promise<void>): Fleet {
  const inventory = path.join(dir, 'inventory.ini');
  fs.writeFileSync(inventory, inventoryText(hosts, key));
  const ended = new Set<FleetHost>();
  for (const h of hosts) void h.run.finally(() => ended.add(h));
  const fleet: Fleet = {
    hosts,
    inventory,
    targetRelease,
    ssh: (host, command, timeoutMs = 120_000) => runProcess('ssh', [...sshArgs(key, host.port), 'root@127.0.0.1', command], { timeoutMs }),
    boot: (host, n, timeoutMs = BOOT_TIMEOUT_MS) =>
      new Promise<HostReport>((resolve, reject) => {
        const check = (): void => {
          const report = host.boots[n - 1];
          if (report !== undefined) done(() => resolve(report));
          else if (ended.has(host)) done(() => reject(new Error(`${host.name}: QEMU ended before boot ${n} was reported`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`${host.name}: boot ${n} not reported within ${timeoutMs / 1000} s`))), timeoutMs);
        const done = (settle: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        check();
      }),
    sayReady: async (host) => {
      const result = await fleet.ssh(host, `systemctl kill --signal=SIGUSR1 ${FLEET_UNITS.vmm}`);
      if (result.status !== 0) throw new Error(`${host.name}: could not signal its client: ${result.stderr}`);
    },
    playbook: (options = {}) => runPlaybook(dir, inventory, hosts, targetRelease, options),
    stop,
  };
  return fleet;
}

/** A playbook progress printer: the first task of each phase of each host (one line per host per phase; `failed` is the rescue). */
export function phaseLines(say: (line: string) => void): (event: PlaybookEvent) => void {
  const seen = new Set<string>();
  return ({ host, task, status }) => {
    const [phase, what] = task.split(' | ');
    if (phase === undefined || what === undefined || phase === 'rollout') return;
    const key = `${host}\0${phase}`;
    if (seen.has(key) || status === 'skipping') return;
    seen.add(key);
    say(`${host} ${phase}: ${what}`);
  };
}

/**
 * A rollout summary's blackout (the agent's manifest `frozenAt` in the old
 * kernel to its first open of the device in the new one, each on that
 * kernel's wall clock) placed on the host's clock by each kernel's clock
 * samples (`clocks`: a host's {@link FleetHost.clocks}, whose first boot is
 * the kernel it started on and whose second the one its update jumped
 * into): good to the millisecond, where the difference of the two guest
 * wall clocks (each set from the emulated RTC) is good to a second. Null
 * when a time or a kernel's samples are missing.
 */
export function blackoutOnHostMs(summary: Pick<RolloutSummary, 'frozenAt' | 'firstOpenAt'>, clocks: ReadonlyArray<GuestClockFit | undefined>): number | null {
  const [before, after] = clocks;
  if (summary.frozenAt == null || summary.firstOpenAt == null || before === undefined || after === undefined) return null;
  return Math.round((onHost(after, 'wall', summary.firstOpenAt) - onHost(before, 'wall', summary.frozenAt)) * 1000) / 1000;
}

/** The repository's rollout playbook. */
export function defaultPlaybook(): string {
  return path.join(fs.realpathSync(libraryRoot()), 'examples', 'ansible', 'rollout.yml');
}

/** A task banner and a host result of ansible's default output, for progress only (the results are the summaries). */
const TASK_LINE = /^TASK \[(?:[^:\]]+ : )?(.+?)\] \*+$/;
const RESULT_LINE = /^(ok|changed|skipping|failed|fatal|unreachable|included|rescued): \[([^\]]+?)(?: -> [^\]]+)?\]/;

/** Runs ansible-playbook over the fleet's inventory; resolves with its status, output and the role's summaries. */
async function runPlaybook(dir: string, inventory: string, hosts: readonly FleetHost[], targetRelease: string, options: PlaybookOptions): Promise<PlaybookResult> {
  const started = Date.now();
  const run = fs.mkdtempSync(path.join(dir, 'playbook-'));
  const summaryDir = path.join(run, 'summary');
  fs.mkdirSync(summaryDir);
  const vars = {
    liveupdate_kernel: hosts[0]?.targetKernel,
    liveupdate_release: targetRelease,
    liveupdate_summary_dir: summaryDir,
    liveupdate_health_command: GUEST_VMM_CHECK,
    ...options.vars,
  };
  const varsFile = path.join(run, 'vars.json');
  fs.writeFileSync(varsFile, JSON.stringify(vars));
  const env = {
    ...process.env,
    ANSIBLE_HOST_KEY_CHECKING: 'False',
    ANSIBLE_PIPELINING: 'True',
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    ANSIBLE_HOME: path.join(run, 'home'),
    ANSIBLE_LOCAL_TEMP: path.join(run, 'tmp'),
    ANSIBLE_SSH_CONTROL_PATH_DIR: path.join(run, 'cp'),
    ANSIBLE_TIMEOUT: '10',
  };
  const child = spawn('ansible-playbook', ['-i', inventory, '-e', `@${varsFile}`, options.playbook ?? defaultPlaybook()], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let task = '';
  createInterface({ input: child.stdout }).on('line', (line) => {
    stdout += `${line}\n`;
    const banner = TASK_LINE.exec(line);
    if (banner?.[1] !== undefined) task = banner[1];
    const result = RESULT_LINE.exec(line);
    if (result?.[1] !== undefined && result[2] !== undefined) options.onEvent?.({ host: result[2], task, status: result[1] });
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timeoutMs = options.timeoutMs ?? 1_800_000;
  const { status, signal } = await new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(error.code === 'ENOENT' ? new Error('ansible-playbook not found: apt-get install ansible-core') : error);
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ status: code, signal: sig });
    });
  });
  const summaries: Record<string, RolloutSummary> = {};
  for (const file of fs.readdirSync(summaryDir).filter((f) => f.endsWith('.json'))) {
    const summary = JSON.parse(fs.readFileSync(path.join(summaryDir, file), 'utf8')) as RolloutSummary;
    summaries[summary.host] = summary;
  }
  return { status, signal, stdout, stderr, summaries, elapsedMs: Date.now() - started };
}
