/**
 * `npm run demo`'s command line on the host, without booting anything: which
 * host the demo runs on (`--host initramfs|systemd`), and what it says for a
 * wrong one or a missing systemd image.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDemoArgs } from '../lib/demo/main.js';

const MAIN = path.resolve(__dirname, '..', 'dist', 'demo', 'main.js');

describe('npm run demo --host', () => {
  it('runs in the initramfs unless told otherwise, on systemd with --host systemd', () => {
    expect(parseDemoArgs([])).toEqual({ mib: 256, host: 'initramfs' });
    expect(parseDemoArgs(['--host', 'systemd', '--memory', '16'])).toEqual({ mib: 16, host: 'systemd' });
    expect(parseDemoArgs(['--host=initramfs'])).toEqual({ mib: 256, host: 'initramfs' });
  });

  it('refuses another host, naming both it takes, with the usage', () => {
    const said = parseDemoArgs(['--host', 'openrc']);
    expect(said).toMatch(/^--host takes initramfs or systemd, got openrc\nusage: npm run demo .*--host initramfs\|systemd/);
  });

  it('exits 2 for a wrong host and 0 for --help, before booting anything', () => {
    const wrong = spawnSync(process.execPath, [MAIN, '--host', 'upstart'], { encoding: 'utf8', timeout: 30_000 });
    expect([wrong.status, wrong.stdout, wrong.stderr.split('\n')[0]]).toEqual([2, '', '--host takes initramfs or systemd, got upstart']);
    const help = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8', timeout: 30_000 });
    expect([help.status, /--host initramfs\|systemd/.test(help.stderr)]).toEqual([0, true]);
  });

  it('without the systemd image says in one line how to build it, and exits 3', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'demo-no-image-'));
    try {
      const run = spawnSync(process.execPath, [MAIN, '--host', 'systemd', '--memory', '16'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, LIVEUPDATE_CACHE: empty } });
      expect([run.status, run.stdout, run.stderr.trim().split('\n').length]).toEqual([3, '', 1]);
      expect(run.stderr).toMatch(/^no systemd guest image built: run `npm run vm:systemd-image`/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('npm run demo, the script', () => {
  it("builds both packages, then runs the workspace's demo: what the kernel tests run, without the build", () => {
    const root = path.resolve(__dirname, '..', '..');
    const scripts = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const steps = scripts['demo']!.split(' && ');
    expect(steps.at(-1)).toBe('npm run demo -w liveupdate-conformance --');
    expect(steps.slice(0, -1)).toEqual(['npm run build:ts', 'npm run build:ts -w liveupdate-conformance']);
  });
});
