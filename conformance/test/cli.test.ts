/**
 * The conformance command on the host, without booting anything: argument
 * errors, what the published package carries for the guest, and how a run's
 * results become pass, fail, skip and deviation (the kernel-lacks-something
 * and not-applicable paths that the real kernels under test never take).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatReport, succeeded } from '../lib/conformance/cli.js';
import { junitXml } from '../lib/conformance/junit.js';
import { buildReport, summarize } from '../lib/conformance/report.js';
import type { SuiteCase } from '../lib/conformance/suite.js';
import { appendArchives, type CaseResult, type StageResult, type VmRun } from '../lib/vm/qemu.js';
import type { CheckRecord } from '../lib/vm/protocol.js';
import { fakeBzImage } from './fake-kernel.js';

const root = path.resolve(__dirname, '..');
const BIN = path.join(root, 'bin', 'liveupdate-conformance.js');
/** The compiled suite: it finds its scenario modules next to itself, as built JavaScript. */
const { SCENARIOS, suiteCases } = createRequire(__filename)(path.join(root, 'dist', 'conformance', 'suite.js')) as typeof import('../lib/conformance/suite.js');

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
}

describe('liveupdate-conformance arguments', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'conformance-cli-'));
  const notKernel = path.join(tmp, 'not-a-kernel');
  fs.writeFileSync(notKernel, 'plain text, no boot header');

  it.each([
    [[], '--kernel PATH is required'],
    [['--json'], '--kernel PATH is required'],
    [['--kernel', path.join(tmp, 'missing-bzImage')], `kernel image not found: ${path.join(tmp, 'missing-bzImage')}`],
    [['--kernel', tmp], `kernel image is not a file: ${tmp}`],
    [['--kernel', notKernel], 'is not a bzImage'],
    [['--kernel', notKernel, '--bogus'], "Unknown option '--bogus'"],
    [['--kernel'], "Option '--kernel <value>' argument missing"],
  ])('%j: exit 2 and says so on stderr, nothing on stdout', (args, message) => {
    const result = run(...args);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(message);
    expect(result.stderr).toContain('--help');
    expect(result.stdout).toBe('');
  });

  it('checks --initrd and --timeout before booting anything', () => {
    // A real bzImage is not needed to reach these checks once the kernel check passes.
    const fake = fakeBzImage(tmp);
    const missing = run('--kernel', fake, '--initrd', path.join(tmp, 'nope.cpio'));
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain(`initrd not found: ${path.join(tmp, 'nope.cpio')}`);
    const timeout = run('--kernel', fake, '--timeout', 'soon');
    expect(timeout.status).toBe(2);
    expect(timeout.stderr).toContain('--timeout wants a positive number of seconds, not soon');
    const next = run('--kernel', fake, '--next-kernel', notKernel);
    expect(next.status).toBe(2);
    expect(next.stderr).toContain(`${notKernel} is not a bzImage`);
  });

  it('--help prints the usage on stdout and exits 0', () => {
    const result = run('--help');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^usage: liveupdate-conformance --kernel PATH/);
    expect(result.stdout).toContain('--json');
    expect(result.stderr).toBe('');
  });
});

describe('--initrd: extra archives after the guest image', () => {
  it('keeps every byte, starts each archive on a 4-byte boundary and ends on one', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'conformance-initrd-'));
    const files = [Buffer.from('base archive, 29 bytes long.\n'), Buffer.from('x'), Buffer.from('extra two')].map((bytes, i) => {
      const file = path.join(tmp, `part-${i}`);
      fs.writeFileSync(file, bytes);
      return { file, bytes };
    });
    const [base, ...extras] = files;
    const out = appendArchives(base?.file ?? '', extras.map((e) => e.file));
    try {
      const expected = Buffer.concat([files[0]?.bytes ?? Buffer.alloc(0), Buffer.alloc(3), Buffer.from('x'), Buffer.alloc(3), Buffer.from('extra two'), Buffer.alloc(3)]);
      expect(fs.readFileSync(out)).toEqual(expected);
    } finally {
      fs.rmSync(path.dirname(out), { recursive: true, force: true });
    }
  });
});

describe('the published package', () => {
  it('carries the command, the guest runner, every scenario and what install needs to build its addon', () => {
    const out = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    expect(out.status, out.stderr).toBe(0);
    const [pack] = JSON.parse(out.stdout) as [{ files: { path: string }[] }];
    const files = new Set(pack.files.map((f) => f.path));
    const needed = [
      'package.json',
      'bin/liveupdate-conformance.js',
      'dist/conformance/cli.js',
      'dist/conformance/suite.js',
      ...SCENARIOS.map((s) => `dist/conformance/scenarios/${s}.js`),
      'dist/vm/guest.js',
      'dist/vm/initramfs.js',
      'dist/vm/qemu.js',
      'dist/index.js',
      'binding.gyp',
      'native/napi_guest.cc',
      'native/guest.cc',
      'vm/build-kernel.sh',
      'vm/kernel.config',
      'bench/luo_bench.c',
      // The fault/* and abi/* cases' programs, compiled on the user's machine.
      'dist/vm/static-program.js',
      'vm/luo-test-ctl.c',
      'vm/luo-raw-ioctl.c',
      'vm/luo-test-handler/luo_test.h',
      // pid 1 of a guest whose node comes on the system disk.
      'vm/lu-init.c',
      'vm/system-disk.h',
    ];
    expect(needed.filter((f) => !files.has(f))).toEqual([]);
    // The launcher must stay CommonJS and executable: npm links it as a command.
    expect(fs.statSync(path.join(root, 'bin', 'liveupdate-conformance.js')).mode & 0o111).not.toBe(0);
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(pkg.bin['liveupdate-conformance']).toBe('./bin/liveupdate-conformance.js');
    // The compiled code is lib/'s and nothing else: no test or scenario of the project's own, no output of an older layout.
    expect([...files].filter((f) => f.startsWith('dist/') && !fs.existsSync(path.join(root, 'lib', f.slice('dist/'.length).replace(/\.d\.ts$|\.js$/, '.ts'))))).toEqual([]);
    // Nothing ships that nothing uses: every other file is named by a shipped file that uses it (code, a build
    // file, a script), not only listed by package.json's `files` or mentioned by the README.
    const text = new Map([...files].map((f) => [f, fs.readFileSync(path.join(root, f), 'latin1')]));
    const commands = new Set(Object.values(pkg.bin).map((p) => path.posix.normalize(p)));
    const users = [...files].filter((f) => f !== 'package.json' && f !== 'README.md');
    const unused = [...files].filter(
      (f) => !f.startsWith('dist/') && !['package.json', 'README.md', 'LICENSE'].includes(f) && !commands.has(f) && !users.some((u) => u !== f && text.get(u)?.includes(path.posix.basename(f))),
    );
    expect(unused).toEqual([]);
  }, 60_000);

  it('names every case once, the longest in three kernels', () => {
    const cases = suiteCases();
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
    expect(Math.max(...cases.map((c) => c.stages))).toBe(3);
    expect(cases[0]?.name).toBe('luo/device');
  });
});

describe('from a run to the report', () => {
  const cases: SuiteCase[] = [
    { name: 'luo/device', stages: 3 },
    { name: 'device/open-close', stages: 1 },
    { name: 'kexec/simple', stages: 2 },
    { name: 'chain/two-live-updates', stages: 3 },
  ];
  const kernel = { path: '/k/bzImage', release: '7.2.13' };

  it('passes a case that passed in every one of its stages, and sums its time', () => {
    const fake = fakeRun(3, (c, stage) => ok(c, stage, 10 * stage));
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.map((c) => [c.name, c.status])).toEqual(cases.map((c) => [c.name, 'pass']));
    expect(report.cases.find((c) => c.name === 'chain/two-live-updates')?.ms).toBe(60);
    expect([report.passed, report.failed, report.skipped]).toEqual([4, 0, 0]);
    expect(Object.keys(report)).toEqual(['kernel', 'cases', 'passed', 'failed', 'skipped', 'notApplicable', 'deviations']);
  });

  it('reports a case whose only failed checks are deviations as a deviation, with the promise and what was seen', () => {
    const fake = fakeRun(3, (c, stage) =>
      c === 'kexec/simple' && stage === 2
        ? { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'content', true, undefined), check(c, stage, 'deviation: seals kept', false, { promised: 32, observed: 62 })] }
        : ok(c, stage, 1),
    );
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.find((c) => c.name === 'kexec/simple')).toMatchObject({ status: 'deviation', detail: 'seals kept: documented 32, this kernel 62' });
    expect([report.passed, report.deviations, report.failed]).toEqual([3, 1, 0]);
    const summary = summarize(fake, report);
    expect(succeeded(report, summary)).toBe(true);
    expect(formatReport(report, summary)).toContain('CONFORMS WITH DEVIATIONS: 3 passed, 1 deviated, 0 failed, 0 skipped of 4');
  });

  it('fails a case with a deviation and a failed check of its own, naming both', () => {
    const fake = fakeRun(3, (c, stage) =>
      c === 'kexec/simple' && stage === 2
        ? { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'deviation: seals kept', false, { promised: 32, observed: 62 }), check(c, stage, 'content', false, 'x')] }
        : ok(c, stage, 1),
    );
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.find((c) => c.name === 'kexec/simple')?.status).toBe('fail');
    expect(succeeded(report, summarize(fake, report))).toBe(false);
  });

  it('lists what the kernel did where nothing is promised as observed, beside the status', () => {
    const fake = fakeRun(3, (c, stage) => (c === 'device/open-close' ? { ...ok(c, stage, 1), reports: { 'observed: errno of X': 'EPERM', other: 1 } } : ok(c, stage, 1)));
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.find((c) => c.name === 'device/open-close')).toMatchObject({ status: 'pass', observed: { 'errno of X': 'EPERM' } });
    expect(formatReport(report, summarize(fake, report))).toMatch(/\n\s+observed: errno of X: "EPERM"\n/);
  });

  it('skips a case that needs the test file handler as not applicable, and the run still conforms', () => {
    const why = 'no /dev/luo_test: the kernel was built without the test-only file handler';
    const fake = {
      ...fakeRun(3, (c, stage) => (c === 'kexec/simple' ? { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'applies only with test-handler', false, why)] } : ok(c, stage, 1))),
      ok: false,
    };
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.find((c) => c.name === 'kexec/simple')).toEqual({ name: 'kexec/simple', status: 'skip', ms: 2, detail: `not applicable: ${why}`, notApplicable: true });
    expect([report.passed, report.skipped, report.notApplicable]).toEqual([3, 1, 1]);
    const summary = summarize(fake, report);
    expect(summary.lacks).toEqual([]);
    expect(succeeded(report, summary)).toBe(true);
    expect(formatReport(report, summary)).toContain('CONFORMS: 3 passed, 0 deviated, 0 failed, 1 skipped (1 not applicable) of 4');
  });

  it('with a next kernel, says which kernels each crossing case ran in', () => {
    const fake = fakeRun(3, (c, stage) => ok(c, stage, 1));
    const stages = fake.stages.map((s, i) => ({ ...s, release: i === 0 ? '7.2.13' : '7.3.4' }));
    const report = buildReport({ ...fake, stages }, cases, kernel, { path: '/k/next', release: '7.3.4' });
    expect(report.nextKernel).toEqual({ path: '/k/next', release: '7.3.4' });
    expect(report.cases.map((c) => [c.name, c.kernels])).toEqual([
      ['luo/device', ['7.2.13', '7.3.4', '7.3.4']],
      ['device/open-close', undefined],
      ['kexec/simple', ['7.2.13', '7.3.4']],
      ['chain/two-live-updates', ['7.2.13', '7.3.4', '7.3.4']],
    ]);
    const text = formatReport(report, summarize(fake, report));
    expect(text).toContain('kernel 7.2.13 (/k/bzImage), kexecing into 7.3.4 (/k/next)');
    expect(text).toMatch(/PASS\s+kexec\/simple\s+2 ms  \[7\.2\.13 → 7\.3\.4\]/);
  });

  it('writes JUnit XML: failures, skips and deviations, escaped', () => {
    const fake = fakeRun(3, (c, stage) => {
      if (c === 'device/open-close') return { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'fd <is> "open" & well', false, -1)] };
      if (c === 'luo/device') return { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'requires luo', false, 'no device')] };
      if (c === 'kexec/simple' && stage === 2) return { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'deviation: seals kept', false, { promised: 32, observed: 62 })] };
      return ok(c, stage, 1500);
    });
    const xml = junitXml(buildReport(fake, cases, kernel), 61_000);
    expect(xml).toContain('<testsuites name="liveupdate-conformance" tests="4" failures="1" errors="0" skipped="1" time="61.000">');
    expect(xml).toContain('<testcase classname="luo" name="device" time="0.003">\n      <skipped message="no device"/>');
    expect(xml).toContain('<failure message="stage 1: check &quot;fd &lt;is&gt; &quot;open&quot; &amp; well&quot; failed: -1"/>');
    expect(xml).toContain('<property name="deviation" value="seals kept: documented 32, this kernel 62"/>');
    expect(xml).toContain('<testcase classname="chain" name="two-live-updates" time="4.500"/>');
  });

  it('without /dev/liveupdate: the device case fails with the reason, dependent cases are skipped with it', () => {
    const why = 'no /dev/liveupdate: kernel 7.2.13 was booted without liveupdate=on';
    const fake = fakeRun(3, (c, stage) =>
      c === 'luo/device'
        ? { ...ok(c, stage, 5), ok: false, checks: [check(c, stage, '/dev/liveupdate exists', false, why)] }
        : { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'requires luo', false, why)] },
    );
    const report = buildReport(fake, cases, kernel);
    expect(report.cases[0]).toMatchObject({ name: 'luo/device', status: 'fail' });
    expect(report.cases[0]?.detail).toContain(why);
    expect(report.cases.slice(1).map((c) => [c.status, c.detail])).toEqual(cases.slice(1).map(() => ['skip', why]));
    expect(summarize(fake, report).lacks).toEqual([why]);
  });

  it('fails a case with the thrown error, or with the failed checks, naming the stage', () => {
    const fake = fakeRun(3, (c, stage) => {
      if (c === 'kexec/simple' && stage === 2) return { ...ok(c, stage, 1), ok: false, error: { name: 'TokenNotFoundError', code: 'ENOENT', message: 'no file under token 42' } };
      if (c === 'device/open-close') return { ...ok(c, stage, 1), ok: false, checks: [check(c, stage, 'fd is open', false, -1)] };
      return ok(c, stage, 1);
    });
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.find((c) => c.name === 'kexec/simple')?.detail).toBe('stage 2: TokenNotFoundError [ENOENT]: no file under token 42');
    expect(report.cases.find((c) => c.name === 'device/open-close')?.detail).toBe('stage 1: check "fd is open" failed: -1');
    expect([report.passed, report.failed]).toEqual([2, 2]);
  });

  it('fails the cases whose later stages never ran (a kexec that did not happen), with the run\'s reason', () => {
    const reason = 'stage 1: the guest runner failed: KexecImageRejectedError: ENOEXEC';
    const fake = { ...fakeRun(1, (c, stage) => ok(c, stage, 1)), reason };
    const report = buildReport(fake, cases, kernel);
    expect(report.cases.find((c) => c.name === 'device/open-close')?.status).toBe('pass');
    expect(report.cases.find((c) => c.name === 'kexec/simple')).toMatchObject({ status: 'fail', detail: `stage 2 never ran: ${reason}` });
    expect(report.failed).toBe(3);
  });
});

type Fake = Pick<VmRun, 'result' | 'reason' | 'ok' | 'completed' | 'elapsedMs' | 'stages'>;

/** A run that reached `stages` kernels, where `make` says how each case did in each stage it ran. */
function fakeRun(stages: number, make: (name: string, stage: number) => CaseResult): Fake {
  const all = ['luo/device', 'device/open-close', 'kexec/simple', 'chain/two-live-updates'];
  const length: Record<string, number> = { 'luo/device': 3, 'device/open-close': 1, 'kexec/simple': 2, 'chain/two-live-updates': 3 };
  const results: StageResult[] = [];
  for (let stage = 1; stage <= stages; stage++) {
    const cases: Record<string, CaseResult> = {};
    for (const name of all) if (stage <= (length[name] ?? 0)) cases[name] = make(name, stage);
    results.push({ stage, release: '7.2.13', uptimeMs: 1000, reachedAtMs: stage * 1000, cases });
  }
  return {
    reason: 'ok',
    ok: true,
    completed: stages === 3,
    elapsedMs: 1000,
    stages: results,
    result: (name, stage) => results.find((s) => s.stage === stage)?.cases[name],
  };
}

function ok(name: string, stage: number, ms: number): CaseResult {
  return { case: name, stage, ok: true, ms, value: null, error: undefined, skipped: undefined, checks: [], reports: {} };
}

function check(name: string, stage: number, checkName: string, passed: boolean, detail: CheckRecord['detail']): CheckRecord {
  return { t: 'check', stage, case: name, name: checkName, ok: passed, ...(detail === undefined ? {} : { detail }) };
}
