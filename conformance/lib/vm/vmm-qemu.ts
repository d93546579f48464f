/**
 * What a run of the QEMU VMM example needs in the guest, built on the host
 * and cached by the content of its sources: the counter guest (vm/counter-guest.S,
 * a bare-metal multiboot program assembled with binutils' `as --32` and linked
 * with `ld -m elf_i386`) and the orchestrator (the repository's
 * examples/qemu-vmm/, compiled by tsc as the user's project would be).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GUEST_ROOT } from './protocol.js';
import { cacheDir, libraryRoot, packageRoot } from './initramfs.js';

/** Guest path of the counter guest. */
export const COUNTER_GUEST = `${GUEST_ROOT}/counter-guest.elf`;
/** Guest directory of the compiled orchestrator (its `main.js` is the program). */
export const QEMU_VMM_DIR = `${GUEST_ROOT}/qemu-vmm`;

/** Runs a build tool; a missing one is named with the Debian package that has it. */
function run(tool: string, args: readonly string[], cwd?: string): void {
  try {
    execFileSync(tool, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', ...(cwd === undefined ? {} : { cwd }) });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    if (e.code === 'ENOENT') throw new Error(`${tool} not found: install binutils (apt-get install binutils)`);
    throw new Error(`${tool} ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? e.message}`);
  }
}

function contentHash(files: readonly string[]): string {
  const hash = createHash('sha256');
  for (const file of files) hash.update(path.basename(file)).update('\0').update(fs.readFileSync(file));
  return hash.digest('hex').slice(0, 12);
}

/** Builds into a temporary name beside `out` and renames it there: a half-built result never appears. */
function buildOnce(out: string, build: (tmp: string) => void): string {
  if (fs.existsSync(out)) return out;
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = `${out}.tmp${process.pid}`;
  try {
    build(tmp);
    fs.renameSync(tmp, out);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return out;
}

/** The counter guest as a 32-bit multiboot ELF (loaded at 1 MiB), built once per source; its host path. */
export function buildCounterGuest(root = packageRoot()): string {
  const source = path.join(root, 'vm', 'counter-guest.S');
  const out = path.join(cacheDir(), 'tools', `counter-guest-${contentHash([source])}.elf`);
  return buildOnce(out, (tmp) => {
    const object = `${tmp}.o`;
    try {
      run('as', ['--32', '-o', object, source]);
      // -N: one segment at 1 MiB, no ELF headers loaded below it.
      run('ld', ['-m', 'elf_i386', '-N', '-Ttext', '0x100000', '-e', '_start', '--no-warn-rwx-segments', '-o', tmp, object]);
    } finally {
      fs.rmSync(object, { force: true });
    }
  });
}

/** The example's directory in the repository this test bed belongs to. */
export function qemuVmmExampleDir(): string {
  return path.join(libraryRoot(), 'examples', 'qemu-vmm');
}

/**
 * The orchestrator compiled as its README says (`tsc -p examples/qemu-vmm`),
 * once per source, into `<cache>/qemu-vmm-<hash>/`; returns that directory
 * (ES modules, with the example's package.json).
 */
export function buildQemuVmm(dir = qemuVmmExampleDir()): string {
  const sources = fs.readdirSync(dir).filter((f) => f.endsWith('.ts') || f === 'package.json' || f === 'tsconfig.json').sort().map((f) => path.join(dir, f));
  const out = path.join(cacheDir(), `qemu-vmm-${contentHash(sources)}`);
  return buildOnce(out, (tmp) => {
    const tsc = path.join(path.dirname(require.resolve('typescript/package.json', { paths: [libraryRoot()] })), 'bin', 'tsc');
    run(process.execPath, [tsc, '-p', path.join(dir, 'tsconfig.json'), '--outDir', tmp]);
    fs.copyFileSync(path.join(dir, 'package.json'), path.join(tmp, 'package.json'));
  });
}

/** The guest files of a run of the example: guest path → host path (RunOptions.files). */
export function qemuVmmFiles(): Record<string, string> {
  const compiled = buildQemuVmm();
  const files: Record<string, string> = { [COUNTER_GUEST]: buildCounterGuest() };
  for (const file of fs.readdirSync(compiled)) files[`${QEMU_VMM_DIR}/${file}`] = path.join(compiled, file);
  return files;
}
