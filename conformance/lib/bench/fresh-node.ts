/**
 * Fresh node processes timed from outside and from inside: the start of any
 * node program (`node -e 0`) and `require('liveupdate')` in one. The host
 * cases and the guest's blackout stage take the same measurements, so the
 * host's and the guest's figures mean the same thing.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/** What one fresh node measured around `require('liveupdate')`. */
export interface RequireSample {
  readonly ms: number;
  /** The first read of its `LiveUpdate` export after it (what opening the device loads), ms. */
  readonly live_update_ms: number;
  /** Every module file the require loaded (relative to `root`). */
  readonly modules: readonly string[];
}

/**
 * `require('liveupdate')` in a fresh node: milliseconds, and the module
 * files it loaded (to show it loads no test bed code).
 */
export function requireOnce(root: string): RequireSample {
  const script = [
    'const before = new Set(Object.keys(require.cache));',
    'const t0 = process.hrtime.bigint();',
    `require(${JSON.stringify(root)});`,
    'const ms = Number(process.hrtime.bigint() - t0) / 1e6;',
    'const modules = Object.keys(require.cache).filter((m) => !before.has(m));',
    'const t1 = process.hrtime.bigint();',
    `require(${JSON.stringify(root)}).LiveUpdate;`,
    'const live_update_ms = Number(process.hrtime.bigint() - t1) / 1e6;',
    'process.stdout.write(JSON.stringify({ ms, live_update_ms, modules }));',
  ].join('\n');
  const sample = JSON.parse(printedBy(script, `require(${root})`)) as { ms: number; live_update_ms: number; modules: string[] };
  return { ms: sample.ms, live_update_ms: sample.live_update_ms, modules: sample.modules.map((m) => path.relative(root, m)) };
}

/**
 * `require()` of an empty file in a fresh node, timed inside it (ms): what
 * node's own module loader costs the first time it loads a file, before any
 * of the file's code.
 */
export function emptyRequireOnce(emptyFile: string): number {
  // The time is read before process.stdout is: its getter makes the stream, which costs more than the require.
  const script = `const t0 = process.hrtime.bigint(); require(${JSON.stringify(emptyFile)}); const ms = Number(process.hrtime.bigint() - t0) / 1e6; process.stdout.write(String(ms));`;
  return Number(printedBy(script, `require(${emptyFile})`));
}

/** What a fresh `node -e script` printed; fails loudly, naming `what`, when it exits otherwise than with 0. */
function printedBy(script: string, what: string): string {
  return nodePrinted(['-e', script], `node -e ${what}`);
}

/** What a fresh node run with `args` printed; fails loudly, naming `what`, when it exits otherwise than with 0. */
export function nodePrinted(args: readonly string[], what: string): string {
  const out = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (out.status !== 0) throw new Error(`${what} exited with ${String(out.status ?? out.signal)}`);
  return out.stdout;
}

/** Milliseconds a fresh `node -e 0` takes, start to exit: the floor of any node program. */
export function nodeStartOnce(): number {
  const started = process.hrtime.bigint();
  const out = spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  if (out.status !== 0) throw new Error('node -e 0 failed');
  return Number(process.hrtime.bigint() - started) / 1e6;
}
