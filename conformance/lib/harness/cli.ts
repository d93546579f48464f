/**
 * The `liveupdate` command as a child process, the one way the tests, the
 * demo and the benchmark run it. It runs the installed library's CLI module
 * (`dist/cli.js`, what `bin/liveupdate.js` runs) in a fresh node, so it
 * works on the host and in a test guest, whose image carries the package's
 * `dist/` but not its `bin/`.
 */
import * as path from 'node:path';
import { describeCommand, runProcess, type ProcessResult, type RunProcessOptions } from './process.js';

/** The installed library's CLI module. */
export function cliModule(): string {
  return path.join(path.dirname(require.resolve('liveupdate')), 'cli.js');
}

/** The environment variable that carries the arguments into {@link cliLauncher} (as JSON: no quoting, no option parsing by node). */
export const CLI_ARGS_ENV = 'LIVEUPDATE_CLI_ARGS';

/**
 * The node script that runs the CLI with the arguments in {@link CLI_ARGS_ENV}
 * and exits with its status, as bin/liveupdate.js does. `prelude` runs first
 * (what a service manager does between fork and exec, say).
 */
export function cliLauncher(prelude = ''): string {
  return `${prelude}
Promise.resolve(require(${JSON.stringify(cliModule())}).main(JSON.parse(process.env.${CLI_ARGS_ENV}))).then((status) => { process.exitCode = status; });`;
}

/** How `liveupdate ARGS` ended, what it printed, and its `--json` output parsed. */
export interface CliResult extends ProcessResult {
  /** stdout parsed as JSON; throws, naming the command and its output, when it is not JSON. */
  json<T>(): T;
}

/**
 * Runs `liveupdate ARGS` to its end (bounded by `options.timeoutMs`, default
 * 60 s: the process is killed and the call rejects after it). The exit
 * status is reported, not judged: a refusal is an answer too.
 */
export async function runCli(args: readonly string[], options: RunProcessOptions = {}): Promise<CliResult> {
  const label = describeCommand('liveupdate', args);
  const result = await runProcess(process.execPath, ['-e', cliLauncher()], { ...options, label, env: { ...options.env, [CLI_ARGS_ENV]: JSON.stringify(args) } });
  return {
    ...result,
    json<T>(): T {
      try {
        return JSON.parse(result.stdout) as T;
      } catch {
        throw new Error(`${label} printed no JSON (exit ${String(result.status ?? result.signal)})\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
      }
    },
  };
}
