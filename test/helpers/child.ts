/**
 * Child processes for the fd-passing tests: a plain `node` that loads this
 * package's fdpass/systemd modules, compiled once into a temporary directory
 * (Node 20 cannot run the TypeScript sources; types are checked by the
 * project's own tsc run, so this one uses --noCheck). The compiled native.js
 * is pointed at the repository's addon, because it finds the addon relative
 * to its own directory.
 */
import { execFileSync, spawn, type StdioOptions } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.join(__dirname, '..', '..');

let compiled: string | undefined;

/** Compiles lib/fdpass.ts and lib/systemd.ts (and what they import) once; returns the directory. */
export function compiledLib(): string {
  if (compiled !== undefined) return compiled;
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-fdpass-'));
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const files = ['lib/fdpass.ts', 'lib/systemd.ts', 'lib/types/node-gyp-build.d.ts'].map((f) => path.join(ROOT, f));
  execFileSync(process.execPath, [
    tsc, '--outDir', out, '--rootDir', path.join(ROOT, 'lib'), '--module', 'node16', '--moduleResolution', 'node16',
    '--target', 'ES2022', '--noCheck', '--esModuleInterop', '--skipLibCheck', '--types', 'node', ...files,
  ], { cwd: ROOT, stdio: 'pipe' });
  // The compiled native.js finds the addon beside its own directory, and node-gyp-build in
  // node_modules: point both at the repository's.
  const nativeJs = path.join(out, 'native.js');
  const source = fs.readFileSync(nativeJs, 'utf8');
  const gypBuild = JSON.stringify(path.join(ROOT, 'node_modules', 'node-gyp-build'));
  const rooted = source.replace("path.join(__dirname, '..')", JSON.stringify(ROOT));
  if (rooted === source) throw new Error('native.js no longer computes its root as path.join(__dirname, \'..\'): update this helper');
  // Only a machine without a source build (the arm64 run, from prebuilds/) gets as far as node-gyp-build.
  const found = rooted.replace(/require\((["'])node-gyp-build\1\)/, `require(${gypBuild})`);
  if (found === rooted) throw new Error('native.js no longer requires node-gyp-build by name: update this helper');
  fs.writeFileSync(nativeJs, found);
  compiled = out;
  return out;
}

/** Removes the compiled copy. */
export function removeCompiledLib(): void {
  if (compiled !== undefined) fs.rmSync(compiled, { recursive: true, force: true });
  compiled = undefined;
}

/** What a child printed on stdout (as JSON) and its exit status. */
export interface ChildResult<T> {
  value: T;
  code: number | null;
  stderr: string;
}

/**
 * Runs `script` (CommonJS) in a fresh node. `lib` (the compiled modules'
 * directory) is in scope as a variable; the child's fd 3, 4, ... are
 * `extraFds` (dup'ed by spawn). The child prints one JSON value.
 */
export function runChild<T>(script: string, extraFds: number[] = [], env: NodeJS.ProcessEnv = {}, argv0?: string[]): Promise<ChildResult<T>> {
  const lib = compiledLib();
  const stdio: StdioOptions = ['ignore', 'pipe', 'pipe', ...extraFds];
  const prelude = `const lib = ${JSON.stringify(lib)};\n`;
  const command = argv0 ?? [process.execPath];
  const [file, ...args] = command as [string, ...string[]];
  const child = spawn(file, [...args, '-e', prelude + script], { stdio, env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        resolve({ value: JSON.parse(stdout) as T, code, stderr });
      } catch {
        reject(new Error(`child exited ${code} without JSON; stdout: ${stdout}; stderr: ${stderr}`));
      }
    });
  });
}

/** sha256 of a buffer, hex. */
export function sha256(data: Uint8Array | string): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}
