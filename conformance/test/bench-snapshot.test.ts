/**
 * The agent's V8 snapshot (agent-snapshot.ts) is built from the package as
 * it is built: its module graph must follow the package's absolute requires,
 * into its bundles, where each bundled module's requires are of files beside
 * where it was. A graph that names a missing file fails the snapshot's build.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildAgentSnapshot, moduleGraph } from '../lib/bench/agent-snapshot.js';
import { CLI_ARGS_ENV, cliModule } from '../lib/harness/cli.js';

const root = path.resolve(path.dirname(cliModule()), '..');

describe("the agent's snapshot", () => {
  it("finds every module the CLI may load, bundled or not, and only files that exist", () => {
    const graph = [...moduleGraph(root, cliModule()).keys()];
    expect(graph.filter((key) => !fs.existsSync(path.join(root, key)))).toEqual([]);
    // The bundles, and what the CLI loads on first use from inside one (the update, the status, the client).
    expect(graph).toEqual(expect.arrayContaining(['dist/core.js', 'dist/agent-start.js', 'dist/agent/update.js', 'dist/status.js', 'dist/agent/client.js']));
  });

  it('builds, and the CLI runs from it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-snapshot-'));
    try {
      const blob = path.join(dir, 'agent.blob');
      buildAgentSnapshot(root, blob);
      const run = spawnSync(process.execPath, ['--snapshot-blob', blob], { env: { ...process.env, [CLI_ARGS_ENV]: JSON.stringify(['--help']) }, encoding: 'utf8', timeout: 30_000 });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toContain('usage: liveupdate COMMAND');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
