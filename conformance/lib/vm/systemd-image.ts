/**
 * The systemd guest image: a Debian sid root filesystem with systemd as PID 1
 * and Debian's node (vm/build-systemd-image.sh builds it with mmdebstrap and
 * caches it under `<cache>/systemd/<hash of that script>/rootfs.img`), booted
 * on the LUO test kernels with `root=/dev/vda`.
 *
 * Every run boots its own copy (the guest writes to it: units, state, the
 * journal), with the run's files written in by debugfs (e2fsprogs) before
 * the boot: the packages as built (the host's addons load in the guest's node:
 * N-API is ABI-stable and sid's glibc is newer than the host's), the
 * kernels, the scenarios, the manifest, and /lu/runner.js, which the image's
 * enabled unit lu-runner.service runs once multi-user.target is reached. The
 * copy stays attached across the kexecs, so what stage 1 writes (the carried
 * state, units it installed) is there in stage 2.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cacheDir, packageRoot, planPayload, systemdRunnerScript, type GuestImage, type GuestImageOptions, type Member } from './initramfs.js';
import { GUEST_MANIFEST, GUEST_ROOT } from './protocol.js';

/** What to tell someone without the image: one line naming the command that builds it. */
export const NO_SYSTEMD_IMAGE_HELP =
  'no systemd guest image built: run `npm run vm:systemd-image` (Debian sid with systemd 262 and node, about 2 minutes, ' +
  'cached in ~/.cache/liveupdate) or `bash .ci/run`; LIVEUPDATE_SKIP_KERNEL_TESTS=1 skips the kernel tests';

/** What to tell someone without debugfs. */
export const DEBUGFS_HELP = "debugfs not found (it writes each run's files into its copy of the systemd image): install e2fsprogs (`apt-get install e2fsprogs`)";

/** Where the runner of the systemd image starts (run by the image's lu-runner.service). */
export const SYSTEMD_RUNNER = `${GUEST_ROOT}/runner.js`;

/** A built systemd guest image. */
export interface SystemdImage {
  /** Host path of the ext4 image (never booted itself: each run boots a copy). */
  readonly path: string;
  /** "systemd 262.1-1, node 24.22.2+dfsg..." as the build recorded it. */
  readonly versions: string;
}

/**
 * The key vm/build-systemd-image.sh puts in its cache directory's name: sha256
 * of the script (the whole recipe: package list, options, hooks), 12 hex digits.
 */
export function systemdImageHash(vmDir = path.join(packageRoot(), 'vm')): string {
  return createHash('sha256').update(fs.readFileSync(path.join(vmDir, 'build-systemd-image.sh'))).digest('hex').slice(0, 12);
}

/** The cached image of the current recipe, or undefined when it is not built (see {@link NO_SYSTEMD_IMAGE_HELP}). */
export function findSystemdImage(env: NodeJS.ProcessEnv = process.env): SystemdImage | undefined {
  const dir = path.join(env['LIVEUPDATE_CACHE'] ?? cacheDir(), 'systemd', systemdImageHash());
  const image = path.join(dir, 'rootfs.img');
  if (!fs.existsSync(image)) return undefined;
  const versions = path.join(dir, 'versions');
  return { path: image, versions: fs.existsSync(versions) ? fs.readFileSync(versions, 'utf8').trim() : 'unknown versions' };
}

/** debugfs (e2fsprogs): from PATH, else where Debian installs it. */
export function debugfsPath(): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin'];
  return dirs.map((dir) => path.join(dir, 'debugfs')).find((file) => fs.existsSync(file));
}

/** A run's disk: a copy of the image with the run's files in it. The caller removes `dir`. */
export interface RunDisk {
  /** Host path of the copy to boot (read-write). */
  readonly disk: string;
  /** The temporary directory holding it. */
  readonly dir: string;
  /** The image as the run sees it (`initrd` is empty: the systemd image boots without one). */
  readonly image: GuestImage;
}

/** How a run's copy of the image boots, besides its files. */
export interface RunDiskOptions {
  /** Start sshd (the fleet's ansible-playbook reaches its hosts through it); default false. */
  readonly sshd?: boolean;
}

/**
 * Copies `base` and writes the run's files into the copy: what
 * {@link planPayload} places for `options`, the manifest, the runner's start
 * script and {@link bootTrimmings}.
 */
export function buildRunDisk(base: string, options: GuestImageOptions, boot: RunDiskOptions = {}): RunDisk {
  const started = Date.now();
  const debugfs = debugfsPath();
  if (debugfs === undefined) throw new Error(DEBUGFS_HELP);
  const { members, manifest } = planPayload(options, options.packageRoot ?? packageRoot());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-systemd-'));
  try {
    const disk = path.join(dir, 'rootfs.img');
    // --sparse keeps the copy as small on disk as the image (most of it is free space).
    execFileSync('cp', ['--sparse=always', base, disk]);
    const generated = path.join(dir, 'generated');
    fs.mkdirSync(generated);
    let written = 0;
    const write = (guest: string, text: string): Member => {
      // Numbered: two guest files may share a base name (drop-ins).
      const file = path.join(generated, `${written++}-${path.basename(guest)}`);
      fs.writeFileSync(file, text);
      return { guest, kind: 'file', source: file };
    };
    const trimmings = bootTrimmings(boot, Date.now()).map((f) => ('text' in f ? write(f.guest, f.text) : { guest: f.guest, kind: 'symlink' as const, source: f.linkTo }));
    const all = [...members, write(GUEST_MANIFEST, JSON.stringify(manifest, null, 2)), write(SYSTEMD_RUNNER, systemdRunnerScript()), ...trimmings];
    writeMembers(debugfs, disk, all, path.join(dir, 'debugfs.cmds'));
    return { disk, dir, image: { initrd: '', archiveBytes: 0, disk, manifest, cached: false, ms: Date.now() - started } };
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * What spares every boot of a run's copy work no test needs, all of it
 * CPU that emulation makes dear. Measured on 7.3.4 under TCG with 1 vCPU
 * (as the fleet's guests), as QEMU's own CPU time from `Run /sbin/init` to
 * multi-user.target, which the runner waits for; the guest's vCPU is busy
 * the whole way, so that is what every boot pays: 28.6 s in stage 1 and
 * 29.3 s after the kexec before the trimmings below, 8.0 s and 8.8 s with
 * them. With 2 vCPUs (the default), `systemd-analyze time`'s userspace:
 * 25.5 s → 5.4 s in stage 1, 12.4 s → 7.9 s in stage 2.
 * - `/var/.updated`, stamped now: the image comes out of mmdebstrap
 *   without it, so each copy's first boot would rebuild the journal's
 *   catalog (`ConditionNeedsUpdate=/var`, about 2 s), which the packages'
 *   own scripts have already built. `/etc/.updated` stays unwritten: the
 *   same condition on /etc gates systemd-sysusers, which makes the users of
 *   the units a run installs (the fleet's client, from its sysusers.d file);
 * - udev's coldplug without the tty devices: the test kernels have legacy
 *   ptys, 583 tty devices that systemd-udev-trigger.service waited on (tty
 *   is one of its prioritized subsystems) and PID 1 made device units of;
 *   with the masks of the first line of {@link MASKED_UNITS}: 28.6 → 14.1 s
 *   (stage 1), 29.3 → 16.1 s (stage 2);
 * - the generators no run uses ({@link MASKED_GENERATORS}), run by PID 1
 *   at every start and every daemon-reload: 14.1 → 13.2 s, 16.1 → 11.0 s;
 * - udev's coldplug narrowed to what the runs use ({@link UDEV_COLDPLUG}),
 *   with the masks of the second line of {@link MASKED_UNITS}: 13.2 → 8.0 s,
 *   11.0 → 8.8 s;
 * - `/etc/ssh/sshd_not_to_be_run` unless `sshd` is asked for: Debian's
 *   ssh.service does not start while it exists (its `ConditionPathExists=`;
 *   8.6 s on the way to multi-user.target on the image's first boot).
 */
export function bootTrimmings(boot: RunDiskOptions, nowMs: number): BootFile[] {
  const stamp = `TIMESTAMP_NSEC=${BigInt(nowMs) * 1_000_000n}\n`;
  const mask = (guest: string): BootFile => ({ guest, linkTo: '/dev/null' });
  return [
    { guest: '/var/.updated', text: stamp },
    { guest: UDEV_COLDPLUG_DROP_IN, text: UDEV_COLDPLUG },
    ...MASKED_UNITS.map((unit) => mask(`/etc/systemd/system/${unit}`)),
    ...MASKED_GENERATORS.map((generator) => mask(`/etc/systemd/system-generators/${generator}`)),
    ...(boot.sshd === true ? [] : [{ guest: '/etc/ssh/sshd_not_to_be_run', text: 'the liveupdate test bed: this run reaches its guest through no ssh\n' }]),
  ];
}

/** A file written into a run's copy before it boots: its text, or a symlink (a unit masked: linked to /dev/null). */
export type BootFile = { readonly guest: string; readonly text: string } | { readonly guest: string; readonly linkTo: string };

/** Where {@link UDEV_COLDPLUG} goes: a drop-in of systemd-udev-trigger.service. */
export const UDEV_COLDPLUG_DROP_IN = '/etc/systemd/system/systemd-udev-trigger.service.d/liveupdate-coldplug.conf';

/**
 * udev's coldplug of what the runs use: the root's block device (without
 * dev-vda.device systemd waits 90 s for the root in /etc/fstab), the NIC
 * (the fleet's sshd; the kernel's `ip=` configures it), misc devices
 * (/dev/liveupdate). Not the 583 tty devices of the kernels' legacy ptys,
 * nor ACPI's 55 and the rest no unit of a run depends on.
 */
export const UDEV_COLDPLUG = [
  '[Service]',
  'ExecStart=',
  'ExecStart=-udevadm trigger --type=all --action=add --subsystem-match=block --subsystem-match=net --subsystem-match=misc',
  '',
].join('\n');

/**
 * Units no run uses, masked (linked to /dev/null). First line: the image
 * has no kernel modules nor kmod (every modprobe@ instance and the modules
 * loader fail), ld.so.cache is built by the packages (ldconfig.service ran
 * at each copy's first boot, as /etc/.updated stays unwritten), the journal
 * is volatile (nothing to flush). Second: no credentials; no random seed
 * (the copy has none to load, and the service credits none: it only waited
 * for the kernel's CRNG to save one, a wait the runner's node now makes in
 * stage 1, while stage 2's kernel gets a seed from the kexec; crediting a
 * fresh seed from the host bought nothing: 11.0 s → 11.4 s of CPU to the
 * runner's first line); the root is mounted rw by the kernel's `rw` as
 * /etc/fstab says; no run mounts hugetlbfs or POSIX message queues (a
 * hugetlb memfd needs no mount).
 */
export const MASKED_UNITS: readonly string[] = [
  ...['modprobe@.service', 'systemd-modules-load.service', 'ldconfig.service', 'systemd-journal-flush.service'],
  ...['systemd-udev-load-credentials.service', 'systemd-random-seed.service', 'systemd-remount-fs.service', 'dev-hugepages.mount', 'dev-mqueue.mount'],
];

/**
 * Generators no run uses, masked: kernel-command-line units and masks
 * (debug, run), factory reset, gettys (their units are masked in the image),
 * GPT partition discovery (the root is given), hibernation, sshd on AF_UNIX
 * and vsock (the fleet's sshd is ssh.service on TCP), system updates. The
 * fstab generator stays: it makes the root's mount unit.
 */
export const MASKED_GENERATORS: readonly string[] = [
  'systemd-debug-generator',
  'systemd-factory-reset-generator',
  'systemd-getty-generator',
  'systemd-gpt-auto-generator',
  'systemd-hibernate-resume-generator',
  'systemd-run-generator',
  'systemd-ssh-generator',
  'systemd-system-update-generator',
];

/** Writes `members` into the ext4 image `disk` with one debugfs run; fails on any error debugfs reports. */
function writeMembers(debugfs: string, disk: string, members: readonly Member[], commandFile: string): void {
  const dirs = new Set<string>();
  for (const m of members) {
    for (let d = path.posix.dirname(m.guest); d !== '/'; d = path.posix.dirname(d)) dirs.add(d);
  }
  const quote = (p: string): string => {
    if (/["\s]/.test(p)) throw new Error(`a guest file name debugfs cannot take: ${p}`);
    return p;
  };
  const commands = [
    ...[...dirs].sort((a, b) => a.split('/').length - b.split('/').length).map((d) => `mkdir ${quote(d)}`),
    ...members.map((m) => (m.kind === 'symlink' ? `symlink ${quote(m.guest)} ${quote(m.source)}` : `write ${quote(m.source)} ${quote(m.guest)}`)),
  ];
  fs.writeFileSync(commandFile, `${commands.join('\n')}\n`);
  // debugfs exits 0 whatever a command did, and says what failed on stderr.
  const result = spawnSync(debugfs, ['-w', '-f', commandFile, disk], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (result.error !== undefined) throw result.error;
  const problems = result.stderr.split('\n').filter((line) => line.trim() !== '' && !EXPECTED_DEBUGFS_LINES.test(line));
  if (result.status !== 0 || problems.length > 0) throw new Error(`debugfs could not write the run's files into ${disk}: ${problems.slice(0, 5).join('; ')}`);
}

/** What debugfs prints that is no failure: its banner, and mkdir of a directory the image already has. */
const EXPECTED_DEBUGFS_LINES = /^debugfs \d|already exists/;
