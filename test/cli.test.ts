/**
 * The `liveupdate` command: its parsing (pure), and the real binary's exit
 * statuses, streams, help and version; and the package without its addon.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS, EXIT, parseCommandLine } from '../lib/cli.js';

const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'liveupdate.js');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
}

describe('parseCommandLine (pure)', () => {
  it('help, --help, -h, --version, -V', () => {
    expect(parseCommandLine(['--help']).kind).toBe('help');
    expect(parseCommandLine(['-h']).kind).toBe('help');
    expect(parseCommandLine(['help']).kind).toBe('help');
    expect(parseCommandLine(['--version']).kind).toBe('version');
    expect(parseCommandLine(['-V']).kind).toBe('version');
  });

  it('a command with its options', () => {
    const parsed = parseCommandLine(['kexec-load', '--kernel', '/k', '--cmdline', 'a b', '--json']);
    expect(parsed).toMatchObject({ kind: 'run', command: { name: 'kexec-load' }, values: { kernel: '/k', cmdline: 'a b', json: true } });
    expect(parseCommandLine(['status', '--no-probe'])).toMatchObject({ kind: 'run', values: { 'no-probe': true } });
  });

  it('--help on every command, and help COMMAND, give that command\'s usage', () => {
    for (const command of COMMANDS) {
      for (const argv of [[command.name, '--help'], [command.name, '-h'], ['help', command.name]]) {
        const parsed = parseCommandLine(argv);
        expect(parsed.kind).toBe('help');
        if (parsed.kind === 'help') expect(parsed.text).toMatch(new RegExp(`^usage: liveupdate ${command.name} `));
      }
    }
  });

  it('--json on every command that reports', () => {
    for (const command of COMMANDS.filter((c) => c.reports)) {
      expect(parseCommandLine([command.name, '--json'])).toMatchObject({ kind: 'run', values: { json: true } });
    }
  });

  it.each([
    [[], /no command given/, "see 'liveupdate --help'"],
    [['frobnicate'], /unknown command 'frobnicate'/, "see 'liveupdate --help'"],
    [['--frob'], /unknown option '--frob'/, "see 'liveupdate --help'"],
    [['help', 'frob'], /unknown command 'frob'/, "see 'liveupdate --help'"],
    [['status', '--frob'], /Unknown option '--frob'/, "see 'liveupdate status --help'"],
    [['status', 'extra'], /Unexpected argument 'extra'/, "see 'liveupdate status --help'"],
    [['kexec-load', '--kernel'], /--kernel/, "see 'liveupdate kexec-load --help'"],
    [['kexec-unload', '--cmdline', 'x'], /Unknown option '--cmdline'/, "see 'liveupdate kexec-unload --help'"],
  ] as const)('%j is a usage error', (argv, message, hint) => {
    const parsed = parseCommandLine(argv);
    expect(parsed).toMatchObject({ kind: 'usage-error', hint });
    if (parsed.kind === 'usage-error') expect(parsed.message).toMatch(message);
  });
});

// Each case starts several node processes: seconds on a busy machine.
const SPAWNS_TIMEOUT = 60_000;

describe('liveupdate CLI (the real binary)', { timeout: SPAWNS_TIMEOUT }, () => {
  it('status --json on a kernel without LUO: exit 1, the reason and the fix', () => {
    const result = run('status', '--json', '--no-probe');
    expect(result.status).toBe(EXIT.negative);
    const status = JSON.parse(result.stdout) as { available: boolean; reason: string; fix: string; deviceExists: boolean };
    expect(status.available).toBe(false);
    expect(status.deviceExists).toBe(false);
    expect(status.reason).toMatch(/liveupdate=on|CONFIG_LIVEUPDATE|older than 6\.19/);
    expect(status.fix).toEqual(expect.any(String));
    expect(result.stderr).toBe('');
  });

  it('status prints a readable table with the reason and the fix', () => {
    const result = run('status', '--no-probe');
    expect(result.stdout).toMatch(/^available: +no$/m);
    expect(result.stdout).toMatch(/^reason: +\S/m);
    expect(result.stdout).toMatch(/^fix: +\S/m);
    expect(result.stdout).toMatch(/^device: +\/dev\/liveupdate missing$/m);
    expect(result.stdout).toMatch(/^kexec_file_load: +\S/m);
  });

  it('usage errors exit 2, on stderr, with a "see --help" hint, and nothing on stdout', () => {
    for (const args of [[], ['frobnicate'], ['status', '--frob'], ['status', 'x'], ['kexec-load', '--cmdline', 'x'], ['kexec-load', '--kernel', 'k', '--cmdline', 'c', '--reuse-cmdline'], ['status', '--probe', '--no-probe']]) {
      const result = run(...args);
      expect(result.status, args.join(' ')).toBe(EXIT.usage);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/^liveupdate[ :].*; see 'liveupdate( [a-z-]+)? --help'\n$/);
    }
    expect(run('kexec-load', '--cmdline', 'x').stderr).toBe("liveupdate kexec-load: --kernel is required; see 'liveupdate kexec-load --help'\n");
    expect(run('kexec-load', '--kernel', '', '--cmdline', 'x').status).toBe(EXIT.usage);
  });

  it('--version prints the package version; --help and help list every command; exit 0', () => {
    expect(run('--version')).toMatchObject({ status: EXIT.ok, stdout: `${VERSION}\n`, stderr: '' });
    for (const args of [['--help'], ['help']]) {
      const result = run(...args);
      expect(result.status).toBe(EXIT.ok);
      for (const command of COMMANDS) expect(result.stdout).toContain(`  ${command.name} `);
    }
    expect(run('kexec-load', '--help')).toMatchObject({ status: EXIT.ok, stderr: '' });
    expect(run('kexec-load', '--help').stdout).toMatch(/--reuse-cmdline/);
  });

  it('a failed operation exits 1 with the typed error on stderr', () => {
    const result = run('kexec-load', '--kernel', '/nonexistent/bzImage', '--cmdline', 'liveupdate=on');
    expect(result.status).toBe(EXIT.negative);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^liveupdate kexec-load: (ENOENT|ENOSYS|EPERM): /);
  });

  it('every subcommand is in the README', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    for (const command of COMMANDS) expect(readme).toContain(`liveupdate ${command.name}`);
  });
});

describe('without the native addon (install scripts skipped)', { timeout: SPAWNS_TIMEOUT }, () => {
  let dir: string;
  let pkg: string;

  beforeAll(() => {
    // The package as npm installs it when the install script did not run: no build/, no prebuilds/.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-noaddon-'));
    pkg = path.join(dir, 'node_modules', 'liveupdate');
    fs.mkdirSync(pkg, { recursive: true });
    for (const entry of ['package.json', 'dist', 'bin']) fs.cpSync(path.join(ROOT, entry), path.join(pkg, entry), { recursive: true });
    fs.symlinkSync(path.join(ROOT, 'node_modules', 'node-gyp-build'), path.join(dir, 'node_modules', 'node-gyp-build'));
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("require('liveupdate') loads, and the first kernel call says why it cannot and how to fix it", () => {
    const script = `
      const lu = require('liveupdate');
      let error;
      try { lu.memfd.createSync('x'); } catch (e) { error = e; }
      console.log(JSON.stringify({
        name: error.name, code: error.code, message: error.message, fix: error.fix,
        isLiveUpdateError: error instanceof lu.LiveUpdateError, isAddonLoadError: error instanceof lu.AddonLoadError,
        hasCause: error.cause instanceof Error,
      }));`;
    const out = spawnSync(process.execPath, ['-e', script], { cwd: dir, encoding: 'utf8' });
    expect(out.stderr).toBe('');
    const error = JSON.parse(out.stdout) as Record<string, unknown>;
    expect(error).toMatchObject({ name: 'AddonLoadError', code: 'ERR_LIVEUPDATE_ADDON_NOT_LOADED', isLiveUpdateError: true, isAddonLoadError: true, hasCause: true });
    expect(error['message']).toMatch(/^ERR_LIVEUPDATE_ADDON_NOT_LOADED: the native addon of liveupdate is not built/);
    expect(error['fix']).toMatch(/npm approve-scripts liveupdate/);
    expect(error['fix']).toMatch(/npm rebuild liveupdate/);
    expect(error['message']).not.toMatch(/No native build was found/);
  });

  it('liveupdate status still diagnoses the kernel, and says why the addon is missing', () => {
    const result = spawnSync(process.execPath, [path.join(pkg, 'bin', 'liveupdate.js'), 'status', '--no-probe'], { encoding: 'utf8' });
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(/^reason: +\S/m);
    expect(result.stdout).toMatch(/^addon: +ERR_LIVEUPDATE_ADDON_NOT_LOADED: .*npm rebuild liveupdate/m);
    expect(result.status).toBe(EXIT.negative);
  });

  it('a command that needs the addon exits 1 with the fix, not a stack trace', () => {
    const result = spawnSync(process.execPath, [path.join(pkg, 'bin', 'liveupdate.js'), 'kexec-unload'], { encoding: 'utf8' });
    expect(result.status).toBe(EXIT.negative);
    expect(result.stderr).toMatch(/^liveupdate kexec-unload: ERR_LIVEUPDATE_ADDON_NOT_LOADED: .*Fix: approve the package's install script/);
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });
});
