/**
 * include/liveupdate/abi.h against the kernel's own <linux/liveupdate.h>,
 * from the linux-source trees that vm/build-kernel.sh unpacked: the build-time
 * check in native/abi_check.cc must pass on each, and must fail on a header
 * whose layout differs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { kernelTestsSkipped } from './helpers/kernel-gate.js';

const ROOT = path.join(__dirname, '..');
const CACHE = process.env.LIVEUPDATE_CACHE ?? path.join(os.homedir(), '.cache', 'liveupdate');

function kernelHeaders(): string[] {
  const src = path.join(CACHE, 'src');
  if (!fs.existsSync(src)) return [];
  return fs
    .readdirSync(src)
    .map((series) => path.join(src, series, 'linux', 'include', 'uapi', 'linux', 'liveupdate.h'))
    .filter((header) => fs.existsSync(header));
}

/** Compiles native/abi_check.cc with `header` standing in for <linux/liveupdate.h>. */
function compileAgainst(header: string): { ok: boolean; stderr: string; checked: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-abi-'));
  try {
    fs.mkdirSync(path.join(dir, 'linux'));
    fs.copyFileSync(header, path.join(dir, 'linux', 'liveupdate.h'));
    const object = path.join(dir, 'abi_check.o');
    const result = spawnSync('g++', ['-std=c++20', '-c', '-I', dir, '-I', path.join(ROOT, 'include'), path.join(ROOT, 'native', 'abi_check.cc'), '-o', object], {
      encoding: 'utf8',
    });
    const checked = result.status === 0 ? execFileSync('strings', [object], { encoding: 'utf8' }) : '';
    return { ok: result.status === 0, stderr: result.stderr, checked };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const headers = kernelHeaders();

describe.skipIf(kernelTestsSkipped())('ABI header against the kernel sources', () => {
  it('has kernel sources to compare with (npm run vm:kernel unpacks them)', () => {
    expect(headers, `no linux-source tree under ${CACHE}/src: run npm run vm:kernel`).not.toHaveLength(0);
  });

  it.each(headers)('matches %s', (header) => {
    const result = compileAgainst(header);
    expect(result.stderr).toBe('');
    expect(result.ok).toBe(true);
    expect(result.checked).toContain('linux/liveupdate.h');
  });

  it.each(headers)('the check fails when a layout differs from %s', (header) => {
    const tampered = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lu-abi-bad-')), 'liveupdate.h');
    fs.writeFileSync(tampered, fs.readFileSync(header, 'utf8').replace(/(struct liveupdate_session_preserve_fd \{\s*__u32\s+size;)/, '$1\n\t__u32 extra;'));
    const result = compileAgainst(tampered);
    expect(result.ok).toBe(false);
    expect(result.stderr).toMatch(/static assertion failed|static_assert/);
  });
});
