/**
 * The refusal of an addon built from other sources than the JavaScript beside
 * it (lib/native.ts compares their digests at load), in a module of its own:
 * only a failed load reads it.
 * @internal
 */
import { packageError, type LiveUpdateError } from './errors.js';

/**
 * How to rebuild it. A plain `npm rebuild` keeps a prebuild that loads
 * (node-gyp-build's install script builds only when none does).
 */
const STALE_ADDON_FIX =
  'rebuild the addon from the sources beside it: npm rebuild liveupdate --build-from-source (needs python3, make and g++); ' +
  'in a checkout of liveupdate, npm run build:native and npm run build:ts, and for a stale prebuild npm run prebuild, or delete prebuilds/';

/**
 * The AddonLoadError for the addon loaded from `file` whose digest (`carried`, undefined for a
 * build from before addons carried one) is not `expected`, the JavaScript's:
 * it names the file, both digests (short) and what to rebuild. @internal
 */
export function staleAddonError(file: string, carried: string | undefined, expected: string): LiveUpdateError {
  const its = carried === undefined ? 'none (built before addons carried one)' : carried.slice(0, 12);
  const why = `the native addon ${file} was built from other sources than this JavaScript (its source digest ${its}, the JavaScript's ${expected.slice(0, 12)})`;
  return packageError('ERR_LIVEUPDATE_ADDON_NOT_LOADED', why, { operation: 'load', path: file, fix: STALE_ADDON_FIX });
}
