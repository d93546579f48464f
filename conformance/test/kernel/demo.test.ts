/**
 * The front door: `npm run demo` (the command a newcomer runs first) on one
 * kernel, with 16 MiB per VM instead of the default so CI stays quick. It
 * must exit 0 and say, in order, each step a newcomer is promised: the
 * kernel, the boot, each VMM filling and preserving its memory, the jump,
 * the new kernel, each claim with its byte-for-byte check and resumed
 * counter, and the summary with the blackout. (demo-systemd.test.ts runs it
 * with `--host systemd`.)
 */
import { beforeAll, expect, it } from 'vitest';
import { describeOneKernel } from '../../../test/kernel/support.js';
import type { ProcessResult } from '../../lib/harness/process.js';
import { expectInOrder, lineAfter, npmRunDemo } from './demo-support.js';

/** Within the kernel tests' hook timeout (600 s), so that a run too slow fails with what the demo printed. */
const DEMO_TIMEOUT_MS = 540_000;

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
  /agent: manifest read \(kexec #1\): u1001\.guest-ram, u1002\.guest-ram carried over, all waiting to be claimed/,
  /PASSED in \d+ s: 2 VMs x 16 MiB of guest memory survived a kexec byte for byte/,
  /blackout \(agent manifest, frozenAt -> \.\.\.\): agent back on \/dev\/liveupdate \d+\.\d+ s; alice's memory claimed \d+\.\d+ s, bob's memory claimed \d+\.\d+ s/,
];

describeOneKernel('npm run demo', (kernel) => {
  let run: ProcessResult;
  beforeAll(async () => {
    run = await npmRunDemo(['--memory', '16'], { LIVEUPDATE_KERNEL: kernel.path }, DEMO_TIMEOUT_MS);
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
