/**
 * The library on a systemd host, without the agent: the systemd guest image
 * (Debian sid, systemd 262 as PID 1) on the newest LUO kernel, one boot and
 * one `systemctl kexec` (conformance/lib/conformance/scenarios/systemd.ts and
 * systemd-service.ts, which `liveupdate-conformance --systemd` runs too).
 * A service's own session stored in its fd store, the session systemd makes
 * for a `LUOSession=` unit, and a plain memfd in an fd store all come back
 * with their bytes, and the manager counts the kexec.
 */
import { createHash } from 'node:crypto';
import { beforeAll, expect, it } from 'vitest';
import type { CaseResult, VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeOneKernel, newest, conformanceScenario, systemdImageOrExplain } from './support.js';

const CASE = 'systemd/library-without-agent';
const ROLES = ['own-session', 'luo-session', 'memfd'] as const;

/** The SHA-256 of a role's file as the service writes it: "<role> " repeated to 64 KiB. */
function expectedSha256(role: string): string {
  return createHash('sha256').update(Buffer.alloc(64 * 1024, `${role} `)).digest('hex');
}

type Services = Record<(typeof ROLES)[number], Record<string, unknown>>;

/** One line of what the run took: wall time, boot to multi-user.target, and the kexec's parts. */
function timings(run: VmRun, seen: { kexecRequested?: number; kexecSyscall?: number; pid1: number[] }, versions: string, release: string): string {
  const manager = (stage: number): Record<string, number> => (run.result(CASE, stage)?.reports['manager'] ?? {}) as Record<string, number>;
  const s = (ms: number | undefined): string => (ms === undefined || Number.isNaN(ms) ? '?' : `${(ms / 1000).toFixed(1)} s`);
  const newPid1 = seen.pid1[1];
  return (
    `systemd image (${versions}) on ${release}: run ${s(run.elapsedMs)}; ` +
    `multi-user.target ${s(manager(1)['multiUserMs'])} after the kernel started (stage 1; ${s(manager(2)['multiUserMs'])} in stage 2, its three node services starting); ` +
    `systemctl kexec → systemd-shutdown's kexec ${s(diff(seen.kexecSyscall, seen.kexecRequested))} → the new kernel's PID 1 ${s(diff(newPid1, seen.kexecSyscall))} ` +
    `(${s(diff(newPid1, seen.kexecRequested))} in all, host clock)`
  );
}

function diff(later: number | undefined, earlier: number | undefined): number | undefined {
  return later === undefined || earlier === undefined ? undefined : later - earlier;
}

describeOneKernel(
  'the library on a systemd host',
  (kernel) => {
    const image = systemdImageOrExplain();
    if (image === undefined) return;
    let run: VmRun;
    /** Host ms (from the run's start) of what the timings are taken from. */
    const seen: { kexecRequested?: number; kexecSyscall?: number; pid1: number[] } = { pid1: [] };

    beforeAll(async () => {
      const started = Date.now();
      const at = (): number => Date.now() - started;
      run = await boot({
        name: `systemd-${kernel.release}`,
        kernels: [kernel.path],
        scenarios: [conformanceScenario('systemd')],
        systemdImage: image.path,
        timeoutMs: 480_000,
        // The runner sends its kexec record just before it runs `systemctl kexec`.
        onRecord: (record) => {
          if (record.t === 'kexec') seen.kexecRequested = at();
        },
        onConsoleLine: (line) => {
          if (line.includes('Run /sbin/init as init process')) seen.pid1.push(at());
          if (line.includes('systemd-shutdown[1]: Rebooting with kexec')) seen.kexecSyscall = at();
        },
      });
      console.log(timings(run, seen, image.versions, kernel.release));
    }, 540_000);

    function passed(stage: number): CaseResult {
      const result = run.result(CASE, stage);
      expect(result, `no result for ${CASE} in stage ${stage}\n${run.report()}`).toBeDefined();
      expect(result?.checks.filter((c) => !c.ok), run.report()).toEqual([]);
      expect(result?.ok, run.report()).toBe(true);
      return result as CaseResult;
    }

    const services = (stage: number): Services => passed(stage).value as Services;

    const manager = (stage: number): Record<string, unknown> => (passed(stage).reports['manager'] ?? {}) as Record<string, unknown>;

    it('boots systemd 262 as PID 1, makes one orderly kexec, and the manager counts it (KExecCount 0, then 1)', () => {
      expect(run.ok, run.report()).toBe(true);
      expect(run.stages.map((s) => s.stage)).toEqual([1, 2]);
      for (const stage of [1, 2]) expect(String(manager(stage)['version'])).toMatch(/^systemd 262\b/);
      expect([manager(1)['kexecCount'], manager(2)['kexecCount']]).toEqual([0, 1]);
    });

    it("a service's own session, stored in its fd store, comes back through listenFds → Session.fromFd → retrieve → finish, bytes intact", () => {
      expect(services(1)['own-session']).toMatchObject({ ok: true, phase: 'before', sessionState: 'outgoing', sha256: expectedSha256('own-session') });
      expect(services(2)['own-session']).toEqual({
        ok: true,
        received: ['lu-own-session'],
        phase: 'after',
        kind: 'luo-session',
        sessionState: 'incoming',
        size: 64 * 1024,
        sha256: expectedSha256('own-session'),
        finished: true,
      });
    });

    it('a unit with LUOSession= gets the session systemd made for it, preserves into it, and finds its file after the kexec', () => {
      const before = services(1)['luo-session'];
      expect(before).toMatchObject({ ok: true, received: ['lu-named'], phase: 'before', sessionState: 'outgoing', sha256: expectedSha256('luo-session') });
      expect(services(2)['luo-session']).toEqual({
        ok: true,
        received: ['lu-named'],
        phase: 'after',
        sessionState: 'incoming',
        size: 64 * 1024,
        sha256: expectedSha256('luo-session'),
        finished: true,
        name: before['name'],
      });
    });

    it('a memfd stored directly in the fd store (no session of ours) comes back with its bytes', () => {
      expect(services(1)['memfd']).toMatchObject({ ok: true, phase: 'before', sha256: expectedSha256('memfd') });
      // Restored, it has no name ("/ (deleted)"), but it still answers F_GET_SEALS, which a file of the ext4 root would refuse.
      expect(services(2)['memfd']).toEqual({ ok: true, received: ['lu-memfd'], phase: 'after', link: '/ (deleted)', seals: expect.any(Number), size: 64 * 1024, sha256: expectedSha256('memfd') });
    });
  },
  newest,
);
