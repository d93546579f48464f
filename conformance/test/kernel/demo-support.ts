/**
 * What the demo's kernel tests share: running `npm run demo` from the
 * repository root, and finding its promised lines in order.
 */
import * as path from 'node:path';
import { expect } from 'vitest';
import { runProcess, type ProcessResult } from '../../lib/harness/process.js';

const ROOT = path.resolve(__dirname, '..', '..', '..');

/**
 * Runs the demo as `npm run demo -- ARGS` does from the repository root, with
 * `env` added, killed (with the QEMU under it) after `timeoutMs`: the
 * workspace's `demo`, which the root's runs after building. Not the build:
 * `npm test` has built, and a rebuild removes dist/ while the other kernel
 * lane makes guest images from it (demo-host.test.ts holds the root script
 * to building and then running this).
 */
export function npmRunDemo(args: readonly string[], env: Record<string, string>, timeoutMs: number): Promise<ProcessResult> {
  return runProcess('npm', ['run', '--silent', 'demo', '-w', 'liveupdate-conformance', '--', ...args], { cwd: ROOT, env, timeoutMs });
}

/** The index and match of the first line after `after` that matches `pattern` (index -1 if none). */
export function lineAfter(lines: readonly string[], after: number, pattern: RegExp): { index: number; match: RegExpExecArray | null } {
  for (let index = after + 1; index < lines.length; index++) {
    const match = pattern.exec(lines[index] ?? '');
    if (match !== null) return { index, match };
  }
  return { index: -1, match: null };
}

/** Each pattern matches a line of `stdout`, each after the previous one's. */
export function expectInOrder(stdout: string, patterns: readonly RegExp[]): void {
  const lines = stdout.split('\n');
  let at = -1;
  for (const pattern of patterns) {
    const found = lineAfter(lines, at, pattern).index;
    expect(found, `no line after line ${at} matches ${String(pattern)}:\n${stdout}`).toBeGreaterThan(at);
    at = found;
  }
}
