/**
 * The simulator held to the real thing: the differential scenario
 * (test/kernel/scenarios/differential.ts) runs its client against the
 * simulated agent here on the host and against the real agent on the newest
 * LUO kernel (one boot, one kexec made by the agent's `update`), in the
 * same test run; every step's observable result (values, error classes,
 * codes, errnos, syscalls, states) must be equal. A difference fails with
 * the steps that differ, side by side.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { simulatedTranscript, type Step } from './scenarios/differential.js';
import { boot, describeOneKernel, newest, scenario } from './support.js';

/** The steps where two transcripts differ, readably: each one's name and both results (a missing step says so). */
function transcriptDifferences(simulated: readonly Step[], real: readonly Step[]): string[] {
  const differences: string[] = [];
  for (let i = 0; i < Math.max(simulated.length, real.length); i++) {
    const s = simulated[i];
    const r = real[i];
    const sim = s === undefined ? '(no step)' : `${s.step}: ${JSON.stringify(s.result)}`;
    const kernel = r === undefined ? '(no step)' : `${r.step}: ${JSON.stringify(r.result)}`;
    if (sim !== kernel) differences.push(`step ${i + 1}\n  simulated: ${sim}\n  kernel:    ${kernel}`);
  }
  return differences;
}

describeOneKernel('the simulator against the real agent on a LUO kernel', (kernel) => {
  let run: VmRun;
  let simulated: { before: Step[]; after: Step[] };

  beforeAll(async () => {
    const started = performance.now();
    simulated = await simulatedTranscript();
    const hostMs = performance.now() - started;
    run = await boot({ name: `differential-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('differential')], memory: '1G', timeoutMs: 600_000 });
    console.log(`differential: the simulator's transcript in ${(hostMs / 1000).toFixed(1)} s, the kernel's boot in ${((performance.now() - started - hostMs) / 1000).toFixed(1)} s`);
  });

  it('boots, kexecs through the agent’s update, and runs both halves of the client', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  for (const [half, stage] of [['before', 1], ['after', 2]] as const) {
    it(`every result the client observes ${half} the kexec is the same on the simulator as on the kernel`, () => {
      const real = (run.result('differential/client', stage)?.value ?? []) as unknown as Step[];
      expect(real.length, run.report()).toBeGreaterThan(0);
      expect(transcriptDifferences(simulated[half], real).join('\n')).toBe('');
    });
  }
}, newest);
