// npm's prepublishOnly: refuses to publish a package without the prebuilt
// addon of every platform it promises (README, Install), since `npm pack`
// in a clone has no prebuilds/ and would ship a package that needs a
// compiler everywhere. Run in the package's directory, as npm does.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The platforms README's Install section promises a prebuild for. */
const PLATFORMS = ['linux-x64', 'linux-arm64'];

/** Whether `dir` holds a non-empty regular `.node` file. */
function hasAddon(dir) {
  let names;
  try {
    names = fs.readdirSync(dir);
  } catch {
    return false;
  }
  return names.some((name) => {
    if (!name.endsWith('.node')) return false;
    const st = fs.lstatSync(path.join(dir, name));
    return st.isFile() && st.size > 0;
  });
}

const missing = PLATFORMS.filter((platform) => !hasAddon(path.join('prebuilds', platform)));
if (missing.length > 0) {
  process.stderr.write(
    `prepublishOnly: no prebuilt addon for ${missing.join(', ')} in prebuilds/: the package would make every ` +
      'user on that platform compile it. Build them with `npm run prebuild` (it cross-compiles the other ' +
      'architecture; see scripts/prebuild.sh), then publish again.\n',
  );
  process.exit(1);
}
