/**
 * The agent's policy: who may connect, how much each user may keep, who may
 * run an update, and what happens to sessions whose client is gone or that
 * nobody claims after the kexec. Read from a JSON file (`--policy FILE`;
 * the format is in AGENT-PROTOCOL.md, "Policy").
 */
import * as fs from 'node:fs';
import { agentError } from '../errors.js';
import { MAX_METADATA_BYTES } from './codec.js';
import { connectionLimits, DEFAULT_CONNECTION_LIMITS, type ConnectionLimits } from './listener.js';

/** Users and groups, by name or numeric id. */
export interface Principals {
  /** Users by name (from /etc/passwd) or uid. */
  users?: Array<string | number>;
  /** Groups by name (from /etc/group) or gid: a member by primary or supplementary group. */
  groups?: Array<string | number>;
}

/** The policy file's contents. Every field is optional; the defaults are those of {@link DEFAULT_POLICY}. */
export interface PolicyFile {
  /** Format version: 1. */
  version?: 1;
  /** Who may connect besides root (always allowed). */
  connect?: Principals;
  /** Who may run `update` besides root (always allowed). */
  update?: Principals;
  /** Per-user limits (root has none). */
  quota?: {
    /** Sessions a user may hold at once. */
    sessions?: number;
    /** Bytes of JSON metadata per session. */
    metadataBytes?: number;
  };
  /** `keep` (default): the agent holds a client's sessions after it disconnects, for it to re-attach; `release`: they die with it. */
  onClientExit?: 'keep' | 'release';
  /**
   * Who may hold an update back by not saying ready, and for how long.
   * Default: every client holding sessions, until the update's own timeout.
   */
  readiness?: {
    /** Clients of these users and groups (and root's) are waited for; others' sessions go with the update whether they said ready or not. */
    waitFor?: Principals;
    /** After this many seconds of waiting, no client holds the update back any more: it goes on, the sessions of those not ready kept in the manifest. */
    proceedAfterSeconds?: number;
  };
  /** The only kernel and initrd files an update may load: absolute paths of files, or of directories ending in `/`. Default: any file. */
  kernels?: string[];
  /** What the kernel preflight's warnings do: `warn` (default) lets the update go on, `refuse` fails its check. */
  preflight?: {
    /** A next kernel whose build config is not found, so that whether it has LUO cannot be told (`kernel-luo`). */
    unknownKernel?: 'warn' | 'refuse';
    /** A next kernel of another release than the running one (`kernel-format`). */
    crossRelease?: 'warn' | 'refuse';
  };
  /** How many connections the agent serves at once: `total`, `perUid`, `reservedForRoot` (AGENT-PROTOCOL.md, "Limits"). */
  limits?: Partial<ConnectionLimits>;
  /** The service's `FileDescriptorStoreMax=`: the agent holds at most this many outgoing sessions minus two (its state and a refused manifest are parked too). Default: no limit. */
  fdStoreMax?: number;
  /** After the kexec: sessions not claimed within `afterSeconds` are `keep`-t (default) or `finish`-ed (their files discarded). */
  unclaimed?: {
    /** Seconds after the agent's start in the new kernel. */
    afterSeconds: number;
    /** What happens to a session still unclaimed then. */
    action: 'keep' | 'finish';
  };
}

/** What the kernel preflight's warnings do: `refuse` turns one into a failed check. */
export interface PreflightPolicy {
  /** The next kernel's build config is not found (`kernel-luo`). */
  readonly unknownKernel: 'warn' | 'refuse';
  /** The next kernel is of another release (`kernel-format`). */
  readonly crossRelease: 'warn' | 'refuse';
}

/** A policy with its names resolved to ids. */
export interface Policy {
  /** Who may connect besides root. */
  readonly connect: {
    /** Allowed uids. */
    uids: ReadonlySet<number>;
    /** Allowed gids (primary or supplementary). */
    gids: ReadonlySet<number>;
  };
  /** Who may run `update` besides root. */
  readonly update: {
    /** Allowed uids. */
    uids: ReadonlySet<number>;
    /** Allowed gids (primary or supplementary). */
    gids: ReadonlySet<number>;
  };
  /** Per-user limits (root has none). */
  readonly quota: {
    /** Sessions a user may hold at once. */
    sessions: number;
    /** Bytes of JSON metadata per session. */
    metadataBytes: number;
  };
  /** Whether a client's sessions outlive its connection (`keep`) or die with it (`release`). */
  readonly onClientExit: 'keep' | 'release';
  /** Who may hold an update back by not saying ready, and for how long. */
  readonly readiness: {
    /** Whose clients are waited for besides root's, or null for everyone's. */
    waitFor: {
      /** Users whose clients are waited for. */
      uids: ReadonlySet<number>;
      /** Groups (primary or supplementary) whose members' clients are waited for. */
      gids: ReadonlySet<number>;
    } | null;
    /** Seconds after which nobody holds the update back, or null for the update's own timeout. */
    proceedAfterSeconds: number | null;
  };
  /** The kernel and initrd paths (files, or directories ending in `/`) an update may load, or null for any. */
  readonly kernels: readonly string[] | null;
  /** What the kernel preflight's warnings do. */
  readonly preflight: PreflightPolicy;
  /** The connection caps. */
  readonly limits: ConnectionLimits;
  /** The outgoing sessions the agent may hold at once, from the fd store's size, or null for no limit. */
  readonly fdStoreMax: number | null;
  /** What happens to sessions not claimed after the kexec, or null to keep them with no deadline. */
  readonly unclaimed: {
    /** Seconds after the agent's start in the new kernel. */
    afterSeconds: number;
    /** What happens to a session still unclaimed then. */
    action: 'keep' | 'finish';
  } | null;
}

/** Without a policy file: only root may connect and update; 64 sessions and 4 KiB of metadata per session otherwise. */
export const DEFAULT_POLICY: Policy = {
  connect: { uids: new Set(), gids: new Set() },
  update: { uids: new Set(), gids: new Set() },
  quota: { sessions: 64, metadataBytes: 4096 },
  onClientExit: 'keep',
  readiness: { waitFor: null, proceedAfterSeconds: null },
  kernels: null,
  preflight: { unknownKernel: 'warn', crossRelease: 'warn' },
  limits: DEFAULT_CONNECTION_LIMITS,
  fdStoreMax: null,
  unclaimed: null,
};

/** The longest delay a Node.js timer takes (2^31-1 ms, about 24.8 days), in whole seconds: longer ones fire at once. */
export const MAX_POLICY_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** The parked fds beside the sessions: the state memfd and a refused manifest's session. */
const FD_STORE_OVERHEAD = 2;

/** A policy that cannot be used: an AgentPolicyError whose message says where. */
function policyError(text: string): Error {
  return agentError('ERR_LIVEUPDATE_AGENT_POLICY', text, { operation: 'agent.start' });
}

/** Name → id from an /etc/passwd or /etc/group style file (name:x:id:...). */
function idsByName(file: string): Map<string, number> {
  const ids = new Map<string, number>();
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return ids;
  }
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (name !== undefined && id !== undefined && /^\d+$/.test(id)) ids.set(name, Number(id));
  }
  return ids;
}

function resolve(list: unknown, where: string, table: () => Map<string, number>): Set<number> {
  if (list === undefined) return new Set();
  if (!Array.isArray(list)) throw policyError(`${where} must be an array of names or ids`);
  return new Set(
    list.map((entry: unknown) => {
      if (typeof entry === 'number' && Number.isInteger(entry) && entry >= 0) return entry;
      if (typeof entry === 'string') {
        const id = table().get(entry);
        if (id !== undefined) return id;
        throw policyError(`${where}: no such name '${entry}'`);
      }
      throw policyError(`${where}: ${JSON.stringify(entry)} is neither a name nor an id`);
    }),
  );
}

function principals(value: unknown, where: string): { uids: Set<number>; gids: Set<number> } {
  if (value === undefined) return { uids: new Set(), gids: new Set() };
  if (typeof value !== 'object' || value === null) throw policyError(`${where} must be an object`);
  const p = value as Principals;
  return {
    uids: resolve(p.users, `${where}.users`, () => idsByName('/etc/passwd')),
    gids: resolve(p.groups, `${where}.groups`, () => idsByName('/etc/group')),
  };
}

function count(value: unknown, where: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) throw policyError(`${where} must be an integer from 0 to ${max}`);
  return value;
}

function seconds(value: unknown, where: string): number {
  return count(value, where, 0, MAX_POLICY_SECONDS);
}

function readiness(value: unknown): Policy['readiness'] {
  if (value === undefined) return DEFAULT_POLICY.readiness;
  if (typeof value !== 'object' || value === null) throw policyError('readiness must be an object');
  const r = value as NonNullable<PolicyFile['readiness']> & Record<string, unknown>;
  const unknown = Object.keys(r).filter((k) => k !== 'waitFor' && k !== 'proceedAfterSeconds');
  if (unknown.length > 0) throw policyError(`readiness: unknown field(s): ${unknown.join(', ')}`);
  return {
    waitFor: r.waitFor === undefined ? null : principals(r.waitFor, 'readiness.waitFor'),
    proceedAfterSeconds: r.proceedAfterSeconds === undefined ? null : seconds(r.proceedAfterSeconds, 'readiness.proceedAfterSeconds'),
  };
}

function kernels(value: unknown): string[] | null {
  if (value === undefined) return null;
  if (!Array.isArray(value) || !value.every((p): p is string => typeof p === 'string' && p.startsWith('/') && !p.includes('\0'))) {
    throw policyError('kernels must be an array of absolute paths');
  }
  return value;
}

function preflight(value: unknown): PreflightPolicy {
  if (value === undefined) return DEFAULT_POLICY.preflight;
  if (typeof value !== 'object' || value === null) throw policyError('preflight must be an object');
  const p = value as Record<string, unknown>;
  const unknown = Object.keys(p).filter((k) => k !== 'unknownKernel' && k !== 'crossRelease');
  if (unknown.length > 0) throw policyError(`preflight: unknown field(s): ${unknown.join(', ')}`);
  const choice = (key: keyof PreflightPolicy): 'warn' | 'refuse' => {
    const v = p[key] ?? DEFAULT_POLICY.preflight[key];
    if (v !== 'warn' && v !== 'refuse') throw policyError(`preflight.${key} must be 'warn' or 'refuse'`);
    return v;
  };
  return { unknownKernel: choice('unknownKernel'), crossRelease: choice('crossRelease') };
}

function fdStoreMax(value: unknown): number | null {
  if (value === undefined) return null;
  const max = count(value, 'fdStoreMax', 0);
  if (max <= FD_STORE_OVERHEAD) throw policyError(`fdStoreMax must be more than ${FD_STORE_OVERHEAD} (the agent parks its state and a refused manifest beside the sessions)`);
  return max - FD_STORE_OVERHEAD;
}

/** Checks a parsed policy file and resolves its names; throws an AgentPolicyError naming the first bad field. */
export function parsePolicy(value: unknown): Policy {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw policyError('the policy must be a JSON object');
  const file = value as PolicyFile & Record<string, unknown>;
  const known = ['version', 'connect', 'update', 'quota', 'onClientExit', 'readiness', 'kernels', 'preflight', 'limits', 'fdStoreMax', 'unclaimed'];
  const unknown = Object.keys(file).filter((k) => !known.includes(k));
  if (unknown.length > 0) throw policyError(`unknown field(s): ${unknown.join(', ')}`);
  if (file.version !== undefined && file.version !== 1) throw policyError(`version ${String(file.version)} is not known (1 is)`);
  if (file.onClientExit !== undefined && file.onClientExit !== 'keep' && file.onClientExit !== 'release') {
    throw policyError("onClientExit must be 'keep' or 'release'");
  }
  let unclaimed: Policy['unclaimed'] = null;
  if (file.unclaimed !== undefined) {
    const u = file.unclaimed;
    if (typeof u !== 'object' || u === null || (u.action !== 'keep' && u.action !== 'finish')) throw policyError("unclaimed.action must be 'keep' or 'finish'");
    unclaimed = { afterSeconds: seconds(u.afterSeconds, 'unclaimed.afterSeconds'), action: u.action };
  }
  return {
    connect: principals(file.connect, 'connect'),
    update: principals(file.update, 'update'),
    quota: {
      sessions: count(file.quota?.sessions, 'quota.sessions', DEFAULT_POLICY.quota.sessions),
      metadataBytes: count(file.quota?.metadataBytes, 'quota.metadataBytes', DEFAULT_POLICY.quota.metadataBytes, MAX_METADATA_BYTES),
    },
    onClientExit: file.onClientExit ?? DEFAULT_POLICY.onClientExit,
    readiness: readiness(file.readiness),
    kernels: kernels(file.kernels),
    preflight: preflight(file.preflight),
    limits: connectionLimits(file.limits ?? {}, 'limits', policyError),
    fdStoreMax: fdStoreMax(file.fdStoreMax),
    unclaimed,
  };
}

/** Reads and checks a policy file. */
export function readPolicy(file: string): Policy {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw policyError(`${file}: ${(error as Error).message.replace(/^ERR_LIVEUPDATE_AGENT_POLICY: /, '')}`);
  }
  try {
    return parsePolicy(parsed);
  } catch (error) {
    throw policyError(`${file}: ${(error as Error).message.replace(/^ERR_LIVEUPDATE_AGENT_POLICY: /, '')}`);
  }
}

/** Who is asking: the socket's SO_PEERCRED plus the supplementary groups. */
export interface Peer {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** The primary and supplementary groups (SO_PEERGROUPS: what the kernel recorded when the peer connected). */
  readonly groups: readonly number[];
}

/** Whether `peer` is among `who` (root always is). */
export function permits(who: { uids: ReadonlySet<number>; gids: ReadonlySet<number> }, peer: Peer): boolean {
  return peer.uid === 0 || who.uids.has(peer.uid) || peer.groups.some((g) => who.gids.has(g));
}
