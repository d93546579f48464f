/**
 * status()'s diagnosis: the pure parts (kstrtobool, the command line, the
 * kernel config, versions, device numbers, each reason with its fix) from
 * made-up facts, and the facts this host really has.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  compareReleases,
  deviceOwners,
  diagnose,
  FIRST_LUO_RELEASE,
  isLiveUpdateDevice,
  kernelBoolParam,
  kernelParam,
  kernelParamValues,
  kstrtobool,
  parseDevNumber,
  parseKernelConfig,
  parseProcMisc,
  readKernelConfig,
  releaseVersion,
  splitDevNumber,
} from '../lib/diagnosis.js';
import * as lu from '../lib/index.js';
import { facts, MISSING_DEVICE } from './helpers/facts.js';

describe('kstrtobool, as the kernel parses liveupdate= and kho=', () => {
  it.each([
    ['1', true], ['y', true], ['Y', true], ['yes', true], ['t', true], ['true', true], ['T', true], ['on', true], ['ON', true], ['oN', true],
    ['0', false], ['n', false], ['no', false], ['f', false], ['false', false], ['off', false], ['OFF', false], ['N', false],
  ] as const)('%s → %s', (text, value) => {
    expect(kstrtobool(text)).toBe(value);
  });

  it.each(['', 'o', 'ox', 'enable', '2', 'x', ' on'])('%j is invalid: the kernel keeps its value', (text) => {
    expect(kstrtobool(text)).toBeUndefined();
  });

  it('a bare parameter (no "=") is invalid too', () => {
    expect(kstrtobool(null)).toBeUndefined();
  });
});

describe('the kernel command line', () => {
  const cmdline = 'console=ttyS0 liveupdate kho=on liveupdate=off quiet liveupdate=yes -- liveupdate=0 init-arg';

  it('finds every occurrence in order, a bare one as null, nothing after "--"', () => {
    expect(kernelParamValues(cmdline, 'liveupdate')).toEqual([null, 'off', 'yes']);
    expect(kernelParamValues(cmdline, 'kho')).toEqual(['on']);
    expect(kernelParamValues(cmdline, 'nothing')).toEqual([]);
  });

  it('the value of key= is the last one given', () => {
    expect(kernelParam(cmdline, 'liveupdate')).toBe('yes');
    expect(kernelParam('liveupdate', 'liveupdate')).toBeNull();
    expect(kernelParam('console=ttyS0\n', 'console')).toBe('ttyS0');
  });

  it('a boolean parameter: each valid occurrence overrides, invalid ones change nothing, else the default', () => {
    expect(kernelBoolParam(cmdline, 'liveupdate', false)).toBe(true);
    expect(kernelBoolParam('liveupdate=on liveupdate=bogus', 'liveupdate', false)).toBe(true);
    expect(kernelBoolParam('liveupdate=on liveupdate=0', 'liveupdate', false)).toBe(false);
    expect(kernelBoolParam('liveupdate', 'liveupdate', false)).toBe(false);
    expect(kernelBoolParam('quiet', 'kho', true)).toBe(true);
    expect(kernelBoolParam('kho=off', 'kho', true)).toBe(false);
  });
});

describe('the kernel config', () => {
  const text = [
    '#',
    '# Automatically generated file; DO NOT EDIT.',
    'CONFIG_LIVEUPDATE=y',
    '# CONFIG_KEXEC_FILE is not set',
    'CONFIG_LIVEUPDATE_MEMFD=m',
    'CONFIG_LOCALVERSION="-test"',
    'CONFIG_NR_CPUS=64',
    '',
  ].join('\n');

  it('reads set options, quoted strings and "is not set" lines', () => {
    const options = parseKernelConfig(text);
    expect(Object.fromEntries(options)).toEqual({
      CONFIG_LIVEUPDATE: 'y',
      CONFIG_KEXEC_FILE: 'n',
      CONFIG_LIVEUPDATE_MEMFD: 'm',
      CONFIG_LOCALVERSION: '-test',
      CONFIG_NR_CPUS: '64',
    });
  });

  it("reads this host's config from /proc/config.gz when it has one (gunzipped), else /boot", () => {
    const config = readKernelConfig(os.release());
    if (fs.existsSync('/proc/config.gz')) {
      expect(config?.source).toBe('/proc/config.gz');
      const raw = zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString();
      const line = raw.split('\n').find((l) => l.startsWith('CONFIG_LIVEUPDATE=')) ?? null;
      expect(lu.statusSync({ probe: false }).configLiveupdate).toBe(line === 'CONFIG_LIVEUPDATE=y' || line === 'CONFIG_LIVEUPDATE=m');
      expect(lu.statusSync({ probe: false }).configSource).toBe('/proc/config.gz');
    } else if (fs.existsSync(`/boot/config-${os.release()}`)) {
      expect(config?.source).toBe(`/boot/config-${os.release()}`);
    } else {
      expect(config).toBeNull();
    }
  });
});

describe('releases', () => {
  it('reads the version at the start of a release', () => {
    expect(releaseVersion('6.18.44-fc-v595')).toEqual([6, 18, 44]);
    expect(releaseVersion('7.2.13')).toEqual([7, 2, 13]);
    expect(releaseVersion('6.19-rc1')).toEqual([6, 19]);
    expect(releaseVersion('custom')).toBeNull();
  });

  it('compares by number, not by text', () => {
    expect(compareReleases('6.18.44-fc-v595', FIRST_LUO_RELEASE)).toBeLessThan(0);
    expect(compareReleases('6.9', '6.19')).toBeLessThan(0);
    expect(compareReleases('6.19.0', '6.19')).toBe(0);
    expect(compareReleases('6.19.3', '6.19')).toBeGreaterThan(0);
    expect(compareReleases('7.0', '6.19')).toBeGreaterThan(0);
    expect(compareReleases('custom', '6.19')).toBeNull();
  });

  it('LUO was first released in Linux 6.19', () => {
    expect(FIRST_LUO_RELEASE).toBe('6.19');
  });
});

/** glibc's gnu_dev_makedev: major and minor (32 bits each) spread over a 64-bit dev_t. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

describe('device numbers', () => {
  it('reads /sys/class/misc/NAME/dev and /proc/misc', () => {
    expect(parseDevNumber('10:123\n')).toEqual({ major: 10, minor: 123 });
    expect(parseDevNumber('junk')).toBeNull();
    expect(parseDevNumber('10:262')).toEqual({ major: 10, minor: 262 });
    expect(parseDevNumber(' 10:262\n')).toBeNull();
    for (const bad of ['', ':', '10:', ':262', '10:-1', '+10:262', '10:26 2', '10:0x1', '10:262:1', '1e1:2']) expect(parseDevNumber(bad)).toBeNull();
    expect(parseProcMisc('234 btrfs-control\n123 liveupdate\n 57 fuse\n', 'liveupdate')).toEqual({ major: 10, minor: 123 });
    expect(parseProcMisc('234 btrfs-control\n', 'liveupdate')).toBeNull();
  });

  it('splits st_rdev as glibc does, small and large numbers', () => {
    expect(splitDevNumber(fs.statSync('/dev/null').rdev)).toEqual({ major: 1, minor: 3 });
    // major 300, minor 70000: makedev's encoding spreads both over the 64 bits.
    const rdev = (BigInt(70000 & 0xff) | (BigInt(300 & 0xfff) << 8n) | (BigInt(70000 & ~0xff) << 12n) | (BigInt(300 & ~0xfff) << 32n));
    expect(splitDevNumber(rdev)).toEqual({ major: 300, minor: 70000 });
    expect(splitDevNumber(Number(rdev))).toEqual({ major: 300, minor: 70000 });
    // The widest: both 32 bits, as a BigInt (a number is exact below 2^53 only).
    const widest = makedev(0xffffffff, 0xffffffff);
    expect(widest).toBe(0xffffffffffffffffn);
    expect(splitDevNumber(widest)).toEqual({ major: 0xffffffff, minor: 0xffffffff });
    // Each bit of each half lands where glibc puts it, and nowhere else.
    for (let bit = 0; bit < 32; bit++) {
      const one = 2 ** bit;
      expect(splitDevNumber(makedev(one, 0))).toEqual({ major: one, minor: 0 });
      expect(splitDevNumber(makedev(0, one))).toEqual({ major: 0, minor: one });
      if (makedev(one, one) <= BigInt(Number.MAX_SAFE_INTEGER)) expect(splitDevNumber(Number(makedev(one, one)))).toEqual({ major: one, minor: one });
    }
  });

  it("is LUO's exactly when it is the registered number; only the misc major where the list is unreadable", () => {
    const luo = { major: 10, minor: 123 };
    expect(isLiveUpdateDevice({ major: 10, minor: 123 }, luo, true)).toBe(true);
    expect(isLiveUpdateDevice({ major: 10, minor: 229 }, luo, true)).toBe(false);
    expect(isLiveUpdateDevice({ major: 10, minor: 229 }, null, true)).toBe(false);
    expect(isLiveUpdateDevice({ major: 10, minor: 229 }, null, false)).toBe(true);
    expect(isLiveUpdateDevice({ major: 1, minor: 3 }, null, false)).toBe(false);
    expect(isLiveUpdateDevice(null, luo, true)).toBe(false);
  });
});


const missing = MISSING_DEVICE;

describe('each reason LUO is unavailable, with its fix', () => {
  it('all well: no diagnosis', () => {
    expect(diagnose(facts())).toBeNull();
  });

  it('a kernel older than 6.19', () => {
    const d = diagnose(facts({ ...missing, release: '6.18.44-fc-v595', config: null }));
    expect(d).toMatchObject({ id: 'kernel-too-old' });
    expect(d?.reason).toBe('kernel 6.18.44-fc-v595 is older than 6.19, the first Linux release with the Live Update Orchestrator');
    expect(d?.fix).toMatch(/^boot Linux 6\.19 or later built with CONFIG_LIVEUPDATE=y/);
  });

  it('an older kernel whose config says it has LUO (a backport) is not called too old', () => {
    expect(diagnose(facts({ ...missing, release: '6.12.0', cmdline: 'quiet' }))?.id).toBe('not-enabled');
  });

  it('built without CONFIG_LIVEUPDATE', () => {
    const config = { source: '/boot/config-7.2.13', options: new Map([['CONFIG_LIVEUPDATE', 'n']]) };
    const d = diagnose(facts({ ...missing, config }));
    expect(d).toMatchObject({ id: 'built-without-luo', reason: 'kernel 7.2.13 was built without CONFIG_LIVEUPDATE (/boot/config-7.2.13)' });
    expect(d?.fix).toMatch(/CONFIG_LIVEUPDATE=y \(the orchestrator\), CONFIG_KEXEC_HANDOVER=y/);
  });

  it('booted without liveupdate=on, or with it off', () => {
    const absent = diagnose(facts({ ...missing, cmdline: 'console=ttyS0 kho=on' }));
    expect(absent).toMatchObject({ id: 'not-enabled', reason: 'kernel 7.2.13 was booted without liveupdate=on' });
    expect(absent?.fix).toMatch(/^add liveupdate=on to the kernel command line/);
    expect(diagnose(facts({ ...missing, cmdline: 'liveupdate=on liveupdate=off' }))?.reason).toBe('kernel 7.2.13 was booted with liveupdate=off, which is not on');
    // The config unknown: the reason says it may also lack CONFIG_LIVEUPDATE.
    expect(diagnose(facts({ ...missing, cmdline: '', config: null }))?.reason).toMatch(/without liveupdate=on \(its config is not readable.*may also lack CONFIG_LIVEUPDATE\)/);
  });

  it('KHO off on the command line, or by default, or said so in the log', () => {
    const off = diagnose(facts({ ...missing, cmdline: 'liveupdate=on kho=off' }));
    expect(off).toMatchObject({ id: 'kho-disabled', reason: 'Kexec HandOver is off on kernel 7.2.13 (kho=off), so LUO turned itself off' });
    expect(off?.fix).toMatch(/^add kho=on/);
    // Not on the command line, and the config does not enable it by default.
    expect(diagnose(facts({ ...missing, cmdline: 'liveupdate=on' }))?.id).toBe('kho-disabled');
    const byDefault = new Map([['CONFIG_LIVEUPDATE', 'y'], ['CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT', 'y']]);
    expect(diagnose(facts({ ...missing, cmdline: 'liveupdate=on', config: { source: 'x', options: byDefault } }))?.id).toBe('luo-failed');
    const log = 'liveupdate: Disabling liveupdate because KHO is disabled';
    expect(diagnose(facts({ ...missing, config: null, kernelLog: log }))?.id).toBe('kho-disabled');
  });

  it('KHO failed to reserve its scratch memory', () => {
    const log = 'KHO: Failed to reserve nid 0 scratch buffer\nKHO: Failed to reserve scratch area, disabling kexec handover';
    const d = diagnose(facts({ ...missing, kernelLog: log }));
    expect(d).toMatchObject({ id: 'kho-scratch-failed' });
    expect(d?.fix).toMatch(/kho_scratch=/);
  });

  it('LUO did not start for a reason the log would tell, and the log is unreadable: says so', () => {
    const d = diagnose(facts({ ...missing, kernelLog: null }));
    expect(d).toMatchObject({ id: 'luo-failed' });
    expect(d?.reason).toMatch(/booted with liveupdate=on: LUO did not start, and the kernel log is not readable here \(it needs root/);
    expect(d?.fix).toMatch(/dmesg/);
  });

  it('the kernel registered the device but the node is missing', () => {
    const d = diagnose(facts({ ...missing, luoDevice: { major: 10, minor: 123 }, devicePath: '/tmp/lu' }));
    expect(d).toMatchObject({ id: 'device-node-missing' });
    expect(d?.fix).toMatch(/mknod -m 600 \/tmp\/lu c 10 123/);
  });

  it("a path that is not LUO's device", () => {
    const d = diagnose(facts({ devicePath: '/dev/null', pathDevice: { major: 1, minor: 3 } }));
    expect(d).toMatchObject({ id: 'not-luo-device', reason: "/dev/null is device 1:3; LUO's is 10:123" });
    expect(diagnose(facts({ pathDevice: null }))?.reason).toMatch(/is not a character device/);
  });

  it('the device held by another process: which pid and command', () => {
    const d = diagnose(facts({ owners: [{ pid: 77, command: 'luod' }] }));
    expect(d).toMatchObject({ id: 'device-busy' });
    expect(d?.reason).toBe('/dev/liveupdate is busy (EBUSY): it has one owner at a time, and pid 77 (luod) holds it open');
    expect(d?.fix).toMatch(/^stop that process, or hand it the files/);
    const self = diagnose(facts({ owners: [{ pid: 4242, command: 'node' }] }));
    expect(self?.reason).toMatch(/this process \(pid 4242\) holds it open/);
    expect(self?.fix).toMatch(/use the LiveUpdate this process already opened/);
  });

  it('not permitted to open it', () => {
    expect(diagnose(facts({ accessible: false }))).toMatchObject({ id: 'permission-denied', fix: 'run as root, or give this user read-write access to /dev/liveupdate (a udev rule)' });
  });
});

describe('status() on this host', () => {
  it('agrees with the release and gives a reason with a fix when there is no device', () => {
    const s = lu.statusSync({ probe: false });
    const older = (compareReleases(os.release(), '6.19') ?? 0) < 0;
    expect(s.releaseHasLuo).toBe(!older);
    if (!s.deviceExists) {
      expect(s.available).toBe(false);
      expect(s.reason).toEqual(expect.any(String));
      expect(s.fix).toEqual(expect.any(String));
      if (older && s.configLiveupdate !== true) expect(s.diagnosis).toBe('kernel-too-old');
    }
  });

  it('finds this process among the holders of a path it has open (the owner scan, on a stand-in path)', () => {
    // /dev/null stands in for the device: the scan reads /proc/PID/fd links, whatever the path.
    // status() itself scans only LUO's device (test/newcomer.test.ts).
    const fd = fs.openSync('/dev/null', 'r');
    try {
      expect(deviceOwners('/dev/null')).toContainEqual({ pid: process.pid, command: fs.readFileSync('/proc/self/comm', 'utf8').trim() });
    } finally {
      fs.closeSync(fd);
    }
  });

});
