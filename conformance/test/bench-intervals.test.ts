/**
 * Spans between marks over independent samples, and the figures the
 * benchmark's opt-in groups build from them, on samples made up here whose
 * answers are worked out by hand (no kernel, no timing).
 */
import { describe, expect, it } from 'vitest';
import { failureReason, sampleOrFailure, someSamples, spanEstimates, spanText, type FailedSample } from '../lib/bench/intervals.js';
import { combineBlackoutHost, type BlackoutBoot } from '../lib/bench/systemd-blackout.js';
import { combineFleet, fleetHostSample } from '../lib/bench/fleet-rollout.js';
import { blackoutOnHostMs } from '../lib/vm/fleet.js';
import { coldMarks } from '../lib/bench/vmm-downtime.js';
import type { Arrivals, StampedRecord } from '../lib/vm/clock.js';
import type { RolloutSummary } from '../lib/vm/fleet.js';

describe('spans over samples', () => {
  const samples = [
    { a: 0, b: 100, c: 400 },
    { a: 0, b: 300, c: 500 },
    { a: 0, b: 200, c: 900 },
  ];

  it('reports the median span between two marks, its interval inside the samples, and how many samples', () => {
    const [ab, ac] = spanEstimates(samples, [
      { name: 'a to b', from: 'a', to: 'b' },
      { name: 'a to c', from: 'a', to: 'c' },
    ]);
    expect(ab).toMatchObject({ name: 'a to b', median_ms: 200, n: 3, values_ms: [100, 300, 200] });
    expect(ab!.ci95_ms![0]).toBeGreaterThanOrEqual(100);
    expect(ab!.ci95_ms![1]).toBeLessThanOrEqual(300);
    expect(ab!.ci95_ms![0]).toBeLessThanOrEqual(200);
    expect(ac).toMatchObject({ median_ms: 500, n: 3 });
  });

  it('measures a span between two later marks from their difference, not from the origin', () => {
    const [bc] = spanEstimates(samples, [{ name: 'b to c', from: 'b', to: 'c' }]);
    expect(bc).toMatchObject({ median_ms: 300, values_ms: [300, 200, 700] });
  });

  it('leaves a sample that lacks a mark out of that span only, and counts what is left', () => {
    const [ab, ac] = spanEstimates([...samples, { a: 0, b: null, c: 600 }], [
      { name: 'a to b', from: 'a', to: 'b' },
      { name: 'a to c', from: 'a', to: 'c' },
    ]);
    expect(ab).toMatchObject({ n: 3, values_ms: [100, 300, 200, null] });
    expect(ac).toMatchObject({ n: 4, median_ms: 550 });
  });

  it('says "not measured" for a span no sample has, instead of a made-up figure', () => {
    const [none] = spanEstimates(samples, [{ name: 'a to z', from: 'a', to: 'z' }]);
    expect(none).toMatchObject({ median_ms: null, ci95_ms: null, n: 0 });
    expect(spanText(none!)).toBe('not measured');
  });

  it('writes a figure as its median, its interval and its count, in ms or s', () => {
    expect(spanText({ median_ms: 1234.5, ci95_ms: [1100, 1400], n: 3 })).toBe('1235 [1100, 1400] ms (n = 3)');
    expect(spanText({ median_ms: 61_500, ci95_ms: [60_000, 70_250], n: 3 }, 's')).toBe('61.50 [60.00, 70.25] s (n = 3)');
  });
});

describe('a boot that breaks', () => {
  it('is recorded with the first failed case of its run report, and the boots around it still count', async () => {
    const failures: FailedSample[] = [];
    const lines: string[] = [];
    const report = 'the systemd blackout boot failed: 1 case result(s) failed\nVM run failed\n- stage 2 (7.3.4) case demo/guest-memory: Error: bob\'s VMM failed: EPIPE\n      at x';
    const got = [
      await sampleOrFailure('standalone', 1, failures, (l) => lines.push(l), () => Promise.resolve(7)),
      await sampleOrFailure('systemd', 1, failures, (l) => lines.push(l), () => Promise.reject(new Error(report))),
      await sampleOrFailure('systemd', 2, failures, (l) => lines.push(l), () => Promise.resolve(9)),
    ];
    expect(got).toEqual([7, undefined, 9]);
    expect(failures).toEqual([{ what: 'systemd', boot: 1, reason: "stage 2 (7.3.4) case demo/guest-memory: Error: bob's VMM failed: EPIPE" }]);
    expect(lines).toEqual(["systemd, boot 1: FAILED, left out of the figures: stage 2 (7.3.4) case demo/guest-memory: Error: bob's VMM failed: EPIPE"]);
  });

  it('is told by its first line when its report names no failed case, cut to one short line', () => {
    expect(failureReason(new Error('QEMU exited 1\nmore'))).toBe('QEMU exited 1');
    expect(failureReason('x'.repeat(400))).toHaveLength(300);
  });

  it('fails the group only when no boot came through', () => {
    expect(() => someSamples('vmm', 1, [{ what: 'cold', boot: 1, reason: 'r' }])).not.toThrow();
    expect(() => someSamples('vmm', 0, [{ what: 'cold', boot: 1, reason: 'QEMU exited 1' }])).toThrow('every boot of the vmm group failed: cold boot 1: QEMU exited 1');
  });
});

describe('the blackout of a host over boots', () => {
  const boot = (jump: number, back: number, claim: number, floor: number | null): BlackoutBoot => ({
    host: 'systemd',
    marks: { frozen: 0, jump, kernel_up: jump + 10, init: jump + 1000, agent_back: back, last_claim: claim },
    node_floor_ms: floor,
    elapsed_s: 100,
  });

  it('takes each boot apart into the same spans and combines them, the total from the manifest to the last claim', () => {
    const r = combineBlackoutHost('systemd', [boot(2000, 6000, 6500, 400), boot(3000, 7000, 7300, 500), boot(2500, 6500, 7000, null)]);
    const total = r.spans.find((s) => s.from === 'frozen' && s.to === 'last_claim');
    expect(total).toMatchObject({ median_ms: 7000, n: 3 });
    const kernel = r.where.find((s) => s.from === 'jump' && s.to === 'init');
    expect(kernel).toMatchObject({ median_ms: 1000, n: 3 });
    const pkg = r.where.find((s) => s.from === 'agent_back' && s.to === 'last_claim');
    expect(pkg).toMatchObject({ median_ms: 500, values_ms: [500, 300, 500] });
    expect(r.node_floor).toMatchObject({ median_ms: 450, n: 2 });
    expect(r.boots).toBe(3);
  });
});

describe('the fleet from the role summaries', () => {
  const summary = (host: string, started: number, took: number, blackout: number): RolloutSummary => ({
    host,
    result: 'updated',
    releaseBefore: '7.2.13',
    releaseAfter: '7.3.4',
    frozenAt: 1_000_000,
    firstOpenAt: 1_000_000 + blackout,
    blackoutMs: blackout,
    sessionsClaimed: 1,
    controllerStartedAt: started,
    controllerFinishedAt: started + took,
  });

  /** A kernel's clocks on the host's: host ms = guest wall ms + wallOffsetMs. */
  const fit = (wallOffsetMs: number) => ({ stage: 1, samples: 5, monoOffsetMs: 0, wallOffsetMs, jitterMs: 0.1 });

  it("places a blackout on the host's clock by each kernel's own clock: the new kernel's RTC-set wall clock may sit a second off the old one's", () => {
    // The old kernel's wall clock is 500 ms behind the host's, the new one's 1200 ms: 700 ms apart, as two RTC reads can be.
    expect(blackoutOnHostMs({ frozenAt: 10_000, firstOpenAt: 10_100 }, [fit(500), fit(1200)])).toBe(800);
    expect(blackoutOnHostMs({ frozenAt: 10_000, firstOpenAt: 10_100 }, [fit(500)])).toBeNull();
    expect(blackoutOnHostMs({ frozenAt: null, firstOpenAt: 10_100 }, [fit(500), fit(1200)])).toBeNull();
  });

  it('takes the time per host from the role\'s start and end on it, and each host\'s blackout as the agent recorded it, placed on the host\'s clock', () => {
    const clocks = [fit(0), fit(250)];
    const r = combineFleet(['host-1', 'host-2', 'host-3'], { status: 0, elapsedMs: 300_000, summaries: { 'host-1': summary('host-1', 0, 90_000, 8000), 'host-2': summary('host-2', 90_000, 100_000, 9000), 'host-3': summary('host-3', 190_000, 95_000, 7000) } }, 120_000, { 'host-1': clocks, 'host-2': clocks, 'host-3': clocks });
    expect(r.per_host).toMatchObject({ median_ms: 95_000, n: 3 });
    expect(r.blackout).toMatchObject({ median_ms: 8250, n: 3 });
    expect(r.samples.map((x) => [x.blackout_ms, x.blackout_guest_wall_ms])).toEqual([[8250, 8000], [9250, 9000], [7250, 7000]]);
    expect(r).toMatchObject({ hosts: 3, fleet_rollout_s: 300, fleet_boot_s: 120, playbook_status: 0 });
  });

  it('names the phase a failed host stopped in and why', () => {
    expect(fleetHostSample('host-2', { host: 'host-2', result: 'failed', phase: 'update', reason: 'client vmm-1 never said ready' })).toMatchObject({ result: 'failed', failure: 'update: client vmm-1 never said ready' });
  });

  it('keeps a host the rollout never reached as such, out of the figures', () => {
    expect(fleetHostSample('host-3', undefined)).toMatchObject({ result: 'not reached', host_ms: null, blackout_ms: null, failure: null });
    const r = combineFleet(['host-1', 'host-2'], { status: 2, elapsedMs: 1000, summaries: { 'host-1': summary('host-1', 0, 90_000, 8000) } }, 1);
    expect(r.per_host).toMatchObject({ median_ms: 90_000, n: 1 });
  });
});

describe('the cold restart on the host clock', () => {
  const report = (stage: number, name: string, value: Record<string, string | number>, atMs: number): StampedRecord => ({ atMs, record: { t: 'report', stage, case: 'vmm-cold/guest-restarted', name, value } } as unknown as StampedRecord);

  it('places each kernel\'s steps by that kernel\'s quickest step and the new kernel by its console lines', () => {
    const arrivals: Arrivals = {
      console: [
        { atMs: 0, text: '[    0.000000] Linux version 7.2.13' },
        { atMs: 900, text: '[   30.000000] kexec_core: Starting new kernel' },
        { atMs: 1000, text: '[    0.000000] Linux version 7.3.4' },
        { atMs: 3000, text: '[    2.000000] Run /sbin/init as init process' },
      ],
      records: [
        // Stage 1's wall clock is 10_000 ahead of the host: its quickest step arrived 5 ms late, the other 50 ms.
        report(1, 'step', { step: 'qemu-starting', at: 10_100 }, 105),
        report(1, 'step', { step: 'serial', at: 10_200, line: 'count 1' }, 250),
        // The stop never arrived before the kexec: stage 2 reports it again from the disk.
        report(2, 'step-before', { step: 'stopped', at: 10_500 }, 9000),
        // Stage 2's wall clock is 50_000 ahead: its quickest step arrived 2 ms late.
        report(2, 'step', { step: 'qemu-started', at: 55_000 }, 5002),
        report(2, 'step', { step: 'guest-running', at: 55_400 }, 5900),
      ],
    };
    const m = coldMarks(arrivals);
    // The stop: 10_500 - 10_000 + 5 = 505 on the host clock.
    expect(m).toEqual({ stopped: 0, newKernel: 1000 - 505, init: 3000 - 505, qemuStarted: 5002 - 505, guestRunning: 5402 - 505 });
  });
});
