/**
 * How the agent asks PID 1 what its start needs (the manager's version for
 * the mode, its unit's FileDescriptorStorePreserve= for systemd mode): over
 * PID 1's varlink socket, with no systemctl process, where systemd answers
 * there; from systemctl otherwise, saying the same. A varlink server in this
 * process stands in for PID 1's socket only: the real one answers in the
 * kernel test (test/kernel/agent-systemd.test.ts).
 */
import * as fs from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { askManager, managerVersion, varlinkParameters } from '../lib/agent/mode.js';
import { unitStorePreserve } from '../lib/agent/systemd-host.js';
import { expectNoFdLeak } from './helpers/fds.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-agent-start-'));
const savedPath = process.env['PATH'];

/** A systemctl on PATH that records each run and prints $FAKE_SHOWN for `show`. */
const FAKE_SYSTEMCTL = `#!/bin/sh
echo "$*" >> "${dir}/systemctl-runs"
case "$1" in
  show) echo "$FAKE_SHOWN" ;;
  *) exit 2 ;;
esac
`;

function systemctlRuns(): string[] {
  const file = path.join(dir, 'systemctl-runs');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n') : [];
}

/**
 * A stand-in for PID 1's varlink socket, in a process of its own (as PID 1
 * is: its fds are not this process's). `answers` maps a method to the bytes
 * it sends back, in pieces 10 ms apart (a number: that many x's); a method it does not list gets no
 * reply. Every request is recorded.
 */
async function varlinkServer(answers: Record<string, Array<string | number>>): Promise<{ path: string; requests: () => unknown[]; close: () => Promise<void> }> {
  const name = Math.random().toString(16).slice(2);
  const socketPath = path.join(dir, `${name}.sock`);
  const log = path.join(dir, `${name}.requests`);
  const script = `
    const net = require('node:net'), fs = require('node:fs');
    const [socketPath, log, answers] = process.argv.slice(1);
    const byMethod = JSON.parse(answers);
    net.createServer((socket) => {
      let pending = Buffer.alloc(0);
      socket.on('error', () => {});
      socket.on('data', (chunk) => {
        pending = Buffer.concat([pending, chunk]);
        const end = pending.indexOf(0);
        if (end === -1) return;
        const request = JSON.parse(pending.subarray(0, end).toString());
        fs.appendFileSync(log, JSON.stringify(request) + '\\n');
        (byMethod[request.method] || []).forEach((piece, i) => setTimeout(() => socket.write(typeof piece === 'number' ? 'x'.repeat(piece) : piece), 10 * i));
      });
    }).listen(socketPath, () => console.log('ready'));`;
  const child = spawn(process.execPath, ['-e', script, socketPath, log, JSON.stringify(answers)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the varlink stand-in exited ${String(code)}`)));
  });
  return {
    path: socketPath,
    requests: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown) : []),
    close: () => new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill();
    }),
  };
}

const reply = (parameters: unknown): string => `${JSON.stringify({ parameters })}\0`;

beforeAll(() => {
  fs.writeFileSync(path.join(dir, 'systemctl'), FAKE_SYSTEMCTL, { mode: 0o755 });
  process.env['PATH'] = `${dir}:${savedPath ?? ''}`;
});

afterEach(() => fs.rmSync(path.join(dir, 'systemctl-runs'), { force: true }));

afterAll(() => {
  process.env['PATH'] = savedPath;
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("a varlink reply's parameters", () => {
  it('are the object a reply carries; an error reply, a reply without parameters or no JSON at all give none', () => {
    expect(varlinkParameters(Buffer.from('{"parameters":{"context":{"Version":"262.1-1"}}}'))).toEqual({ context: { Version: '262.1-1' } });
    expect(varlinkParameters(Buffer.from('{"error":"io.systemd.Unit.NoSuchUnit","parameters":{}}'))).toBeNull();
    expect(varlinkParameters(Buffer.from('{"parameters":[1]}'))).toBeNull();
    expect(varlinkParameters(Buffer.from('{}'))).toBeNull();
    expect(varlinkParameters(Buffer.from('{"parameters":'))).toBeNull();
    expect(varlinkParameters(Buffer.from('null'))).toBeNull();
  });
});

describe('asking PID 1 over varlink', () => {
  it('sends one call, NUL-terminated, takes the reply even in pieces, and keeps no fd', async () => {
    const text = reply({ context: { Version: '262.1-1' } });
    const server = await varlinkServer({ 'io.systemd.Manager.Describe': [text.slice(0, 5), text.slice(5, -1), '\0'] });
    try {
      await expectNoFdLeak(async () => {
        expect(await askManager('io.systemd.Manager.Describe', {}, server.path)).toEqual({ context: { Version: '262.1-1' } });
      });
      expect(server.requests()).toEqual([{ method: 'io.systemd.Manager.Describe', parameters: {} }]);
    } finally {
      await server.close();
    }
  });

  it('gives nothing, and keeps no fd, where there is no socket, for an error reply, a reply past 1 MiB, or none in time', async () => {
    const server = await varlinkServer({
      'io.systemd.Unit.List': [`${JSON.stringify({ error: 'io.systemd.Unit.NoSuchUnit', parameters: {} })}\0`],
      'io.systemd.Manager.Describe': ['{"parameters":{"x":"', 600_000, 600_000, '"}}\0'],
    });
    try {
      await expectNoFdLeak(async () => {
        expect(await askManager('io.systemd.Manager.Describe', {}, path.join(dir, 'none.sock'))).toBeNull();
        expect(await askManager('io.systemd.Unit.List', { name: 'a.service' }, server.path)).toBeNull();
        expect(await askManager('io.systemd.Manager.Describe', {}, server.path)).toBeNull();
        const started = Date.now();
        expect(await askManager('io.systemd.Manager.Silent', {}, server.path, 150)).toBeNull();
        expect(Date.now() - started).toBeLessThan(2000);
      });
    } finally {
      await server.close();
    }
  });
});

describe("what the agent's start asks of PID 1", () => {
  it("reads the manager's version and the unit's FileDescriptorStorePreserve= from varlink, running no systemctl", async () => {
    const server = await varlinkServer({
      'org.varlink.service.GetInfo': [reply({ vendor: 'The systemd Project', product: 'systemd (systemd)', version: '262.1 (262.1-1)', url: 'https://systemd.io/', interfaces: ['io.systemd.Manager', 'io.systemd.Unit'] })],
      'io.systemd.Unit.List': [reply({ context: { ID: 'liveupdate-agent.service', Service: { FileDescriptorStoreMax: 4096, FileDescriptorStorePreserve: 'restart' } }, runtime: {} })],
    });
    process.env['FAKE_SHOWN'] = 'yes';
    try {
      expect(await managerVersion(server.path)).toBe(262);
      expect(await unitStorePreserve('liveupdate-agent.service', server.path)).toBe('restart');
      expect(server.requests()).toEqual([
        { method: 'org.varlink.service.GetInfo', parameters: {} },
        { method: 'io.systemd.Unit.List', parameters: { name: 'liveupdate-agent.service' } },
      ]);
      expect(systemctlRuns()).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('asks systemctl for the same properties where varlink has no answer (an older systemd, a reply without the field, a version it cannot read)', async () => {
    const server = await varlinkServer({
      'io.systemd.Unit.List': [reply({ context: { ID: 'liveupdate-agent.service' } })],
      'org.varlink.service.GetInfo': [reply({ product: 'systemd (systemd)', version: 'unknown' })],
    });
    process.env['FAKE_SHOWN'] = '261';
    try {
      expect(await managerVersion(path.join(dir, 'none.sock'))).toBe(261);
      expect(await managerVersion(server.path)).toBe(261);
      process.env['FAKE_SHOWN'] = 'yes';
      expect(await unitStorePreserve('liveupdate-agent.service', server.path)).toBe('yes');
      expect(systemctlRuns()).toEqual(['show --property=Version --value', 'show --property=Version --value', 'show --property=FileDescriptorStorePreserve --value liveupdate-agent.service']);
    } finally {
      await server.close();
    }
  });

  it('says nothing where neither varlink nor systemctl can tell', async () => {
    process.env['PATH'] = path.join(dir, 'no-such-dir');
    try {
      expect(await managerVersion(path.join(dir, 'none.sock'))).toBeNull();
      expect(await unitStorePreserve('liveupdate-agent.service', path.join(dir, 'none.sock'))).toBeNull();
    } finally {
      process.env['PATH'] = `${dir}:${savedPath ?? ''}`;
    }
  });
});

describe("the systemd host's start", () => {
  it('loads no diagnosis (only a device busy past the retries names its holders)', () => {
    const loaded = execFileSync(process.execPath, ['-e', "require('./dist/agent/systemd-host.js'); console.log(Object.keys(require.cache).join('\\n'))"], { cwd: path.join(__dirname, '..'), encoding: 'utf8' });
    const modules = loaded.split('\n').map((m) => path.relative(path.join(__dirname, '..'), m));
    expect(modules).toContain('dist/agent/systemd-host.js');
    expect(modules).not.toContain('dist/diagnosis.js');
  });
});
