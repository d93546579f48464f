/**
 * Compiling a C program at run time, from the source next to it: the guest's
 * small programs (static: the guest has no C library of its own), upstream's
 * LUO selftests, and the benchmark's C side. The one place that runs the
 * compiler. Needs a C compiler, and for static programs a static libc
 * (Debian: gcc libc6-dev).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** One C program to build. */
export interface CProgram {
  /** Its source files. */
  readonly sources: readonly string[];
  /** Where the executable goes. */
  readonly out: string;
  /** Linked static (to run in a guest). */
  readonly static?: boolean;
  /** More compiler flags, after the defaults (-O2 -Wall -Wextra): include directories, -Werror, -D... */
  readonly flags?: readonly string[];
}

const COMPILER = 'cc';

/** Compiles `program` with the system's `cc`; returns the executable's path. A half-written program never appears at `out`. */
export function compileC(program: CProgram): string {
  const missing = program.sources.find((source) => !fs.existsSync(source));
  if (missing !== undefined) throw new Error(`${missing} is missing`);
  if (program.static === true) {
    const libc = runCompiler(['-print-file-name=libc.a']).trim();
    if (!path.isAbsolute(libc)) throw new Error(`${COMPILER} finds no static C library (libc.a): install libc6-dev`);
  }
  fs.mkdirSync(path.dirname(program.out), { recursive: true });
  const tmp = `${program.out}.tmp${process.pid}`;
  const flags = ['-O2', ...(program.static === true ? ['-static'] : []), '-Wall', '-Wextra', ...(program.flags ?? [])];
  try {
    runCompiler([...flags, '-o', tmp, ...program.sources]);
    fs.renameSync(tmp, program.out);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return program.out;
}

function runCompiler(args: readonly string[]): string {
  try {
    return execFileSync(COMPILER, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`${COMPILER} not found: install a C compiler (apt-get install gcc libc6-dev)`);
    throw new Error(`${COMPILER} ${args.join(' ')} failed:\n${e.stderr ?? e.message}`);
  }
}
