/**
 * One clock across kexecs: the host stamps what arrives from the guest and
 * relates each kernel's clocks to its own (lib/vm/clock.ts); the demo reads
 * its blackout on that clock (lib/demo/blackout.ts). Pure logic, and the
 * following of the results file, which must stamp a record within
 * milliseconds of its arrival, not at the next poll.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLOCK_REPORT, guestClockFits, initLineToOriginMs, kernelBoots, kernelInstants, kexecClocks, onHost, type Arrivals, type StampedLine, type StampedRecord } from '../lib/vm/clock.js';
import { followFile } from '../lib/vm/qemu.js';
import { blackoutLines, demoInstants } from '../lib/demo/blackout.js';
import type { DemoSummary } from '../lib/demo/scenario.js';

/** A kernel line as the console shows it, printed at `printkMs` of its kernel. */
const kline = (printkMs: number, text: string): string => `[${(printkMs / 1000).toFixed(6).padStart(12)}] ${text}`;

/**
 * A console and records of two kernels whose truth is known: kernel 1 starts
 * at host 1000 ms, kernel 2 at host 20 000 ms; each line reaches the host
 * `latency` ms after it was printed (more for the replayed backlog).
 */
function twoKernels(): { arrivals: Arrivals; truth: Record<string, number> } {
  const console: StampedLine[] = [];
  const records: StampedRecord[] = [];
  const kernel = (zero: number, lines: Array<[number, string, number]>): void => {
    for (const [printkMs, text, latency] of lines) console.push({ atMs: zero + printkMs + latency, text: kline(printkMs, text) });
  };
  // The backlog before the console is up arrives late; live lines within a fraction of a ms.
  kernel(1000, [
    [0, 'Linux version 7.3.4 (root@vm)', 300],
    [120, 'printk: console [ttyS0] enabled', 0.4],
    [1361, 'Run /init as init process', 0.3],
    [15167.918, 'kexec_core: Starting new kernel', 0.2],
  ]);
  console.push({ atMs: 1000 + 1500, text: '[lu-guest] stage 1/2' });
  kernel(20_000, [
    [0, 'Linux version 7.3.4 (root@vm)', 651],
    [651, 'printk: console [ttyS0] enabled', 0.5],
    [2495.881, 'Run /init as init process', 0.25],
  ]);
  // Guest clocks: monotonic from each kernel's zero (1.5 ms after printk's); the wall clocks set from the RTC, each off by a different fraction of a second.
  const sample = (stage: number, zero: number, wallAtZero: number, mono: number, latency: number): void => {
    records.push({ atMs: zero + 1.5 + mono + latency, record: { t: 'report', stage, case: 'demo/guest-memory', name: CLOCK_REPORT, value: { mono, wall: wallAtZero + mono } } });
  };
  const wall1 = 1_780_000_000_000; // kernel 1's wall clock at its zero
  const wall2 = wall1 + 19_000 - 700; // kernel 2's: 19 s later, but its RTC read left it 700 ms behind
  for (const [mono, latency] of [[5000, 3], [5015, 0.6], [5030, 9]] as const) sample(1, 1000, wall1, mono, latency);
  for (const [mono, latency] of [[9000, 0.7], [9015, 2]] as const) sample(2, 20_000, wall2, mono, latency);
  records.push({ atMs: 30_000, record: { t: 'report', stage: 2, case: 'demo/guest-memory', name: 'say', value: 'not a sample' } });
  return {
    arrivals: { console, records },
    truth: { frozenHost: 1000 + 1.5 + 15_100, agentBackHost: 20_000 + 1.5 + 4000, aliceHost: 20_000 + 1.5 + 6000, wall1, wall2 },
  };
}

describe('the host clock across a kexec', () => {
  it('splits the console at each kernel banner, each line with its arrival', () => {
    const { arrivals } = twoKernels();
    const boots = kernelBoots(arrivals.console);
    expect(boots.map((b) => [b.index, b.lines.length])).toEqual([[1, 4], [2, 3]]);
    // The new kernel's first line reaches the host only when its console comes up, 651 ms after its start.
    expect(boots[1]!.firstLineAtMs).toBeCloseTo(20_651, 6);
    expect(boots[0]!.lines[3]).toEqual({ atMs: 1000 + 15_167.918 + 0.2, printkMs: 15_167.918, text: 'kexec_core: Starting new kernel' });
  });

  it("fits each kernel's monotonic and wall clocks from its quickest sample, ignoring other reports", () => {
    const { arrivals, truth } = twoKernels();
    const fits = guestClockFits(arrivals.records);
    expect([...fits.keys()]).toEqual([1, 2]);
    expect(fits.get(1)!.monoOffsetMs).toBeCloseTo(1001.5 + 0.6, 6);
    expect(fits.get(1)!.wallOffsetMs).toBeCloseTo(1001.5 + 0.6 - truth.wall1!, 3);
    expect(fits.get(1)!.jitterMs).toBeCloseTo(9 - 0.6, 6);
    expect(fits.get(2)!.samples).toBe(2);
    expect(onHost(fits.get(2), 'mono', 4000)).toBeCloseTo(truth.agentBackHost! + 0.7, 6);
    expect(() => onHost(fits.get(3), 'mono', 1)).toThrow(/no clock samples/);
    // Node's time origin in pid 1 at monotonic 2500 of kernel 2 lands 2.4 ms after its "Run /init" line arrived.
    expect(initLineToOriginMs(kernelBoots(arrivals.console)[1]!, fits.get(2)!, 2500)).toBeCloseTo(20_001.5 + 0.7 + 2500 - (20_000 + 2495.881 + 0.25), 6);
  });

  it("takes the kernel's own instants of the kexec as their lines arrived: the old kernel's last, the new one's first, /init", () => {
    const { arrivals } = twoKernels();
    const instants = kernelInstants(kexecClocks(arrivals, 1));
    expect(instants.map((i) => Math.round(i.atMs * 1000) / 1000)).toEqual([1000 + 15_167.918 + 0.2, 20_651, 20_000 + 2495.881 + 0.25]);
    expect(() => kexecClocks(arrivals, 2)).toThrow(/2 kernel\(s\)/);
  });

  it("gives the demo's blackout to the millisecond where the guest wall clocks are 700 ms apart", () => {
    const { arrivals, truth } = twoKernels();
    // The agent's instants on each kernel's wall clock, as the demo's summary carries them.
    const summary: DemoSummary = {
      mib: 16,
      kexecCount: 1,
      frozenAt: truth.wall1! + 15_100,
      firstOpenAt: truth.wall2! + 4000,
      claimedAt: { alice: truth.wall2! + 6000 },
      counters: {},
    };
    const naive = (summary.claimedAt['alice'] as number) - (summary.frozenAt as number);
    const real = truth.aliceHost! - truth.frozenHost!;
    expect(Math.abs(naive - real)).toBeGreaterThan(600); // what the wall clocks alone said
    const instants = demoInstants(arrivals, summary);
    const since = (name: string): number => instants.find((i) => i.name.startsWith(name))!.atMs - instants[0]!.atMs;
    // Each kernel's quickest sample arrived within 0.7 ms: the error is that difference, under a millisecond.
    expect(Math.abs(since("alice's memory claimed") - real)).toBeLessThan(1);
    expect(Math.abs(since('agent back') - (truth.agentBackHost! - truth.frozenHost!))).toBeLessThan(1);
    expect(instants.map((i) => i.atMs)).toEqual([...instants.map((i) => i.atMs)].sort((a, b) => a - b));
    const lines = blackoutLines(arrivals, summary);
    expect(lines[0]).toMatch(/^blackout \(agent manifest, frozenAt -> \.\.\.\): agent back on \/dev\/liveupdate \d+\.\d{3} s; alice's memory claimed \d+\.\d{3} s$/);
    expect(lines[2]).toMatch(/host CLOCK_MONOTONIC/);
  });

  it('says why there is no blackout when a kernel sent no clock samples', () => {
    const { arrivals } = twoKernels();
    const summary: DemoSummary = { mib: 16, kexecCount: 1, frozenAt: 1, firstOpenAt: 2, claimedAt: {}, counters: {} };
    const without = { ...arrivals, records: arrivals.records.filter((r) => r.record.stage !== 1) };
    expect(blackoutLines(without, summary)).toEqual([expect.stringMatching(/^blackout: not measured \(no clock samples/)]);
  });
});

describe('following the results file', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('hands on each appended chunk within milliseconds, with no poll', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-clock-'));
    const file = path.join(dir, 'results');
    fs.writeFileSync(file, '');
    const arrived: Array<{ at: number; text: string }> = [];
    const followed = followFile(file, (chunk) => arrived.push({ at: performance.now(), text: chunk.toString() }));
    const gaps: number[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const written = performance.now();
        fs.appendFileSync(file, `line ${i}\n`);
        await new Promise((resolve) => setTimeout(resolve, 37));
        const got = arrived.find((a) => a.text.includes(`line ${i}`));
        expect(got, `line ${i} was not handed on within 37 ms`).toBeDefined();
        gaps.push(got!.at - written);
      }
    } finally {
      followed.close();
    }
    // A 100 ms poll would have handed most of them on late, or not within 37 ms.
    expect(Math.min(...gaps)).toBeLessThan(5);
    expect(arrived.map((a) => a.text).join('')).toBe([0, 1, 2, 3, 4].map((i) => `line ${i}\n`).join(''));
  });
});
