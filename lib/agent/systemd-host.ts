/**
 * The agent in systemd mode: a service of systemd v261+, which takes part in
 * every live update. The agent
 * - opens `/dev/liveupdate` only for one create or retrieve at a time (one
 *   after the other), retrying briefly while another process holds it (a
 *   unit with `LUOSession=` starting, systemd-shutdown), so that nobody
 *   else's open fails because of it;
 * - stores each session fd in its unit's fd store as soon as it creates it
 *   (one FDNAME per session), and its state and, for a kexec under way, its
 *   sealed manifest when it stops: PID 1 keeps them across the kexec (with
 *   `FileDescriptorStorePreserve=yes`) and hands them back through
 *   LISTEN_FDS, sessions already retrieved, memfds by FDNAME only;
 * - refuses sessions beyond what its store can hold (`$FDSTORE`, which
 *   systemd sets to `FileDescriptorStoreMax=`), since systemd drops what
 *   does not fit without telling;
 * - jumps with the orderly `systemctl kexec` (every unit stopped first),
 *   never the forced D-Bus `Manager.KExec`.
 * @internal
 */
import * as fs from 'node:fs';
import { agentError, DeviceBusyError, LiveUpdateError, type AgentError, type AgentOperation } from '../errors.js';
import { LiveUpdate } from '../liveupdate.js';
import type { Session } from '../session.js';
import { isLuoSessionFd, notify } from '../systemd.js';
import type * as DiagnosisModule from '../diagnosis.js';
import { onFirstUse } from '../lazy.js';
import { closeQuietly, fdNameOf, MANIFEST_FDNAME, undescribed } from './fdstore.js';
import { KEXEC_LOADER, KexecUnderway, noDevice, type AgentHost, type ParkedFd } from './host.js';
import { readManifest, takeIncomingManifest, writeManifest, type IncomingManifest, type Manifest, type ManifestSession } from './manifest.js';
import { MANAGER_VARLINK, managerProperty, systemctl, type ModeDecision, type SystemctlResult } from './mode.js';

/** Entries of the fd store that are not sessions: the state memfd and the manifest memfd. */
export const STORE_OVERHEAD = 2;

/** How long the agent retries while another process holds the device, and how often. */
export const DEVICE_RETRY = { totalMs: 5000, everyMs: 100 } as const;

/** A refusal to start in systemd mode (the unit lacks what the mode needs). */
function unfit(text: string): AgentError {
  return agentError('ERR_LIVEUPDATE_AGENT_MODE', text, { operation: 'agent.start' });
}

const UNIT_FIX = 'start the agent from units/liveupdate-agent.service (FileDescriptorStoreMax=, FileDescriptorStorePreserve=yes)';

/**
 * How many sessions the unit's fd store can keep beside the agent's state
 * and manifest: `$FDSTORE` (systemd's `FileDescriptorStoreMax=`) less
 * {@link STORE_OVERHEAD}, and no more than the policy's `fdStoreMax` (already
 * net of the overhead). A unit without a store cannot keep anything across
 * the kexec: AgentModeError.
 */
export function storeCapacity(fdstore: string | undefined, policyMax: number | null): number {
  if (fdstore === undefined || fdstore.trim() === '' || fdstore.trim() === '0') {
    throw unfit(`systemd mode keeps the sessions in the unit's fd store, and this unit has none ($FDSTORE is not set): ${UNIT_FIX}`);
  }
  if (!/^\d+$/.test(fdstore.trim())) throw unfit(`$FDSTORE is not a count: ${JSON.stringify(fdstore)}`);
  const room = Number(fdstore.trim()) - STORE_OVERHEAD;
  if (room < 1) throw unfit(`FileDescriptorStoreMax=${fdstore.trim()} leaves no room for a session beside the agent's state and manifest (${STORE_OVERHEAD}): give it more`);
  return policyMax === null ? room : Math.min(room, policyMax);
}

export { storeFull } from './sessions.js';

/** The unit a process runs in, from its `/proc/PID/cgroup` (cgroup v2: `0::/system.slice/NAME.service`), or null. */
export function unitOfCgroup(text: string): string | null {
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  const unit = line?.slice(3).split('/').pop();
  return unit !== undefined && /\.service$/.test(unit) ? unit : null;
}

/**
 * Each session fd handed back through LISTEN_FDS, described by the
 * manifest entry it was stored for: its FDNAME is the hash of that entry's
 * kernel name ({@link fdNameOf}) and the session bears that name. A session
 * the manifest does not describe is kept all the same, described by its
 * kernel name only; manifest entries with no session handed back are
 * `missing`.
 */
export function describeHandedBack<T extends { fdName: string; kernelName: string }>(
  manifest: readonly ManifestSession[],
  handed: readonly T[],
): { described: Array<T & { saved: ManifestSession }>; missing: ManifestSession[] } {
  const byFdName = new Map(manifest.map((s) => [fdNameOf(s.kernelName), s] as const));
  const described = handed.map((h) => {
    const saved = byFdName.get(h.fdName);
    return { ...h, saved: saved?.kernelName === h.kernelName ? saved : undescribed(h.kernelName) };
  });
  const found = new Set(described.map((d) => d.saved.kernelName));
  return { described, missing: manifest.filter((s) => !found.has(s.kernelName)) };
}

/**
 * Whether the system is going down after a `systemctl kexec` that did not
 * exit 0. Unloading the kernel is right only when systemd refused: once its
 * shutdown has begun, the jump needs the kernel loaded, or systemd-shutdown's
 * kexec fails (EINVAL: nothing loaded) and it reboots plainly, losing every
 * session. The shutdown stops the agent's unit, and with it the systemctl
 * still exiting beside it (same cgroup), so a systemctl killed, or one that
 * failed while the agent is being stopped, may well have started the kexec.
 * systemd's own state decides where it can still be asked.
 */
async function goingDown(asked: SystemctlResult, agentStopping: boolean): Promise<boolean> {
  if (agentStopping) return true;
  const state = await systemctl(['is-system-running'], 10_000);
  // A systemctl that could not even ask while its first attempt was killed is as good as stopped by the shutdown.
  if (state.status === null) return asked.status === null;
  return state.stdout.trim() === 'stopping';
}

/** The FileDescriptorStorePreserve= of `unit` as PID 1 says it (asked at `socketPath`: {@link managerProperty}), or null when it cannot be told. */
export function unitStorePreserve(unit: string, socketPath = MANAGER_VARLINK): Promise<string | null> {
  const question = { method: 'io.systemd.Unit.List', parameters: { name: unit }, field: ['context', 'Service', 'FileDescriptorStorePreserve'], property: 'FileDescriptorStorePreserve', unit };
  return managerProperty(question, (text) => text, socketPath);
}

/** This process's unit (from its cgroup) and that unit's FileDescriptorStorePreserve=, each null when it cannot be told. */
async function storePreserve(): Promise<{ unit: string | null; preserve: string | null }> {
  let unit: string | null = null;
  try {
    unit = unitOfCgroup(fs.readFileSync('/proc/self/cgroup', 'utf8'));
  } catch {
    return { unit: null, preserve: null };
  }
  return { unit, preserve: unit === null ? null : await unitStorePreserve(unit) };
}

/** Who holds the device, for the error of a device that stayed busy: the diagnosis loads then, not with the agent's start. */
function deviceHolders(devicePath: string): string {
  const diagnosis = onFirstUse('diagnosis', () => require('../diagnosis.js') as typeof DiagnosisModule);
  return diagnosis.deviceOwners(devicePath).map((o) => `pid ${o.pid} (${o.command ?? '?'})`).join(', ') || 'another process';
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** systemd mode (see the module's comment). */
export class SystemdHost implements AgentHost {
  readonly loader = KEXEC_LOADER;
  readonly incomingInStore = true;
  readonly retrievesByName = false;
  #deviceError: LiveUpdateError | null = null;
  /** The device's users, one at a time: the device has one owner, the agent included. */
  #queue: Promise<unknown> = Promise.resolve();
  /** The sealed manifest of a kexec under way, parked when the agent stops. */
  #manifest: number | null = null;

  private constructor(
    readonly decision: ModeDecision,
    readonly storeMax: number,
    private readonly devicePath: string,
  ) {}

  /**
   * The host, once this process is known to be a service of a unit that
   * can keep its sessions across the kexec; otherwise AgentModeError
   * saying what the unit lacks.
   */
  static async create(decision: ModeDecision, policyMax: number | null, devicePath: string, env: NodeJS.ProcessEnv = process.env): Promise<SystemdHost> {
    if (env['NOTIFY_SOCKET'] === undefined) throw unfit(`systemd mode runs as a service of systemd, and $NOTIFY_SOCKET is not set: ${UNIT_FIX}`);
    const max = storeCapacity(env['FDSTORE'], policyMax);
    const { unit, preserve } = await storePreserve();
    if (preserve !== null && preserve !== 'yes') {
      throw unfit(`${unit ?? 'the unit'} has FileDescriptorStorePreserve=${preserve}: its fd store, and every session in it, would be lost at the kexec. Set FileDescriptorStorePreserve=yes`);
    }
    return new SystemdHost(decision, max, devicePath);
  }

  get deviceError(): LiveUpdateError | null {
    return this.#deviceError;
  }

  /** Opens and closes the device once: whether it exists and may be opened (busy is fine: PID 1 or a LUOSession= unit has it for a moment). */
  async open(): Promise<void> {
    try {
      (await LiveUpdate.open(this.devicePath)).closeSync();
    } catch (error) {
      if (!(error instanceof LiveUpdateError)) throw error;
      if (!(error instanceof DeviceBusyError)) this.#deviceError = error;
    }
  }

  withDevice<T>(operation: AgentOperation, use: (device: LiveUpdate) => Promise<T>): Promise<T> {
    const run = this.#queue.catch(() => {}).then(async () => {
      const device = await this.#openRetrying(operation);
      try {
        return await use(device);
      } finally {
        device.closeSync();
      }
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Opens the device, retrying while another process holds it; then AgentUnavailableError naming the holder. */
  async #openRetrying(operation: AgentOperation): Promise<LiveUpdate> {
    const started = performance.now();
    for (;;) {
      try {
        return await LiveUpdate.open(this.devicePath);
      } catch (error) {
        if (!(error instanceof DeviceBusyError)) throw noDevice(operation, error as LiveUpdateError);
        if (performance.now() - started + DEVICE_RETRY.everyMs > DEVICE_RETRY.totalMs) {
          throw agentError('ERR_LIVEUPDATE_AGENT_UNAVAILABLE', `${this.devicePath} stayed busy for ${DEVICE_RETRY.totalMs} ms: ${deviceHolders(this.devicePath)} holds it. Retry when it is free`, { operation });
        }
        await sleep(DEVICE_RETRY.everyMs);
      }
    }
  }

  /**
   * The manifest systemd handed back as a memfd (read, and left in the
   * store: a restart before the next update reads it again), or the one a
   * standalone agent before it preserved in its own session.
   */
  async incomingManifest(parked: number | undefined): Promise<IncomingManifest> {
    if (parked !== undefined && !isLuoSessionFd(parked)) {
      try {
        return { kind: 'read', manifest: readManifest(parked) };
      } catch (error) {
        if (!(error instanceof LiveUpdateError)) throw error;
        return { kind: 'refused', error, session: null };
      } finally {
        closeQuietly(parked);
      }
    }
    return this.withDevice('agent.start', (device) => takeIncomingManifest(device, parked));
  }

  /** Stores the new session's fd in the unit's fd store at once: it survives a crash of the agent, and the kexec. */
  async keep(kernelName: string, session: Session): Promise<void> {
    await notify({ FDSTORE: 1, FDNAME: fdNameOf(kernelName), FDPOLL: 0 }, [session.fd]);
  }

  /**
   * Seals the manifest (parked when systemd stops the agent), then asks for
   * the orderly kexec. A refusal (a unit blocking the shutdown, kexec.target
   * masked, ...) is UpdateRefusedError with nothing kept: the caller unloads.
   * Once systemd has the job, or the system is going down whatever systemctl
   * said, the agent waits to be stopped.
   */
  async jump(manifest: Manifest, signal: AbortSignal): Promise<never> {
    this.#manifest = writeManifest(manifest);
    const asked = await systemctl(['kexec']);
    if (asked.status !== 0 && !(await goingDown(asked, signal.aborted))) {
      closeQuietly(this.#manifest);
      this.#manifest = null;
      throw agentError('ERR_LIVEUPDATE_UPDATE_REFUSED', `the update was refused: systemd did not start the kexec (systemctl kexec exited ${String(asked.status)}: ${asked.stderr})`, { operation: 'agent.update' });
    }
    if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    throw new KexecUnderway();
  }

  parkedFds(): ParkedFd[] {
    return this.#manifest === null ? [] : [{ fdName: MANIFEST_FDNAME, fd: this.#manifest }];
  }

  close(): void {
    if (this.#manifest !== null) closeQuietly(this.#manifest);
    this.#manifest = null;
  }
}
