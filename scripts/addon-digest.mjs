// The digest of the addon's sources, which the addon and the built JavaScript
// both carry, so that loading an addon built from other sources (a stale
// prebuild packed by mistake) fails at once, naming the file, instead of at
// the first call the old build lacks.
//
// - `node scripts/addon-digest.mjs` prints it: binding.gyp and CMakeLists.txt
//   pass it to the compiler (native/addon.cc). It ships in the package, since
//   a user's source build runs it.
// - `node scripts/addon-digest.mjs --stamp FILE` writes it into FILE (the
//   built dist/native.js, after tsc), in place of lib/native.ts's empty
//   BUILT_SOURCE_DIGEST.
//
// It hashes every regular file under native/ and include/, its path with its
// content (a rename counts), in sorted order: what the package ships there,
// so a source build from the tarball gets the repository's digest. Dotfiles
// and *.orig are left out: npm never packs editors' swap files and patch's
// leftovers, which would otherwise change the digest of the packer's tree alone.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's root: this script's parent directory. */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** What the addon's binary holds before its digest, where a script finds it without loading it. */
const MARKER = 'liveupdate-source-digest=';

/** The files the digest covers, relative to `root`, sorted, with `/` between names. */
export function digestedFiles(root = ROOT) {
  const found = [];
  const walk = (relative) => {
    for (const entry of fs.readdirSync(path.join(root, relative), { withFileTypes: true })) {
      if (entry.name.startsWith('.') || entry.name.endsWith('.orig')) continue;
      const name = `${relative}/${entry.name}`;
      if (entry.isDirectory()) walk(name);
      else if (entry.isFile()) found.push(name);
    }
  };
  walk('native');
  walk('include');
  return found.sort();
}

/** The sha256 (hex) of the addon's sources under `root`. */
export function sourceDigest(root = ROOT) {
  const hash = createHash('sha256');
  for (const file of digestedFiles(root)) {
    const content = fs.readFileSync(path.join(root, file));
    // Lengths first, so that no two different file sets hash the same bytes.
    hash.update(`${file.length}:${file}:${content.length}:`).update(content);
  }
  return hash.digest('hex');
}

/** The digest a built addon carries after MARKER, read from its file; undefined when it has none (a build from before it). */
export function embeddedDigest(addonFile) {
  const bytes = fs.readFileSync(addonFile);
  const at = bytes.indexOf(MARKER);
  if (at < 0) return undefined;
  const digest = bytes.toString('latin1', at + MARKER.length, at + MARKER.length + 64);
  return /^[0-9a-f]{64}$/.test(digest) ? digest : undefined;
}

/** Writes `digest` into the built JavaScript `file` in place of its one empty BUILT_SOURCE_DIGEST. */
function stamp(file, digest) {
  const empty = "const BUILT_SOURCE_DIGEST = '';";
  const text = fs.readFileSync(file, 'utf8');
  const parts = text.split(empty);
  if (parts.length !== 2) throw new Error(`${file}: expected \`${empty}\` once, found it ${parts.length - 1} times`);
  fs.writeFileSync(file, parts.join(`const BUILT_SOURCE_DIGEST = '${digest}';`));
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [option, file] = process.argv.slice(2);
  if (option === '--stamp' && file !== undefined) stamp(file, sourceDigest());
  else if (option === undefined) process.stdout.write(`${sourceDigest()}\n`);
  else throw new Error('usage: node scripts/addon-digest.mjs [--stamp FILE]');
}
