/**
 * `npm run demo -- --fleet N`: a live update rolled across N hosts by
 * Debian's ansible-playbook (examples/ansible/rollout.yml). N guests of the
 * systemd image boot the oldest test kernel, each with the agent and a
 * VMM-like client holding its guest memory (vm/fleet.ts); the playbook
 * updates them to the newest kernel one host at a time. Prints one line per
 * host per phase as the playbook goes, then each host's summary; exits 0
 * only if every host was updated and every client's memory came back intact.
 */
import { spawnSync } from 'node:child_process';
import { findKernels } from '../vm/kernels.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP } from '../vm/systemd-image.js';
import { blackoutOnHostMs, phaseLines, startFleet, type Fleet, type FleetHost, type RolloutSummary } from '../vm/fleet.js';
import type { HostReport } from '../vm/fleet-host.js';

/** The largest fleet the demo boots (each host is a TCG guest of 1.5 GiB). */
export const MAX_FLEET = 8;

/** What the demo needs that may be missing, one line each naming the fix. */
function missing(): string[] {
  const lines: string[] = [];
  if (findSystemdImage() === undefined) lines.push(NO_SYSTEMD_IMAGE_HELP);
  const releases = new Set(findKernels().map((k) => k.release));
  if (releases.size < 2) lines.push('the fleet demo rolls one kernel release over another: build both test kernels with `npm run vm:kernel` (7.2 and 7.3)');
  if (spawnSync('ansible-playbook', ['--version'], { stdio: 'ignore' }).status !== 0) lines.push('ansible-playbook not found: apt-get install ansible-core');
  return lines;
}

/** The blackout on the host's clock where both kernels sent clock samples, else as the guests' wall clocks give it (to a second). */
function blackoutText(s: RolloutSummary, host: FleetHost): string {
  const onHost = blackoutOnHostMs(s, host.clocks);
  if (onHost !== null) return `${(onHost / 1000).toFixed(3)} s`;
  return s.blackoutMs == null ? '?' : `${(s.blackoutMs / 1000).toFixed(1)} s (guest wall clocks)`;
}

function summaryLine(s: RolloutSummary, boot: HostReport | undefined, host: FleetHost): string {
  if (s.result === 'failed') return `${s.host}: FAILED in phase ${s.phase}: ${s.reason}`;
  // The sessions the previous kernel carried (those its clients claimed); a client's new session has no claimedAt.
  const claimed = (s.sessions ?? []).filter((x) => x.claimedAt !== undefined).map((x) => `${x.name} claimed ${x.claimedAt === undefined || s.frozenAt == null ? '?' : `${((x.claimedAt - s.frozenAt) / 1000).toFixed(1)} s`} after the freeze`);
  const vmm = boot?.vmm;
  const memory = vmm?.phase === 'claimed' ? `${(vmm.claimed?.bytes ?? 0) / 2 ** 20} MiB ${vmm.comparison?.firstMismatch === -1 && vmm.counter?.intact === true ? 'intact' : 'DAMAGED'}` : 'not claimed';
  const took = s.controllerStartedAt === undefined || s.controllerFinishedAt === undefined ? '?' : `${((s.controllerFinishedAt - s.controllerStartedAt) / 1000).toFixed(0)} s`;
  return `${s.host}: ${s.result} ${s.releaseBefore} -> ${s.releaseAfter} in ${took}; blackout ${blackoutText(s, host)} (agent back on the device); ${claimed.join(', ') || 'no sessions'}; client memory ${memory}`;
}

function hosts(n: number): string {
  return `${n} host${n === 1 ? '' : 's'}`;
}

/** Whether the host was updated and its client got its memory back intact. */
function held(s: RolloutSummary | undefined, boot: HostReport | undefined): boolean {
  return s?.result === 'updated' && boot?.vmm?.phase === 'claimed' && boot.vmm.comparison?.firstMismatch === -1 && boot.vmm.counter?.intact === true;
}

/** Runs the fleet demo with `size` hosts; resolves to the exit status. */
export async function fleetDemo(size: number, say: (line: string) => void): Promise<number> {
  const problems = missing();
  if (problems.length > 0) {
    process.stderr.write(`${problems.join('\n')}\n`);
    return 3;
  }
  const kernels = findKernels();
  const boot = kernels[0]!;
  const target = kernels[kernels.length - 1]!;
  say(`fleet: ${hosts(size)} (systemd image, QEMU TCG, 1 vCPU and 1.5 GiB each) boot ${boot.release}; the playbook rolls ${target.release} over them one at a time`);
  let fleet: Fleet | undefined;
  const stop = (): void => void fleet?.stop().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  try {
    fleet = await startFleet({
      name: 'demo-fleet',
      systemdImage: findSystemdImage()!.path,
      kernels: { boot: boot.path, target: target.path },
      hosts: size,
      onProgress: (line) => {
        if (line.startsWith('[fleet]')) say(line.slice('[fleet] '.length));
      },
    });
    say(`ansible-playbook -i ${fleet.inventory} examples/ansible/rollout.yml (serial 1, max_fail_percentage 0)`);
    const result = await fleet.playbook({ onEvent: phaseLines(say) });
    const boots = await Promise.all(fleet.hosts.map((h) => fleet!.boot(h, 2, 60_000).catch(() => undefined)));
    say(`ansible-playbook exited ${String(result.status)} after ${(result.elapsedMs / 1000).toFixed(0)} s`);
    fleet.hosts.forEach((h, i) => {
      const s = result.summaries[h.name];
      say(s === undefined ? `${h.name}: not reached (the rollout stopped before it)` : summaryLine(s, boots[i], h));
    });
    const ok = result.status === 0 && fleet.hosts.every((h, i) => held(result.summaries[h.name], boots[i]));
    say(ok ? `PASSED: ${hosts(size)} updated one at a time, every client's memory intact` : 'FAILED: see above');
    if (!ok) process.stderr.write(`${result.stdout.slice(-6000)}\n`);
    return ok ? 0 : 1;
  } finally {
    process.off('SIGINT', stop);
    await fleet?.stop();
  }
}
