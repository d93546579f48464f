/**
 * A clean checkout packs into packages that work: `npm ci` without install
 * scripts (so no addon is built and nothing is in dist/), `npm pack` of both
 * packages (their `prepack` builds what ships), then both tarballs installed
 * into a fresh project elsewhere and used there through their entry points
 * and commands, as a user would.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanCopy, installTarballs, pack, run } from './helpers/pack.js';

const MINUTES = 60_000;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-pack-'));
const project = path.join(scratch, 'project');

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('npm pack in a clean checkout', () => {
  let files: { library: string[]; conformance: string[] };

  beforeAll(() => {
    const repo = cleanCopy(path.join(scratch, 'repo'));
    run('npm', ['ci', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], repo);
    expect(fs.existsSync(path.join(repo, 'dist'))).toBe(false);
    const library = pack(repo, scratch, { prepack: true });
    const conformance = pack(path.join(repo, 'conformance'), scratch, { prepack: true });
    files = { library: tarballFiles(library), conformance: tarballFiles(conformance) };
    installTarballs(project, [library, conformance]);
  }, 15 * MINUTES);

  it('ships the built JavaScript and declarations of both packages', () => {
    expect(files.library).toEqual(expect.arrayContaining(['package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/esm/index.mjs', 'package/dist/esm/index.d.mts']));
    expect(files.conformance).toEqual(expect.arrayContaining(['package/dist/index.js', 'package/dist/conformance/cli.js', 'package/dist/vm/guest.js']));
  });

  it('loads from CommonJS and ESM in the project it was installed into', () => {
    const script = `
      import * as esm from 'liveupdate';
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)('liveupdate');
      const fd = cjs.memfd.createSync('packed');
      console.log(JSON.stringify({ same: esm.Session === cjs.Session, memfd: fd > 2, resolved: import.meta.resolve('liveupdate') }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: project, encoding: 'utf8' })) as { same: boolean; memfd: boolean; resolved: string };
    expect(out).toMatchObject({ same: true, memfd: true });
    expect(out.resolved).toBe(`file://${fs.realpathSync(project)}/node_modules/liveupdate/dist/esm/index.mjs`);
  });

  it('installs both commands, and they run', () => {
    const bin = (name: string): string => path.join(project, 'node_modules', '.bin', name);
    // No LUO on this host: status says so and exits 1.
    const status = spawnSync(bin('liveupdate'), ['status', '--json', '--no-probe'], { cwd: project, encoding: 'utf8' });
    expect(status.status, status.stderr).toBe(1);
    expect(JSON.parse(status.stdout)).toMatchObject({ available: false });
    expect(run(bin('liveupdate-conformance'), ['--help'], project).stdout).toMatch(/^usage: liveupdate-conformance --kernel PATH/);
  });
});

/** The paths inside a tarball. */
function tarballFiles(tarball: string): string[] {
  return execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean);
}
