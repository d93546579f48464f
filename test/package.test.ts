/**
 * What the liveupdate package is: the library alone. Its addon holds only
 * the calls the library makes (the test guest's syscalls live in
 * liveupdate-conformance), and its tarball carries no test bed.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import nodeGypBuild from 'node-gyp-build';
import { LIBRARY_DIR } from './helpers/pack.js';

describe('the library package', () => {
  it('has an addon without the test guest syscalls', () => {
    const names = Object.keys(nodeGypBuild(LIBRARY_DIR) as object);
    expect(names).toContain('preserveFd');
    for (const guestOnly of ['mount', 'powerOff', 'setrlimitNofile']) {
      expect(names).not.toContain(guestOnly);
      expect(names).not.toContain(`${guestOnly}Async`);
    }
  });

  it('packs the library and its sources, and nothing of the test bed', () => {
    const out = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: LIBRARY_DIR, encoding: 'utf8', timeout: 60_000 });
    expect(out.status, out.stderr).toBe(0);
    const [packed] = JSON.parse(out.stdout) as [{ files: { path: string }[] }];
    const files = packed.files.map((f) => f.path);
    for (const needed of ['package.json', 'dist/index.js', 'dist/esm/index.mjs', 'bin/liveupdate.js', 'binding.gyp', 'CMakeLists.txt', 'native/luo.cc', 'native/napi_util.cc', 'include/liveupdate/abi.h', 'AGENT-PROTOCOL.md', 'units/liveupdate-agent.service', 'units/liveupdate-agent-standalone.service']) {
      expect(files).toContain(needed);
    }
    const testBed = /^(dist\/(vm|conformance|bench)\/|vm\/|bench\/|conformance\/|test\/|native\/(napi_)?guest)/;
    expect(files.filter((f) => testBed.test(f))).toEqual([]);
  }, 60_000);
});
