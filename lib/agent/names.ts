/**
 * How a client's session name becomes the kernel's: root's names are used
 * as they are; every other user gets a namespace of their own, so that two
 * users' `vm1` never collide and the kernel's 63-byte limit holds whatever
 * the length of the name asked for (AGENT-PROTOCOL.md, "Names").
 * @internal
 */
import { checkSessionName, invalidArgValue, MAX_SESSION_NAME_BYTES } from '../validate.js';

/** The agent's own session (its manifest under token 0): no client may use this name. */
export const AGENT_SESSION_NAME = 'liveupdate-agent';

/** Where `liveupdate agent` (as root) says who it is, for status(): its pid, mode and socket. */
export const AGENT_INFO_PATH = '/run/liveupdate/agent.json';

/** systemd's own session (v261+ keeps the fd stores of its units in it across a kexec): never the agent's to create or retrieve. */
export const SYSTEMD_SESSION_NAME = 'systemd';

/** The longest name a non-root client may ask for, in bytes of UTF-8. */
export const MAX_CLIENT_NAME_BYTES = 255;

/** Hex digits of SHA-256 kept in a hashed name (160 bits). */
const HASH_HEX_DIGITS = 40;

/**
 * Characters that act on a terminal instead of showing: C0 controls
 * (escape, newline, ...), DEL, C1 controls, the bidirectional controls
 * (which reorder what follows) and the line and paragraph separators.
 */
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/** The same characters, and the backslash that starts an escape, as {@link printable} rewrites them. */
const TO_ESCAPE = new RegExp(`${CONTROLS.source.slice(0, -1)}\\\\]`, 'gu');

/** Names in a user's namespace: `u<uid>.` (plain) or `u<uid>~` (hashed). Root may not take them. */
const USER_NAMESPACE = /^u\d+[.~]/;

/**
 * Checks a name a client asked for: 1 to 255 bytes of UTF-8 without NUL
 * (root: 1 to 63, and not a user's namespace, the agent's own name or
 * systemd's), and
 * without control characters: the kernel's name is made from it, and root's
 * `liveupdate sessions` shows it on a terminal.
 */
export function checkClientName(name: unknown, uid: number): string {
  const checked = uid === 0 ? checkRootName(name) : checkUserName(name);
  if (CONTROLS.test(checked)) throw invalidArgValue('name', 'must not contain control characters (C0, DEL, C1, bidirectional controls, line separators)', checked);
  return checked;
}

function checkRootName(name: unknown): string {
  const checked = checkSessionName(name);
  if (checked === AGENT_SESSION_NAME) throw invalidArgValue('name', 'is reserved for the agent itself', checked);
  if (checked === SYSTEMD_SESSION_NAME) throw invalidArgValue('name', "is systemd's own session (it keeps its units' fd stores in it across the kexec)", checked);
  if (USER_NAMESPACE.test(checked)) throw invalidArgValue('name', "is in a user's namespace (u<uid>. or u<uid>~)", checked);
  return checked;
}

function checkUserName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0') || !name.isWellFormed()) {
    throw invalidArgValue('name', 'must be a non-empty, well-formed string without NUL', name);
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_CLIENT_NAME_BYTES) throw invalidArgValue('name', `must be at most ${MAX_CLIENT_NAME_BYTES} bytes of UTF-8 (it is ${bytes})`, name);
  return name;
}

/**
 * `text` as a terminal can show it without acting on it: each control
 * character written as a visible escape (`\x1b`, `\u{202e}`) and each
 * backslash doubled, so that an escape cannot be forged either. For the
 * CLI's tables and messages; JSON output stays exact.
 */
export function printable(text: string): string {
  return text.replace(TO_ESCAPE, (c) => {
    if (c === '\\') return '\\\\';
    const code = c.codePointAt(0) ?? 0;
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`;
  });
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
  // node:crypto loads here, not with the package: only long names are hashed.
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  return `u${uid}~${createHash('sha256').update(name, 'utf8').digest('hex').slice(0, HASH_HEX_DIGITS)}`;
}
