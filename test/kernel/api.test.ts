/**
 * The binding's API on each LUO kernel (issue 2): Promise forms, u64 tokens,
 * close-on-exec fds, GET_NAME, state transitions, garbage collection never
 * unpreserving, Session.fromFd in both kernels, kexec errors, no fd leaks,
 * batches of retrieves (all or nothing, the failed token named).
 * Every check the guest made is asserted here by name, so a check that
 * silently stops running fails too.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeKernels, itEveryCheckPasses, scenario, type ExpectedChecks } from './support.js';

/** The checks each case must report, per stage, all passing. */
const EXPECTED: ExpectedChecks = {
  'api/promise-forms': {
    1: ['status: available', 'status: liveupdate=', 'status: GET_NAME works', 'status: a held device is reported busy', 'state', 'GET_NAME', 'session fd is close-on-exec'],
    2: ['state', 'GET_NAME', 'retrieved fds are close-on-exec', 'token 2^64-1 content', 'token 0 content', 'state after finish', 'retrieve after finish is refused', 'state after close', 'fd after close'],
  },
  'api/gc-never-unpreserves': { 1: ['session fd still open after garbage collection'], 2: ['content'] },
  'api/from-fd-over-socket': { 1: ['fromFd: name', 'fromFd: state of a created session'], 2: ['fromFd: state of a retrieved session', 'content'] },
  'api/kexec-api': {
    1: ['nothing loaded at first', 'executeSync with nothing loaded', 'execute with nothing loaded', 'load of a missing file', 'load of a script, not a kernel', 'loaded after load', 'not loaded after unload'],
  },
  'api/errors-leak-nothing': {
    1: ['second open', 'same name again', 'a socket cannot be preserved', 'a closed fd', 'token reused', 'retrieve on an outgoing session', 'finish on an outgoing session', 'fds after failing calls'],
  },
  'api/retrieve-many': {
    1: ['batch on an outgoing session'],
    2: [
      'sync: every file, in token order',
      'sync: every fd close-on-exec',
      'Promise: every file, in token order',
      'new fds each time',
      'sync: a missing token fails the batch, named',
      'Promise: a missing token fails the batch, named',
      'failed batches leave no fd open',
      'nothing lost after the failures',
      'fds after the batches',
    ],
  },
};

describeKernels('API', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({ name: `api-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('api')] });
  });

  it('boots, kexecs, and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
    expect(run.stages.map((s) => s.stage)).toEqual([1, 2]);
  });

  itEveryCheckPasses(() => run, EXPECTED);
});
