/**
 * Does a V8 startup snapshot shorten the agent's start? `liveupdate agent`
 * as node starts it today (the CLI module required by `node -e`), against
 * the same CLI from a snapshot (`node --build-snapshot`: its modules
 * compiled and run once at build time, the native addon loaded at run time,
 * on first use, as always), against `node -e 0`: interleaved rounds, each
 * from the spawn to the first answer (to the exit for `node -e 0`), in the
 * same guest. Each agent serves on a socket of its own with a plain file
 * named as its device: the open succeeds, the file is no LUO device, and the
 * agent serves without one. (A missing device would time the diagnosis of a
 * failed open, its reads of the kernel log and /proc, which a start with
 * its device never makes.) It must answer `sessions` and exit 0 on SIGTERM,
 * or the round fails.
 *
 * A snapshot runs one script: the CLI and every module it may load (found
 * from its `require("...")` calls, relative ones and node-gyp-build) are
 * bundled into one, each module a function (the package's own all run at
 * build time, those the CLI loads on first use too), with a `require` of its own
 * that loads node's built-ins, the bundled modules and the addon
 * (`process.dlopen`). Paths are those of the package where it is built:
 * build it where it runs.
 * @internal
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from 'liveupdate';
import { CLI_ARGS_ENV, cliLauncher, cliModule } from '../harness/cli.js';
import { statFields } from '../harness/proc-stat.js';

/**
 * The modules `entry` loads, transitively: `require("./...")`, `require(__dirname + "/...")` (the
 * package's own, see its scripts/absolute-requires.mjs) and node-gyp-build; keyed by path relative to `root`.
 */
export function moduleGraph(root: string, entry: string): Map<string, string> {
  const modules = new Map<string, string>();
  const pending = [entry];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    const key = path.relative(root, file);
    if (modules.has(key)) continue;
    const source = fs.readFileSync(file, 'utf8');
    modules.set(key, source);
    for (const [dir, text] of moduleTexts(file, source)) {
      for (const [, fromDir, id] of text.matchAll(/\brequire\((__dirname \+ )?["'`]([^"'`]+)["'`]\)/g)) {
        if (id === undefined || id.endsWith('.node')) continue;
        if (fromDir !== undefined) pending.push(path.join(dir, id));
        else if (id === 'node-gyp-build' || id.startsWith('.')) pending.push(require.resolve(id, { paths: [dir] }));
      }
    }
  }
  return modules;
}

/** Where a module of one of the package's bundles (its scripts/bundle-modules.mjs) starts, and its name, from the bundle's directory. */
const BUNDLED_MODULE = /^"(\/[\w/-]+\.js)": \(function \(exports, require, __dirname\) \{$/gm;

/**
 * The module texts of `file` with the directory each one's `__dirname` is:
 * the file's own, or in one of the package's bundles, each bundled module's
 * (its requires are of files beside where it was).
 */
function moduleTexts(file: string, source: string): Array<[dir: string, text: string]> {
  const starts = [...source.matchAll(BUNDLED_MODULE)];
  if (starts.length === 0) return [[path.dirname(file), source]];
  return starts.map((start, i) => [path.join(path.dirname(file), path.posix.dirname(start[1]!)), source.slice(start.index, starts[i + 1]?.index)]);
}

/** The snapshot's entry script: every module of `dist/cli.js` bundled, the CLI's `main` run at deserialization with the arguments in {@link CLI_ARGS_ENV}. */
export function snapshotEntry(root: string): string {
  const cli = cliModule();
  const modules = moduleGraph(root, cli);
  const defs = [...modules].map(([key, source]) => `defs[${JSON.stringify(key)}] = function (exports, require, module, __filename, __dirname) {\n${source}\n};`);
  return `'use strict';
const builtin = require;
const path = builtin('path');
const root = ${JSON.stringify(root)};
const defs = {};
${defs.join('\n')}
const cache = {};
function load(key) {
  if (cache[key] !== undefined) return cache[key].exports;
  const module = { exports: {} };
  cache[key] = module;
  const filename = path.join(root, key);
  const own = (id) => {
    if (id.endsWith('.node')) {
      const addon = { exports: {} };
      process.dlopen(addon, path.resolve(path.dirname(filename), id));
      return addon.exports;
    }
    if (path.isAbsolute(id)) return load(path.relative(root, id));
    if (id !== 'node-gyp-build' && !id.startsWith('.')) return builtin(id);
    return load(resolve(key, id));
  };
  own.resolve = (id) => (id.startsWith('.') ? path.join(root, resolve(key, id)) : id);
  defs[key].call(module.exports, module.exports, own, module, filename, path.dirname(filename));
  return module.exports;
}
function resolve(from, id) {
  const base = id === 'node-gyp-build' ? ${JSON.stringify(path.relative(root, require.resolve('node-gyp-build', { paths: [root] })))} : path.join(path.dirname(from), id);
  for (const key of [base, base + '.js', path.join(base, 'index.js')]) if (key in defs) return key;
  throw new Error('snapshot bundle: no module ' + id + ' from ' + from);
}
const cli = load(${JSON.stringify(path.relative(root, cli))});
// The package's modules that the CLI loads on first use (the agent's server among them): in the snapshot, compiled and run at
// build time. Not the simulator (it registers itself as it loads; --simulate loads it).
for (const key of Object.keys(defs)) if (key.startsWith('dist' + path.sep) && !key.startsWith(path.join('dist', 'simulator'))) load(key);
builtin('v8').startupSnapshot.setDeserializeMainFunction(() => {
  Promise.resolve(cli.main(JSON.parse(process.env.${CLI_ARGS_ENV}))).then((status) => { process.exitCode = status; });
});
`;
}

/** Builds the agent's snapshot blob at `blob` (the entry script beside it); returns the ms it took. */
export function buildAgentSnapshot(root: string, blob: string): number {
  const started = performance.now();
  const entry = `${blob}.entry.js`;
  fs.writeFileSync(entry, snapshotEntry(root));
  const built = spawnSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', entry], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`node --build-snapshot failed (${String(built.status ?? built.signal)}): ${built.stderr}`);
  return performance.now() - started;
}

/** Spawn to exit of `node -e 0`, ms. */
function nodeBare(): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`node -e 0 exited with ${String(code)}`))));
  });
}

/** The plain file each agent is given as its device (made by {@link agentStarts}). */
const NOT_A_DEVICE = 'not-a-device';

const RETRY_MS = 5;
const ANSWER_TIMEOUT_MS = 120_000;

/** Spawn (node `flags`) to the agent's first answer to `sessions`, ms; then SIGTERM, which it must answer by exiting 0. */
async function agentToAnswer(flags: readonly string[], dir: string): Promise<number> {
  const socket = path.join(dir, 'agent.sock');
  const args = ['agent', '--socket', socket, '--device', path.join(dir, NOT_A_DEVICE)];
  const started = performance.now();
  const child = spawn(process.execPath, [...flags], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, [CLI_ARGS_ENV]: JSON.stringify(args) } });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    for (;;) {
      try {
        const client = await AgentClient.connect({ socket });
        await client.sessions();
        const ms = performance.now() - started;
        await client.close();
        return ms;
      } catch (error) {
        if (child.exitCode !== null || performance.now() - started > ANSWER_TIMEOUT_MS) throw new Error(`the agent (${flags.join(' ')}) did not answer: ${(error as Error).message}\n${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  } finally {
    child.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`the agent (${flags.join(' ')}) exited with ${String(code)} on SIGTERM\n${stderr}`);
  }
}

/** A process's resident set (VmRSS of /proc/PID/status), KiB. */
export function residentKib(pid: number | undefined): number {
  const status = fs.readFileSync(`/proc/${String(pid)}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]);
  if (!Number.isSafeInteger(kib)) throw new Error(`no VmRSS for pid ${String(pid)}`);
  return kib;
}

/** USER_HZ: the unit of /proc/PID/stat's times, 100 on every Linux ABI node runs on. */
const USER_HZ = 100;

/**
 * The CPU time a process has used so far, all its threads, ms. Unlike wall
 * time, it does not grow when other processes share the machine's cores.
 * From /proc/PID/task/TID/schedstat (ns) where the kernel keeps it
 * (CONFIG_SCHED_INFO), else from /proc/PID/stat's utime + stime (10 ms
 * steps: the test bed's small guest kernels).
 */
export function cpuMs(pid: number | undefined): number {
  const tasks = `/proc/${String(pid)}/task`;
  let ns = 0;
  for (const tid of fs.readdirSync(tasks)) {
    try {
      ns += Number(fs.readFileSync(`${tasks}/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(`${tasks}/${tid}`)) continue; // that thread ended meanwhile
      return statCpuMs(pid);
    }
  }
  if (!Number.isFinite(ns)) throw new Error(`no schedstat for pid ${String(pid)}`);
  return ns / 1e6;
}

/** utime + stime of /proc/PID/stat (fields 14 and 15), ms. */
function statCpuMs(pid: number | undefined): number {
  const stat = fs.readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  const fields = statFields(stat);
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isSafeInteger(ticks)) throw new Error(`no CPU times in /proc/${String(pid)}/stat: ${stat}`);
  return (ticks * 1000) / USER_HZ;
}

/** The three starts, interleaved rounds, ms each. */
export interface AgentStarts {
  readonly node_ms: number[];
  readonly agent_ms: number[];
  readonly snapshot_ms: number[];
  readonly build_ms: number;
  readonly blob_bytes: number;
}

/** Builds the snapshot in `dir` (a directory only root may write) and runs `rounds` interleaved rounds of the three starts. */
export async function agentStarts(root: string, dir: string, rounds: number): Promise<AgentStarts> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(dir, NOT_A_DEVICE), '');
  const blob = path.join(dir, 'agent.blob');
  const build_ms = buildAgentSnapshot(root, blob);
  const out: AgentStarts = { node_ms: [], agent_ms: [], snapshot_ms: [], build_ms, blob_bytes: fs.statSync(blob).size };
  for (let r = 0; r < rounds; r++) {
    out.node_ms.push(await nodeBare());
    out.agent_ms.push(await agentToAnswer(['-e', cliLauncher()], dir));
    out.snapshot_ms.push(await agentToAnswer(['--snapshot-blob', blob], dir));
  }
  return out;
}
