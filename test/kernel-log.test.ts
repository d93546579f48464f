/**
 * readKernelLog() on the host: the kernel's log as this process may read it
 * (the same reader status() uses), and null where the kernel says no.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runProcess } from '../conformance/lib/harness/process.js';
import { readKernelLog } from '../lib/diagnosis.js';
import { openFds } from './helpers/fds.js';

const ROOT = path.join(__dirname, '..');
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

/** Whether the kernel lets an unprivileged process read its log (kernel.dmesg_restrict 0). */
function unprivilegedMayRead(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/dmesg_restrict', 'utf8').trim() === '0';
  } catch {
    return true;
  }
}

describe('readKernelLog', () => {
  it.runIf(isRoot && fs.existsSync('/dev/kmsg'))('returns a message written to the kernel log, as its own line, and keeps no fd', () => {
    // Root may write a record into the log through /dev/kmsg: a line no other code could have put there.
    const marker = `liveupdate test: kernel log marker ${randomUUID()}`;
    fs.writeFileSync('/dev/kmsg', `${marker}\n`);
    const before = openFds().length;
    const log = readKernelLog();
    expect(openFds().length).toBe(before);
    expect(log?.split('\n')).toContain(marker);
  });

  it.runIf(isRoot && !unprivilegedMayRead())('is null for a user the kernel does not let read it (dmesg_restrict 1)', async () => {
    const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))}).readKernelLog()))`;
    const child = await runProcess(process.execPath, ['-e', script], { uid: NOBODY, gid: NOBODY, timeoutMs: 10_000 });
    expect(child.stderr).toBe('');
    expect(JSON.parse(child.stdout)).toBeNull();
  });
});
