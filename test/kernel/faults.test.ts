/**
 * The file lifecycle's failure paths through the public API, with the
 * test-only file handler (vm/luo-test-handler): the conformance suite's
 * fault/* cases, each check by name, and the next kernel without the
 * handler, in one boot of three stages, the third without the handler. On
 * the newest kernel: the conformance test runs the fault/* cases on every
 * kernel (and across them), so this file adds the checks by name and the
 * absent handler, which need only one.
 */
import * as path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { guestTools } from '../../conformance/lib/vm/static-program.js';
import { UNREGISTER_PARAM } from './scenarios/fault-absent.js';
import { boot, describeOneKernel, newest, scenario } from './support.js';

const conformanceScenario = path.resolve(__dirname, '..', '..', 'conformance', 'dist', 'conformance', 'scenarios', 'fault.js');

const EXPECTED: Record<string, Record<number, string[]>> = {
  'fault/freeze-fails': {
    1: ['kexec.execute: the failed freeze aborts the update', 'calls: A frozen, B failed, A unfrozen, C never frozen', 'both sessions still outgoing', 'A is still preserved'],
    2: ['previous kernel: the aborted freeze, then the kexec that carried all', 'A, B and C came back'],
  },
  'fault/can-finish-says-no': {
    1: [],
    2: ['finish: not ready', 'the error says to retry', 'the session is still incoming', 'nothing was finished: G still retrieves', 'finish succeeds once E is ready', 'calls: no finish before every can_finish said yes'],
  },
  'fault/retrieve-fails': {
    1: [],
    2: ['retrieve H fails', 'retrieve H again fails the same way', 'both failures read the same', 'I retrieves', 'calls: the handler was asked once for H'],
  },
  'fault/preserve-fails': {
    1: ['preserve refused with ENOSPC', 'preserve refused with ENOMEM', 'preserve refused with EFBIG', 'calls: three refusals, then preserve and unpreserve'],
  },
  'fault/normal-update': {
    1: ['calls before the kexec'],
    2: ['previous kernel: preserve, unpreserve of the closed session, freeze', 'the closed session is gone', 'B then A came back', 'calls after the kexec'],
  },
  'fault-absent/handler-absent': {
    3: [
      `booted with ${UNREGISTER_PARAM}`,
      'the previous kernel froze J',
      'open: the incoming state failed to load',
      'the error says why',
      'open again: the same',
      'the kernel log names the missing handler',
      'the handler was never called',
    ],
  },
};

describeOneKernel('file lifecycle faults', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({
      name: `faults-${kernel.release}`,
      kernels: [kernel.path],
      scenarios: [conformanceScenario, scenario('fault-absent')],
      files: guestTools(),
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
}, newest);
