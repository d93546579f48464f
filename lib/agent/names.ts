/**
 * How a client's session name becomes the kernel's: root's names are used
 * as they are; every other user gets a namespace of their own, so that two
 * users' `vm1` never collide and the kernel's 63-byte limit holds whatever
 * the length of the name asked for (AGENT-PROTOCOL.md, "Names").
 * @internal
 */
import { createHash } from 'node:crypto';
import { checkSessionName, invalidArgValue, MAX_SESSION_NAME_BYTES } from '../validate.js';

/** The agent's own session (its manifest under token 0): no client may use this name. */
export const AGENT_SESSION_NAME = 'liveupdate-agent';

/** The longest name a non-root client may ask for, in bytes of UTF-8. */
export const MAX_CLIENT_NAME_BYTES = 255;

/** Hex digits of SHA-256 kept in a hashed name (160 bits). */
const HASH_HEX_DIGITS = 40;

/** Names in a user's namespace: `u<uid>.` (plain) or `u<uid>~` (hashed). Root may not take them. */
const USER_NAMESPACE = /^u\d+[.~]/;

/**
 * Checks a name a client asked for: 1 to 255 bytes of UTF-8 without NUL
 * (root: 1 to 63, and not a user's namespace or the agent's own name).
 */
export function checkClientName(name: unknown, uid: number): string {
  if (uid === 0) {
    const checked = checkSessionName(name);
    if (checked === AGENT_SESSION_NAME) throw invalidArgValue('name', 'is reserved for the agent itself', checked);
    if (USER_NAMESPACE.test(checked)) throw invalidArgValue('name', "is in a user's namespace (u<uid>. or u<uid>~)", checked);
    return checked;
  }
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0') || !name.isWellFormed()) {
    throw invalidArgValue('name', 'must be a non-empty, well-formed string without NUL', name);
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_CLIENT_NAME_BYTES) throw invalidArgValue('name', `must be at most ${MAX_CLIENT_NAME_BYTES} bytes of UTF-8 (it is ${bytes})`, name);
  return name;
}

/**
 * The kernel's name for `name` owned by `uid`: root's as is; others'
 * `u<uid>.<name>` when that fits in 63 bytes, else `u<uid>~` and the first
 * 40 hex digits of SHA-256(name). The mapping depends only on (uid, name),
 * so an agent that lost its manifest can still find a session.
 */
export function kernelName(uid: number, name: string): string {
  if (uid === 0) return name;
  const plain = `u${uid}.${name}`;
  if (Buffer.byteLength(plain, 'utf8') <= MAX_SESSION_NAME_BYTES) return plain;
  return `u${uid}~${createHash('sha256').update(name, 'utf8').digest('hex').slice(0, HASH_HEX_DIGITS)}`;
}
