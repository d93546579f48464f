import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const BIN = path.join(__dirname, '..', 'bin', 'liveupdate.js');

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
}

describe('liveupdate CLI', () => {
  it('status --json on a kernel without LUO: exit 1 and the reason', () => {
    const result = run('status', '--json', '--no-probe');
    expect(result.status).toBe(1);
    const status = JSON.parse(result.stdout) as { available: boolean; reason: string; deviceExists: boolean };
    expect(status.available).toBe(false);
    expect(status.deviceExists).toBe(false);
    expect(status.reason).toMatch(/liveupdate=on|CONFIG_LIVEUPDATE/);
  });

  it('status prints a readable table', () => {
    const result = run('status', '--no-probe');
    expect(result.stdout).toMatch(/^available: +no \(/m);
    expect(result.stdout).toMatch(/^device: +\/dev\/liveupdate missing$/m);
  });

  it('an unknown command exits 2 with the usage', () => {
    const result = run('frobnicate');
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("unknown command 'frobnicate'");
    expect(result.stderr).toContain('usage:');
  });

  it('kexec-load without --kernel explains itself', () => {
    const result = run('kexec-load', '--cmdline', 'x');
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('--kernel is required');
  });
});
