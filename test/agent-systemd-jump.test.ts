/**
 * The agent's jump in systemd mode, against a systemctl on PATH that acts
 * out each way `systemctl kexec` can end. The kernel is unloaded (the
 * update refused) only when systemd said no while the system keeps running;
 * once the shutdown has begun, which stops the agent's unit and kills the
 * systemctl still exiting beside it, the kexec is under way and the loaded
 * kernel must stay, or systemd-shutdown's kexec finds nothing loaded and
 * reboots plainly, losing every session.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KexecUnderway } from '../lib/agent/host.js';
import { MANIFEST_FORMAT, type Manifest } from '../lib/agent/manifest.js';
import { SystemdHost } from '../lib/agent/systemd-host.js';
import { expectNoFdLeak } from './helpers/fds.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-systemd-jump-'));
const savedEnv = { ...process.env };

/** systemctl as the test scripts it: `kexec` runs $FAKE_KEXEC, `is-system-running` prints $FAKE_STATE. */
const FAKE_SYSTEMCTL = `#!/bin/sh
case "$1" in
  kexec) eval "$FAKE_KEXEC" ;;
  is-system-running) echo "$FAKE_STATE"; [ "$FAKE_STATE" = running ] ;;
  show) echo yes ;;
  *) exit 2 ;;
esac
`;

const manifest: Manifest = {
  format: MANIFEST_FORMAT,
  version: [1, 0],
  kexecCount: 1,
  updateStartedAt: Date.now(),
  frozenAt: Date.now(),
  next: { kernel: '/boot/next.bzImage', cmdline: 'console=ttyS0' },
  sessions: [],
};

const KEXEC = {
  accepted: 'exit 0',
  refused: 'echo "Failed to start kexec.target: Unit kexec.target is masked." >&2; exit 1',
  killed: 'kill -TERM $$',
} as const;

/** A systemd-mode host whose jump meets systemctl acting out `kexec` with the system in `state`. */
function host(kexec: keyof typeof KEXEC, state: 'running' | 'stopping'): Promise<SystemdHost> {
  process.env['FAKE_KEXEC'] = KEXEC[kexec];
  process.env['FAKE_STATE'] = state;
  return SystemdHost.create({ mode: 'systemd', reason: 'the test', forced: false }, null, path.join(dir, 'no-device'), { NOTIFY_SOCKET: path.join(dir, 'notify'), FDSTORE: '16' });
}

/** How the jump ended: 'underway' (the kernel stays loaded), or the refusal's code. */
async function jump(h: SystemdHost, stopAgent: 'before' | 'after'): Promise<string> {
  const stop = new AbortController();
  if (stopAgent === 'before') stop.abort();
  const jumped = h.jump(manifest, stop.signal);
  if (stopAgent === 'after') setTimeout(() => stop.abort(), 50);
  try {
    await jumped;
    return 'resolved';
  } catch (error) {
    if (error instanceof KexecUnderway) return 'underway';
    return (error as { code?: string }).code ?? String(error);
  }
}

beforeAll(() => {
  fs.writeFileSync(path.join(dir, 'systemctl'), FAKE_SYSTEMCTL, { mode: 0o755 });
  process.env['PATH'] = `${dir}:${process.env['PATH'] ?? ''}`;
});
afterAll(() => {
  process.env = savedEnv;
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("the agent's systemd-mode jump", () => {
  it('waits to be stopped once systemd took the kexec', async () => {
    expect(await jump(await host('accepted', 'running'), 'after')).toBe('underway');
  });

  it('is refused, its manifest closed, when systemd says no and the system keeps running', async () => {
    await expectNoFdLeak(async () => {
      const h = await host('refused', 'running');
      expect(await jump(h, 'after')).toBe('ERR_LIVEUPDATE_UPDATE_REFUSED');
      expect(h.parkedFds()).toEqual([]);
    });
  });

  it('keeps the kernel loaded when systemctl is killed by the shutdown it started', async () => {
    const h = await host('killed', 'stopping');
    expect(await jump(h, 'after')).toBe('underway');
    expect(h.parkedFds().map((p) => p.fdName)).toHaveLength(1);
    h.close();
  });

  it('keeps the kernel loaded when the agent is already being stopped, whatever systemctl said', async () => {
    const h = await host('refused', 'running');
    expect(await jump(h, 'before')).toBe('underway');
    h.close();
  });

  it('is refused when systemctl is killed and the system is still running (no shutdown began)', async () => {
    expect(await jump(await host('killed', 'running'), 'after')).toBe('ERR_LIVEUPDATE_UPDATE_REFUSED');
  });
});
