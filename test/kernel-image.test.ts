/**
 * The kernel preflight on the host: the setup headers of the real test
 * kernels and of Debian's own kernel (built without LUO), the host's
 * /boot/vmlinuz-* where readable, and what is not a bzImage (a text file, a
 * truncated image, a link, a FIFO, a directory), each refused with its typed
 * error and no fd left open; the handover formats against the kernel
 * sources' own compatible strings; and the rules of the verdict.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as lu from '../dist/index.js';
import { updateChecks } from '../dist/agent/update.js';
import { agentError } from '../lib/errors.js';
import { debianKernel, findKernels } from '../conformance/lib/vm/kernels.js';
import { writeHeaderOnlyImage } from './helpers/bzimage.js';
import { expectNoFdLeak } from './helpers/fds.js';
import { runProcess } from '../conformance/lib/harness/process.js';
import { kernelTestsSkipped } from './helpers/kernel-gate.js';

const { kernel } = lu;
const CACHE = process.env.LIVEUPDATE_CACHE ?? path.join(os.homedir(), '.cache', 'liveupdate');

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-kernel-image-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The error `fn` throws. */
function thrown(fn: () => unknown): Error & { code?: string; path?: string; syscall?: string } {
  try {
    fn();
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('it did not throw');
}

describe.skipIf(kernelTestsSkipped())('the real kernel images', () => {
  const kernels = findKernels();

  it('has test kernels to read (npm run vm:kernel builds them)', () => {
    expect(kernels.map((k) => k.path), `no test kernel under ${CACHE}/kernels: run npm run vm:kernel`).not.toHaveLength(0);
  });

  it.each(kernels.map((k) => [k.release, k.path]))('the test kernel %s: its release is the version of the Debian source it was built from', async (_release, image) => {
    // vm/build-kernel.sh writes the package's version (7.3.4-1~bpo13+1) beside the image; the release is its upstream part.
    const packaged = fs.readFileSync(path.join(path.dirname(image), 'version'), 'utf8').trim().split('-')[0];
    const compression = /^CONFIG_KERNEL_(\w+)=y$/m.exec(fs.readFileSync(path.join(path.dirname(image), 'config'), 'utf8'))?.[1]?.toLowerCase();
    await expectNoFdLeak(async () => {
      const read = kernel.readImageSync(image);
      expect(read).toMatchObject({ path: image, release: packaged, bootProtocol: '2.15', compression, bytes: fs.statSync(image).size });
      expect(read.version.startsWith(`${packaged} (`)).toBe(true);
      expect(await kernel.readImage(image)).toEqual(read);
    });
  });

  it.each(kernels.map((k) => [k.release, k.path]))('the test kernel %s has LUO, by the config beside it', (_release, image) => {
    const report = kernel.inspectSync({ kernel: image, cmdline: 'liveupdate=on kho=on' });
    expect(report.target.liveUpdate).toEqual({ present: true, config: path.join(path.dirname(image), 'config'), missing: [], lacking: [] });
    expect(report.target.format).toBe('luo-v5');
    expect(report.refusals).toEqual([]);
    process.stderr.write(`kernel preflight of ${image}: ${report.ms} ms\n`);
  });

  it("Debian's own kernel of the newest series is refused: its build config lacks LUO", async () => {
    const series = (kernels[kernels.length - 1]?.release ?? '7.3').split('.').slice(0, 2).join('.');
    const { path: image, release } = debianKernel(series);
    expect(kernel.readImageSync(image)).toMatchObject({ release, bootProtocol: '2.15' });
    const error = thrown(() => kernel.preflightSync({ kernel: image })) as lu.KernelWithoutLiveUpdateError;
    expect(error).toBeInstanceOf(lu.KernelWithoutLiveUpdateError);
    expect(error).toMatchObject({ code: 'ERR_LIVEUPDATE_KERNEL_WITHOUT_LUO', target: release, running: os.release(), missing: ['CONFIG_KEXEC_HANDOVER', 'CONFIG_LIVEUPDATE', 'CONFIG_LIVEUPDATE_MEMFD'] });
    expect(error.message).toContain(`kernel ${release} has no Live Update Orchestrator (${path.join(path.dirname(image), 'config')} has CONFIG_KEXEC_HANDOVER off`);
    await expect(kernel.preflight({ kernel: image })).rejects.toBeInstanceOf(lu.KernelWithoutLiveUpdateError);
    // The agent's checks say the same, as a failed kernel-luo check.
    const { checks, kernel: report } = updateChecks({ kernel: image, cmdline: 'liveupdate=on kho=on' }, true);
    expect(checks.filter((c) => !c.ok).map((c) => [c.name, c.detail])).toEqual([['kernel-luo', error.message]]);
    expect(report?.verdict).toBe('refuse');
  }, 60_000);

  it('the handover format of each release is the compatible string of its source tree', () => {
    const trees = fs.existsSync(path.join(CACHE, 'src')) ? fs.readdirSync(path.join(CACHE, 'src')).map((s) => path.join(CACHE, 'src', s, 'linux')) : [];
    const sources = trees.filter((t) => fs.existsSync(path.join(t, 'include/linux/kho/abi/luo.h')));
    expect(sources, 'no linux-source tree with LUO: run npm run vm:kernel').not.toHaveLength(0);
    for (const tree of sources) {
      const makefile = fs.readFileSync(path.join(tree, 'Makefile'), 'utf8');
      const field = (name: string): string => new RegExp(`^${name} = (\\d+)$`, 'm').exec(makefile)?.[1] ?? '?';
      const release = `${field('VERSION')}.${field('PATCHLEVEL')}.${field('SUBLEVEL')}`;
      const compatible = /#define LUO_ABI_COMPATIBLE\s+"([^"]+)"/.exec(fs.readFileSync(path.join(tree, 'include/linux/kho/abi/luo.h'), 'utf8'))?.[1];
      expect([release, kernel.handoverFormat(release)]).toEqual([release, compatible]);
    }
  });
});

describe('what is not a bzImage is refused before any kexec syscall', () => {
  it("the host's own /boot/vmlinuz-* read where readable, each with the release of its name", () => {
    const images = fs.existsSync('/boot') ? fs.readdirSync('/boot').filter((n) => n.startsWith('vmlinuz-')) : [];
    for (const name of images) {
      const file = path.join('/boot', name);
      if (fs.lstatSync(file).isSymbolicLink()) continue;
      try {
        fs.accessSync(file, fs.constants.R_OK);
      } catch {
        continue;
      }
      expect(kernel.readImageSync(file).release).toBe(name.slice('vmlinuz-'.length));
    }
  });

  it('a text file: NotKernelImageError, no fd left', async () => {
    const file = path.join(dir, 'notes.txt');
    fs.writeFileSync(file, 'not a kernel\n'.repeat(100));
    await expectNoFdLeak(() => {
      const error = thrown(() => kernel.readImageSync(file));
      expect(error).toBeInstanceOf(lu.NotKernelImageError);
      expect(error).toBeInstanceOf(lu.KernelImageError);
      expect(error).toMatchObject({ code: 'ERR_LIVEUPDATE_NOT_BZIMAGE', path: file, message: `ERR_LIVEUPDATE_NOT_BZIMAGE: ${file} is not an x86 bzImage kexec_file_load can load: no setup header (no 'HdrS' at 0x202)` });
    });
    await expect(kernel.readImage(file)).rejects.toBeInstanceOf(lu.NotKernelImageError);
  });

  it.skipIf(kernelTestsSkipped())('a truncated image: refused at every length short of the whole file', async () => {
    const image = findKernels()[0]?.path;
    expect(image, 'no test kernel: run npm run vm:kernel').toBeDefined();
    const whole = fs.readFileSync(image as string);
    const cut = path.join(dir, 'truncated');
    await expectNoFdLeak(() => {
      for (const length of [0, 0x100, 0x1000, Math.floor(whole.length / 2), whole.length - 1]) {
        fs.writeFileSync(cut, whole.subarray(0, length));
        const error = thrown(() => kernel.readImageSync(cut));
        expect([length, error.code, error.message]).toEqual([length, 'ERR_LIVEUPDATE_NOT_BZIMAGE', expect.stringMatching(/shorter than a setup header|truncated/)]);
      }
      fs.writeFileSync(cut, whole);
      expect(kernel.readImageSync(cut).bytes).toBe(whole.length);
    });
  });

  it('a symbolic link to an image is not followed: ELOOP, and the agent check fails on it', async () => {
    const image = writeHeaderOnlyImage(path.join(dir, 'bzImage'));
    const link = path.join(dir, 'vmlinuz');
    fs.symlinkSync(image, link);
    expect(kernel.readImageSync(image).release).toBe('7.3.4');
    await expectNoFdLeak(() => {
      const error = thrown(() => kernel.readImageSync(link));
      expect(error).toBeInstanceOf(lu.KernelImageError);
      expect(error).not.toBeInstanceOf(lu.NotKernelImageError);
      expect(error).toMatchObject({ code: 'ELOOP', syscall: 'open', path: link });
      expect(error.message).toBe(`ELOOP: ${link} is a symbolic link, which is not followed: name the file itself, open '${link}'`);
    });
    const { checks } = updateChecks({ kernel: link, cmdline: 'liveupdate=on kho=on' }, true);
    expect(checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['kernel-image']);
  });

  it('a FIFO, a device and a directory: EINVAL without opening them (a FIFO would block)', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    await expectNoFdLeak(() => {
      for (const file of [fifo, '/dev/null', dir]) {
        expect(thrown(() => kernel.readImageSync(file))).toMatchObject({ name: 'KernelImageError', code: 'EINVAL', path: file, message: `EINVAL: ${file} is not a regular file, open '${file}'` });
      }
    });
  });

  it('bad arguments are TypeErrors before any file is touched', () => {
    expect(thrown(() => kernel.readImageSync(42 as unknown as string))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(thrown(() => kernel.inspectSync({ kernel: 'a\0b' }))).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(thrown(() => kernel.inspectSync({ kernel: '/k', cmdline: 1 as unknown as string }))).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe("the agent's policy on the preflight's warnings", () => {
  it("preflight.unknownKernel and crossRelease: 'refuse' fails kernel-luo and kernel-format; the default warns", () => {
    // A header-only image has no build config anywhere, and its release is not the host's.
    const image = writeHeaderOnlyImage(path.join(dir, 'bzImage-policy'), '7.3.4');
    const failed = (preflight: unknown): Array<[string, string | undefined]> => {
      const { checks } = updateChecks({ kernel: image, cmdline: 'liveupdate=on kho=on' }, true, { kernels: null, waiting: 0, preflight: lu.parsePolicy({ preflight }).preflight });
      return checks.filter((c) => !c.ok).map((c) => [c.name, c.detail]);
    };
    expect(failed(undefined)).toEqual([]);
    expect(failed({ unknownKernel: 'refuse' })).toEqual([['kernel-luo', 'whether kernel 7.3.4 has LUO cannot be told (no build config found), which the policy refuses (preflight.unknownKernel)']]);
    expect(failed({ crossRelease: 'refuse' })).toEqual([['kernel-format', `kernel ${os.release()} to 7.3.4 changes release, which the policy refuses (preflight.crossRelease)`]]);
    fs.writeFileSync(path.join(dir, 'config-7.3.4'), '# Linux/x86 7.3.4 Kernel Configuration\nCONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\nCONFIG_LIVEUPDATE_MEMFD=y\nCONFIG_KEXEC_FILE=y\n');
    expect(failed({ unknownKernel: 'refuse' })).toEqual([]);
  });

  it('a bad preflight policy is an AgentPolicyError naming the field', () => {
    expect(() => lu.parsePolicy({ preflight: { unknownKernel: 'maybe' } })).toThrow(/preflight.unknownKernel must be 'warn' or 'refuse'/);
    expect(() => lu.parsePolicy({ preflight: { strict: true } })).toThrow(/preflight: unknown field\(s\): strict/);
    expect(() => lu.parsePolicy({ preflight: 'refuse' })).toThrow(lu.AgentPolicyError);
  });
});

describe('the report as liveupdate update prints it', () => {
  const BIN = path.join(__dirname, '..', 'bin', 'liveupdate.js');

  it('--dry-run without an agent: the kernel lines after the checks, and kernel in --json', async () => {
    // A directory of its own: no build config beside the image.
    const image = writeHeaderOnlyImage(path.join(fs.mkdtempSync(path.join(dir, 'cli-')), 'bzImage'), '7.3.4');
    const args = ['update', '--socket', path.join(dir, 'nobody.sock'), '--kernel', image, '--cmdline', 'liveupdate=on kho=on kho_bootmem=1G', '--dry-run'];
    const text = await runProcess(process.execPath, [BIN, ...args], { timeoutMs: 30_000 });
    expect(text.status).toBe(69);
    const lines = text.stdout.split('\n');
    const at = lines.findIndex((l) => l.startsWith('kernel: '));
    expect(lines.slice(at - 2, at + 5)).toEqual([
      'FAIL device-owned: no agent answers (ENOENT): these checks were made by this process',
      'ok   no-unclaimed-sessions: none waits',
      `kernel: ${os.release()} (no LUO) -> 7.3.4 (luo-v5): warn`,
      expect.stringMatching(/^kho scratch of the running kernel: (not readable: |\d+ areas, )/),
      expect.stringMatching(/^warning: cannot tell whether kernel 7.3.4 has LUO: no build config found/),
      'warning: kernel 7.3.4 reads kho_scratch= (kho_bootmem= from 7.4): kho_bootmem=1G on its command line is ignored',
      'dry run without an agent: every check this process can make passed',
    ]);
    const json = await runProcess(process.execPath, [BIN, ...args, '--json'], { timeoutMs: 30_000 });
    const report = JSON.parse(json.stdout) as { kernel: lu.kernel.KernelPreflight };
    expect(report.kernel).toMatchObject({ verdict: 'warn', refusals: [], target: { path: image, release: '7.3.4', format: 'luo-v5', scratchParameter: 'kho_bootmem=1G', liveUpdate: { present: null } }, running: { release: os.release() } });
    expect(report.kernel.warnings).toHaveLength(2);
  }, 60_000); // two node processes: seconds on a busy machine

  it("a refusal's details keep a kernel report only when it has the report's shape (it may have crossed the socket)", () => {
    const report = kernel.inspectSync({ kernel: writeHeaderOnlyImage(path.join(dir, 'bzImage-wire')) });
    const refused = (value: unknown): lu.UpdateRefusedError => agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', 'refused', { operation: 'agent.update' }, { checks: [], notReady: [], kernel: value }) as unknown as lu.UpdateRefusedError;
    expect(refused(JSON.parse(JSON.stringify(report))).details.kernel).toEqual(report);
    for (const junk of [null, 'warn', { verdict: 'maybe' }, { ...report, warnings: [1] }, { ...report, running: {} }]) {
      expect(refused(junk).details).toEqual({ checks: [], notReady: [] });
    }
  });
});

describe('the verdict', () => {
  const running = (release: string, format: string | null): lu.kernel.RunningKernel => ({
    release,
    liveUpdate: format !== null,
    format,
    formatSource: format === null ? null : 'release',
    scratch: { areas: null, totalBytes: null, source: 'test', parameter: null },
  });
  const target = (release: string, present: boolean | null = true, cmdline = ''): lu.kernel.TargetKernel => ({
    path: '/boot/vmlinuz',
    release,
    version: `${release} (test)`,
    bootProtocol: '2.15',
    compression: 'xz',
    bytes: 1,
    format: present === false ? null : kernel.handoverFormat(release),
    liveUpdate: { present, config: present === null ? null : '/boot/config', missing: present === false ? ['CONFIG_LIVEUPDATE'] : [], lacking: [] },
    scratchParameter: kernel.scratchParameter(cmdline),
  });

  it('across 7.2: HandoverFormatError naming both releases, either way', () => {
    for (const [from, to] of [['7.1.13', '7.3.4'], ['7.3.4', '7.1.8'], ['6.19.14', '7.2.13']] as const) {
      const { errors, warnings } = kernel.judge(running(from, kernel.handoverFormat(from)), target(to));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(lu.HandoverFormatError);
      expect(errors[0]).toMatchObject({ code: 'ERR_LIVEUPDATE_HANDOVER_FORMAT', running: from, target: to });
      expect(errors[0]?.message).toMatch(new RegExp(`^ERR_LIVEUPDATE_HANDOVER_FORMAT: kernel ${from} hands over in format \\S+ and kernel ${to} reads \\S+ \\(Linux 7.2 changed the format\\)`));
      expect(warnings).toEqual([]);
    }
  });

  it('a format the running kernel says itself wins over its release', () => {
    const { errors } = kernel.judge({ ...running('7.3.4', 'luo-v6'), formatSource: 'debugfs' }, target('7.3.4'));
    expect(errors.map((e) => e.message)).toEqual(['ERR_LIVEUPDATE_HANDOVER_FORMAT: kernel 7.3.4 hands over in format luo-v6 and kernel 7.3.4 reads luo-v5: nothing would be retrieved']);
  });

  it('another release of the same format: a warning; the same release: nothing to say', () => {
    expect(kernel.judge(running('7.3.4', 'luo-v5'), target('7.2.13'))).toEqual({
      errors: [],
      warnings: ['a live update from 7.3.4 to 7.2.13 crosses releases: upstream guarantees no compatibility of the handover between releases yet'],
    });
    expect(kernel.judge(running('7.3.4', 'luo-v5'), target('7.3.4'))).toEqual({ errors: [], warnings: [] });
  });

  it('a target without LUO: KernelWithoutLiveUpdateError; one that cannot be told: a warning', () => {
    const { errors } = kernel.judge(running('7.3.4', 'luo-v5'), target('7.3.4+deb13-cloud-amd64', false));
    expect(errors[0]).toBeInstanceOf(lu.KernelWithoutLiveUpdateError);
    expect(errors[0]).toMatchObject({ running: '7.3.4', target: '7.3.4+deb13-cloud-amd64', missing: ['CONFIG_LIVEUPDATE'] });
    const unknown = kernel.judge(running('7.3.4', 'luo-v5'), target('7.3.4', null));
    expect(unknown.errors).toEqual([]);
    expect(unknown.warnings).toEqual([expect.stringMatching(/^cannot tell whether kernel 7.3.4 has LUO: no build config found/)]);
  });

  it('kho_bootmem= (7.4) and kho_scratch= (before) are both read; the wrong one for the target is a warning', () => {
    expect(kernel.scratchParameter('console=ttyS0 kho_bootmem=512M liveupdate=on')).toBe('kho_bootmem=512M');
    expect(kernel.scratchParameter('kho_scratch=16M,64M,32M')).toBe('kho_scratch=16M,64M,32M');
    expect(kernel.scratchParameter('kho=on -- kho_scratch=1%')).toBeNull();
    const warnings = (release: string, cmdline: string): string[] => kernel.judge(running(release, 'luo-v5'), target(release, true, cmdline)).warnings;
    expect(warnings('7.3.4', 'kho_bootmem=50%')).toEqual(['kernel 7.3.4 reads kho_scratch= (kho_bootmem= from 7.4): kho_bootmem=50% on its command line is ignored']);
    expect(warnings('7.4.1', 'kho_scratch=50%')).toEqual(['kernel 7.4.1 reads kho_bootmem= (kho_scratch= until 7.3): kho_scratch=50% on its command line is ignored']);
    expect(warnings('7.4.1', 'kho_bootmem=50%')).toEqual([]);
    expect(warnings('7.3.4', 'kho_scratch=50%')).toEqual([]);
  });

  it('the formats by release: none before 6.19, the old one to 7.1, luo-v5 from 7.2', () => {
    expect(['6.18.44-fc-v1272', '6.19.1', '7.1.13+deb13-amd64', '7.2.0', '7.3.4', 'not-a-version'].map(kernel.handoverFormat)).toEqual([null, 'pre-7.2', 'pre-7.2', 'luo-v5', 'luo-v5', null]);
  });
});
