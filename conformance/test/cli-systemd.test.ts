/**
 * `liveupdate-conformance --systemd` on the host, without booting anything:
 * the flag in the usage, what it refuses before any boot, the one line it
 * says when the systemd image is not built, and which cases it runs.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fakeBzImage } from './fake-kernel.js';

const root = path.resolve(__dirname, '..');
const BIN = path.join(root, 'bin', 'liveupdate-conformance.js');
/** The compiled suite: it finds its scenario modules next to itself, as built JavaScript. */
const { SYSTEMD_SCENARIOS, suiteCases } = createRequire(__filename)(path.join(root, 'dist', 'conformance', 'suite.js')) as typeof import('../lib/conformance/suite.js');

describe('liveupdate-conformance --systemd', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'conformance-systemd-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const run = (env: Record<string, string>, ...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });

  it('is in the usage, with how to build the image', () => {
    const help = run({}, '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--systemd\s+run the systemd cases instead, on the cached systemd guest image/);
    expect(help.stdout).toContain('`npm run vm:systemd-image`');
  });

  it('refuses --initrd with it (that guest boots from its disk), exit 2 before booting anything', () => {
    const initrd = path.join(tmp, 'extra.cpio');
    fs.writeFileSync(initrd, '');
    const refused = run({}, '--kernel', fakeBzImage(tmp), '--systemd', '--initrd', initrd);
    expect([refused.status, refused.stdout]).toEqual([2, '']);
    expect(refused.stderr).toContain('--initrd does not apply with --systemd');
  });

  it('without the systemd image says in one line what to run, exit 2, nothing on stdout', () => {
    const empty = fs.mkdtempSync(path.join(tmp, 'cache-'));
    const missing = run({ LIVEUPDATE_CACHE: empty }, '--kernel', fakeBzImage(tmp), '--systemd');
    expect([missing.status, missing.stdout]).toEqual([2, '']);
    const lines = missing.stderr.trim().split('\n');
    expect(lines.at(-1)).toMatch(/^liveupdate-conformance: no systemd guest image built: run `npm run vm:systemd-image`/);
    expect(lines.filter((l) => !l.startsWith('[conformance'))).toHaveLength(1);
  });

  it('runs the library-on-systemd cases and the agent systemd mode cases, one boot each', () => {
    expect(SYSTEMD_SCENARIOS).toEqual(['systemd', 'agent-systemd']);
    const names = suiteCases(SYSTEMD_SCENARIOS).map((c) => c.name);
    expect(names.filter((n) => n.startsWith('systemd/')).length).toBeGreaterThan(0);
    expect(names).toContain('agent-systemd/update-through-systemd');
  });
});
