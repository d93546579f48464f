/**
 * The guest side of the benchmark's agent path: the real `liveupdate agent`
 * (the library's CLI, its own process) serving clients across kexecs made
 * by `liveupdate update`, one kernel per client count and one more.
 *
 * With counts 1, 10, 100 (`lu.agentbench=` on the kernel command line):
 * kernel 1 starts the agent, 1 client creates a session, preserves a memfd
 * and says ready, `liveupdate update` kexecs; kernel 2 starts the agent
 * again, that client claims its session and retrieves its fd, then 10 new
 * clients preserve and the update kexecs; kernel 3: 10 claim, 100
 * preserve; kernel 4: 100 claim. So each count claims in a kernel where it
 * is the only one. The clients are connections of the runner, all of a
 * count at once (a process each would measure node's start 100 times).
 *
 * Instants are CLOCK_MONOTONIC (process.hrtime), which in the guest counts
 * from boot. Every step is timed from /init: pid 1 is the test bed's node
 * runner, so /init's start is node's time origin in this very process; the
 * runner starts the agent first thing. The agent's own start (a fresh node
 * reading the manifest) is part of the figure, as it is of any real update.
 * The pid 1 task's start from /proc/1/stat (in clock ticks, read in the
 * guest) is reported beside it: it comes earlier, before the kernel unpacks
 * the initramfs, and shows the two clocks agree.
 *
 * Across the kexec no guest clock holds (each kernel's starts again, its
 * wall clock from the RTC, to a second): each kernel sends clock samples
 * after its timed part, and the host places the agent's `frozenAt` (old
 * kernel's wall clock), the kernel's own lines and these instants (new
 * kernel's monotonic clock) on its own clock (../vm/clock.ts, agent-report.ts).
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { memfd, type AgentClient, type Session } from 'liveupdate';
import { AgentProcess } from '../harness/agent.js';
import { cliModule, runCli } from '../harness/cli.js';
import { statFields } from '../harness/proc-stat.js';
import { agentStarts, cpuMs, residentKib } from './agent-snapshot.js';
import { reportClockSamples } from '../vm/clock.js';
import type { JsonValue } from '../vm/protocol.js';
import { defineCase, defineScenario, type StageContext } from '../vm/scenario.js';
import { agentCountsFromCmdline } from './params.js';
import { guestMachine } from './scenario.js';

const SOCKET = '/run/liveupdate/agent.sock';
const TOKEN = 1n;
const FILE_BYTES = 4096;
/** How long the agent may take to answer, and the update to kexec (TCG is slow). */
const ANSWER_TIMEOUT_MS = 300_000;
const UPDATE_TIMEOUT_S = 120;
/** The bound on `liveupdate update` as a process: its own wait for the clients, and the load and freeze. */
const UPDATE_BOUND_MS = (UPDATE_TIMEOUT_S + 120) * 1000;
const NS_PER_MS = 1e6;
/** Where the start rounds build the snapshot and put their agents' socket (root's alone). */
const START_DIR = '/run/lu-agent-start';
/** Interleaved rounds of node -e 0, the agent and the agent from a snapshot (a second or two each under TCG). */
const START_ROUNDS = 3;

/** Milliseconds since boot (CLOCK_MONOTONIC). */
function nowMs(): number {
  return Number(process.hrtime.bigint()) / NS_PER_MS;
}

/**
 * Pid 1's task start in clock ticks since boot (/proc/1/stat field 22). The
 * kernel creates that task early, before it initialises drivers and unpacks
 * the initramfs, and exec does not change it: it is not the instant /init runs.
 */
function pid1TaskTicks(): number {
  const stat = fs.readFileSync('/proc/1/stat', 'utf8');
  const ticks = Number(statFields(stat)[19]);
  if (!Number.isSafeInteger(ticks) || ticks < 0) throw new Error(`no start time in /proc/1/stat: ${stat}`);
  return ticks;
}

/**
 * The instant /init (this process, node) started: node's time origin, which
 * it takes first thing at startup, on the monotonic clock.
 */
function initExecMs(): number {
  return nowMs() - performance.now();
}

/** A client's connection, retried while the agent is busy accepting the others. */
function connect(agent: AgentProcess): Promise<AgentClient> {
  return agent.connect({}, ANSWER_TIMEOUT_MS);
}

function sessionName(stage: number, i: number): string {
  return `bench-agent-${stage}-${i}`;
}

/** What client `i` of `stage` preserves: one page saying whose it is. */
function contentOf(stage: number, i: number): string {
  return `agent bench: kernel ${stage}, client ${i}`.padEnd(FILE_BYTES, '.');
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * `count` clients at once: connect (hello), create a session, preserve a
 * memfd made beforehand, say ready. Kept to the kexec. Three requests each
 * reach the agent; the preserve is the client's own ioctl.
 */
async function preserveClients(ctx: StageContext, agent: AgentProcess, count: number): Promise<Record<string, JsonValue>> {
  const files = range(count).map((i) => {
    const fd = memfd.createSync('bench-agent');
    fs.writeSync(fd, contentOf(ctx.stage, i), 0, 'latin1');
    return fd;
  });
  const started = nowMs();
  await Promise.all(
    range(count).map(async (i) => {
      const client = await connect(agent);
      const session = await client.createSession(sessionName(ctx.stage, i), { metadata: i });
      await session.preserve(files[i] as number, TOKEN);
      await client.ready();
      ctx.keep(client, session);
    }),
  );
  const ms = nowMs() - started;
  files.forEach((fd) => fs.closeSync(fd)); // the kernel holds its own references
  const requests = count * 3;
  return { clients: count, ms, requests, requests_per_s: (requests / ms) * 1000, agent_rss_kib: residentKib(agent.child.pid) };
}

/** One client after the kexec: what it holds and when it had it. */
interface Claimed {
  readonly client: AgentClient;
  readonly session: Session;
  readonly fd: number;
  /** When it had its fd, and when its hello was answered (ms since boot). */
  readonly at: number;
  readonly helloAt: number;
}

/** The median of `values` (an even count: the upper middle one). */
function median(values: readonly number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
}

/**
 * The `count` clients of the previous kernel at once: connect, claim the
 * session from the agent, retrieve the fd. Afterwards (not timed) each
 * checks its bytes and releases the session, so nothing waits into the
 * next kernel.
 */
async function claimClients(
  ctx: StageContext,
  agent: AgentProcess,
  count: number,
): Promise<{ started: number; last: number; helloMedian: number; agentCpuMs: number; clientsCpuMs: number; held: number; frozenAt: number | null; firstOpenAt: number | null }> {
  const stage = ctx.stage - 1;
  const cpuBefore = cpuMs(agent.child.pid);
  const clientsCpuBefore = process.cpuUsage();
  const started = nowMs();
  const claimed = await Promise.all(
    range(count).map(async (i): Promise<Claimed> => {
      const client = await connect(agent);
      const helloAt = nowMs();
      const { session } = await client.retrieveSession(sessionName(stage, i));
      const fd = await session.retrieve(TOKEN);
      return { client, session, fd, at: nowMs(), helloAt };
    }),
  );
  const last = Math.max(...claimed.map((c) => c.at));
  // The agent's CPU time over the claim phase: what the clients cost it, however the emulated CPUs are shared.
  const agentCpuMs = cpuMs(agent.child.pid) - cpuBefore;
  // And the clients' (this process, the runner): the other end of the same requests, on the other emulated CPU.
  const clientsCpu = process.cpuUsage(clientsCpuBefore);
  const clientsCpuMs = (clientsCpu.user + clientsCpu.system) / 1000;
  // Half the clients had their hello answered by then: the connects and hellos, before any claim is asked.
  const helloMedian = median(claimed.map((c) => c.helloAt)) - started;
  let held = 0;
  for (const [i, c] of claimed.entries()) {
    if (fs.readFileSync(`/proc/self/fd/${c.fd}`, 'latin1') === contentOf(stage, i)) held++;
    fs.closeSync(c.fd);
    await c.session.close();
    await c.client.release(sessionName(stage, i));
    await c.client.close();
  }
  ctx.equal(`every one of the ${count} client(s) holds its own bytes again`, held, count);
  return { started, last, helloMedian, agentCpuMs, clientsCpuMs, held, ...(await updateTimes(agent)) };
}

/** The agent's instants of the update (wall clocks: `frozenAt` the old kernel's, `firstOpenAt` this one's), asked after the timed part. */
async function updateTimes(agent: AgentProcess): Promise<{ frozenAt: number | null; firstOpenAt: number | null }> {
  const client = await connect(agent);
  try {
    const { frozenAt, firstOpenAt } = await client.sessions();
    return { frozenAt, firstOpenAt };
  } finally {
    await client.close();
  }
}

/** The kexec into the next kernel: `liveupdate update`, which waits for every client to be ready. */
function updateKexecs(ctx: StageContext, agent: AgentProcess): void {
  ctx.jumpWith(async (next) => {
    const args = ['update', '--socket', SOCKET, '--kernel', next.kernel, '--initrd', next.initrd, '--cmdline', next.cmdline, '--timeout', String(UPDATE_TIMEOUT_S)];
    const update = await runCli(args, { timeoutMs: UPDATE_BOUND_MS });
    throw new Error(`liveupdate update exited with ${String(update.status ?? update.signal)} and no kexec: ${update.stderr}\nagent log:\n${agent.output}`);
  });
}

/**
 * Kernel `stage` of the agent path: starts the agent, lets the previous
 * kernel's clients claim (if any), lets this kernel's preserve (if any)
 * and makes the update, else stops the agent.
 */
function agentStage(stage: number, counts: readonly number[]): (ctx: StageContext) => Promise<JsonValue> {
  return async (ctx) => {
    const runnerAt = nowMs();
    const initAt = initExecMs();
    const agent = await AgentProcess.start({ socket: SOCKET, readyTimeoutMs: ANSWER_TIMEOUT_MS });
    // The start waits for the agent's first answer to a hello: node's time origin is /init's start.
    const answeringAt = initAt + agent.answeredAt;
    const claimed = counts[stage - 2];
    const claims = claimed === undefined ? null : await claimClients(ctx, agent, claimed);
    const preserves = counts[stage - 1];
    const preserve = preserves === undefined ? null : await preserveClients(ctx, agent, preserves);
    if (preserve === null) ctx.equal('the agent stops on SIGTERM', await agent.stop(), 0) || ctx.report('agent log', agent.output);
    else updateKexecs(ctx, agent);
    // The last kernel, once its agent is gone: its start as today, from a V8 snapshot, and node's own, side by side.
    const starts = preserve === null ? await agentStarts(path.resolve(path.dirname(cliModule()), '..'), START_DIR, START_ROUNDS) : null;
    ctx.equal('the runner is pid 1, /init itself', process.pid, 1);
    // After the timed part: the C program reads the clock tick (a process start costs seconds under TCG).
    const pid1TaskAt = (pid1TaskTicks() / guestMachine().clock_tick) * 1000;
    ctx.check('one clock: the kernel made the pid 1 task before /init ran', pid1TaskAt <= initAt + 10, { pid1TaskAt, initAt });
    const since = (at: number): number => at - initAt;
    // Outside the timed part, before any jump: how this kernel's clocks sit on the host's.
    await reportClockSamples(ctx.report);
    return {
      kernel_to_pid1_task_ms: pid1TaskAt,
      kernel_to_init_ms: initAt,
      init_to_runner_ms: since(runnerAt),
      init_to_agent_answering_ms: since(answeringAt),
      agent_answering_mono_ms: answeringAt,
      claim:
        claims === null
          ? null
          : {
              clients: claimed as number,
              held: claims.held,
              init_to_first_connect_ms: since(claims.started),
              init_to_all_hold_fds_ms: since(claims.last),
              claim_ms: claims.last - claims.started,
              hello_answered_ms: claims.helloMedian,
              agent_cpu_ms: claims.agentCpuMs,
              clients_cpu_ms: claims.clientsCpuMs,
              all_hold_fds_mono_ms: claims.last,
              frozen_at_wall_ms: claims.frozenAt,
              first_open_at_wall_ms: claims.firstOpenAt,
            },
      preserve,
      starts: starts as unknown as JsonValue,
    };
  };
}

/** One case, a stage per count and one more; the counts come from the kernel command line (the host's choice). */
function agentCase(): ReturnType<typeof defineCase> {
  const counts = agentCountsFromCmdline(fs.readFileSync('/proc/cmdline', 'utf8'));
  return defineCase('path', range(counts.length + 1).map((i) => agentStage(i + 1, counts)));
}

/** @internal */
export default defineScenario('bench-agent', [agentCase()]);
