#!/usr/bin/env node
// npm test's runner (after compile and typecheck): the host tests, then the
// two lanes of kernel tests (vitest.config.mts: `kernel` and
// `kernel-systemd`) at the same time, each a vitest of its own whose lines
// are prefixed with its lane. Arguments (file filters, vitest options) run
// one plain `vitest run` with them instead. Exits non-zero when any part
// failed, after every part has run.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const vitest = new URL('../node_modules/vitest/vitest.mjs', import.meta.url).pathname;

/** Runs vitest with `args`; every output line goes through `prefix`. Resolves with its exit status. */
function run(args, prefix = '') {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [vitest, 'run', ...args], { stdio: ['ignore', prefix ? 'pipe' : 'inherit', prefix ? 'pipe' : 'inherit'] });
    if (prefix) {
      createInterface({ input: child.stdout }).on('line', (line) => process.stdout.write(`${prefix}${line}\n`));
      createInterface({ input: child.stderr }).on('line', (line) => process.stderr.write(`${prefix}${line}\n`));
    }
    child.on('error', (error) => {
      process.stderr.write(`${prefix}cannot run vitest: ${error.message}\n`);
      resolve(1);
    });
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

const given = process.argv.slice(2);
if (given.length > 0) process.exit(await run(given));

const started = Date.now();
const host = await run(['--project', 'host']);
const lanes = await Promise.all([run(['--project', 'kernel'], '[kernel] '), run(['--project', 'kernel-systemd'], '[kernel-systemd] ')]);
const failed = [host, ...lanes].map((status, i) => [['host', 'kernel', 'kernel-systemd'][i], status]).filter(([, status]) => status !== 0);
const seconds = Math.round((Date.now() - started) / 1000);
if (failed.length > 0) {
  process.stderr.write(`npm test: FAILED (${failed.map(([name, status]) => `${name} exited ${status}`).join(', ')}) after ${seconds} s\n`);
  process.exit(1);
}
process.stdout.write(`npm test: host tests and both kernel lanes passed in ${seconds} s\n`);
