/**
 * The addon's source digest (scripts/addon-digest.mjs) for the tests of its
 * check: the current one, and the source build altered to carry another.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LIBRARY_DIR } from './pack.js';

/** The source build of the addon (npm run build:native). */
export const SOURCE_BUILD = path.join(LIBRARY_DIR, 'build', 'Release', 'liveupdate.node');

/** What the addon's binary holds before its digest. */
export const DIGEST_MARKER = 'liveupdate-source-digest=';

/** The digest of the sources now, as scripts/addon-digest.mjs prints it for the build. */
export function currentDigest(): string {
  return execFileSync(process.execPath, [path.join(LIBRARY_DIR, 'scripts', 'addon-digest.mjs')], { encoding: 'utf8' }).trim();
}

/**
 * The source build's bytes with the first hex digit of the digest after its
 * marker changed: an addon that still loads, as a build of other sources
 * (a stale prebuild) does, but carries another digest.
 */
export function otherSourcesBuild(): Buffer {
  const bytes = fs.readFileSync(SOURCE_BUILD);
  const at = bytes.indexOf(DIGEST_MARKER);
  if (at < 0) throw new Error(`${SOURCE_BUILD} has no ${DIGEST_MARKER}`);
  const first = at + DIGEST_MARKER.length;
  bytes[first] = bytes[first] === 0x30 ? 0x31 : 0x30;
  return bytes;
}
