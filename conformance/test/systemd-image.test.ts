/**
 * The systemd guest image's host side, without booting anything: the cache
 * key is the build script's, a missing image is reported in one line that
 * names the command, and a run's files land in its copy of the image (read
 * back with debugfs), with the stamps and switches that spare its boots work
 * no run needs, or the copy is refused with debugfs's own complaint.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUEST_MANIFEST } from '../lib/vm/protocol.js';
import {
  buildRunDisk,
  debugfsPath,
  findSystemdImage,
  MASKED_GENERATORS,
  MASKED_UNITS,
  NO_SYSTEMD_IMAGE_HELP,
  SYSTEMD_RUNNER,
  systemdImageHash,
  UDEV_COLDPLUG_DROP_IN,
} from '../lib/vm/systemd-image.js';
import { mke2fsPath } from '../lib/vm/initramfs.js';

const ROOT = path.resolve(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-systemd-image-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A fresh ext4 image of `mib` MiB with an empty /boot, as the real one has. */
function ext4Image(name: string, mib: number): string {
  const tree = path.join(tmp, `${name}.tree`);
  fs.mkdirSync(path.join(tree, 'boot'), { recursive: true });
  const image = path.join(tmp, `${name}.img`);
  execFileSync(mke2fsPath() ?? 'mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, image, `${mib}M`]);
  return image;
}

function debugfsCat(image: string, file: string): string {
  return execFileSync(debugfsPath() ?? 'debugfs', ['-R', `cat ${file}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

/** What debugfs says `file` is: 'symlink → target', 'regular', or 'missing'. */
function debugfsKind(image: string, file: string): string {
  const stat = execFileSync(debugfsPath() ?? 'debugfs', ['-R', `stat ${file}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const type = /Type: (\w+)/.exec(stat)?.[1];
  if (type === undefined) return 'missing';
  const target = /Fast link dest: "([^"]*)"/.exec(stat)?.[1];
  return type === 'symlink' ? `symlink → ${target ?? '?'}` : type;
}

describe('systemd guest image', () => {
  it('is cached under the hash vm/build-systemd-image.sh --hash prints', () => {
    const script = execFileSync('bash', [path.join(ROOT, 'vm', 'build-systemd-image.sh'), '--hash'], { encoding: 'utf8' });
    expect(script.trim()).toBe(systemdImageHash());
    expect(systemdImageHash()).toMatch(/^[0-9a-f]{12}$/);
  });

  it('is found only where the current recipe built it, with the versions it recorded', () => {
    const cache = path.join(tmp, 'cache');
    expect(findSystemdImage({ LIVEUPDATE_CACHE: cache })).toBeUndefined();
    const dir = path.join(cache, 'systemd', systemdImageHash());
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'rootfs.img'), '');
    fs.writeFileSync(path.join(dir, 'versions'), 'systemd 262.1-1, node 24\n');
    expect(findSystemdImage({ LIVEUPDATE_CACHE: cache })).toEqual({ path: path.join(dir, 'rootfs.img'), versions: 'systemd 262.1-1, node 24' });
    // An image of another recipe is not this one.
    fs.renameSync(dir, path.join(cache, 'systemd', '000000000000'));
    expect(findSystemdImage({ LIVEUPDATE_CACHE: cache })).toBeUndefined();
  });

  it('says in one line what to run when it is missing', () => {
    expect(NO_SYSTEMD_IMAGE_HELP).not.toContain('\n');
    expect(NO_SYSTEMD_IMAGE_HELP).toContain('npm run vm:systemd-image');
  });

  it("gets a run's files written into a copy, and the image itself stays untouched", () => {
    const base = ext4Image('base', 96);
    const baseBytes = fs.readFileSync(base);
    const kernel = path.join(tmp, 'fake.bzImage');
    fs.writeFileSync(kernel, 'not a kernel, only a file to place');
    const run = buildRunDisk(base, { kernels: [kernel], scenarios: [] });
    try {
      expect(fs.readFileSync(base).equals(baseBytes)).toBe(true);
      expect(debugfsCat(run.disk, SYSTEMD_RUNNER)).toContain('mainUnderSystemd()');
      const manifest = JSON.parse(debugfsCat(run.disk, GUEST_MANIFEST)) as { kernels: string[] };
      expect(manifest.kernels).toEqual(['/boot/kernel-0.bzImage']);
      expect(debugfsCat(run.disk, '/boot/kernel-0.bzImage')).toBe('not a kernel, only a file to place');
      expect(debugfsCat(run.disk, '/lu/node_modules/liveupdate/package.json')).toContain('"name": "liveupdate"');
    } finally {
      fs.rmSync(run.dir, { recursive: true, force: true });
    }
  });

  it("spares the copy's boots work no run needs: /var's update stamp (never /etc's, which gates sysusers), and sshd only where asked for", () => {
    const base = ext4Image('trim', 96);
    const plain = buildRunDisk(base, { kernels: [], scenarios: [] });
    const fleet = buildRunDisk(base, { kernels: [], scenarios: [] }, { sshd: true });
    try {
      const nsec = /^TIMESTAMP_NSEC=(\d+)$/m.exec(debugfsCat(plain.disk, '/var/.updated'))?.[1];
      expect(Number(BigInt(nsec ?? '0') / 1_000_000n)).toBeGreaterThan(Date.now() - 60_000);
      // Never /etc's: its condition also gates systemd-sysusers, which makes the users a run's units need.
      expect(debugfsCat(plain.disk, '/etc/.updated')).toBe('');
      expect(debugfsCat(plain.disk, '/etc/ssh/sshd_not_to_be_run')).toContain('no ssh');
      expect(debugfsCat(fleet.disk, '/etc/ssh/sshd_not_to_be_run')).toBe('');
      expect(debugfsCat(fleet.disk, '/var/.updated')).toMatch(/^TIMESTAMP_NSEC=\d+$/m);
    } finally {
      fs.rmSync(plain.dir, { recursive: true, force: true });
      fs.rmSync(fleet.dir, { recursive: true, force: true });
    }
  });

  it("masks, in every copy (the fleet's too), the units and generators no run uses, and narrows udev's coldplug to block, net and misc devices", () => {
    const base = ext4Image('masks', 96);
    const plain = buildRunDisk(base, { kernels: [], scenarios: [] });
    const fleet = buildRunDisk(base, { kernels: [], scenarios: [] }, { sshd: true });
    try {
      for (const disk of [plain.disk, fleet.disk]) {
        const masked = [...MASKED_UNITS.map((u) => `/etc/systemd/system/${u}`), ...MASKED_GENERATORS.map((g) => `/etc/systemd/system-generators/${g}`)];
        expect(masked.map((file) => `${file}: ${debugfsKind(disk, file)}`)).toEqual(masked.map((file) => `${file}: symlink → /dev/null`));
        const dropIn = debugfsCat(disk, UDEV_COLDPLUG_DROP_IN);
        // The unit's own ExecStart= is reset, then replaced by a coldplug of the three subsystems only.
        expect(dropIn).toMatch(/^\[Service\]\nExecStart=\nExecStart=-udevadm trigger /);
        expect(dropIn.match(/--subsystem-match=(\w+)/g)).toEqual(['--subsystem-match=block', '--subsystem-match=net', '--subsystem-match=misc']);
      }
      // What the runs need stays: the root's mount comes from fstab, journald and udevd run, sysusers makes users.
      expect(MASKED_GENERATORS).not.toContain('systemd-fstab-generator');
      for (const kept of ['systemd-journald.service', 'systemd-udevd.service', 'systemd-sysusers.service', 'systemd-udev-trigger.service', 'ssh.service']) {
        expect(MASKED_UNITS).not.toContain(kept);
        expect(debugfsKind(fleet.disk, `/etc/systemd/system/${kept}`)).toBe('missing');
      }
    } finally {
      fs.rmSync(plain.dir, { recursive: true, force: true });
      fs.rmSync(fleet.dir, { recursive: true, force: true });
    }
  });

  it('refuses a copy that cannot hold the run, with what debugfs said, and leaves no temporary directory', () => {
    const base = ext4Image('tiny', 2);
    const kernel = path.join(tmp, 'big.bzImage');
    fs.writeFileSync(kernel, Buffer.alloc(4 * 1024 * 1024, 1));
    const before = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('liveupdate-systemd-'));
    expect(() => buildRunDisk(base, { kernels: [kernel], scenarios: [] })).toThrow(/debugfs could not write the run's files into .*: .+/);
    expect(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('liveupdate-systemd-'))).toEqual(before);
  });
});
