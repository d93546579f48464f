/**
 * The floor under node's start in the kernel a blackout ended in: after
 * every other case of the boot is done (this scenario is listed last),
 * times `node -e 0` a few times in the new kernel and reports the median.
 * Stage 1 does nothing, so it changes nothing before the jump.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';

/** The case whose stage 2 value is the median ms of `node -e 0`. */
export const NODE_FLOOR_CASE = 'bench-node-floor/node-e-0';
const RUNS = 3;

function nodeStartMs(): number {
  const started = process.hrtime.bigint();
  const run = spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  if (run.status !== 0) throw new Error(`node -e 0 exited ${String(run.status ?? run.signal)}`);
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function afterJump(ctx: StageContext): JsonValue {
  const times = Array.from({ length: RUNS }, nodeStartMs).sort((a, b) => a - b);
  ctx.report('node-floor', times);
  return times[Math.floor(RUNS / 2)] ?? null;
}

/** @internal */
export default defineScenario('bench-node-floor', [defineCase('node-e-0', [null, afterJump])]);
