/**
 * The file lifecycle's failure paths on each test kernel, through the public
 * API, with the test-only file handler (vm/luo-test-handler): one boot of
 * three stages per kernel, the third without the handler.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../lib/vm/qemu.js';
import { UNREGISTER_PARAM } from '../../lib/vm/scenarios/faults.js';
import { LUO_TEST_CTL } from '../../lib/vm/scenarios/luo-test.js';
import { buildLuoTestCtl } from '../../lib/vm/static-program.js';
import { boot, describeKernels, scenario } from './support.js';

const HANDLER = 'the kernel has the test handler';

const EXPECTED: Record<string, Record<number, string[]>> = {
  'faults/freeze-fails': {
    1: [HANDLER, 'kexec.execute: the failed freeze aborts the update', 'calls: A frozen, B failed, A unfrozen, C never frozen', 'both sessions still outgoing', 'A is still preserved'],
    2: [HANDLER, 'previous kernel: the aborted freeze, then the kexec that carried all', 'A, B and C came back'],
  },
  'faults/can-finish-says-no': {
    1: [HANDLER],
    2: [HANDLER, 'finish: not ready', 'the error says to retry', 'the session is still incoming', 'nothing was finished: G still retrieves', 'finish succeeds once E is ready', 'calls: no finish before every can_finish said yes'],
  },
  'faults/retrieve-fails': {
    1: [HANDLER],
    2: [HANDLER, 'retrieve H fails', 'retrieve H again fails the same way', 'both failures read the same', 'I retrieves', 'calls: the handler was asked once for H'],
  },
  'faults/preserve-fails': {
    1: [HANDLER, 'preserve refused with ENOSPC', 'preserve refused with ENOMEM', 'preserve refused with EFBIG', 'calls'],
  },
  'faults/normal-update': {
    1: [HANDLER, 'calls before the kexec'],
    2: [HANDLER, 'previous kernel: preserve, unpreserve of the closed session, freeze', 'the closed session is gone', 'B then A came back', 'calls after the kexec'],
  },
  'faults/handler-absent': {
    2: [HANDLER],
    3: [
      HANDLER,
      `booted with ${UNREGISTER_PARAM}`,
      'previous kernel froze J',
      'open: the incoming state failed to load',
      'the error says why',
      'open again: the same',
      'the kernel log names the missing handler',
      'the handler was never called',
    ],
  },
};

describeKernels('file lifecycle faults', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({
      name: `faults-${kernel.release}`,
      kernels: [kernel.path],
      scenarios: [scenario('faults')],
      files: { [LUO_TEST_CTL]: buildLuoTestCtl() },
      stageParams: ['', '', UNREGISTER_PARAM],
      timeoutMs: 600_000,
    });
  });

  it('boots, kexecs twice, and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  for (const [name, stages] of Object.entries(EXPECTED)) {
    it(`${name}: every check passes`, () => {
      for (const [stage, checks] of Object.entries(stages)) {
        const result = run.result(name, Number(stage));
        expect(result, `no result for ${name} in stage ${stage}\n${run.report()}`).toBeDefined();
        expect(result?.error, run.report()).toBeUndefined();
        expect(result?.checks.filter((c) => !c.ok), run.report()).toEqual([]);
        expect(result?.checks.map((c) => c.name)).toEqual(checks);
      }
    });
  }
});
