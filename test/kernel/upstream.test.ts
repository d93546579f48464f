/**
 * Linux's own LUO selftests (tools/testing/selftests/liveupdate of the same
 * source tree as each test kernel), run in the guest stage by stage, side by
 * side with our cases: every upstream test passes, and each is covered by a
 * case of our conformance suite (the README has the same table).
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { buildUpstreamSelftests, selftestsDir, UPSTREAM_DEVICE_TESTS, UPSTREAM_KEXEC_TESTS } from '../../conformance/lib/vm/upstream-selftests.js';
import { boot, describeKernels, scenario } from './support.js';

/** Each upstream test, and the case of ours that checks the same promise. */
const COVERED_BY: Record<string, string> = {
  'liveupdate_device.basic_open_close': 'device/open-close',
  'liveupdate_device.exclusive_open': 'device/exclusive-open',
  'liveupdate_device.create_duplicate_session': 'device/duplicate-session-name',
  'liveupdate_device.create_distinct_sessions': 'device/distinct-sessions',
  'liveupdate_device.preserve_memfd': 'device/preserve-one-memfd',
  'liveupdate_device.preserve_multiple_memfds': 'device/preserve-several-memfds',
  'liveupdate_device.preserve_complex_scenario': 'device/preserve-mixed-across-sessions',
  'liveupdate_device.preserve_unsupported_fd': 'device/unpreservable-fds',
  'liveupdate_device.prevent_double_preservation': 'device/same-file-twice',
  'liveupdate_device.create_session_no_null_termination': 'abi/name-without-nul',
  'liveupdate_device.create_session_empty_name': 'abi/empty-name',
  'liveupdate_device.get_session_name': 'device/get-name',
  'liveupdate_device.get_session_name_max_length': 'device/session-names',
  'liveupdate_device.preserve_many_sessions': 'scale/2000-sessions',
  'liveupdate_device.preserve_many_files': 'scale/1000-files-in-one-session',
  luo_kexec_simple: 'kexec/simple',
  luo_multi_session: 'kexec/several-sessions',
  luo_stress_sessions: 'scale/2000-sessions',
  luo_stress_files: 'scale/1000-files-in-one-session',
};

const root = path.resolve(__dirname, '..', '..');
const { suiteCases } = createRequire(__filename)(path.join(root, 'conformance', 'dist', 'conformance', 'suite.js')) as typeof import('../../conformance/lib/conformance/suite.js');

describeKernels('upstream selftests', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    const series = kernel.release.split('.').slice(0, 2).join('.');
    run = await boot({
      name: `upstream-${kernel.release}`,
      kernels: [kernel.path],
      scenarios: [scenario('upstream')],
      files: buildUpstreamSelftests(selftestsDir(series)),
      timeoutMs: 600_000,
    });
  });

  it('boots, kexecs, and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  it('runs every device test, and each passes', () => {
    const result = run.result(`upstream/${UPSTREAM_DEVICE_TESTS}`, 1);
    const tests = (result?.checks ?? []).filter((c) => c.name !== 'exit status 0');
    expect(tests.filter((c) => !c.ok), run.report()).toEqual([]);
    expect(tests.map((c) => c.name).sort()).toEqual(Object.keys(COVERED_BY).filter((t) => t.includes('.')).sort());
  });

  it.each(UPSTREAM_KEXEC_TESTS)('%s passes its stage 1, the kexec, and its stage 2', (program) => {
    for (const stage of [1, 2]) {
      const result = run.result(`upstream/${program}`, stage);
      expect(result?.checks.map((c) => [c.name, c.ok]), run.report()).toEqual([[`stage ${stage}`, true]]);
    }
  });

  it('each upstream test is covered by a case of our suite', () => {
    const ours = new Set(suiteCases().map((c) => c.name));
    expect(Object.entries(COVERED_BY).filter(([, ourCase]) => !ours.has(ourCase))).toEqual([]);
    expect(Object.keys(COVERED_BY).filter((t) => !t.includes('.')).sort()).toEqual([...UPSTREAM_KEXEC_TESTS].sort());
  });
});
