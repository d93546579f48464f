/**
 * examples/: each program compiles with `tsc --strict` against the built
 * package as a user's project would (only `import ... from 'liveupdate'`),
 * and runs here, a host without LUO and without an agent, to the typed
 * error and the exit status examples/README.md documents for that case.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recvFdsSync, statusSync } from '../lib/index.js';
import { native } from '../lib/native.js';
import { LIBRARY_DIR } from './helpers/pack.js';
import { userProject, userTsc } from './helpers/typecheck.js';

const EXAMPLES_DIR = path.join(LIBRARY_DIR, 'examples');
const EXAMPLES = fs.readdirSync(EXAMPLES_DIR).filter((f) => f.endsWith('.ts'));
const project = userProject('liveupdate-examples-');
afterAll(() => fs.rmSync(project, { recursive: true, force: true }));

/** No LUO device and no agent, wherever these tests run. */
const MISSING = path.join(project, 'missing');

/** Runs a compiled example with `args` and the environment it reads. */
function runExample(name: string, args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  const script = path.join(project, 'out', name.replace(/\.ts$/, '.mjs'));
  const clean = { PATH: process.env['PATH'] ?? '', LIVEUPDATE_DEVICE: `${MISSING}/liveupdate`, LIVEUPDATE_AGENT_SOCKET: `${MISSING}/agent.sock`, ...env };
  return spawnSync(process.execPath, [script, ...args], { cwd: project, encoding: 'utf8', env: clean, timeout: 30_000 });
}

let compiled: { output: string; status: number | null } | undefined;

beforeAll(() => {
  // Each example as an ES module (.mts), as a user with "type": "module" would have it, compiled into out/.
  for (const file of EXAMPLES) fs.copyFileSync(path.join(EXAMPLES_DIR, file), path.join(project, file.replace(/\.ts$/, '.mts')));
  compiled = userTsc(project, ['--outDir', 'out', ...EXAMPLES.map((f) => f.replace(/\.ts$/, '.mts'))]);
}, 120_000);

describe('examples/', () => {
  it('has the three programs examples/README.md describes, each in the README', () => {
    expect(EXAMPLES.sort()).toEqual(['single-owner.ts', 'systemd-service.ts', 'vmm-on-agent.ts']);
    const readme = fs.readFileSync(path.join(EXAMPLES_DIR, 'README.md'), 'utf8');
    for (const file of EXAMPLES) expect(readme).toContain(file);
  });

  it('import only the public package, nothing of the repository', () => {
    for (const file of EXAMPLES) {
      const imports = [...fs.readFileSync(path.join(EXAMPLES_DIR, file), 'utf8').matchAll(/from '([^']+)'/g)].map((m) => m[1]);
      expect(imports.filter((i) => i !== 'liveupdate' && !i?.startsWith('node:')), file).toEqual([]);
    }
  });

  it('compile with --strict against the built package', () => {
    expect(compiled?.output).toBe('');
    expect(compiled?.status).toBe(0);
  });

  it('vmm-on-agent: no agent answers, so AgentUnavailableError (ENOENT) on stderr and exit status 69', () => {
    const out = runExample('vmm-on-agent.ts', ['vm-test']);
    expect(out.stderr).toMatch(new RegExp(`^AgentUnavailableError \\(ENOENT\\): ENOENT: .*${MISSING}/agent\\.sock.*Fix: `));
    expect(out.stdout).toBe('');
    expect(out.status).toBe(69);
  });

  it.each(['preserve', 'retrieve'])('single-owner %s: no LUO device, so LiveUpdateUnavailableError with the reason and fix, exit status 69', (command) => {
    const out = runExample('single-owner.ts', [command]);
    expect(out.stderr).toMatch(/^LiveUpdateUnavailableError \(ENOENT\): ENOENT: .*liveupdate does not exist.*Fix: /);
    expect(out.status).toBe(69);
  });

  it('single-owner without a command: usage on stderr, exit status 2', () => {
    const out = runExample('single-owner.ts', []);
    expect(out.stderr).toMatch(/^usage: node single-owner\.js preserve\|retrieve/);
    expect(out.status).toBe(2);
  });

  it('systemd-service, first start without LUO: LiveUpdateUnavailableError, exit status 69, and systemd is told why', () => {
    // The manager's end: a datagram socket at $NOTIFY_SOCKET.
    const address = path.join(project, 'notify.sock');
    const manager = native.unixBind(native.SOCK_DGRAM, address);
    try {
      const out = runExample('systemd-service.ts', [], { NOTIFY_SOCKET: address });
      expect(out.stderr).toMatch(/^LiveUpdateUnavailableError \(ENOENT\): /);
      expect(out.status).toBe(69);
      native.waitReadable(manager, 1000);
      const { data, fds } = recvFdsSync(manager, { maxFds: 1 });
      expect(fds).toEqual([]);
      // The reason status() gives for that device, passed on as it is.
      const { reason } = statusSync({ path: `${MISSING}/liveupdate` });
      expect(reason).toEqual(expect.any(String));
      expect(data.toString()).toBe(`STATUS=Live Update Orchestrator unavailable: ${reason ?? ''}`);
    } finally {
      fs.closeSync(manager);
    }
  });

  it('systemd-service outside systemd (no $NOTIFY_SOCKET): the same error and status, nothing sent', () => {
    const out = runExample('systemd-service.ts', []);
    expect(out.stderr).toMatch(/^LiveUpdateUnavailableError \(ENOENT\): /);
    expect(out.status).toBe(69);
  });
});
