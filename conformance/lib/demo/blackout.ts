/**
 * The demo's blackout on one clock, the host's: from the agent sealing its
 * manifest in the old kernel to each VM's memory back in the new one, with
 * the kernel's part (its last line, the new kernel's start, /init) between.
 * The agent's instants are guest wall clocks, each placed on the host clock
 * through its own kernel's clock samples (../vm/clock.ts). Pure.
 */
import { HOST_CLOCK_NOTE, kernelInstants, kexecClocks, onHost, sinceOrigin, type Arrivals, type Instant } from '../vm/clock.js';
import type { DemoSummary } from './scenario.js';

/** The blackout's instants, the manifest's sealing first; throws when a clock or an instant is missing. */
export function demoInstants(arrivals: Arrivals, s: DemoSummary): Instant[] {
  if (s.frozenAt === null || s.firstOpenAt === null) throw new Error('the agent reported no frozenAt or firstOpenAt');
  const c = kexecClocks(arrivals, 1);
  const agent = (name: string, wall: number): Instant => ({ name, atMs: onHost(c.nextFit, 'wall', wall), clock: 'new kernel wall clock' });
  const claims = Object.entries(s.claimedAt).map(([vm, at]) => {
    if (at === null) throw new Error(`the agent reported no claim of ${vm}'s session`);
    return agent(`${vm}'s memory claimed`, at);
  });
  return [
    { name: 'agent seals its manifest (frozenAt)', atMs: onHost(c.oldFit, 'wall', s.frozenAt), clock: 'old kernel wall clock' },
    ...kernelInstants(c),
    agent('agent back on /dev/liveupdate', s.firstOpenAt),
    ...claims,
  ];
}

/** The summary's blackout lines: the figures, then where the time goes, then the clocks. */
export function blackoutLines(arrivals: Arrivals, s: DemoSummary): string[] {
  let instants: Instant[];
  try {
    instants = demoInstants(arrivals, s);
  } catch (error) {
    return [`blackout: not measured (${(error as Error).message})`];
  }
  const [frozen, ...rest] = instants as [Instant, ...Instant[]];
  const secs = (i: Instant): string => `${((i.atMs - frozen.atMs) / 1000).toFixed(3)} s`;
  const named = (prefix: string): Instant => rest.find((i) => i.name.startsWith(prefix)) as Instant;
  const claims = rest.filter((i) => i.name.endsWith('memory claimed'));
  const c = kexecClocks(arrivals, 1);
  const fits = [c.oldFit, c.nextFit].map((fit, i) => (fit === undefined ? `kernel ${i + 1}: no samples` : `kernel ${i + 1}: ${fit.samples} samples, ${fit.jitterMs.toFixed(2)} ms apart at most`));
  return [
    `blackout (agent manifest, frozenAt -> ...): agent back on /dev/liveupdate ${secs(named('agent back'))}; ${claims.map((i) => `${i.name} ${secs(i)}`).join(', ')}`,
    `  where it goes (ms after frozenAt): ${sinceOrigin(rest, frozen.atMs)
      .map(([name, ms]) => `${name} +${ms.toFixed(1)}`)
      .join('; ')}`,
    `  clock: ${HOST_CLOCK_NOTE}; ${fits.join('; ')}`,
  ];
}
