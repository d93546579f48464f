/**
 * The conformance suite on each LUO kernel, run the way a user runs it: both
 * packages (liveupdate and liveupdate-conformance) are packed with `npm pack`,
 * installed into an empty project with `npm install --omit=dev`
 * (no dev dependencies, no repository: the install builds the addons from
 * the packed sources, or takes the prebuilds they carry), and its
 * `liveupdate-conformance` command boots the kernel. One boot (three kernels)
 * per kernel under test, which kexecs into the other kernel under test
 * (`--next-kernel`): with 7.2 and 7.3, every case then preserves on each,
 * retrieves on each, and crosses both ways (upgrade and downgrade), in two
 * runs. Every case is asserted by name, so a case that went missing fails as
 * surely as one that failed. The run also gets a gzip-compressed `--initrd`,
 * as a user adding modules would pass, to show an extra archive survives all
 * three kernels.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConformanceReport } from '../../lib/conformance/report.js';
import { CpioWriter } from '../../lib/vm/cpio.js';
import { CONFORMANCE_DIR, installTarballs, LIBRARY_DIR, pack, type Outcome } from '../../../test/helpers/pack.js';
import { describeKernels } from '../../../test/kernel/support.js';

const root = CONFORMANCE_DIR;

/** Every case the suite must report, in order. Keep in step with lib/conformance/scenarios. */
const EXPECTED_CASES = [
  'luo/device',
  'luo/memfd-support',
  'device/open-close',
  'device/exclusive-open',
  'device/duplicate-session-name',
  'device/distinct-sessions',
  'device/preserve-one-memfd',
  'device/preserve-several-memfds',
  'device/preserve-mixed-across-sessions',
  'device/unpreservable-fds',
  'device/bad-fd',
  'device/same-file-twice',
  'device/session-names',
  'device/get-name',
  'device/outgoing-refuses-retrieve-finish',
  'device/size-frozen',
  'abi/name-without-nul',
  'abi/empty-name',
  'abi/size-below-struct',
  'abi/size-above-struct-zero-tail',
  'abi/size-above-struct-nonzero-tail',
  'abi/get-name-reserved',
  'abi/finish-reserved',
  'abi/unknown-request',
  'abi/bad-pointer',
  'scale/2000-sessions',
  'scale/1000-files-in-one-session',
  'kexec/simple',
  'kexec/several-sessions',
  'kexec/retrieve-in-any-order',
  'kexec/finish-discards-unretrieved',
  'kexec/close-without-finish',
  'kexec/same-token-twice',
  'kexec/unknown-token',
  'kexec/session-retrieved-twice',
  'kexec/unknown-session',
  'kexec/closed-session-absent',
  'kexec/seals-restored',
  'kexec/noexec-seal-memfd',
  'kexec/writes-and-position-after-preserve',
  'kexec/incoming-refuses-preserve',
  'kexec/long-name-get-name',
  'kexec/memfd-256MiB',
  'chain/two-live-updates',
  'chain/unretrieved-session-dropped',
  'fault/freeze-fails',
  'fault/can-finish-says-no',
  'fault/retrieve-fails',
  'fault/preserve-fails',
  'fault/normal-update',
];

/**
 * Cases whose documented promise 7.2 and 7.3 do not keep: an unknown request
 * is EINVAL, not ioctl(2)'s ENOTTY; a MFD_NOEXEC_SEAL memfd comes back
 * write-sealed (see the cases). Every other case passes.
 */
const DEVIATING_CASES = ['abi/unknown-request', 'kexec/noexec-seal-memfd'];
const PASSING_CASES = EXPECTED_CASES.filter((c) => !DEVIATING_CASES.includes(c));

/**
 * A whole run, packing and installing included: the command's own default
 * limit (1200 s). On a 2-core machine busy with other builds one run took
 * 5.5 minutes, more than the kernel project's default hook timeout.
 */
const RUN_TIMEOUT_MS = 1_200_000;

let installed: Promise<string> | undefined;
/** Temporary directories this file made: the packed and installed packages, the extra archive. */
const scratch: string[] = [];

afterAll(() => {
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Packs both packages and installs them into a fresh project, once for the
 * whole file; resolves with the path of the installed `liveupdate-conformance`.
 */
function installedCommand(): Promise<string> {
  installed ??= (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-conformance-'));
    scratch.push(dir);
    const project = path.join(dir, 'project');
    installTarballs(project, [pack(LIBRARY_DIR, dir), pack(CONFORMANCE_DIR, dir)]);
    const command = path.join(project, 'node_modules', '.bin', 'liveupdate-conformance');
    expect(fs.existsSync(command), `npm did not link ${command}`).toBe(true);
    // The addons must come from the installed packages themselves: built by
    // their install scripts, or prebuilds they carry (if `npm run prebuild` ran).
    for (const name of ['liveupdate', 'liveupdate-conformance']) {
      const dirs = ['build/Release', `prebuilds/linux-${process.arch}`].map((d) => path.join(project, 'node_modules', name, d));
      const addons = dirs.filter((d) => fs.existsSync(d)).flatMap((d) => fs.readdirSync(d).filter((f) => f.endsWith('.node')));
      expect(addons.length, `${name} has no addon in ${dirs.join(' or ')}`).toBeGreaterThan(0);
    }
    return command;
  })();
  return installed;
}

/** A small gzip-compressed cpio archive, as `--initrd` takes. */
function extraInitrd(): string {
  const chunks: Uint8Array[] = [];
  const archive = new CpioWriter((chunk) => void chunks.push(Buffer.from(chunk)));
  archive.file('/etc/liveupdate-conformance-extra', 'unpacked over the guest image\n');
  archive.finish();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'conformance-extra-'));
  scratch.push(dir);
  const file = path.join(dir, 'extra.cpio.gz');
  // Any length: the padding after it keeps the state archive the guest appends aligned.
  fs.writeFileSync(file, zlib.gzipSync(Buffer.concat(chunks)));
  return file;
}

/** Runs the installed command (it may take minutes), keeping its stderr progress for failure messages. */
function conformance(command: string, args: readonly string[]): Promise<Outcome> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr, ms: Date.now() - started }));
  });
}

describeKernels('liveupdate-conformance', (kernel, all) => {
  // The kernel the stages after the first kexec into: the other one under test, if any.
  const next = all.find((k) => k.path !== kernel.path) ?? kernel;
  let outcome: Outcome;
  let report: ConformanceReport;
  let junit: string;

  beforeAll(async () => {
    const command = await installedCommand();
    const junitFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'conformance-junit-')), 'report.xml');
    scratch.push(path.dirname(junitFile));
    const args = ['--kernel', kernel.path, '--initrd', extraInitrd(), '--json', '--junit', junitFile, '--log', path.join(root, '.vm-out', `into-${next.release}`)];
    if (next !== kernel) args.push('--next-kernel', next.path);
    outcome = await conformance(command, args);
    junit = fs.existsSync(junitFile) ? fs.readFileSync(junitFile, 'utf8') : '';
    try {
      report = JSON.parse(outcome.stdout) as ConformanceReport;
    } catch {
      throw new Error(`no JSON report on stdout (exit ${String(outcome.status)}):\n${outcome.stdout}\n--- stderr ---\n${outcome.stderr}`);
    }
    // The first time, this also installs both packages, building their addons from source.
  }, RUN_TIMEOUT_MS);

  /** The progress the command printed: context for any failure. */
  const progress = (): string => outcome.stderr.split('\n').slice(-40).join('\n');

  it('exits 0, with every case passed but the known deviations, and says so on stderr', () => {
    expect(outcome.status, progress()).toBe(0);
    expect([report.passed, report.deviations, report.failed, report.skipped]).toEqual([PASSING_CASES.length, DEVIATING_CASES.length, 0, 0]);
    const counts = `${PASSING_CASES.length} passed, ${DEVIATING_CASES.length} deviated, 0 failed, 0 skipped of ${EXPECTED_CASES.length}`;
    expect(outcome.stderr).toContain(`CONFORMS WITH DEVIATIONS: ${counts}`);
    // Progress went to stderr; stdout is nothing but the report.
    expect(outcome.stderr).toMatch(/stage 3\/3: \S+ up/);
    expect(outcome.stdout.trim().startsWith('{')).toBe(true);
  });

  it('prints the report in the documented shape', () => {
    const crossing = next === kernel ? [] : ['nextKernel'];
    expect(Object.keys(report)).toEqual(['kernel', ...crossing, 'cases', 'passed', 'failed', 'skipped', 'notApplicable', 'deviations']);
    expect(report.kernel).toEqual({ path: kernel.path, release: kernel.release });
    if (next !== kernel) expect(report.nextKernel).toEqual({ path: next.path, release: next.release });
    for (const c of report.cases) {
      expect(Object.keys(c).filter((k) => !['name', 'status', 'ms', 'detail', 'notApplicable', 'observed', 'kernels'].includes(k))).toEqual([]);
      expect(c.ms).toBeGreaterThanOrEqual(0);
    }
  });

  it('reports exactly the expected cases, in order', () => {
    expect(report.cases.map((c) => c.name)).toEqual(EXPECTED_CASES);
  });

  it.each(PASSING_CASES)('%s passes', (name) => {
    const c = report.cases.find((x) => x.name === name);
    expect(c, `${name} is missing from the report`).toBeDefined();
    expect(c?.status, `${name}: ${c?.detail ?? ''}`).toBe('pass');
  });

  it('kexec/noexec-seal-memfd deviates: the seals and the write, not the content; the mode is observed', () => {
    const c = report.cases.find((x) => x.name === 'kexec/noexec-seal-memfd');
    expect(c?.status, c?.detail).toBe('deviation');
    // F_SEAL_EXEC (32) promised; F_SEAL_EXEC with SHRINK, GROW, WRITE and FUTURE_WRITE (62) seen.
    expect(c?.detail).toBe('seals come back as they were: documented 32, this kernel 62; the memfd is writable as before: documented true, this kernel false');
    expect(c?.observed).toEqual({ 'mode after the kexec': '0777' });
  });

  it('abi/unknown-request deviates: EINVAL where ioctl(2) says ENOTTY, on the device and on a session', () => {
    const c = report.cases.find((x) => x.name === 'abi/unknown-request');
    expect(c?.status, c?.detail).toBe('deviation');
    expect(c?.detail).toBe('the device answers ENOTTY: documented "ENOTTY", this kernel "EINVAL"; a session answers ENOTTY: documented "ENOTTY", this kernel "EINVAL"');
  });

  it('observes the errno of a name without its NUL and of an empty name', () => {
    for (const name of ['abi/name-without-nul', 'abi/empty-name']) {
      expect(report.cases.find((x) => x.name === name)?.observed, name).toEqual({ errno: 'EINVAL' });
    }
  });

  it('writes the same report as JUnit XML', () => {
    const testcases = junit.match(/<testcase /g) ?? [];
    expect(testcases.length).toBe(EXPECTED_CASES.length);
    expect(junit).toContain(`<testsuites name="liveupdate-conformance" tests="${EXPECTED_CASES.length}" failures="0" errors="0" skipped="0"`);
    expect(junit).toMatch(/<testcase classname="kexec" name="noexec-seal-memfd" time="[\d.]+">\n\s+<properties><property name="deviation" value="seals come back/);
    expect(junit).not.toContain('<failure');
  });

  it('runs each crossing case in this kernel first, then in the next one', () => {
    const crossing = report.cases.filter((x) => x.kernels !== undefined);
    if (next === kernel) {
      expect(crossing, 'a run on one kernel names no kernels per case').toEqual([]);
      return;
    }
    for (const c of crossing) {
      expect(c.kernels?.[0], c.name).toBe(kernel.release);
      expect(c.kernels?.slice(1).every((r) => r === next.release), c.name).toBe(true);
    }
    expect(report.cases.find((c) => c.name === 'chain/two-live-updates')?.kernels).toEqual([kernel.release, next.release, next.release]);
  });

  // The kernel-lacks-something path, for real, once: the same kernel booted
  // with KHO off has no /dev/liveupdate. Every case then ends in stage 1, so
  // this boot is short.
  if (kernel.path === all[0]?.path) {
    describe('when the kernel lacks KHO (kho=off)', () => {
      let lacking: Outcome;

      beforeAll(async () => {
        const log = path.join(root, '.vm-out', 'kho-off'); // beside, not over, the full run's console log
        lacking = await conformance(await installedCommand(), ['--kernel', kernel.path, '--cmdline', 'kho=off', '--log', log]);
      });

      it('exits 1, fails luo/device and skips every other case, each saying what is missing', () => {
        const why = `no /dev/liveupdate: Kexec HandOver is off on kernel ${kernel.release} (kho=off), so LUO turned itself off`;
        expect(lacking.status, lacking.stderr.slice(-3000)).toBe(1);
        const lines = lacking.stdout.split('\n').filter((l) => /^(PASS|FAIL|SKIP|DEVIATION) /.test(l));
        expect(lines.map((l) => l.split(/\s+/)[1])).toEqual(EXPECTED_CASES);
        expect(lines[0]).toMatch(/^FAIL\s+luo\/device\s/);
        expect(lines[0]).toContain(why);
        for (const line of lines.slice(1)) {
          expect(line).toMatch(/^SKIP /);
          expect(line).toContain(why);
        }
        expect(lacking.stdout).toContain(`DOES NOT CONFORM: 0 passed, 0 deviated, 1 failed, ${EXPECTED_CASES.length - 1} skipped of ${EXPECTED_CASES.length}`);
        expect(lacking.stdout).toContain(`the kernel lacks something: ${why}`);
      });
    });
  }
});
