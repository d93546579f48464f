/**
 * The agent's requests per second on the host, with no LUO needed: the real
 * `liveupdate agent` (the library's CLI in its own process, no device) and
 * many clients in this process, each connected once and then repeating
 * `ready` + `sessions` (requests every agent answers without the device).
 * Rounds of all clients at once; the warm-up rounds are dropped.
 * @internal
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentProcess } from '../harness/agent.js';

/** Sizes of the host load. */
export interface AgentHostParams {
  /** Clients connected at once. */
  readonly clients: number;
  /** `ready` + `sessions` pairs each client makes per round. */
  readonly iterations: number;
  readonly rounds: number;
  /** Rounds run first and dropped: V8 tiering both ends up. */
  readonly warmup: number;
}

export const AGENT_HOST_FULL: AgentHostParams = { clients: 100, iterations: 10, rounds: 11, warmup: 2 };
export const AGENT_HOST_QUICK: AgentHostParams = { clients: 10, iterations: 20, rounds: 7, warmup: 2 };

/** What the host load measured, raw. */
export interface AgentHostRounds {
  readonly params: AgentHostParams;
  /** Requests per second of each timed round (all clients' requests over the round's wall time). */
  readonly requests_per_s: number[];
}

const ANSWER_TIMEOUT_MS = 30_000;

/** Runs the host load against a fresh agent process; stops it after. */
export async function runAgentHost(params: AgentHostParams, progress: (line: string) => void): Promise<AgentHostRounds> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-bench-agent-'));
  try {
    // A device path that does not exist: the agent serves without one, as on any kernel without LUO.
    const agent = await AgentProcess.start({ socket: path.join(dir, 'agent.sock'), device: path.join(dir, 'no-device'), readyTimeoutMs: ANSWER_TIMEOUT_MS });
    try {
      return await measure(agent, params, progress);
    } finally {
      await agent.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The rounds of all clients at once against `agent`. */
async function measure(agent: AgentProcess, params: AgentHostParams, progress: (line: string) => void): Promise<AgentHostRounds> {
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
