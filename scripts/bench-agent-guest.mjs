#!/usr/bin/env node
// The agent on a real LUO kernel under QEMU (test/kernel/scenarios/agent-bench.ts):
// create/preserve/ready from 111 clients at once, then the time until groups of
// 1, 10 and 100 clients hold their fds again after the kexec. Needs `npm run
// compile` and a kernel (npm run vm:kernel, or LIVEUPDATE_KERNEL=path).
import * as path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..');
const { runVm, findKernels } = require(path.join(root, 'conformance', 'dist', 'index.js'));
const kernel = findKernels()[0];
if (kernel === undefined) throw new Error('no LUO kernel: npm run vm:kernel');
const run = await runVm({
  name: 'agent-bench',
  kernels: [kernel.path],
  scenarios: [path.join(root, 'dist-test', 'kernel', 'scenarios', 'agent-bench.js')],
  logDir: path.join(root, '.vm-out'),
  timeoutMs: 900_000,
});
if (!run.ok) {
  console.error(run.report());
  process.exit(1);
}
const boot2 = run.stages.find((s) => s.stage === 2);
console.log(JSON.stringify({
  kernel: kernel.release,
  stage1: run.result('agent-bench/claim-times', 1).reports['stage 1'],
  stage2: run.result('agent-bench/claim-times', 2).reports['stage 2'],
  stage2RunnerStartUptimeMs: boot2?.uptimeMs ?? null,
}, null, 2));
