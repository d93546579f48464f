/**
 * What a user installs: a clean checkout (`npm ci` without install scripts,
 * so no addon is built and nothing is in dist/) makes the prebuilds
 * (`npm run prebuild`) and packs both packages (their `prepack` builds what
 * ships). The tarballs are then installed into fresh projects elsewhere and
 * used there: the library on a PATH without any compiler, make or python
 * (it must load its prebuild), and both packages with a forced source build
 * (the fallback where no prebuild fits).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanCopy, installTarballs, LIBRARY_DIR, pack, pathWithoutBuildTools, run, type Outcome } from './helpers/pack.js';

const MINUTES = 60_000;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-pack-'));
/** Both packages, built from source at install. */
const sourceBuilt = path.join(scratch, 'source-built');
/** The library alone, installed where no compiler is. */
const noCompiler = path.join(scratch, 'no-compiler');
const noCompilerPath = pathWithoutBuildTools(path.join(scratch, 'bin'));

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }), 5 * MINUTES);

describe('packing a clean checkout', () => {
  let tarballs: { library: string; conformance: string };
  let files: { library: string[]; conformance: string[] };
  const installs: { noCompiler?: Outcome; sourceBuilt?: Outcome } = {};

  beforeAll(() => {
    const repo = cleanCopy(path.join(scratch, 'repo'));
    run('npm', ['ci', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], repo);
    expect(fs.existsSync(path.join(repo, 'dist'))).toBe(false);
    run('npm', ['run', 'prebuild'], repo);
    const library = pack(repo, scratch, { prepack: true });
    const conformance = pack(path.join(repo, 'conformance'), scratch, { prepack: true });
    tarballs = { library, conformance };
    files = { library: tarballFiles(library), conformance: tarballFiles(conformance) };
    installs.noCompiler = installTarballs(noCompiler, [library], { ...process.env, PATH: noCompilerPath });
    installs.sourceBuilt = installTarballs(sourceBuilt, [library, conformance], { ...process.env, npm_config_build_from_source: 'true' });
    // How long each install took, for the record (never asserted: no timing in tests).
    process.stderr.write(`[pack] install without a compiler: ${installs.noCompiler.ms} ms; with source builds of both addons: ${installs.sourceBuilt.ms} ms\n`);
  }, 20 * MINUTES);

  it('ships the built JavaScript, the declarations and the prebuilds', () => {
    expect(files.library).toEqual(
      expect.arrayContaining([
        'package/dist/index.js',
        'package/dist/index.d.ts',
        'package/dist/esm/index.mjs',
        'package/dist/esm/index.d.mts',
        'package/prebuilds/linux-x64/liveupdate.glibc.node',
        'package/prebuilds/linux-arm64/liveupdate.glibc.node',
      ]),
    );
    expect(files.conformance).toEqual(expect.arrayContaining(['package/dist/index.js', 'package/dist/conformance/cli.js', 'package/dist/vm/guest.js']));
  });

  it("ships the addon's sources the digest covers, exactly, and the script a source build runs for it", () => {
    // A source build from the tarball must get the digest its JavaScript and prebuilds were built with.
    const script = "import('./scripts/addon-digest.mjs').then((m) => console.log(JSON.stringify(m.digestedFiles())))";
    const digested = JSON.parse(run(process.execPath, ['-e', script], path.join(scratch, 'repo')).stdout) as string[];
    const shipped = files.library.filter((f) => /^package\/(native|include)\//.test(f)).map((f) => f.slice('package/'.length));
    expect(shipped.sort()).toEqual(digested);
    expect(files.library).toContain('package/scripts/addon-digest.mjs');
  });

  it('has types a checker trusts: @arethetypeswrong/cli finds no problem in either tarball', () => {
    const attw = path.join(LIBRARY_DIR, 'node_modules', '.bin', 'attw');
    for (const tarball of [tarballs.library, tarballs.conformance]) {
      const out = spawnSync(attw, [tarball, '--format', 'ascii'], { encoding: 'utf8' });
      expect(out.status, `${out.stdout}\n${out.stderr}`).toBe(0);
      expect(out.stdout).toContain('No problems found');
    }
    // No source map ships: they would point at sources that do not.
    expect([...files.library, ...files.conformance].filter((f) => f.endsWith('.map'))).toEqual([]);
  }, 2 * MINUTES);

  it('has no compiler on the PATH of the compiler-free install', () => {
    for (const tool of ['g++', 'gcc', 'make', 'python3']) {
      expect(spawnSync('sh', ['-c', `command -v ${tool}`], { env: { PATH: noCompilerPath } }).status, tool).not.toBe(0);
    }
  });

  it('without a compiler: installs from the prebuild, loads and works, from CommonJS and ESM', () => {
    const pkg = path.join(noCompiler, 'node_modules', 'liveupdate');
    expect(fs.existsSync(path.join(pkg, 'build')), 'nothing was compiled').toBe(false);
    const out = useLibrary(noCompiler);
    expect(out).toMatchObject({ same: true, memfd: true });
    expect(out.addon).toBe(path.join(fs.realpathSync(pkg), 'prebuilds', `linux-${process.arch}`, 'liveupdate.glibc.node'));
  });

  it('from source (forced): builds both addons, and both commands run', () => {
    const bin = (name: string): string => path.join(sourceBuilt, 'node_modules', '.bin', name);
    expect(fs.existsSync(path.join(sourceBuilt, 'node_modules', 'liveupdate', 'build', 'Release', 'liveupdate.node'))).toBe(true);
    expect(fs.existsSync(path.join(sourceBuilt, 'node_modules', 'liveupdate-conformance', 'build', 'Release', 'liveupdate_guest.node'))).toBe(true);
    expect(useLibrary(sourceBuilt).addon).toMatch(/\/build\/Release\/liveupdate\.node$/);
    // No LUO on this host: status says so and exits 1.
    const status = spawnSync(bin('liveupdate'), ['status', '--json'], { cwd: sourceBuilt, encoding: 'utf8' });
    expect(status.status, status.stderr).toBe(1);
    expect(JSON.parse(status.stdout)).toMatchObject({ available: false });
    expect(run(bin('liveupdate-conformance'), ['--help'], sourceBuilt).stdout).toMatch(/^usage: liveupdate-conformance --kernel PATH/);
  });
});

/** Imports the installed library both ways in `project`, makes a memfd, and says which addon file is loaded. */
function useLibrary(project: string): { same: boolean; memfd: boolean; addon: string | undefined } {
  const script = `
    import * as esm from 'liveupdate';
    import { createRequire } from 'node:module';
    const require = createRequire(import.meta.url);
    const cjs = require('liveupdate');
    const fd = cjs.memfd.createSync('packed');
    const addon = Object.keys(require.cache).find((file) => file.endsWith('.node'));
    console.log(JSON.stringify({ same: esm.Session === cjs.Session, memfd: fd > 2, addon }));`;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: project, encoding: 'utf8' })) as ReturnType<typeof useLibrary>;
}

/** The paths inside a tarball. */
function tarballFiles(tarball: string): string[] {
  return execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean);
}
