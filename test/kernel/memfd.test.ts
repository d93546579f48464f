/**
 * Issue 3's first scenarios on each LUO kernel, in one boot of three kernels
 * (two live updates): a 64 MiB memfd survives a kexec with its bytes, size
 * and position; a session closed before the kexec is gone after it; and a
 * memfd carried through two live updates in a row.
 */
import { beforeAll, expect, it } from 'vitest';
import type { CaseResult, VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeKernels, scenario } from './support.js';

/** A case's result in a stage, asserted to have passed (with the run's failure report if not). */
function passed(run: VmRun, name: string, stage: number): CaseResult {
  const result = run.result(name, stage);
  expect(result, `no result for ${name} in stage ${stage}\n${run.report()}`).toBeDefined();
  expect(result?.ok, run.report()).toBe(true);
  return result as CaseResult;
}

function value(result: CaseResult): Record<string, unknown> {
  return result.value as Record<string, unknown>;
}

describeKernels('live update', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({
      name: `memfd-${kernel.release}`,
      kernels: [kernel.path],
      scenarios: [scenario('memfd'), scenario('chain')],
    });
  });

  it('boots three kernels and finishes every stage', () => {
    expect(run.ok, run.report()).toBe(true);
    expect(run.stages.map((s) => s.stage)).toEqual([1, 2, 3]);
    for (const s of run.stages) expect(s.release).toBe(kernel.release);
  });

  it('keeps a 64 MiB memfd of random bytes: same SHA-256, size and file position; session finished', () => {
    const before = value(passed(run, 'memfd/preserve-64MiB', 1));
    const after = passed(run, 'memfd/preserve-64MiB', 2);
    expect(before['size']).toBe(64 * 1024 * 1024);
    expect(before['sha256']).toMatch(/^[0-9a-f]{64}$/);
    expect(value(after)).toEqual({ ...before, state: 'finished' });
    expect(after.checks.length).toBeGreaterThanOrEqual(5);
    expect(after.checks.every((c) => c.ok)).toBe(true);
  });

  it('drops a session closed before the kexec: retrieveSession fails with SessionNotFoundError (ENOENT)', () => {
    expect(value(passed(run, 'memfd/abort-closed-session', 1))).toEqual({ nameFreeAgain: true });
    expect(value(passed(run, 'memfd/abort-closed-session', 2))).toEqual({ error: 'SessionNotFoundError', code: 'ENOENT' });
  });

  it('carries a memfd through two live updates in a row', () => {
    const shas = [1, 2, 3].map((stage) => value(passed(run, 'chain/memfd-through-two-updates', stage))['sha256']);
    // Each kernel writes its mark, so each stage's file differs from the last.
    expect(new Set(shas).size).toBe(3);
  });
});
