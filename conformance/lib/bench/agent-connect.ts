/**
 * A client connecting to an agent that may still be starting, as a real
 * client would: retried while nobody answers yet, given up when the agent
 * has exited or the deadline has passed. Shared by the guest and the host
 * halves of the agent path.
 * @internal
 */
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, AgentUnavailableError } from 'liveupdate';

const RETRY_MS = 20;

/** Connects (hello included) to the agent process `agent` at `socket`; `log` is what it has said, for the error. */
export async function connectRetrying(socket: string, agent: ChildProcess, deadline: number, log: () => string): Promise<AgentClient> {
  for (;;) {
    try {
      return await AgentClient.connect({ socket });
    } catch (error) {
      if (!(error instanceof AgentUnavailableError)) throw error;
      if (agent.exitCode !== null || agent.signalCode !== null) throw new Error(`the agent exited with ${String(agent.exitCode ?? agent.signalCode)}:\n${log()}`);
      if (performance.now() > deadline) throw new Error(`no agent answered at ${socket} in time:\n${log()}`, { cause: error });
      await sleep(RETRY_MS);
    }
  }
}
