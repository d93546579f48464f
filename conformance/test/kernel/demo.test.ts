/**
 * The front door: `npm run demo` (the command a newcomer runs first) on one
 * kernel, with 16 MiB per VM instead of the default so CI stays quick. It
 * must exit 0 and say, in order, each step a newcomer is promised: the
 * kernel, the boot, each VMM filling and preserving its memory, the jump,
 * the new kernel, each claim with its byte-for-byte check and resumed
 * counter, and the summary with the blackout. Then once with `--host
 * systemd` on the newest kernel: the same run with systemd 262 as PID 1, the
 * agent and the VMMs as units, the jump through `systemctl kexec`, and its
 * blackout taken apart span by span.
 */
import * as path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { describeOneKernel, newest, systemdImageOrExplain } from '../../../test/kernel/support.js';
import { runProcess, type ProcessResult } from '../../lib/harness/process.js';

const ROOT = path.resolve(__dirname, '..', '..', '..');

/** Runs `npm run demo -- ARGS` from the repository root with `env` added (bounded by the kernel tests' own timeout). */
function npmRunDemo(args: readonly string[], env: Record<string, string>): Promise<ProcessResult> {
  return runProcess('npm', ['run', '--silent', 'demo', '--', ...args], { cwd: ROOT, env, timeoutMs: 540_000 });
}

/** The progress lines the demo promises, in the order they must appear. */
const PROMISED: readonly RegExp[] = [
  /kernel: \S+ \(/,
  /boot: QEMU/,
  /stage 1: \S+ up/,
  /agent: listening on .*16 MiB of guest memory each/,
  /alice: guest memory filled with alice's pattern/,
  /alice: preserved as session u1001\.guest-ram .* said ready; counter running/,
  /jump: `liveupdate update`/,
  /stage 2: \S+ up/,
  /agent: manifest read \(kexec #1\): u1001\.guest-ram, u1002\.guest-ram waiting/,
  /PASSED in \d+ s: 2 VMs x 16 MiB of guest memory survived a kexec byte for byte/,
  /blackout \(agent manifest, frozenAt -> \.\.\.\): agent back on \/dev\/liveupdate \d+\.\d+ s; alice's memory claimed \d+\.\d+ s, bob's memory claimed \d+\.\d+ s/,
];

/** The index and match of the first line after `after` that matches `pattern` (index -1 if none). */
function lineAfter(lines: readonly string[], after: number, pattern: RegExp): { index: number; match: RegExpExecArray | null } {
  for (let index = after + 1; index < lines.length; index++) {
    const match = pattern.exec(lines[index] ?? '');
    if (match !== null) return { index, match };
  }
  return { index: -1, match: null };
}

/** Each pattern matches a line of `stdout`, each after the previous one's. */
function expectInOrder(stdout: string, patterns: readonly RegExp[]): void {
  const lines = stdout.split('\n');
  let at = -1;
  for (const pattern of patterns) {
    const found = lineAfter(lines, at, pattern).index;
    expect(found, `no line after line ${at} matches ${String(pattern)}:\n${stdout}`).toBeGreaterThan(at);
    at = found;
  }
}

describeOneKernel('npm run demo', (kernel) => {
  let run: ProcessResult;
  beforeAll(async () => {
    run = await npmRunDemo(['--memory', '16'], { LIVEUPDATE_KERNEL: kernel.path });
  });

  it('exits 0', () => {
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
  });

  it('says each promised step, in order', () => {
    expectInOrder(run.stdout, PROMISED);
  });

  it('each VM claims its memory after the jump, checks it, and resumes its counter where it stopped', () => {
    const lines = run.stdout.split('\n');
    const jump = lineAfter(lines, -1, /jump: `liveupdate update`/).index;
    expect(jump, run.stdout).toBeGreaterThan(-1);
    for (const [vm, uid] of [['alice', 1001], ['bob', 1002]] as const) {
      // The two VMs' lines interleave; each VM's own lines come in this order.
      const claimed = lineAfter(lines, jump, new RegExp(`${vm}: claimed u${uid}\\.guest-ram back \\(16 MiB, metadata \\{"vm":"${vm}","mib":16\\}\\)`));
      const checked = lineAfter(lines, claimed.index, new RegExp(`${vm}: counter stopped at (\\d+); every other byte matches the pattern`));
      const resumed = lineAfter(lines, checked.index, new RegExp(`${vm}: counter resumed from (\\d+), now (\\d+)`));
      expect([claimed.index, checked.index, resumed.index].every((i) => i > jump), `${vm}:\n${run.stdout}`).toBe(true);
      const stopped = checked.match?.[1];
      const [, from, now] = resumed.match ?? [];
      expect(from, `${vm} resumes where it stopped`).toBe(stopped);
      expect(BigInt(now ?? 0)).toBeGreaterThan(BigInt(from ?? 0));
    }
  });
});

describeOneKernel(
  'npm run demo -- --host systemd',
  (kernel) => {
    if (systemdImageOrExplain() === undefined) return;
    let run: ProcessResult;
    beforeAll(async () => {
      run = await npmRunDemo(['--host', 'systemd', '--memory', '16'], { LIVEUPDATE_KERNEL: kernel.path });
    });

    it('exits 0 with the agent in systemd mode from its units, both VMs claimed, and the summary', () => {
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
      expectInOrder(run.stdout, [
        /boot: QEMU .* on the systemd guest image \(systemd 26\d/,
        /agent: liveupdate-agent\.service started from the shipped units \(systemd mode/,
        /bob: preserved as session u1002\.guest-ram/,
        /jump: `liveupdate update`/,
        /stage 2: \S+ up/,
        /agent: manifest read \(kexec #1\): u1001\.guest-ram, u1002\.guest-ram waiting/,
        /PASSED in \d+ s: 2 VMs x 16 MiB of guest memory survived a kexec byte for byte/,
        // The systemd path taken apart: each instant was seen (the marker unit, systemd-shutdown, PID 1, the units).
        /the systemd path, span by span:/,
        /the orderly shutdown: every unit stopped .*: \d+ ms$/,
        /systemd-shutdown: .*preserved in LUO session 'systemd': \d+ ms$/,
        /PID 1 retrieving the fd stores it preserved in LUO .*: -?\d+ ms$/,
        /the agent's unit started to the agent back .*: \d+ ms$/,
        /bob's client unit started to its claim .*: \d+ ms$/,
      ]);
    });
  },
  newest,
);
