/**
 * The addon builds from the same sources with cmake-js as with node-gyp, and
 * both builds export the same functions and carry the same source digest.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { native } from '../lib/native.js';
import { currentDigest } from './helpers/digest.js';

const ROOT = path.join(__dirname, '..');

it('npm run build:cmake builds an addon with the same exports as the node-gyp build', () => {
  execFileSync('npm', ['run', '--silent', 'build:cmake'], { cwd: ROOT, stdio: 'pipe', timeout: 280_000 });
  const addon = path.join(ROOT, 'build-cmake', 'Release', 'liveupdate.node');
  expect(fs.existsSync(addon)).toBe(true);
  const cmakeBuild = require(addon) as Record<string, unknown>;
  expect(Object.keys(cmakeBuild).sort()).toEqual(Object.keys(native).sort());
  expect(cmakeBuild['abiCheckedAgainst']).toBe(native.abiCheckedAgainst);
  // The same sources, so the same digest, which lib/native.ts checks at load.
  expect(cmakeBuild['sourceDigest']).toBe(currentDigest());
  expect(native.sourceDigest).toBe(currentDigest());
}, 300_000);
