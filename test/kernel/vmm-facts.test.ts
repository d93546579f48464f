/**
 * The facts README's "Facts for VMM authors" states, asserted on each LUO
 * kernel in one boot and one kexec, so that a kernel that answers otherwise
 * fails here: a hugetlb memfd is refused (UnsupportedFileError, ENOENT, with
 * LUO's reason); a preserved memfd refuses hole punching (FileFrozenError,
 * EPERM), its preserve fills every hole with a zeroed page, and after the
 * kexec holes can be punched again with the bytes around them intact; and
 * what a preserve costs per GiB.
 */
import { beforeAll, expect, it } from 'vitest';
import type { CaseResult, VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeKernels, scenario } from './support.js';

const MiB = 1024 * 1024;
/** st_blocks units. */
const BLOCK = 512;
/** 2 MiB pages the boot reserves for the hugetlb memfd (`hugepages=`). */
const HUGE_PAGES = 4;

type Refusal = { name: string; code: string; message: string };

function value(run: VmRun, name: string, stage: number): Record<string, unknown> {
  const result: CaseResult | undefined = run.result(name, stage);
  expect(result, `no result for ${name} in stage ${stage}\n${run.report()}`).toBeDefined();
  expect(result?.ok, run.report()).toBe(true);
  return result?.value as Record<string, unknown>;
}

describeKernels('facts for VMM authors', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({
      name: `vmm-facts-${kernel.release}`,
      kernels: [kernel.path],
      scenarios: [scenario('vmm-facts')],
      cmdline: `hugepages=${HUGE_PAGES}`,
      timeoutMs: 600_000,
    });
  });

  it('boots two kernels and finishes both stages', () => {
    expect(run.ok, run.report()).toBe(true);
    expect(run.stages.map((s) => s.stage)).toEqual([1, 2]);
    for (const s of run.stages) expect(s.release).toBe(kernel.release);
  });

  it('refuses to preserve a hugetlb memfd with 2 MiB pages reserved: UnsupportedFileError (ENOENT) saying why, and the session stays usable', () => {
    const facts = value(run, 'vmm-facts/hugetlb-memfd', 1);
    expect(facts['hugePagesTotal']).toBe(HUGE_PAGES);
    expect(facts['hugePageKiB']).toBe(2048);
    for (const form of ['sync', 'async']) {
      const refused = facts[form] as Refusal;
      expect(refused.name, form).toBe('UnsupportedFileError');
      expect(refused.code, form).toBe('ENOENT');
      expect(refused.message, form).toContain("It is a hugetlb memfd (MFD_HUGETLB), and LUO's memfd handler preserves shmem memfds only");
    }
    expect(facts['plainPreservedAfter']).toBe(true);
  });

  it('lets holes be punched before preserve; the preserve fills them with zeroed pages; punching while preserved is FileFrozenError (EPERM)', () => {
    const facts = value(run, 'vmm-facts/punch-hole', 1);
    const blocks = facts['blocks'] as { written: number; afterPunch: number; afterPreserve: number };
    expect(blocks.written * BLOCK).toBe(8 * MiB);
    expect(blocks.afterPunch * BLOCK).toBe(6 * MiB);
    expect(blocks.afterPreserve * BLOCK).toBe(8 * MiB);
    const refused = facts['whilePreserved'] as Refusal;
    expect(refused.name).toBe('FileFrozenError');
    expect(refused.code).toBe('EPERM');
    expect(refused.message).toContain('It is preserved in an outgoing live update session');
  });

  it('brings the ballooned memfd back with its bytes (holes as zeros, every page allocated) and lets holes be punched after retrieve', () => {
    const facts = value(run, 'vmm-facts/punch-hole', 2);
    const blocks = facts['blocks'] as { retrieved: number; afterPunch: number };
    expect(facts['size']).toBe(8 * MiB);
    expect(blocks.retrieved * BLOCK).toBe(8 * MiB);
    expect(blocks.afterPunch * BLOCK).toBe(7 * MiB);
  });

  it('measures preserve time per GiB; a preserve allocates every page of the file, written or not', () => {
    const facts = value(run, 'vmm-facts/preserve-time', 1);
    const medianMs = facts['medianMs'] as Record<string, number>;
    const filled = facts['everyPageAllocatedAfterPreserve'] as Record<string, boolean>;
    expect(Object.keys(medianMs).sort()).toEqual(['untouched-128MiB', 'untouched-512MiB', 'written-128MiB', 'written-512MiB']);
    expect(Object.values(filled)).toEqual([true, true, true, true]);
    for (const ms of Object.values(medianMs)) expect(ms).toBeGreaterThan(0);
    const perGiB = (kind: string): number => Math.round((medianMs[`${kind}-512MiB`] ?? 0) * 2);
    console.log(`preserve on ${kernel.release} (TCG), median ms: ${JSON.stringify(medianMs)}; ms per GiB at 512 MiB: written ${perGiB('written')}, never written ${perGiB('untouched')}`);
  });
});
