/**
 * What a newcomer tripped on: a fix that named one kernel requirement per
 * reboot, `status --path /dev/null` listing every holder of /dev/null,
 * messages with a lower-case sentence after a full stop, and a package
 * that could be published without its prebuilds.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { diagnose, type Diagnosis, type DiagnosisId, type Facts } from '../lib/diagnosis.js';
import { kernelErrors, kernelError, LiveUpdateError, type Operation } from '../lib/errors.js';
import * as lu from '../lib/index.js';
import { facts, MISSING_DEVICE } from './helpers/facts.js';
import { currentDigest, otherSourcesBuild, SOURCE_BUILD } from './helpers/digest.js';
import { LIBRARY_DIR } from './helpers/pack.js';

/** Everything a kernel needs for LUO, as README's "What the kernel needs" lists it. */
const REQUIREMENTS = ['CONFIG_LIVEUPDATE=y', 'CONFIG_KEXEC_HANDOVER=y', 'CONFIG_KEXEC_FILE=y', 'CONFIG_LIVEUPDATE_MEMFD=y', 'liveupdate=on', 'kho=on'];


const missing = MISSING_DEVICE;

/** One set of facts for every reason LUO can be unavailable. */
const EVERY_REASON: Record<DiagnosisId, Facts> = {
  'kernel-too-old': facts({ ...missing, release: '6.18.44-fc-v595', config: null, cmdline: 'quiet' }),
  'built-without-luo': facts({ ...missing, config: { source: '/boot/config-7.2.13', options: new Map([['CONFIG_LIVEUPDATE', 'n']]) } }),
  'not-enabled': facts({ ...missing, cmdline: 'quiet', config: null }),
  'kho-disabled': facts({ ...missing, cmdline: 'liveupdate=on kho=off' }),
  'kho-scratch-failed': facts({ ...missing, kernelLog: 'KHO: Failed to reserve scratch area, disabling kexec handover' }),
  'luo-failed': facts({ ...missing, kernelLog: null }),
  'device-node-missing': facts({ ...missing, luoDevice: { major: 10, minor: 123 } }),
  'not-luo-device': facts({ devicePath: '/dev/null', pathDevice: { major: 1, minor: 3 } }),
  'device-busy': facts({ owners: [{ pid: 77, command: 'luod' }] }),
  'permission-denied': facts({ accessible: false }),
};

function diagnosisOf(id: DiagnosisId): Diagnosis {
  const found = diagnose(EVERY_REASON[id]);
  if (found?.id !== id) throw new Error(`the facts for ${id} gave ${found?.id ?? 'no diagnosis'}`);
  return found;
}

describe("status()'s fix for a kernel without LUO names every requirement at once, so one reboot is enough", () => {
  it.each(['kernel-too-old', 'built-without-luo'] as const)('%s: a kernel to boot, with every option and the command line', (id) => {
    const { fix } = diagnosisOf(id);
    for (const requirement of REQUIREMENTS) expect(fix).toContain(requirement);
  });

  it('booted without liveupdate=on and with a config that cannot be read: both parameters and every option', () => {
    const { fix } = diagnosisOf('not-enabled');
    for (const requirement of REQUIREMENTS) expect(fix).toContain(requirement);
    expect(fix).toMatch(/config is not readable/);
  });

  it('booted without liveupdate=on or kho=on on a kernel built for LUO: both parameters, no build option', () => {
    const { fix } = diagnosisOf('not-enabled');
    const built = diagnose(facts({ ...missing, cmdline: 'quiet' }));
    expect(built?.id).toBe('not-enabled');
    expect(built?.fix).toMatch(/^add liveupdate=on kho=on to the kernel command line/);
    expect(built?.fix).not.toMatch(/CONFIG_/);
    expect(fix).not.toBe(built?.fix);
  });

  it('KHO off while liveupdate=on: kho=on, and the build options the config lacks', () => {
    const lacking = new Map([['CONFIG_LIVEUPDATE', 'y'], ['CONFIG_KEXEC_HANDOVER', 'y'], ['CONFIG_KEXEC_FILE', 'n']]);
    const d = diagnose(facts({ ...missing, cmdline: 'liveupdate=on kho=off', config: { source: '/boot/config-7.2.13', options: lacking } }));
    expect(d?.id).toBe('kho-disabled');
    expect(d?.fix).toMatch(/^add kho=on to the kernel command line/);
    expect(d?.fix).toContain('CONFIG_KEXEC_FILE=y');
    expect(d?.fix).toContain('CONFIG_LIVEUPDATE_MEMFD=y');
    expect(d?.fix).not.toContain('CONFIG_LIVEUPDATE=y');
  });
});

describe('status() of a path that is not LUO\'s device', () => {
  it('lists no holders of /dev/null as the device\'s holders, although this process holds /dev/null open', () => {
    const fd = fs.openSync('/dev/null', 'r');
    try {
      expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toBe('/dev/null');
      const s = lu.statusSync({ path: '/dev/null' });
      expect(s.diagnosis).toBe('not-luo-device');
      expect(s.deviceOwners).toEqual([]);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('lists no holders of a regular file either', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-newcomer-')), 'not-a-device');
    fs.writeFileSync(file, '');
    const fd = fs.openSync(file, 'r');
    try {
      expect(lu.statusSync({ path: file }).deviceOwners).toEqual([]);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(path.dirname(file), { recursive: true });
    }
  });
});

/** A lower-case word after a full stop: a sentence that does not start with a capital. */
const LOWER_CASE_SENTENCE = /\. [a-z]/;

/** Every operation some row of the error table names: what a row for any operation is tried with. */
function namedOperations(): Operation[] {
  return [...new Set(kernelErrors().flatMap((r) => (r.operations === '*' ? [] : r.operations)))];
}

/** The context of an error with every field set, and a hint and fix as the package attaches them. */
function fullContext(operation: Operation, hint?: string, fix?: string) {
  return { operation, sessionName: 'vm-42', token: 7n, fd: 5, path: '/dev/liveupdate', request: 'LIVEUPDATE_SESSION_PRESERVE_FD', hint, fix };
}

describe('every sentence of a message starts with a capital', () => {
  it('finds the defect it looks for', () => {
    expect('EPERM: x, fcntl. it carries SEAL_SEAL').toMatch(LOWER_CASE_SENTENCE);
    expect('EPERM: x, fcntl. It carries SEAL_SEAL. Fix: add it').not.toMatch(LOWER_CASE_SENTENCE);
  });

  it('every row of the error table, for every operation and errno it covers, with each diagnosis as hint and fix', () => {
    const hints: Array<[string | undefined, string | undefined]> = [[undefined, undefined]];
    for (const id of Object.keys(EVERY_REASON) as DiagnosisId[]) {
      const d = diagnosisOf(id);
      hints.push([d.reason, d.fix]);
    }
    const bad: string[] = [];
    let made = 0;
    for (const rule of kernelErrors()) {
      const operations = rule.operations === '*' ? namedOperations() : rule.operations;
      const codes = rule.codes === '*' ? ['EIO'] : rule.codes;
      for (const operation of operations) {
        for (const code of codes) {
          const errno = -(constants.errno as Record<string, number>)[code]!;
          for (const [hint, fix] of hints) {
            const { message } = kernelError({ errno, code, syscall: 'ioctl' }, fullContext(operation, hint, fix));
            made++;
            if (LOWER_CASE_SENTENCE.test(message)) bad.push(message);
          }
        }
      }
    }
    expect(made).toBeGreaterThan(kernelErrors().length * hints.length);
    expect(bad).toEqual([]);
  });

  it('every diagnosis, its reason and its fix', () => {
    for (const id of Object.keys(EVERY_REASON) as DiagnosisId[]) {
      const { reason, fix } = diagnosisOf(id);
      expect(reason).not.toMatch(LOWER_CASE_SENTENCE);
      expect(fix).not.toMatch(LOWER_CASE_SENTENCE);
    }
  });

  it('the real refusals that carry a hint: a memfd sealed against seals, a read-only memfd, a missing device', () => {
    const sealed = lu.memfd.createSync('newcomer-sealed');
    const sealable = lu.memfd.createSync('newcomer-sealable', { allowSealing: true });
    const readOnlySealable = fs.openSync(`/proc/self/fd/${sealable}`, 'r');
    const messages: string[] = [];
    try {
      for (const fd of [sealed, readOnlySealable]) {
        try {
          lu.memfd.addSealsSync(fd, lu.memfd.SEAL_SHRINK);
          expect.unreachable('addSeals succeeded');
        } catch (error) {
          expect(error).toBeInstanceOf(LiveUpdateError);
          messages.push((error as Error).message);
        }
      }
      expect(() => lu.LiveUpdate.openSync('/nonexistent/liveupdate')).toThrow(LiveUpdateError);
      try {
        lu.LiveUpdate.openSync('/nonexistent/liveupdate');
      } catch (error) {
        messages.push((error as Error).message);
      }
    } finally {
      for (const fd of [sealed, sealable, readOnlySealable]) fs.closeSync(fd);
    }
    expect(messages[0]).toMatch(/fcntl\. It carries SEAL_SEAL/);
    for (const message of messages) expect(message).not.toMatch(LOWER_CASE_SENTENCE);
  });
});

/** npm's guard of the prebuilds it packs and publishes. */
const PREBUILDS_GUARD = path.join(LIBRARY_DIR, 'scripts', 'check-prebuilds.mjs');

/**
 * Runs scripts/check-prebuilds.mjs with `args` in a directory of its own
 * whose prebuilds/ holds `addons` (platform/file to content), as npm runs it
 * in the package: the repository's own prebuilds/ is not touched.
 */
function runGuard(addons: Readonly<Record<string, Buffer | string>>, args: readonly string[] = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-prebuilds-'));
  try {
    for (const [file, content] of Object.entries(addons)) {
      fs.mkdirSync(path.dirname(path.join(dir, 'prebuilds', file)), { recursive: true });
      fs.writeFileSync(path.join(dir, 'prebuilds', file), content);
    }
    return spawnSync(process.execPath, [PREBUILDS_GUARD, ...args], { cwd: dir, encoding: 'utf8' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('publishing refuses a package without both prebuilds', () => {
  /** A prebuild of the current sources in each of `platforms`. */
  const fresh = (platforms: readonly string[]) => Object.fromEntries(platforms.map((p) => [`${p}/liveupdate.glibc.node`, fs.readFileSync(SOURCE_BUILD)]));

  it('is what npm runs before publish', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(LIBRARY_DIR, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['prepublishOnly']).toBe('node scripts/check-prebuilds.mjs');
  });

  it('passes with a prebuild for linux-x64 and one for linux-arm64', () => {
    const out = runGuard(fresh(['linux-x64', 'linux-arm64']));
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
  });

  it.each([
    [[], 'linux-x64, linux-arm64'],
    [['linux-x64'], 'linux-arm64'],
    [['linux-arm64'], 'linux-x64'],
  ])('refuses with %j, naming what is missing and how to build it', (present, absent) => {
    const out = runGuard(fresh(present));
    expect(out.status).toBe(1);
    expect(out.stderr).toContain(`no prebuilt addon for ${absent}`);
    expect(out.stderr).toContain('npm run prebuild');
  });

  it('refuses an empty platform directory', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-prebuilds-'));
    try {
      fs.mkdirSync(path.join(dir, 'prebuilds', 'linux-x64'), { recursive: true });
      fs.mkdirSync(path.join(dir, 'prebuilds', 'linux-arm64', 'x.node'), { recursive: true });
      const out = spawnSync(process.execPath, [PREBUILDS_GUARD], { cwd: dir, encoding: 'utf8' });
      expect(out.status).toBe(1);
      expect(out.stderr).toContain('no prebuilt addon for linux-x64, linux-arm64');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses both platforms present when one was built from other sources', () => {
    const out = runGuard({ ...fresh(['linux-x64']), 'linux-arm64/liveupdate.glibc.node': otherSourcesBuild() });
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/^prepublishOnly: prebuilds\/linux-arm64\/liveupdate\.glibc\.node was not built from the current sources/);
  });
});

describe('packing refuses prebuilds of other sources than the ones it ships', () => {
  const pack = (addons: Readonly<Record<string, Buffer | string>>) => runGuard(addons, ['--digests']);

  it('is what npm runs before it packs, before it builds', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(LIBRARY_DIR, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['prepack']).toMatch(/^node scripts\/check-prebuilds\.mjs --digests && /);
  });

  it('passes with no prebuilds at all (CI packs before it prebuilds), and with a fresh copy of the addon', () => {
    for (const addons of [{}, { 'linux-x64/liveupdate.glibc.node': fs.readFileSync(SOURCE_BUILD) }]) {
      const out = pack(addons);
      expect(out.stderr).toBe('');
      expect(out.status).toBe(0);
    }
  });

  it.each([
    ['another digest', otherSourcesBuild],
    ['no digest (a build from before it)', () => 'an addon without a marker'],
  ])('refuses a prebuild with %s, naming it and what to run', (_, content) => {
    const out = pack({ 'linux-x64/liveupdate.glibc.node': fs.readFileSync(SOURCE_BUILD), 'linux-arm64/liveupdate.glibc.node': content() });
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/^prepack: prebuilds\/linux-arm64\/liveupdate\.glibc\.node was not built from the current sources of the addon \(source digest [0-9a-f]{12}\)/);
    expect(out.stderr).not.toContain('linux-x64');
    expect(out.stderr).toContain('`npm run prebuild`, or delete prebuilds/');
  });
});

describe("the addon's source digest", () => {
  /** scripts/addon-digest.mjs's output in a copy of the addon's sources, after `change` there. */
  function digestAfter(change: (dir: string) => void): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-digest-'));
    try {
      for (const entry of ['native', 'include', 'scripts/addon-digest.mjs']) fs.cpSync(path.join(LIBRARY_DIR, entry), path.join(dir, entry), { recursive: true });
      change(dir);
      return spawnSync(process.execPath, [path.join(dir, 'scripts', 'addon-digest.mjs')], { encoding: 'utf8' }).stdout.trim();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it("is the same in a copy, follows a file's content and its name, and leaves out an editor's swap file", () => {
    const same = digestAfter(() => {});
    expect(same).toBe(currentDigest());
    expect(same).toMatch(/^[0-9a-f]{64}$/);
    expect(digestAfter((dir) => fs.writeFileSync(path.join(dir, 'native', '.luo.h.swp'), 'swap'))).toBe(same);
    expect(digestAfter((dir) => fs.appendFileSync(path.join(dir, 'native', 'luo.h'), '\n'))).not.toBe(same);
    expect(digestAfter((dir) => fs.renameSync(path.join(dir, 'include', 'liveupdate', 'abi.h'), path.join(dir, 'include', 'liveupdate', 'abi2.h')))).not.toBe(same);
  });
});

describe("README's Install section and the npm in use", () => {
  const readme = fs.readFileSync(path.join(LIBRARY_DIR, 'README.md'), 'utf8');
  const start = readme.indexOf('## Install');
  const install = readme.slice(start, readme.indexOf('\n## ', start + 1));

  // Each `npm X --help` is a fresh npm (about a second on a busy 2-core machine): more than vitest's default 5 s in all.
  it('every npm command it names is one this npm has', { timeout: 60_000 }, () => {
    const commands = [...new Set([...install.matchAll(/`npm ([a-z-]+)/g)].map((m) => m[1] ?? ''))];
    expect(commands).toEqual(expect.arrayContaining(['install-scripts', 'approve-scripts']));
    for (const command of commands) {
      const out = spawnSync('npm', [command, '--help'], { encoding: 'utf8' });
      expect(out.status, `npm ${command} --help: ${out.stderr}`).toBe(0);
      expect(out.stdout).not.toMatch(/^Unknown command/m);
    }
  });

  it('says what npm 11 does with a dependency\'s install script: it runs it, and warns when allowScripts does not cover it', () => {
    const version = spawnSync('npm', ['--version'], { encoding: 'utf8' }).stdout.trim();
    expect(install).toContain(`npm ${version.split('.').slice(0, 2).join('.')}`);
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-npm-scripts-'));
    try {
      const dependency = path.join(project, 'dependency');
      fs.mkdirSync(dependency);
      const script = 'node -e "require(\'fs\').writeFileSync(\'ran\', \'\')"';
      fs.writeFileSync(path.join(dependency, 'package.json'), JSON.stringify({ name: 'scripted', version: '1.0.0', scripts: { install: script } }));
      const app = path.join(project, 'app');
      fs.mkdirSync(app);
      fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
      const tarball = spawnSync('npm', ['pack', '--silent', '--pack-destination', project], { cwd: dependency, encoding: 'utf8' }).stdout.trim();
      // Its warnings at their own level: `npm run -s` hands the tests npm_config_loglevel=silent.
      const out = spawnSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel', 'warn', path.join(project, tarball)], { cwd: app, encoding: 'utf8' });
      expect(out.status, out.stderr).toBe(0);
      expect(fs.existsSync(path.join(app, 'node_modules', 'scripted', 'ran'))).toBe(true);
      expect(out.stderr).toMatch(/not yet covered by allowScripts/);
    } finally {
      fs.rmSync(project, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('the API reference', () => {
  const readme = fs.readFileSync(path.join(LIBRARY_DIR, 'README.md'), 'utf8');

  it("README says where `npm run docs` writes it, and that is typedoc's output directory", () => {
    const typedoc = JSON.parse(fs.readFileSync(path.join(LIBRARY_DIR, 'typedoc.json'), 'utf8')) as { out: string };
    const pkg = JSON.parse(fs.readFileSync(path.join(LIBRARY_DIR, 'package.json'), 'utf8')) as { scripts: Record<string, string>; files: string[] };
    expect(pkg.scripts['docs']).toBe('typedoc');
    expect(readme).toContain(`\`npm run docs\` (typedoc, into \`${typedoc.out}/\``);
    // Not shipped, as README says: the declarations carry the same TSDoc.
    expect(pkg.files.some((f) => f.startsWith('docs'))).toBe(false);
    expect(readme).toMatch(/the HTML is not in the npm package/);
  });
});
