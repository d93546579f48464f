// npm's prepublishOnly: refuses to publish a package without the prebuilt
// addon of every platform it promises (README, Install), since `npm pack`
// in a clone has no prebuilds/ and would ship a package that needs a
// compiler everywhere. Run in the package's directory, as npm does.
//
// With --digests (npm's prepack) it checks only that every prebuild present
// was built from the current sources (scripts/addon-digest.mjs): prebuilds/
// is git-ignored but shipped, so a tree that still holds an older prebuild
// would pack it, and the package would refuse to load it. No prebuilds at
// all is fine there: CI packs before it prebuilds.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { embeddedDigest, sourceDigest } from './addon-digest.mjs';

/** The platforms README's Install section promises a prebuild for. */
const PLATFORMS = ['linux-x64', 'linux-arm64'];

/** The non-empty regular `.node` files in `dir` (none when it does not exist). */
function addons(dir) {
  let names;
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((name) => {
      if (!name.endsWith('.node')) return false;
      const st = fs.lstatSync(path.join(dir, name));
      return st.isFile() && st.size > 0;
    })
    .map((name) => path.join(dir, name));
}

const digestsOnly = process.argv[2] === '--digests';

/** Exits 1 with `message`, for npm to stop at. */
function refuse(message) {
  process.stderr.write(`${digestsOnly ? 'prepack' : 'prepublishOnly'}: ${message}\n`);
  process.exit(1);
}

const platforms = fs.existsSync('prebuilds') ? fs.readdirSync('prebuilds') : [];
if (!digestsOnly) {
  const missing = PLATFORMS.filter((platform) => addons(path.join('prebuilds', platform)).length === 0);
  if (missing.length > 0) {
    refuse(
      `no prebuilt addon for ${missing.join(', ')} in prebuilds/: the package would make every ` +
        'user on that platform compile it. Build them with `npm run prebuild` (it cross-compiles the other ' +
        'architecture; see scripts/prebuild.sh), then publish again.',
    );
  }
}
const current = sourceDigest();
const stale = platforms
  .flatMap((platform) => addons(path.join('prebuilds', platform)))
  .filter((file) => embeddedDigest(file) !== current);
if (stale.length > 0) {
  refuse(
    `${stale.join(', ')} ${stale.length === 1 ? 'was' : 'were'} not built from the current sources of the addon ` +
      `(source digest ${current.slice(0, 12)}): the package would refuse to load ${stale.length === 1 ? 'it' : 'them'}. ` +
      'Rebuild the prebuilds with `npm run prebuild`, or delete prebuilds/, then pack again.',
  );
}
