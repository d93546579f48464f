/**
 * Compiling the benchmark's C programs at run time, so that the C side is
 * always built from the source next to it, with the same ABI header the
 * addon uses.
 * @internal
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** One C program to build. */
export interface CProgramBuild {
  /** The source file. */
  readonly source: string;
  /** Where the executable goes. */
  readonly out: string;
  /** Include directories: that of liveupdate/abi.h, and any other. */
  readonly includes: readonly string[];
  /** Linked static (the guest has no C library of its own). */
  readonly static?: boolean;
}

/** Compiles `build` with the system's `cc` (-O2, warnings as errors); returns the executable's path. */
export function compileC(build: CProgramBuild): string {
  if (!fs.existsSync(build.source)) throw new Error(`${build.source} is missing: the benchmark runs from the repository, not an installed package`);
  if (build.static === true) {
    const libc = runTool('cc', ['-print-file-name=libc.a']).trim();
    if (!path.isAbsolute(libc)) throw new Error('cc finds no static C library (libc.a): install libc6-dev');
  }
  fs.mkdirSync(path.dirname(build.out), { recursive: true });
  const flags = ['-O2', ...(build.static === true ? ['-static'] : []), '-Wall', '-Wextra', '-Werror', ...build.includes.flatMap((dir) => ['-I', dir])];
  runTool('cc', [...flags, '-o', build.out, build.source]);
  return build.out;
}

function runTool(command: string, args: readonly string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`${command} not found: install a C compiler (apt-get install gcc libc6-dev)`);
    throw new Error(`${command} ${args.join(' ')} failed:\n${e.stderr ?? e.message}`);
  }
}
