/**
 * The agent's manifest: what it knows about every session, carried across
 * the kexec in the agent's own LUO session (token 0, a sealed memfd holding
 * JSON). Its format is a contract other tools may read (AGENT-PROTOCOL.md,
 * "Manifest").
 */
import * as fs from 'node:fs';
import { agentError, LiveUpdateError, SessionNotFoundError } from '../errors.js';
import * as memfd from '../memfd.js';
import { Session } from '../session.js';
import type { SessionDevice } from './host.js';
import { AGENT_SESSION_NAME } from './names.js';
import type { JsonValue } from './protocol.js';

/** The manifest's format name. */
export const MANIFEST_FORMAT = 'liveupdate-agent-manifest';

/** This package writes version 1.0; it reads any 1.x (a minor version only adds fields). */
export const MANIFEST_VERSION = {
  /** Changes that older readers cannot read: they refuse the manifest. */
  major: 1,
  /** Additions older readers may ignore. */
  minor: 0,
} as const;

/** The token of the manifest in the agent's session. */
export const MANIFEST_TOKEN = 0n;

/** The largest manifest read back, in bytes (the agent never writes more than its quotas allow). */
export const MAX_MANIFEST_BYTES = 64 << 20;

/** One session in the manifest. */
export interface ManifestSession {
  /** The kernel's session name. */
  kernelName: string;
  /** The name the owner asked for. */
  name: string;
  /** The owner's uid. */
  owner: number;
  /** The owner's metadata (a small JSON value). */
  metadata: JsonValue;
  /** When the session was created (ms since the epoch). */
  createdAt: number;
}

/** The manifest, version 1.0. Times are milliseconds since the Unix epoch (wall clock). */
export interface Manifest {
  /** Always {@link MANIFEST_FORMAT}: says what this JSON is. */
  format: typeof MANIFEST_FORMAT;
  /** `[major, minor]`: a reader refuses a newer major version. */
  version: [number, number];
  /** How many live updates this chain of agents has done, this one included. */
  kexecCount: number;
  /** The update request's arrival. */
  updateStartedAt: number;
  /** The moment the manifest was sealed, just before the kexec: the start of the blackout. */
  frozenAt: number;
  /** The next kernel's image and command line, as the update asked. */
  next: {
    /** The kernel image's path. */
    kernel: string;
    /** Its command line. */
    cmdline: string;
  };
  /** Every session the agent holds, with its owner and metadata. */
  sessions: ManifestSession[];
}

/** Writes `manifest` into a new memfd, sealed against every change; returns its fd. */
export function writeManifest(manifest: Manifest): number {
  const fd = memfd.createSync('liveupdate-agent-manifest', { allowSealing: true });
  try {
    const bytes = Buffer.from(`${JSON.stringify(manifest)}\n`, 'utf8');
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
    memfd.addSealsSync(fd, memfd.SEAL_SHRINK | memfd.SEAL_GROW | memfd.SEAL_WRITE | memfd.SEAL_SEAL);
    return fd;
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

/**
 * Reads and checks a manifest from an fd. A newer major version is a
 * ManifestVersionError: the caller must not finish or discard anything then.
 */
export function readManifest(fd: number): Manifest {
  const size = fs.fstatSync(fd).size;
  if (size > MAX_MANIFEST_BYTES) throw invalid(`it is ${size} bytes (at most ${MAX_MANIFEST_BYTES})`);
  const bytes = Buffer.alloc(size);
  let got = 0;
  while (got < size) {
    const n = fs.readSync(fd, bytes, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  return parseManifest(bytes.subarray(0, got).toString('utf8'));
}

function invalid(why: string): Error {
  return agentError('ERR_LIVEUPDATE_MANIFEST_VERSION', `the agent's manifest cannot be read: ${why}`, { operation: 'agent.start' });
}

/** Parses and checks a manifest's text. */
export function parseManifest(text: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('it is not JSON');
  }
  const m = value as Partial<Manifest> | null;
  if (typeof m !== 'object' || m === null || m.format !== MANIFEST_FORMAT) throw invalid(`its format is not '${MANIFEST_FORMAT}'`);
  const version = m.version;
  if (!Array.isArray(version) || typeof version[0] !== 'number' || typeof version[1] !== 'number') throw invalid('it has no [major, minor] version');
  if (version[0] > MANIFEST_VERSION.major) {
    throw agentError(
      'ERR_LIVEUPDATE_MANIFEST_VERSION',
      `the previous kernel's agent wrote manifest version ${version[0]}.${version[1]}; this agent reads ${MANIFEST_VERSION.major}.x only. ` +
        'Nothing was finished or discarded: start an agent of that version (or newer) to claim the sessions',
      { operation: 'agent.start' },
      { version },
    );
  }
  if (!Array.isArray(m.sessions) || typeof m.kexecCount !== 'number') throw invalid('sessions or kexecCount is missing');
  for (const s of m.sessions as unknown[]) {
    const e = s as Partial<ManifestSession> | null;
    if (typeof e !== 'object' || e === null || typeof e.kernelName !== 'string' || typeof e.name !== 'string' || typeof e.owner !== 'number') {
      throw invalid('a session lacks kernelName, name or owner');
    }
  }
  return m as Manifest;
}

/** What the previous kernel's agent left: nothing, a manifest read (and its session finished), or one refused (its session kept, unfinished; null when the manifest waits in systemd's fd store instead). */
export type IncomingManifest = { readonly kind: 'none' } | { readonly kind: 'read'; readonly manifest: Manifest } | { readonly kind: 'refused'; readonly error: LiveUpdateError; readonly session: Session | null };

/**
 * Takes the manifest first thing after the kexec: retrieves the agent's own
 * session (or takes the one a run that refused it parked), reads token 0,
 * and finishes the session. A manifest this agent must not read (a newer
 * major version) leaves the session unfinished, so that an agent that can
 * read it still finds it and the sessions it names.
 */
export async function takeIncomingManifest(device: SessionDevice, parked: number | undefined): Promise<IncomingManifest> {
  let own: Session;
  try {
    // A run that refused the manifest parked the session it had retrieved: retrieving a token again is allowed.
    own = parked === undefined ? await device.retrieveSession(AGENT_SESSION_NAME) : Session.fromFd(parked);
  } catch (error) {
    if (error instanceof SessionNotFoundError) return { kind: 'none' }; // First boot, or no update carried a manifest.
    throw error;
  }
  const fd = await own.retrieve(MANIFEST_TOKEN);
  let manifest: Manifest;
  try {
    manifest = readManifest(fd);
  } catch (error) {
    if (!(error instanceof LiveUpdateError)) throw error;
    return { kind: 'refused', error, session: own };
  } finally {
    fs.closeSync(fd);
  }
  await own.finish();
  await own.close();
  return { kind: 'read', manifest };
}
