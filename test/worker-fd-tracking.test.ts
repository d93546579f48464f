/**
 * What the README's *Threads* paragraph says of node's fd tracking in a
 * Worker, held to the node running the tests: closing an fd of this package
 * with fs.closeSync in a Worker warns (node's fs did not open it) unless the
 * Worker was started with `trackUnmanagedFds: false`, and node closes no fd
 * of ours when the Worker ends. In a child node, whose warnings are read
 * from its stderr.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.join(__dirname, '..');

/** A Worker that makes two memfds and closes them, and hands a third to the main thread; the main thread reports whether it is still open after the Worker ended. */
function runWorker(trackUnmanagedFds: boolean): { stderr: string; keptOpenAfterExit: boolean } {
  const worker = [
    "const { memfd } = require('liveupdate');",
    "const fs = require('node:fs');",
    "fs.closeSync(memfd.createSync('closed-1'));",
    "fs.closeSync(memfd.createSync('closed-2'));",
    "require('node:worker_threads').parentPort.postMessage(memfd.createSync('kept'));",
  ].join('\n');
  const main = `
    const { Worker } = require('node:worker_threads');
    const fs = require('node:fs');
    const w = new Worker(${JSON.stringify(worker)}, { eval: true, trackUnmanagedFds: ${trackUnmanagedFds} });
    w.on('message', (fd) => w.once('exit', () => {
      let open = true;
      try { fs.fstatSync(fd); } catch { open = false; }
      process.stdout.write(JSON.stringify({ open }));
    }));`;
  const out = spawnSync(process.execPath, ['-e', main], { cwd: ROOT, encoding: 'utf8' });
  expect(out.status, out.stderr).toBe(0);
  return { stderr: out.stderr, keptOpenAfterExit: (JSON.parse(out.stdout) as { open: boolean }).open };
}

const WARNING = /File descriptor \d+ closed but not opened in unmanaged mode/g;

describe("node's fd tracking in a Worker, for the fds this package gives", () => {
  it('warns at each fs.closeSync of one by default, and node leaves the others open when the Worker ends', () => {
    const { stderr, keptOpenAfterExit } = runWorker(true);
    expect(stderr.match(WARNING)).toHaveLength(2);
    expect(keptOpenAfterExit).toBe(true);
  });

  it('is silent with trackUnmanagedFds: false, and still leaves them open', () => {
    const { stderr, keptOpenAfterExit } = runWorker(false);
    expect(stderr).not.toMatch(WARNING);
    expect(keptOpenAfterExit).toBe(true);
  });
});
