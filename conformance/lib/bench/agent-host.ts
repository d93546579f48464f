/**
 * The agent on the host, with no LUO needed: the real `liveupdate agent`
 * (the library's CLI in its own process, no device) and clients in this
 * process.
 * - Requests per second: many clients, each connected once and then
 *   repeating `ready` + `sessions` (requests every agent answers without
 *   the device). Rounds of all clients at once; the warm-up rounds are dropped.
 * - Its start: spawn to its first answer, as today and from a V8 snapshot,
 *   against `node -e 0` (spawn to exit), interleaved rounds (agent-snapshot.ts).
 * - The claim path up to the device call, for 1 to 1000 clients at once:
 *   connect (hello) and `retrieveSession`, which the agent answers
 *   "unavailable" where the kernel would be asked (no /dev/liveupdate
 *   here), and the agent's resident memory idle and with those clients
 *   connected. (Holding sessions needs the device: the guest measures that.)
 * @internal
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentUnavailableError, type AgentClient } from 'liveupdate';
import { AgentProcess } from '../harness/agent.js';
import { cliModule } from '../harness/cli.js';
import { agentStarts, cpuMs, residentKib, type AgentStarts } from './agent-snapshot.js';

/** Sizes of the host load. */
export interface AgentHostParams {
  /** Clients connected at once. */
  readonly clients: number;
  /** `ready` + `sessions` pairs each client makes per round. */
  readonly iterations: number;
  readonly rounds: number;
  /** Rounds run first and dropped: V8 tiering both ends up. */
  readonly warmup: number;
  /** Rounds of the start (agent and `node -e 0`, interleaved). */
  readonly startRounds: number;
  /** Client counts of the claim path, and rounds of each. */
  readonly claimCounts: readonly number[];
  readonly claimRounds: number;
}

export const AGENT_HOST_FULL: AgentHostParams = { clients: 100, iterations: 10, rounds: 11, warmup: 2, startRounds: 11, claimCounts: [1, 10, 100, 1000], claimRounds: 7 };
export const AGENT_HOST_QUICK: AgentHostParams = { clients: 10, iterations: 20, rounds: 7, warmup: 2, startRounds: 5, claimCounts: [1, 10, 100, 1000], claimRounds: 3 };

/** The claim path for one count, raw: each round's wall time (ms), the agent's CPU time in it (ms) and its RSS with the clients connected (KiB). */
export interface ClaimPathRounds {
  readonly clients: number;
  readonly ms: number[];
  readonly agent_cpu_ms: number[];
  readonly rss_kib: number[];
}

/** What the host load measured, raw. */
export interface AgentHostRounds {
  readonly params: AgentHostParams;
  /** Requests per second of each timed round (all clients' requests over the round's wall time). */
  readonly requests_per_s: number[];
  /** Spawn to first answer (the agent as today, and from a snapshot) and to exit (`node -e 0`), ms, interleaved rounds. */
  readonly start: AgentStarts;
  /** The agent's resident memory once started, no client (KiB). */
  readonly rss_idle_kib: number;
  readonly claim_path: ClaimPathRounds[];
}

const ANSWER_TIMEOUT_MS = 30_000;

/** A device path that does not exist: the agent serves without one, as on any kernel without LUO. */
function startAgent(dir: string): Promise<AgentProcess> {
  return AgentProcess.start({ socket: path.join(dir, 'agent.sock'), device: path.join(dir, 'no-device'), readyTimeoutMs: ANSWER_TIMEOUT_MS });
}

/** Runs the host load against fresh agent processes; stops them after. */
export async function runAgentHost(params: AgentHostParams, progress: (line: string) => void): Promise<AgentHostRounds> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-bench-agent-'));
  try {
    progress(`host: the agent's start (spawn to its first answer) as today and from a V8 snapshot, against node -e 0, ${params.startRounds} rounds`);
    const start = await agentStarts(path.resolve(path.dirname(cliModule()), '..'), path.join(dir, 'start'), params.startRounds);
    const agent = await startAgent(dir);
    try {
      const rss_idle_kib = residentKib(agent.child.pid);
      const rates = await measure(agent, params, progress);
      const claim_path = await measureClaimPath(agent, params, progress);
      return { ...rates, start, rss_idle_kib, claim_path };
    } finally {
      await agent.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The claim path up to the device call: `count` clients at once connect and
 * ask for a session back, which this agent answers "unavailable" (it has no
 * device) where one with a device would call RETRIEVE_SESSION. Any other
 * answer breaks the measure.
 */
async function claimUpToDevice(agent: AgentProcess, count: number): Promise<{ ms: number; agentCpuMs: number; clients: AgentClient[] }> {
  const cpuBefore = cpuMs(agent.child.pid);
  const started = performance.now();
  const clients = await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const client = await agent.connect({}, ANSWER_TIMEOUT_MS);
      try {
        await client.retrieveSession(`bench-claim-${i}`);
      } catch (error) {
        if (!(error instanceof AgentUnavailableError)) throw error;
        return client;
      }
      throw new Error('the agent without a device handed a session back');
    }),
  );
  return { ms: performance.now() - started, agentCpuMs: cpuMs(agent.child.pid) - cpuBefore, clients };
}

/** Rounds of the claim path per count, with the agent's RSS while the clients are connected. */
async function measureClaimPath(agent: AgentProcess, params: AgentHostParams, progress: (line: string) => void): Promise<ClaimPathRounds[]> {
  progress(`host: the claim path up to the device call for ${params.claimCounts.join(', ')} clients at once, ${params.claimRounds} rounds each`);
  const out: ClaimPathRounds[] = [];
  for (const count of params.claimCounts) {
    const rounds: ClaimPathRounds = { clients: count, ms: [], agent_cpu_ms: [], rss_kib: [] };
    for (let r = 0; r < params.claimRounds; r++) {
      const { ms, agentCpuMs, clients } = await claimUpToDevice(agent, count);
      rounds.ms.push(ms);
      rounds.agent_cpu_ms.push(agentCpuMs);
      rounds.rss_kib.push(residentKib(agent.child.pid));
      await Promise.all(clients.map((c) => c.close()));
    }
    out.push(rounds);
  }
  return out;
}

/** The rounds of all clients at once against `agent`. */
async function measure(agent: AgentProcess, params: AgentHostParams, progress: (line: string) => void): Promise<Pick<AgentHostRounds, 'params' | 'requests_per_s'>> {
  progress(`host: the agent process against ${params.clients} clients, ${params.rounds} rounds (after ${params.warmup} warm-up) of ${params.iterations}× ready + sessions each`);
  const clients = await Promise.all(Array.from({ length: params.clients }, () => agent.connect({}, ANSWER_TIMEOUT_MS)));
  const perRound = params.clients * params.iterations * 2;
  const rates: number[] = [];
  for (let r = 0; r < params.warmup + params.rounds; r++) {
    const started = process.hrtime.bigint();
    await Promise.all(
      clients.map(async (client) => {
        for (let i = 0; i < params.iterations; i++) {
          await client.ready();
          await client.sessions();
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (r >= params.warmup) rates.push(perRound / seconds);
  }
  await Promise.all(clients.map((c) => c.close()));
  return { params, requests_per_s: rates };
}
