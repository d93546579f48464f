/**
 * The agent's modes on this host (no LUO, PID 1 not systemd): which mode a
 * host gets and why, what refuses to start, how the sessions systemd hands
 * back after a kexec are matched to the manifest by FDNAME, and how many
 * sessions the unit's fd store can keep. What needs a real systemd and LUO
 * kernel is test/kernel/agent-systemd.test.ts.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fdNameOf } from '../lib/agent/fdstore.js';
import type { ManifestSession } from '../lib/agent/manifest.js';
import { decideMode, parseSystemdVersion, type ModeFacts } from '../lib/agent/mode.js';
import { checkClientName } from '../lib/agent/names.js';
import { Agent } from '../lib/agent/server.js';
import { describeHandedBack, STORE_OVERHEAD, storeCapacity, storeFull, SystemdHost, unitOfCgroup } from '../lib/agent/systemd-host.js';
import { main } from '../lib/cli.js';
import { AgentModeError } from '../lib/errors.js';
import { heldByAgent, type AgentInfo } from '../lib/status.js';
import { openFds } from './helpers/fds.js';

const SYSTEMD_262: ModeFacts = { pid1: 'systemd', systemdVersion: 262, luo: true };
const MODE_ERROR = { constructor: AgentModeError, code: 'ERR_LIVEUPDATE_AGENT_MODE', errno: -95, operation: 'agent.start' };

describe('which mode a host gets', () => {
  it.each<[string, ModeFacts, 'systemd' | 'standalone', RegExp]>([
    ['systemd 262 and LUO: systemd', SYSTEMD_262, 'systemd', /^PID 1 is systemd 262 \(v261\+ keeps fd stores across a kexec\) and the kernel has LUO$/],
    ['systemd 261 and LUO: systemd', { ...SYSTEMD_262, systemdVersion: 261 }, 'systemd', /PID 1 is systemd 261/],
    ['systemd 260: standalone (its fd stores do not survive a kexec)', { ...SYSTEMD_262, systemdVersion: 260 }, 'standalone', /systemd 260, older than 261/],
    ['systemd 262 without LUO: standalone', { ...SYSTEMD_262, luo: false }, 'standalone', /no LUO device/],
    ['another PID 1: standalone', { pid1: 'init', systemdVersion: null, luo: true }, 'standalone', /^PID 1 is init, not systemd$/],
    ['PID 1 unreadable: standalone', { pid1: null, systemdVersion: null, luo: true }, 'standalone', /unknown/],
    ['systemd whose version cannot be read: standalone', { ...SYSTEMD_262, systemdVersion: null }, 'standalone', /unknown version/],
  ])('%s', (_title, facts, mode, reason) => {
    const decision = decideMode(facts);
    expect(decision).toMatchObject({ mode, forced: false });
    expect(decision.reason).toMatch(reason);
  });

  it('standalone asked for on systemd 261+ is refused, saying why and how to force it; forced, it runs and says so', () => {
    expect(() => decideMode(SYSTEMD_262, { mode: 'standalone' })).toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/PID 1 is systemd 262.*LUOSession=.*--mode systemd.*--force/) }));
    // Refused even where the kernel has no LUO yet: the unit would hold the device after the next boot.
    expect(() => decideMode({ ...SYSTEMD_262, luo: false }, { mode: 'standalone' })).toThrow(AgentModeError);
    expect(decideMode(SYSTEMD_262, { mode: 'standalone', force: true })).toEqual({ mode: 'standalone', reason: 'forced (--mode standalone --force) although PID 1 is systemd 262', forced: true });
  });

  it('standalone asked for where systemd does not take part runs without --force', () => {
    expect(decideMode({ ...SYSTEMD_262, systemdVersion: 255 }, { mode: 'standalone' })).toMatchObject({ mode: 'standalone', forced: false });
  });

  it('systemd mode asked for without systemd 261+ as PID 1 is refused, forced or not', () => {
    for (const facts of [{ pid1: 'init', systemdVersion: null, luo: true }, { ...SYSTEMD_262, systemdVersion: 255 }]) {
      expect(() => decideMode(facts, { mode: 'systemd' })).toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/systemd mode needs systemd 261 or later as PID 1/) }));
    }
    expect(decideMode({ ...SYSTEMD_262, luo: false }, { mode: 'systemd' })).toMatchObject({ mode: 'systemd' });
  });

  it("reads the major version from the manager's Version property", () => {
    expect([parseSystemdVersion('262.1-1\n'), parseSystemdVersion('255'), parseSystemdVersion(''), parseSystemdVersion('v262')]).toEqual([262, 255, null, null]);
  });
});

describe("the unit's fd store", () => {
  it('keeps FileDescriptorStoreMax= less the state and manifest for sessions, and no more than the policy allows', () => {
    expect(STORE_OVERHEAD).toBe(2);
    expect(storeCapacity('4096', null)).toBe(4094);
    expect(storeCapacity('3', null)).toBe(1);
    expect(storeCapacity('4096', 10)).toBe(10);
    expect(storeCapacity('8', 100)).toBe(6);
  });

  it('a unit without a store, or one too small for a session, is refused with what to set', () => {
    for (const value of [undefined, '', '0']) {
      expect(() => storeCapacity(value, null)).toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/has none \(\$FDSTORE is not set\).*FileDescriptorStoreMax=.*FileDescriptorStorePreserve=yes/) }));
    }
    expect(() => storeCapacity('2', null)).toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/FileDescriptorStoreMax=2 leaves no room/) }));
    expect(() => storeCapacity('many', null)).toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/not a count/) }));
  });

  it('is full once the sessions in it and the creates in progress reach its room', () => {
    expect([storeFull(0, 1), storeFull(1, 1), storeFull(5, 4), storeFull(10_000, null)]).toEqual([false, true, true, false]);
  });

  it("finds the agent's unit in its cgroup", () => {
    expect(unitOfCgroup('0::/system.slice/liveupdate-agent.service\n')).toBe('liveupdate-agent.service');
    expect(unitOfCgroup('12:pids:/\n0::/user.slice/user-0.slice/session-1.scope\n')).toBeNull();
    expect(unitOfCgroup('')).toBeNull();
  });

  it('systemd mode outside a unit (no NOTIFY_SOCKET) or in one without a store does not start', async () => {
    const decision = { mode: 'systemd' as const, reason: 'test', forced: false };
    await expect(SystemdHost.create(decision, null, '/dev/liveupdate', {})).rejects.toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/NOTIFY_SOCKET is not set/) }));
    await expect(SystemdHost.create(decision, null, '/dev/liveupdate', { NOTIFY_SOCKET: '/run/systemd/notify' })).rejects.toThrow(expect.objectContaining({ ...MODE_ERROR, message: expect.stringMatching(/has none/) }));
  });
});

describe('sessions handed back after the kexec, matched by FDNAME', () => {
  const saved = (kernelName: string, owner: number): ManifestSession => ({ kernelName, name: kernelName.replace(/^u\d+\./, ''), owner, metadata: { owner }, createdAt: 1 });
  const alice = saved('u1001.vm', 1001);
  const bob = saved('u1002.vm', 1002);
  // The FDNAME the agent stores a session under: "luo-" and 32 hex digits of SHA-256 of its kernel name, computed here on its own.
  const fdName = (kernelName: string): string => `luo-${createHash('sha256').update(kernelName).digest('hex').slice(0, 32)}`;

  it('each session is described by the manifest entry stored under its FDNAME', () => {
    expect(fdNameOf('u1001.vm')).toBe(fdName('u1001.vm'));
    const handed = [
      { fdName: fdName('u1002.vm'), kernelName: 'u1002.vm', fd: 7 },
      { fdName: fdName('u1001.vm'), kernelName: 'u1001.vm', fd: 8 },
    ];
    expect(describeHandedBack([alice, bob], handed)).toEqual({
      described: [
        { ...handed[0], saved: bob },
        { ...handed[1], saved: alice },
      ],
      missing: [],
    });
  });

  it('a session the manifest does not describe is kept, known by its name; an entry nobody handed back is missing', () => {
    const handed = [
      // Stored under alice's FDNAME, but the session bears another name: not alice's entry.
      { fdName: fdName('u1001.vm'), kernelName: 'u1001.other' },
      { fdName: fdName('root-vm'), kernelName: 'root-vm' },
    ];
    const { described, missing } = describeHandedBack([alice, bob], handed);
    expect(described.map((d) => d.saved)).toEqual([
      { kernelName: 'u1001.other', name: 'other', owner: 1001, metadata: null, createdAt: 0 },
      { kernelName: 'root-vm', name: 'root-vm', owner: 0, metadata: null, createdAt: 0 },
    ]);
    expect(missing).toEqual([alice, bob]);
  });
});

describe('names the agent never uses', () => {
  it("root may not name a session 'systemd' (systemd's own)", () => {
    expect(() => checkClientName('systemd', 0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/systemd's own session/) }));
    // A user's 'systemd' is u<uid>.systemd in the kernel: no clash.
    expect(checkClientName('systemd', 1000)).toBe('systemd');
  });
});

describe('status with an agent', () => {
  const busy = { id: 'device-busy' as const, reason: 'busy', fix: 'stop it' };
  const standalone: AgentInfo = { pid: 42, mode: 'standalone', reason: 'test', socket: '/run/liveupdate/agent.sock' };

  it('a device held only by the standalone agent is LUO available through it', () => {
    expect(heldByAgent(busy, [{ pid: 42, command: 'node' }], standalone)).toBe(true);
  });

  it('held by anyone else too, by an agent in systemd mode (it never holds it for long), or with no agent: busy', () => {
    expect(heldByAgent(busy, [{ pid: 42, command: 'node' }, { pid: 7, command: 'other' }], standalone)).toBe(false);
    expect(heldByAgent(busy, [{ pid: 7, command: 'other' }], standalone)).toBe(false);
    expect(heldByAgent(busy, [{ pid: 42, command: 'node' }], { ...standalone, mode: 'systemd' })).toBe(false);
    expect(heldByAgent(busy, [{ pid: 42, command: 'node' }], null)).toBe(false);
    expect(heldByAgent(null, [], standalone)).toBe(false);
  });
});

describe('starting an agent in a mode', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-agent-mode-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('standalone on a systemd 262 host is refused before anything is opened; forced, its first event says so', async () => {
    const socket = path.join(dir, 'forced.sock');
    const before = openFds();
    await expect(Agent.start({ socket, mode: 'standalone', modeFacts: SYSTEMD_262 })).rejects.toMatchObject(MODE_ERROR);
    expect(openFds()).toEqual(before);
    expect(fs.existsSync(socket)).toBe(false);
    const events: string[] = [];
    const agent = await Agent.start({ socket, mode: 'standalone', force: true, modeFacts: SYSTEMD_262, log: (e) => events.push(JSON.stringify(e)) });
    try {
      expect(JSON.parse(events[0] ?? '{}')).toMatchObject({ event: 'mode', mode: 'standalone', forced: true });
      expect(agent.mode).toMatchObject({ mode: 'standalone', forced: true });
    } finally {
      await agent.stop();
    }
  });

  it('the default on a systemd 262 host is systemd mode, which outside a unit with an fd store does not start', async () => {
    const before = openFds();
    const saved = process.env['NOTIFY_SOCKET'];
    delete process.env['NOTIFY_SOCKET'];
    try {
      await expect(Agent.start({ socket: path.join(dir, 'default.sock'), modeFacts: SYSTEMD_262 })).rejects.toMatchObject({ ...MODE_ERROR, message: expect.stringMatching(/systemd mode runs as a service of systemd/) });
    } finally {
      if (saved !== undefined) process.env['NOTIFY_SOCKET'] = saved;
    }
    expect(openFds()).toEqual(before);
  });

  it('liveupdate agent: an unknown --mode and --force without standalone are usage errors (exit 2)', async () => {
    const err: string[] = [];
    const out = { stdout: () => {}, stderr: (text: string) => err.push(text) };
    expect(await main(['agent', '--mode', 'luod'], out)).toBe(2);
    expect(await main(['agent', '--force'], out)).toBe(2);
    expect(err.join('')).toMatch(/--mode must be systemd or standalone[\s\S]*--force goes with --mode standalone only/);
  });
});
