/**
 * What `require('liveupdate')` and `import('liveupdate')` load: each export's
 * module on first read, node:crypto, node:zlib and node:net only inside the
 * calls that use them. Every probe runs in a fresh node, from a script file
 * in a project that has the built package under node_modules, as a user's
 * program would (`node -e` itself loads node:crypto). `import` binds every
 * named export when it evaluates, so it loads every module, but still none of
 * those builtins.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../lib/index.js';
import { absoluteRequires, javascriptFiles, relativeRequires } from '../scripts/absolute-requires.mjs';
import { bundle, bundledNames, BUNDLES, closure, stub } from '../scripts/bundle-modules.mjs';
import { currentDigest, DIGEST_MARKER, otherSourcesBuild, SOURCE_BUILD } from './helpers/digest.js';
import { LIBRARY_DIR } from './helpers/pack.js';

/** Every export of the package and what `typeof` says of it, in `Object.keys` order. */
const EXPORTS: ReadonlyArray<readonly [string, string]> = [
  ['LiveUpdate', 'function'], ['Session', 'function'], ['status', 'function'], ['statusSync', 'function'],
  ['DEVICE_PATH', 'string'], ['FIRST_LUO_RELEASE', 'string'], ['readKernelLog', 'function'], ['LiveUpdateError', 'function'],
  ['LiveUpdateUnavailableError', 'function'], ['DeviceBusyError', 'function'], ['PermissionDeniedError', 'function'],
  ['IncomingStateError', 'function'], ['NotLiveUpdateDeviceError', 'function'], ['DeviceClosedError', 'function'],
  ['SessionExistsError', 'function'], ['SessionNameTooLongError', 'function'], ['SessionNotFoundError', 'function'],
  ['SessionAlreadyRetrievedError', 'function'], ['TokenInUseError', 'function'], ['FileAlreadyPreservedError', 'function'],
  ['UnsupportedFileError', 'function'], ['UnsupportedSealsError', 'function'], ['BadFileDescriptorError', 'function'],
  ['SessionFullError', 'function'], ['FileTooLargeError', 'function'], ['OutOfMemoryError', 'function'],
  ['TokenNotFoundError', 'function'], ['RetrieveFailedError', 'function'], ['FinishNotReadyError', 'function'],
  ['SessionStateError', 'function'], ['OperationNotSupportedError', 'function'], ['SealingNotAllowedError', 'function'],
  ['NotSealableError', 'function'], ['FileFrozenError', 'function'], ['KexecError', 'function'], ['KexecUnsupportedError', 'function'],
  ['KexecNotLoadedError', 'function'], ['KexecImageRejectedError', 'function'], ['LiveUpdateAbortedError', 'function'],
  ['KernelImageError', 'function'], ['NotKernelImageError', 'function'], ['HandoverFormatError', 'function'],
  ['KernelWithoutLiveUpdateError', 'function'],
  ['NotifySocketError', 'function'], ['NotifyTimeoutError', 'function'], ['AddonLoadError', 'function'],
  ['AgentError', 'function'], ['AgentPermissionError', 'function'], ['AgentQuotaError', 'function'],
  ['AgentProtocolError', 'function'], ['AgentUnavailableError', 'function'], ['AgentTimeoutError', 'function'],
  ['UpdateRefusedError', 'function'], ['ManifestVersionError', 'function'], ['AgentPolicyError', 'function'],
  ['AgentListenError', 'function'], ['AgentInternalError', 'function'], ['AgentModeError', 'function'], ['AGENT_ERROR_CODES', 'object'], ['MAX_TOKEN', 'bigint'],
  ['MAX_SESSION_NAME_BYTES', 'number'], ['memfd', 'object'], ['kexec', 'object'], ['kernel', 'object'], ['sendFds', 'function'],
  ['sendFdsSync', 'function'], ['recvFds', 'function'], ['recvFdsSync', 'function'], ['socketPair', 'function'],
  ['FdPassError', 'function'], ['ControlTruncatedError', 'function'], ['MessageTruncatedError', 'function'],
  ['FramingError', 'function'], ['StreamOutOfStepError', 'function'], ['SocketBusyError', 'function'], ['NotUnixSocketError', 'function'],
  ['PeerClosedError', 'function'], ['MAX_FDS_PER_MESSAGE', 'number'], ['DEFAULT_MAX_BYTES', 'number'], ['notify', 'function'],
  ['notifySync', 'function'], ['barrier', 'function'], ['barrierSync', 'function'], ['listenFds', 'function'],
  ['describeFd', 'function'], ['isLuoSessionFd', 'function'], ['isValidFdName', 'function'], ['ListenFdsError', 'function'],
  ['MAX_FDNAME_LENGTH', 'number'], ['LISTEN_FDS_START', 'number'], ['Agent', 'function'], ['STATE_FDNAME', 'string'],
  ['DEFAULT_CONNECTION_LIMITS', 'object'], ['AgentClient', 'function'], ['DEFAULT_REQUEST_TIMEOUT_MS', 'number'],
  ['AGENT_SOCKET', 'string'], ['UPDATE_CHECK_NAMES', 'object'], ['parsePolicy', 'function'], ['readPolicy', 'function'],
  ['DEFAULT_POLICY', 'object'], ['MANIFEST_FORMAT', 'string'], ['MANIFEST_VERSION', 'object'], ['parseManifest', 'function'],
  ['AGENT_SESSION_NAME', 'string'], ['agentKernelName', 'function'],
];

/** The node builtins the package must not load until a call needs them. */
const HEAVY_BUILTINS = ['crypto', 'zlib', 'net'];

/** What a fresh node had loaded at a point of a probe. */
interface Loaded {
  /** The package's module files in the require cache, relative to the package (dist/...). */
  readonly modules: string[];
  /** Which of HEAVY_BUILTINS were loaded. */
  readonly builtins: string[];
}

/**
 * A function, as script text, that lists the package's modules loaded so far
 * (relative to the package: dist/...): the files in require.cache, and the
 * modules of the bundles (scripts/bundle-modules.mjs) that have run, as their
 * own files would count (a bundle itself does not).
 */
const LOADED_MODULES = `(() => {
  const root = ${JSON.stringify(fs.realpathSync(LIBRARY_DIR) + path.sep)};
  const files = Object.keys(require.cache).filter((m) => m.startsWith(root)).map((m) => m.slice(root.length));
  const bundles = ${JSON.stringify(BUNDLES.map((b) => `dist${b.file}`))};
  const bundled = bundles.flatMap((file) => [...(require.cache[root + file]?.exports.loaded.keys() ?? [])].map((name) => 'dist' + name));
  return [...new Set([...files, ...bundled])].filter((m) => !bundles.includes(m));
})`;

/** The probe's helpers, prepended to every probe script: report a value, or what is loaded now. */
const REPORT = `
// fd 1 written directly: process.stdout on a pipe would load node:net.
const report = (label, value) => require('node:fs').writeSync(1, JSON.stringify({ label, value }) + '\\n');
const reportLoaded = (label) => {
  const modules = ${LOADED_MODULES}();
  const builtins = ${JSON.stringify(HEAVY_BUILTINS)}.filter((b) => process.moduleLoadList.includes('NativeModule ' + b));
  report(label, { modules, builtins });
};
`;

let project: string;

beforeAll(() => {
  project = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-load-'));
  fs.mkdirSync(path.join(project, 'node_modules'));
  fs.symlinkSync(LIBRARY_DIR, path.join(project, 'node_modules', 'liveupdate'));
});

afterAll(() => {
  fs.rmSync(project, { recursive: true, force: true });
});

/**
 * Runs `body` in a fresh node as a script of the project (`.cjs` or `.mjs`)
 * and returns what its `report(label, value)` and `reportLoaded(label)` calls
 * reported, by label.
 */
function probe(kind: 'cjs' | 'mjs', body: string): Record<string, unknown> {
  const preamble = kind === 'cjs' ? REPORT : `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n${REPORT}`;
  const file = path.join(project, `probe.${kind}`);
  fs.writeFileSync(file, `${preamble}\n${body}\n`);
  const out = spawnSync(process.execPath, [file], { cwd: project, encoding: 'utf8', timeout: 30_000 });
  expect(out.status, out.stderr).toBe(0);
  const seen: Record<string, unknown> = {};
  for (const line of out.stdout.trim().split('\n')) {
    const { label, value } = JSON.parse(line) as { label: string; value: unknown };
    seen[label] = value;
  }
  return seen;
}

/** Runs `body` as probe() does and returns what its `reportLoaded(label)` calls saw. */
function probeLoaded(kind: 'cjs' | 'mjs', body: string): Record<string, Loaded> {
  return probe(kind, body) as Record<string, Loaded>;
}

describe("require('liveupdate')", () => {
  it('loads only its entry module, and none of node:crypto, node:zlib and node:net', () => {
    const seen = probeLoaded('cjs', "reportLoaded('before');\nrequire('liveupdate');\nreportLoaded('after');");
    expect(seen['before']).toEqual({ modules: [], builtins: [] });
    expect(seen['after']).toEqual({ modules: ['dist/index.js'], builtins: [] });
  });

  it('loads a module on the first read of one of its exports, and it works', () => {
    const seen = probeLoaded(
      'cjs',
      `const api = require('liveupdate');
      const { AgentClient } = api;
      reportLoaded('client');
      AgentClient.connect({ socket: ${JSON.stringify(path.join(os.tmpdir(), 'liveupdate-load-no-agent.sock'))} }).then(
        () => process.exit(2),
        (error) => {
          if (!(error instanceof api.AgentUnavailableError)) throw error;
          reportLoaded('refused');
        },
      );`,
    );
    expect(seen['client']!.modules).toContain('dist/agent/client.js');
    expect(seen['client']!.modules).not.toContain('dist/agent/server.js');
    expect(seen['refused']!.modules).not.toContain('dist/agent/server.js');
  });

  it('leaves the agent, the diagnosis and the CLI unloaded until their exports are read', () => {
    const seen = probeLoaded(
      'cjs',
      `const api = require('liveupdate');
      api.Session; api.memfd; api.sendFdsSync; api.notify; api.SessionNotFoundError;
      reportLoaded('core');
      api.LiveUpdate;
      reportLoaded('device');
      api.Agent;
      reportLoaded('agent');`,
    );
    const agentOrCli = (m: string): boolean => m.startsWith('dist/agent/') || m === 'dist/cli.js';
    expect(seen['core']!.modules.filter((m) => agentOrCli(m) || m === 'dist/diagnosis.js')).toEqual([]);
    // Opening the device checks its number (dist/device.js); the diagnosis waits for a failed open.
    expect(seen['device']!.modules).toContain('dist/device.js');
    expect(seen['device']!.modules.filter((m) => agentOrCli(m) || m === 'dist/diagnosis.js' || m === 'dist/status.js')).toEqual([]);
    expect(seen['agent']!.modules).toContain('dist/agent/server.js');
    expect(seen['agent']!.modules).not.toContain('dist/cli.js');
    for (const point of ['core', 'device', 'agent']) expect(seen[point]!.builtins, point).toEqual([]);
  });

  it("loads no node:os for the device, its sessions and the kernel's errors (what the blackout reads)", () => {
    // The errors module reads errno numbers from node:os only for an error made without a failed call.
    const seen = probe('cjs', "const api = require('liveupdate');\napi.LiveUpdate; api.Session; api.SessionNotFoundError;\nreport('os', process.moduleLoadList.includes('NativeModule os'));");
    expect(seen['os']).toBe(false);
  });

  it('loads the diagnosis when an open fails, and the error carries its reason', () => {
    // No machine running the tests has /dev/liveupdate at this path: the open fails with ENOENT.
    const missing = path.join(project, 'no-liveupdate-device');
    const seen = probe(
      'cjs',
      `const { LiveUpdate } = require('liveupdate');
      reportLoaded('before');
      try {
        LiveUpdate.openSync(${JSON.stringify(missing)});
        report('error', null);
      } catch (error) {
        report('error', { name: error.name, code: error.code, reason: error.reason });
      }
      reportLoaded('after');`,
    ) as { before: Loaded; after: Loaded; error: { name: string; code: string; reason: unknown } };
    expect(seen.before.modules).not.toContain('dist/diagnosis.js');
    expect(seen.after.modules).toContain('dist/diagnosis.js');
    expect(seen.error).toMatchObject({ name: 'LiveUpdateUnavailableError', code: 'ENOENT' });
    expect(typeof seen.error.reason).toBe('string');
  });

  it('has every export it had, each of the same type, in the same order', () => {
    const seen = probe('cjs', "const api = require('liveupdate');\nreport('exports', Object.keys(api).map((k) => [k, typeof api[k]]));");
    expect(seen['exports']).toEqual(EXPORTS);
  });

  it('leaves a read-only value in place of an export read once, in its place; frozen exports still read', () => {
    const seen = probe(
      'cjs',
      `const api = require('liveupdate');
      const kind = (name) => { const d = Object.getOwnPropertyDescriptor(api, name); return 'get' in d ? 'getter' : [d.writable, d.enumerable, d.configurable].join(); };
      report('before', kind('sendFdsSync'));
      const first = api.sendFdsSync;
      report('after', kind('sendFdsSync'));
      report('same', api.sendFdsSync === first && typeof first === 'function');
      report('order', Object.keys(api).join() === ${JSON.stringify(EXPORTS.map(([name]) => name).join())});
      Object.freeze(api);
      report('frozen', [typeof api.memfd.createSync, kind('memfd')]);`,
    );
    expect(seen).toEqual({ before: 'getter', after: 'false,true,true', same: true, order: true, frozen: ['function', 'getter'] });
  });
});

describe('what the blackout loads', () => {
  it('loads the source build of the addon without node-gyp-build', () => {
    const seen = probeLoaded('cjs', "const { memfd } = require('liveupdate');\nrequire('node:fs').closeSync(memfd.createSync('probe'));\nreportLoaded('called');");
    expect(seen['called']!.modules).toContain('build/Release/liveupdate.node');
    expect(seen['called']!.modules.filter((m) => m.includes('node-gyp-build'))).toEqual([]);
  });
});

describe('requires by absolute path (node resolves a relative one by running its package-name pattern first)', () => {
  it('rewrites each relative require, in either quote, to the same file through __dirname, and nothing else', () => {
    const source = [
      'const a = require("./errors.js");',
      "const b = require('../native.js');",
      'const c = require("./agent/server.js").Agent;',
      'const d = require("node:fs");',
      "const e = require('liveupdate');",
      'const f = require(name);',
      'const g = require(`./${name}`);',
      'const h = require("./a.js" + suffix);',
    ].join('\n');
    expect(absoluteRequires(source).split('\n')).toEqual([
      'const a = require(__dirname + "/errors.js");',
      'const b = require(__dirname + "/../native.js");',
      'const c = require(__dirname + "/agent/server.js").Agent;',
      'const d = require("node:fs");',
      "const e = require('liveupdate');",
      'const f = require(name);',
      'const g = require(`./${name}`);',
      'const h = require("./a.js" + suffix);',
    ]);
    expect(relativeRequires(absoluteRequires(source))).toEqual([]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-requires-'));
    try {
      fs.mkdirSync(path.join(dir, 'sub'));
      fs.writeFileSync(path.join(dir, 'value.js'), 'module.exports = 42;');
      fs.writeFileSync(path.join(dir, 'sub', 'up.js'), absoluteRequires('module.exports = require("../value.js");'));
      expect(createRequire(import.meta.url)(path.join(dir, 'sub', 'up.js'))).toBe(42);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('leaves no relative require in the built package or its command', () => {
    const files = [...javascriptFiles(path.join(LIBRARY_DIR, 'dist')), path.join(LIBRARY_DIR, 'bin', 'liveupdate.js')];
    expect(files.length).toBeGreaterThan(20);
    const left = files.flatMap((file) => relativeRequires(fs.readFileSync(file, 'utf8')).map((r) => `${path.relative(LIBRARY_DIR, file)}: ${r}`));
    expect(left).toEqual([]);
  });
});

describe('the bundles: the modules of an open, and of the agent up to its first answer, each in one file', () => {
  const dist = path.join(LIBRARY_DIR, 'dist');
  const load = createRequire(import.meta.url);
  type Bundle = { load: (name: string) => unknown; loaded: Map<string, unknown> };

  it('holds what its entries require at load, transitively, once across bundles, and each of those files gives the same objects', () => {
    const held = BUNDLES.map((b) => ({ ...b, names: bundledNames(fs.readFileSync(path.join(dist, b.file), 'utf8')) }));
    const [core, agent] = held;
    expect(core!.names[0]).toBe('/liveupdate.js');
    expect(core!.names).toEqual(expect.arrayContaining(['/liveupdate.js', '/session.js', '/errors.js', '/native.js', '/device.js']));
    expect(agent!.names).toEqual(expect.arrayContaining(['/cli.js', '/agent/server.js', '/agent/cli.js', '/agent/connection.js']));
    // Nothing either leaves for later: the diagnosis, the status, kexec, the update, the client.
    const later = ['/diagnosis.js', '/status.js', '/kexec.js', '/agent/update.js', '/agent/client.js', '/agent/systemd-host.js'];
    expect(held.flatMap((b) => b.names).filter((n) => later.includes(n))).toEqual([]);
    expect(core!.names.filter((n) => agent!.names.includes(n))).toEqual([]);
    // The agent's bundle leaves fd passing, memfds, systemd's protocols and the agent's client (and what they load) in their own files.
    expect(agent!.names.filter((n) => ['/fdpass.js', '/memfd.js', '/systemd.js', '/agent/client.js', '/agent/protocol.js'].includes(n))).toEqual([]);
    for (const { file, names } of held) {
      const bundleExports = load(path.join(dist, file)) as Bundle;
      for (const name of names) {
        expect(fs.readFileSync(path.join(dist, name), 'utf8')).toBe(stub(name, file));
        expect(load(path.join(dist, name))).toBe(bundleExports.load(name));
      }
    }
    // A module of one bundle gets another's (and a module of none gets theirs): the errors are the core's classes.
    const memfd = load(path.join(dist, 'memfd.js')) as { getSealsSync(fd: number): number };
    const { BadFileDescriptorError } = (load(path.join(dist, 'core.js')) as Bundle).load('/errors.js') as { BadFileDescriptorError: new () => Error };
    expect(() => memfd.getSealsSync(0x3fff_ffff)).toThrow(BadFileDescriptorError);
  });

  it('follows top-level requires only, and runs modules as node does: once, on first require, a cycle getting the exports so far', () => {
    const sources: Record<string, string> = {
      '/a.js': 'const b_1 = require(__dirname + "/sub/b.js");\nexports.fromB = b_1.early;\nexports.late = "a";\nexports.count = (exports.count ?? 0) + 1;\nfunction lazy() { return require(__dirname + "/lazy.js"); }\nexports.lazy = lazy;',
      '/sub/b.js': 'exports.early = "b";\nconst a_1 = require(__dirname + "/../a.js");\nexports.aSoFar = Object.keys(a_1);\nexports.os = require("node:os").EOL;\nexports.dir = __dirname;',
      '/lazy.js': 'exports.lazy = true;',
    };
    expect(closure((name) => sources[name]!, ['/a.js'])).toEqual(['/a.js', '/sub/b.js']);
    expect(closure((name) => sources[name]!, ['/a.js'], ['/sub/b.js'])).toEqual(['/a.js']);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-bundle-'));
    try {
      fs.writeFileSync(path.join(dir, 'one.js'), bundle(['/a.js', '/sub/b.js'].map((name) => ({ name, source: sources[name]! }))));
      fs.writeFileSync(path.join(dir, 'lazy.js'), sources['/lazy.js']!);
      fs.mkdirSync(path.join(dir, 'sub'));
      fs.writeFileSync(path.join(dir, 'sub', 'b.js'), stub('/sub/b.js', '/one.js'));
      expect(bundledNames(fs.readFileSync(path.join(dir, 'one.js'), 'utf8'))).toEqual(['/a.js', '/sub/b.js']);
      const one = load(path.join(dir, 'one.js')) as Bundle;
      expect(one.loaded.size).toBe(0);
      const a = one.load('/a.js') as Record<string, unknown>;
      expect(a).toEqual({ fromB: 'b', late: 'a', count: 1, lazy: expect.any(Function) });
      expect(one.load('/sub/b.js')).toEqual({ early: 'b', aSoFar: [], os: os.EOL, dir: path.join(dir, 'sub') });
      expect(one.load('/a.js')).toBe(a);
      expect(load(path.join(dir, 'sub', 'b.js'))).toBe(one.load('/sub/b.js'));
      expect([...one.loaded.keys()]).toEqual(['/a.js', '/sub/b.js']);
      // A module outside the bundle is node's own.
      expect((a['lazy'] as () => unknown)()).toBe(load(path.join(dir, 'lazy.js')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a module that uses what its require and module objects lack', () => {
    for (const source of ['require.resolve("x")', 'module.exports = 1', 'const f = __filename']) {
      expect(() => bundle([{ name: '/x.js', source }])).toThrow(/bundle-modules: \/x\.js uses/);
    }
  });
});

describe('the source digest the addon and the JavaScript carry', () => {
  const digest = currentDigest();

  /** The outcome of a memfd made through `liveupdate` in a fresh node in `cwd`: 'ok', or the error. */
  function firstCall(cwd: string, env: NodeJS.ProcessEnv = process.env): unknown {
    const script = `const lu = require('liveupdate');
      try {
        require('node:fs').closeSync(lu.memfd.createSync('digest'));
        console.log(JSON.stringify('ok'));
      } catch (e) {
        console.log(JSON.stringify({ name: e.name, code: e.code, typed: e instanceof lu.AddonLoadError, message: e.message, fix: e.fix }));
      }`;
    const out = spawnSync(process.execPath, ['-e', script], { cwd, env, encoding: 'utf8', timeout: 30_000 });
    expect(out.stderr).toBe('');
    return JSON.parse(out.stdout) as unknown;
  }

  /** Expects `error` to refuse `file`, carrying `carried`, as built from other sources, and to say what to rebuild. */
  function expectRefused(error: unknown, file: string, carried: string): void {
    expect(error).toMatchObject({ name: 'AddonLoadError', code: 'ERR_LIVEUPDATE_ADDON_NOT_LOADED', typed: true });
    const { message, fix } = error as { message: string; fix: string };
    expect(message).toContain(`the native addon ${file} was built from other sources than this JavaScript (its source digest ${carried}, the JavaScript's ${digest.slice(0, 12)})`);
    for (const step of ['npm rebuild liveupdate --build-from-source', 'npm run build:native', 'npm run prebuild', 'delete prebuilds/']) expect(fix).toContain(step);
  }

  it('is in the source build, after its marker, once, and is what it exports', () => {
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    const marked = [...fs.readFileSync(SOURCE_BUILD).toString('latin1').matchAll(/liveupdate-source-digest=([0-9a-f]{64})/g)].map((m) => m[1]);
    expect(marked).toEqual([digest]);
    expect((require(SOURCE_BUILD) as { sourceDigest: unknown }).sourceDigest).toBe(digest);
  });

  it('loads an addon of the same digest', () => {
    expect(firstCall(project, { ...process.env, LIVEUPDATE_ADDON: SOURCE_BUILD })).toBe('ok');
  });

  it.each([
    ['another digest', `{ sourceDigest: '${'0'.repeat(64)}' }`, '000000000000'],
    ['no digest (a build from before it)', '{}', 'none (built before addons carried one)'],
  ])('refuses an addon with %s: a typed AddonLoadError naming the file, both digests and what to rebuild', (_, exported, carried) => {
    const addon = path.join(project, 'other-sources.cjs');
    fs.writeFileSync(addon, `module.exports = ${exported};\n`);
    expectRefused(firstCall(project, { ...process.env, LIVEUPDATE_ADDON: addon }), addon, carried);
  });

  it.each([`prebuilds/linux-${process.arch}/liveupdate.glibc.node`, 'build/Release/liveupdate.node'])(
    'names the file it loaded: a package whose %s was built from other sources',
    (where) => {
      // The package as installed, with only this addon: dist/ and the loader it falls back to.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-stale-'));
      try {
        const pkg = path.join(dir, 'node_modules', 'liveupdate');
        for (const entry of ['package.json', 'dist']) fs.cpSync(path.join(LIBRARY_DIR, entry), path.join(pkg, entry), { recursive: true });
        fs.symlinkSync(path.join(LIBRARY_DIR, 'node_modules', 'node-gyp-build'), path.join(dir, 'node_modules', 'node-gyp-build'));
        fs.mkdirSync(path.dirname(path.join(pkg, where)), { recursive: true });
        const altered = otherSourcesBuild();
        fs.writeFileSync(path.join(pkg, where), altered);
        const carried = altered.toString('latin1', altered.indexOf(DIGEST_MARKER) + DIGEST_MARKER.length).slice(0, 12);
        const env = { ...process.env };
        delete env['LIVEUPDATE_ADDON'];
        expectRefused(firstCall(dir, env), path.join(fs.realpathSync(pkg), where), carried);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

/**
 * Every module `liveupdate agent` may load before its first answer. Under
 * emulation a fresh node pays for each file and for every piece of code it
 * runs for the first time (a module file costs milliseconds, node:v8 tens of
 * them): a module that joins the start must join this list, for a reason.
 */
const AGENT_START_MODULES = [
  'dist/cli.js', 'dist/agent/cli.js', 'dist/errors.js', 'dist/lazy.js', 'dist/native.js', 'dist/systemd.js', 'dist/fdpass.js',
  'dist/validate.js', 'dist/fdlink.js', 'dist/device.js', 'dist/agent/mode.js', 'dist/agent/policy.js', 'dist/agent/codec.js',
  'dist/agent/names.js', 'dist/agent/protocol.js', 'dist/agent/listener.js', 'dist/agent/fdstore.js', 'dist/memfd.js',
  'dist/session.js', 'dist/agent/sessions.js', 'dist/agent/event-lines.js', 'dist/agent/server.js', 'dist/agent/connection.js',
  'dist/agent/announcements.js', 'dist/agent/host.js', 'dist/liveupdate.js', 'dist/agent/manifest.js',
];

/**
 * The node builtins the agent's start must not load: node:v8 (and the streams
 * it loads) waits for a burst of clients, node:net for a service manager's
 * socket, node:zlib for a kernel config to unpack, node:crypto for a long name,
 * node:os for an errno's number (a timeout), node's AbortController for an
 * update (each is compiled when first loaded, which a fresh node under
 * emulation pays for).
 */
const AGENT_START_HEAVY_BUILTINS = ['v8', 'stream', 'zlib', 'net', 'crypto', 'child_process', 'readline', 'worker_threads', 'os', 'internal/abort_controller'];

/** Preloaded into the agent's node: on SIGUSR2, what it has loaded, on fd 3. */
const AGENT_START_PROBE = `
process.on('SIGUSR2', () => {
  const modules = ${LOADED_MODULES}();
  const builtins = ${JSON.stringify(AGENT_START_HEAVY_BUILTINS)}.filter((b) => process.moduleLoadList.includes('NativeModule ' + b));
  require('node:fs').writeSync(3, JSON.stringify({ modules, builtins }));
  require('node:fs').closeSync(3);
});
`;

/**
 * Starts `liveupdate agent` in a node of its own, as the benchmark does
 * (`node -e`, the CLI module), and returns what it had loaded once it had
 * answered a client's `sessions`, and its exit status on SIGTERM.
 */
async function agentStartLoads(device: string): Promise<{ loaded: Loaded; status: number | null; stderr: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-load-agent-'));
  try {
    const socket = path.join(dir, 'agent.sock');
    const probe = path.join(project, 'agent-start-probe.cjs');
    fs.writeFileSync(probe, AGENT_START_PROBE);
    const args = ['agent', '--mode', 'standalone', '--socket', socket, '--device', device === '' ? path.join(dir, 'no-device') : device];
    const launcher = `require(${JSON.stringify(path.join(LIBRARY_DIR, 'dist', 'cli.js'))}).main(${JSON.stringify(args)}).then((s) => { process.exitCode = s; });`;
    const child = spawn(process.execPath, ['--require', probe, '-e', launcher], { cwd: project, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let report = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (chunk: Buffer) => (report += chunk.toString()));
    const reported = new Promise<void>((resolve) => (child.stdio[3] as NodeJS.ReadableStream).once('end', resolve));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      for (let tries = 0; ; tries++) {
        try {
          const client = await AgentClient.connect({ socket });
          await client.sessions();
          await client.close();
          break;
        } catch (error) {
          if (child.exitCode !== null || tries > 3000) throw new Error(`the agent did not answer: ${(error as Error).message}\n${stderr}`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      child.kill('SIGUSR2');
      await reported;
    } finally {
      child.kill('SIGTERM');
    }
    return { loaded: JSON.parse(report) as Loaded, status: await exited, stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe("`liveupdate agent`'s start, up to its first answer", () => {
  it('loads only the modules of its list (no update, systemd host, status, diagnosis or kexec), and none of the heavy builtins', async () => {
    // A file that opens but is no LUO device: the agent serves without one, as after a failed
    // open, but no open fails (a failed open loads the diagnosis to say why).
    const device = path.join(project, 'not-a-device');
    fs.writeFileSync(device, '');
    const { loaded, status, stderr } = await agentStartLoads(device);
    expect(loaded.modules).toContain('dist/agent/server.js');
    expect(loaded.modules.filter((m) => !AGENT_START_MODULES.includes(m) && !m.endsWith('.node'))).toEqual([]);
    expect(loaded.modules.filter((m) => m.includes('node-gyp-build'))).toEqual([]);
    // It has logged its mode to stderr (a pipe here, the journal's socket under systemd) by then.
    expect(loaded.builtins).toEqual([]);
    expect(status, stderr).toBe(0);
  });

  it('with no device at all (the benchmark\'s start) adds the diagnosis alone: not the status or kexec, nor node:zlib without a config to unpack', async () => {
    const { loaded, status, stderr } = await agentStartLoads('');
    expect(stderr).toContain('"event":"device-unavailable"');
    expect(loaded.modules).toContain('dist/diagnosis.js');
    expect(loaded.modules.filter((m) => !AGENT_START_MODULES.includes(m) && m !== 'dist/diagnosis.js' && !m.endsWith('.node'))).toEqual([]);
    // The diagnosis unpacks /proc/config.gz where the kernel has one (CONFIG_IKCONFIG_PROC; the test bed's guests have none).
    // And node:os, which the diagnosis reads the kernel's release with (node's streams load its AbortController).
    expect(loaded.builtins).toEqual(fs.existsSync('/proc/config.gz') ? ['stream', 'zlib', 'os', 'internal/abort_controller'] : ['os']);
    expect(status, stderr).toBe(0);
  });
});

describe("import('liveupdate')", () => {
  it('loads none of node:crypto, node:zlib and node:net', () => {
    const seen = probeLoaded('mjs', "await import('liveupdate');\nreportLoaded('after');");
    expect(seen['after']!.modules).toContain('dist/index.js');
    expect(seen['after']!.builtins).toEqual([]);
  });

  it('gives the same objects as require, with every export', () => {
    const seen = probe(
      'mjs',
      `const esm = await import('liveupdate');
      const cjs = require('liveupdate');
      const names = Object.keys(esm).filter((k) => k !== 'default');
      report('names', names);
      report('different', names.filter((k) => esm[k] !== cjs[k]));
      report('default is the CommonJS exports', esm.default === cjs);`,
    );
    expect(seen['names']).toEqual(EXPORTS.map(([name]) => name).sort());
    expect(seen['different']).toEqual([]);
    expect(seen['default is the CommonJS exports']).toBe(true);
  });
});
