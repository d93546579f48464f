/**
 * The conformance suite on each LUO kernel, run the way a user runs it: both
 * packages (liveupdate and liveupdate-conformance) are packed with `npm pack`,
 * installed into an empty project with `npm install --omit=dev`
 * (no dev dependencies, no repository: the install builds the addons from
 * the packed sources, or takes the prebuilds they carry), and its
 * `liveupdate-conformance` command boots the kernel. One boot (three kernels)
 * per kernel under test; every case is then asserted by name, so a case
 * that went missing fails as surely as one that failed. The run also gets a
 * gzip-compressed `--initrd`, as a user adding modules would pass, to show
 * an extra archive survives all three kernels.
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
];

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
  let outcome: Outcome;
  let report: ConformanceReport;

  beforeAll(async () => {
    const command = await installedCommand();
    outcome = await conformance(command, ['--kernel', kernel.path, '--initrd', extraInitrd(), '--json', '--log', path.join(root, '.vm-out')]);
    try {
      report = JSON.parse(outcome.stdout) as ConformanceReport;
    } catch {
      throw new Error(`no JSON report on stdout (exit ${String(outcome.status)}):\n${outcome.stdout}\n--- stderr ---\n${outcome.stderr}`);
    }
    // The first time, this also installs both packages, building their addons from source.
  }, 1_200_000);

  /** The progress the command printed: context for any failure. */
  const progress = (): string => outcome.stderr.split('\n').slice(-40).join('\n');

  it('exits 0, with every case passed, and says so on stderr', () => {
    expect(outcome.status, progress()).toBe(0);
    expect([report.passed, report.failed, report.skipped]).toEqual([EXPECTED_CASES.length, 0, 0]);
    expect(outcome.stderr).toMatch(new RegExp(`CONFORMS: ${EXPECTED_CASES.length} passed, 0 failed, 0 skipped`));
    // Progress went to stderr; stdout is nothing but the report.
    expect(outcome.stderr).toMatch(/stage 3\/3: \S+ up/);
    expect(outcome.stdout.trim().startsWith('{')).toBe(true);
  });

  it('prints the report in the documented shape', () => {
    expect(Object.keys(report)).toEqual(['kernel', 'cases', 'passed', 'failed', 'skipped']);
    expect(report.kernel).toEqual({ path: kernel.path, release: kernel.release });
    for (const c of report.cases) {
      expect(Object.keys(c).filter((k) => !['name', 'status', 'ms', 'detail'].includes(k))).toEqual([]);
      expect(c.ms).toBeGreaterThanOrEqual(0);
    }
  });

  it('reports exactly the expected cases, in order', () => {
    expect(report.cases.map((c) => c.name)).toEqual(EXPECTED_CASES);
  });

  it.each(EXPECTED_CASES)('%s passes', (name) => {
    const c = report.cases.find((x) => x.name === name);
    expect(c, `${name} is missing from the report`).toBeDefined();
    expect(c?.status, `${name}: ${c?.detail ?? ''}`).toBe('pass');
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
        const lines = lacking.stdout.split('\n').filter((l) => /^(PASS|FAIL|SKIP) /.test(l));
        expect(lines.map((l) => l.split(/\s+/)[1])).toEqual(EXPECTED_CASES);
        expect(lines[0]).toMatch(/^FAIL\s+luo\/device\s/);
        expect(lines[0]).toContain(why);
        for (const line of lines.slice(1)) {
          expect(line).toMatch(/^SKIP /);
          expect(line).toContain(why);
        }
        expect(lacking.stdout).toContain(`DOES NOT CONFORM: 0 passed, 1 failed, ${EXPECTED_CASES.length - 1} skipped of ${EXPECTED_CASES.length}`);
        expect(lacking.stdout).toContain(`the kernel lacks something: ${why}`);
      });
    });
  }
});
