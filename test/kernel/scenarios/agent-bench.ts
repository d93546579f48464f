/**
 * Measurements of the agent on a real LUO kernel (not a test: run by
 * scripts/bench-agent-guest.mjs, which prints the reports). Stage 1: 111
 * clients connect at once and each creates a session, preserves a 4 KiB
 * memfd and says ready; `liveupdate update` kexecs. Stage 2: the agent
 * starts again, then groups of 1, 10 and 100 clients each claim their
 * session and retrieve the file, all the clients of a group at once.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { AgentClient, memfd } from 'liveupdate';
import { defineCase, defineScenario, type JsonValue, type StageContext } from 'liveupdate-conformance';
import { agentAnswers, AgentProcess, cli, SOCKET, writePolicy } from './agent.js';

const GROUPS = [1, 10, 100];
const CLIENTS = GROUPS.reduce((a, b) => a + b, 0);

async function preserveAll(ctx: StageContext): Promise<JsonValue> {
  writePolicy();
  const agent = new AgentProcess({});
  await agentAnswers(agent);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const client = await AgentClient.connect({ socket: SOCKET });
      const session = await client.createSession(`bench-${i}`, { metadata: i });
      const fd = await memfd.create('bench');
      fs.ftruncateSync(fd, 4096);
      await session.preserve(fd, 1);
      await client.ready();
      ctx.keep(client, session, fd);
    }),
  );
  const ms = performance.now() - started;
  // hello, createSession and ready go to the agent; preserve is the client's own ioctl.
  ctx.report('stage 1', { clients: CLIENTS, ms: Math.round(ms), agentRequestsPerSecond: Math.round(((CLIENTS * 3) / ms) * 1000), clientsPerSecond: Math.round((CLIENTS / ms) * 1000) });
  ctx.jumpWith(async (next) => {
    const run = await cli(['update', '--socket', SOCKET, '--kernel', next.kernel, '--initrd', next.initrd, '--cmdline', next.cmdline, '--timeout', '60']);
    throw new Error(`liveupdate update exited ${run.code}: ${run.stdout} ${run.stderr}\n${agent.log}`);
  });
  return null;
}

async function claimAll(ctx: StageContext): Promise<void> {
  const runnerAt = os.uptime();
  writePolicy();
  const agent = new AgentProcess({});
  await agentAnswers(agent);
  const agentAt = os.uptime();
  const groups: JsonValue[] = [];
  let first = 0;
  for (const size of GROUPS) {
    const started = performance.now();
    await Promise.all(
      Array.from({ length: size }, async (_, k) => {
        const client = await AgentClient.connect({ socket: SOCKET });
        const { session } = await client.retrieveSession(`bench-${first + k}`);
        const fd = await session.retrieve(1);
        ctx.keep(client, session, fd);
      }),
    );
    groups.push({ clients: size, ms: Math.round(performance.now() - started), uptimeS: os.uptime() });
    first += size;
  }
  ctx.check('every client holds its fd again', first === CLIENTS);
  ctx.report('stage 2', { runnerStartUptimeS: runnerAt, agentAnswersUptimeS: agentAt, groups });
  await agent.stop();
}

/** @internal */
export default defineScenario('agent-bench', [defineCase('claim-times', [preserveAll, claimAll])]);
