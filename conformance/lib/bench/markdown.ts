/**
 * Writes BENCHMARKS.md from the JSON of one full run, so that every number
 * in it comes from that run and the text around them cannot drift from it:
 *
 *   npm run -s bench -- --all --json > bench.json
 *   node conformance/dist/bench/markdown.js bench.json > BENCHMARKS.md
 *
 * A second file, the JSON of a `--groups-only` run, puts its groups in
 * place of the first's (each group's section says which run it came from):
 *
 *   node conformance/dist/bench/markdown.js bench.json groups.json > BENCHMARKS.md
 *
 * The groups take hours, so they can also run apart from the rest and go
 * into an existing BENCHMARKS.md, in their own generated block (over the
 * groups it had; the rest of the file stays as its run wrote it):
 *
 *   node conformance/dist/bench/markdown.js --splice BENCHMARKS.md groups.json... > BENCHMARKS.new.md
 *
 * Several groups files pool their boots (groups-merge.ts).
 *
 * (`-s`: without it npm writes its own banner to stdout, ahead of the JSON.)
 * @internal
 */
import * as fs from 'node:fs';
import type { AgentResult } from './agent-report.js';
import { groupsBlock, spliceGroups } from './groups-report.js';
import { mergeGroups } from './groups-merge.js';
import { ERROR_PROCESSES, FRESH_NODE_RUNS, WARM_SUCCESSES } from './params.js';
import type { GroupResults } from './groups.js';
import type { GroupsOnlyResult } from './run.js';
import type { Target } from './host-report.js';
import { formatTable, type BenchResult } from './report.js';
import type { Interval } from './stats.js';

const INTRO = `# Benchmarks

What does the binding cost against a few lines of C? \`npm run bench\` answers in two places:

- **On the host, at native speed, with no LUO needed**: nanoseconds per call of the sync and the
  Promise forms against a C loop ([\`bench/host_bench.c\`](conformance/bench/host_bench.c), compiled by the
  benchmark) making the same syscall in the same run: \`memfd.getSeals\` against
  \`fcntl(F_GET_SEALS)\`, a LUO ioctl on a memfd (which every kernel refuses with \`ENOTTY\` after
  the same user/kernel round trip), and passing one memfd over a seqpacket pair.
- **On a real LUO kernel under QEMU**, in several independent boots: the public API (\`LiveUpdate\`,
  \`Session\`, \`memfd\`) side by side with [\`bench/luo_bench.c\`](conformance/bench/luo_bench.c), a static C
  program making the same ioctls with the structures of
  [\`include/liveupdate/abi.h\`](include/liveupdate/abi.h), and the blackout after a kexec taken apart.
- **The agent path**, in a guest run of its own per boot: the real \`liveupdate agent\` across kexecs
  made by \`liveupdate update\`, and the time from the new kernel's \`/init\` until every client
  holds its fds again, for 1, 10 and 100 clients; the agent's requests per second, in the guest
  and on the host.
- **Opt-in groups**, each over independent boots of its own on the newest kernel: the blackout on a
  systemd host (systemd 262 as PID 1, \`systemctl kexec\`) against the standalone agent; a real
  VMM's downtime (QEMU and the counter guest of \`examples/qemu-vmm/\`, at 64 MiB and 1 GiB, against a
  cold restart); a fleet rollout by \`ansible-playbook\` (time per host and for the fleet, blackout
  per host).

\`\`\`sh
npm run bench                      # table on stdout, progress on stderr
npm run -s bench -- --json         # one JSON object (-s: no npm banner on stdout)
npm run bench -- --boots 3         # independent boots of the guest benchmark (default 5)
npm run bench -- --quick           # fewer rounds, 64 MiB instead of 1 GiB, agent path 1 and 10 clients (CI: --quick --boots 1)
npm run bench -- --host-only       # the host cases alone: no kernel, no QEMU
npm run bench -- --agent-only      # the agent path's boots and its host cases alone (a change to the agent, measured in a few boots)
npm run bench -- --kernel 7.3      # another cached kernel series, a release, or a bzImage path
npm run bench -- --systemd         # opt-in group: blackout on a systemd host vs the standalone agent
npm run bench -- --vmm             # opt-in group: a real QEMU guest's downtime, 64 MiB, 1 GiB, cold restart
npm run bench -- --fleet 3         # opt-in group: one rollout by ansible-playbook over 3 hosts
npm run bench -- --group-boots 5   # boots per path of --systemd and --vmm (default 3)
npm run bench -- --groups-only --systemd --vmm   # the groups alone, without the rest
npm run -s bench -- --all --json > bench.json    # everything: what this file records
node conformance/dist/bench/markdown.js bench.json > BENCHMARKS.md   # this file, from a run's JSON
node conformance/dist/bench/markdown.js bench.json groups.json > BENCHMARKS.md   # with a --groups-only run's groups
node conformance/dist/bench/markdown.js --splice BENCHMARKS.md groups.json > new.md  # only the groups' block, over this file
\`\`\`

Every figure is a median with a 95% confidence interval (percentile bootstrap, seeded, so the
same data gives the same interval). A target is **met** only when the whole interval is under
it, **missed** when the whole interval is over it, and **undecided** otherwise: one run's point
estimate on a shared machine moves by more than a target's margin, so it is not evidence.
`;

const METHOD = `## How it measures

- **Intervals.** Guest ratios: per boot, node's median over C's median; reported, the median over
  boots; the interval resamples boots and, within each, the interleaved rounds as pairs (a
  round's node and C figures stay together), so it carries the spread between boots and within
  them. Host overheads: per round, node's ns per call minus C's in the same round; the median of
  those differences and its bootstrap interval. Host ratios (fd passing): as the guest's, over
  the rounds of the one run.
- **Host cases** (\`host\`, \`fdpass\`): one C server started by the benchmark answers "do N calls"
  with the nanoseconds they took; each round times a batch of node sync calls, one of node
  Promise calls and one of C's, the order rotating by round, after warm-up rounds that are
  dropped. The LUO ioctl on a memfd goes through the addon's LUO glue directly (the public API
  refuses a memfd as a session before any syscall), and node's figure includes building the
  error it throws, which C's loop does not do. Fd passing times send and receive in batches of
  100 round trips on both sides, and closes the received fds between batches, untimed: the close
  is no part of the two calls, and node's \`fs.closeSync\` alone costs more than C's \`close(2)\`
  (two trace-event lookups per call on node 20). \`require('liveupdate')\` is timed in fresh node
  processes, alternating with \`node -e 0\`, and the module files it loads are listed. The typed
  error runs in ${ERROR_PROCESSES} fresh node processes of its own, each after ${WARM_SUCCESSES.toLocaleString('en-US')} successful calls of
  the same function: whether V8 optimizes the failing calls again after the first failure
  deoptimized them differs from one process to the next (about 1.5 against 1.8 of node's throw),
  so its ratio is judged over the processes as the guest's are over boots.
- **Two sides, one guest run, one clock.** Node and C run in the same kernels, one after the
  other or interleaved, both timing with \`CLOCK_MONOTONIC\` (\`process.hrtime\`). \`/dev/liveupdate\`
  has one owner at a time, so each side opens it only to create or retrieve its sessions.
- **Small cases** (\`preserve_small\`, \`retrieve_small\`): sessions of one-page memfds, made
  beforehand; only the ioctl calls are timed. C runs as a server: node tells it over a pipe to do
  its next 50 calls and reads back the nanoseconds they took; node times its own 50 in between,
  and who goes first alternates. Warm-up rounds are reported (the first as \`cold\`), not counted.
  \`retrieve_small\` retrieves, after the kexec, the very sessions \`preserve_small\` preserved.
- **Large case** (\`preserve_large\`, \`event_loop\`): each round, node's \`preserveSync\`, node's
  \`preserve()\` and C each write a fresh memfd, preserve it ("fresh"), close the session (which
  unpreserves), preserve it again ("repeat") and free it; who goes first rotates. Node's delays
  come from \`perf_hooks.monitorEventLoopDelay\` (1 ms resolution).
- **Blackout**: the C program is pid 1 of every kernel (\`rdinit=\`). In the kernel where a side's
  100-file session arrives it starts that side's agent the way an init starts a service (fork,
  exec, wait) and then becomes the test bed's \`/init\`: the C agent in the third kernel, the node
  agent ([\`bench/blackout-agent.js\`](conformance/bench/blackout-agent.js): \`require('liveupdate')\`, open,
  the 100 files in one \`retrieveManySync\`, the same 100 ioctls as C's loop) in the fourth. Each agent is the first to retrieve in its kernel, and records the
  instant of each step. Each side's kernel brings only that side's session (the small cases'
  sessions are retrieved in the second): the first open of \`/dev/liveupdate\` rebuilds every
  incoming session and file, so whatever else a kernel brought would be timed in that side's open; \`node -e 0\` run in the same guest afterwards is the floor under node's
  start. The package's share is what the agent does once running (node: require, open,
  retrieves; C: open, retrieves). The node agent is the kernel's first node process, and much slower
  than the node processes after it (the pages it reads from the disk, counted as major faults, are
  not why: they come before its first line, none during the require). So, afterwards in the same guest, ${FRESH_NODE_RUNS} fresh nodes time
  \`require('liveupdate')\` inside themselves exactly as the host case does, alternating with ${FRESH_NODE_RUNS}
  \`node -e 0\` and ${FRESH_NODE_RUNS} requires of an empty file (node's own loader: the floor under any
  require): the guest's require target is require('liveupdate') over \`node -e 0\`, over every boot.
- **The agent path** (\`agent\`; no target: the issue sets none): its own guest run per boot,
  because the agent owns \`/dev/liveupdate\` for its whole life. One kernel per client count and
  one more: in the first, the test bed's runner starts the agent (the library's CLI, its own
  node process) and 1 client connects, creates a session, preserves a memfd and says ready;
  \`liveupdate update\` kexecs. In the next kernel the agent starts again, that client claims its
  session and retrieves its fd, then 10 new clients preserve and the update kexecs; then 10
  claim and 100 preserve; then 100 claim (\`--quick\`: 1 and 10 only). So each count claims in a
  kernel where it is the only one. The clients are connections of the runner, all of a count at
  once; each checks afterwards that it got its own bytes back. Every step is timed from \`/init\`
  (pid 1 is the runner, node: its time origin on the monotonic clock, which counts from boot):
  the runner reaching its first case, the agent (a fresh node that has read its manifest)
  answering, every client holding its fd; the claim phase alone is the clients' first connect to
  the last fd. The pid 1 task's start from \`/proc/1/stat\` (clock ticks, the guest's tick) comes
  earlier, before the kernel unpacks the initramfs, and is shown for comparison. Requests per
  second in the guest: hello, createSession and ready per client (the preserve is the client's
  own ioctl) over the preserve phase. On the host, no LUO needed: the agent process
  (\`liveupdate agent\`) with no device, and clients in the benchmark's process repeating
  \`ready\` + \`sessions\`, in rounds of all clients at once; the median over rounds.
- **The opt-in groups** (\`--systemd\`, \`--vmm\`, \`--fleet N\`; \`conformance/lib/bench/groups.ts\`): each
  sample is a boot (a host, for the fleet), each figure a span between two marks of it on the
  host's clock (the kernel's console lines as stamped on arrival, the guest's instants placed
  through each kernel's quickest clock sample: \`conformance/lib/vm/clock.ts\`), reported as the
  median over the samples with its percentile-bootstrap 95% interval and the number of samples.
  They reuse the demo's runs (\`npm run demo -- --host systemd\`, \`--vmm qemu\`, \`--fleet N\`), so
  what is measured is what the demo shows. With 3 samples a 95% interval is the range of the
  three: read it as "no fewer than, no more than", not as a precise spread. Each group records its
  own run's date, kernel and load average.
- **The machine is read, not assumed**: QEMU's accelerator from the guest's hypervisor CPUID
  signature, the clock tick (\`sysconf(_SC_CLK_TCK)\`) of host and guest, the load average
  around the run.
- **Diagnostics**: \`layers\` (public API against the addon alone), warm-up and fastest rounds,
  the CPU time of node's helper threads during large preserves, \`large_swap\` (who wrote and who
  preserved a large memfd).

The benchmark never fails for slow numbers. \`conformance/test/kernel/bench.test.ts\` runs \`--quick --boots 1\`
on one kernel in CI and checks that every field is there with sane values, so it cannot rot.
`;

const span = (value: number, interval: Interval): string => `${Math.round(value)} [${Math.round(interval[0])}, ${Math.round(interval[1])}]`;

/** The agent path: a column per client count, medians over boots with their intervals. */
function agentTable(a: AgentResult): string {
  const after = a.after_kexec;
  const row = (name: string, cells: readonly string[]): string => `| ${name} | ${cells.join(' | ')} |`;
  return [
    row('ms from the new kernel\'s /init (median [95% interval])', after.map((x) => `${x.clients} client(s)`)),
    `|---|${after.map(() => '---|').join('')}`,
    row('kernel start to /init running (not counted)', after.map((x) => span(x.kernel_to_init_ms, x.kernel_to_init_ms_ci95))),
    row('/init to the runner starting the agent', after.map((x) => span(x.init_to_runner_ms, x.init_to_runner_ms_ci95))),
    row('/init to the agent answering', after.map((x) => span(x.init_to_agent_answering_ms, x.init_to_agent_answering_ms_ci95))),
    row('**/init to every client holding its fds again**', after.map((x) => `**${span(x.init_to_all_hold_fds_ms, x.init_to_all_hold_fds_ms_ci95)}**`)),
    row('the claim phase alone (first connect to last fd)', after.map((x) => span(x.claim_ms, x.claim_ms_ci95))),
    row('clients holding their own bytes again', after.map((x) => `${x.held} of ${x.clients}`)),
    row('agent requests/s in the guest while they preserved', a.preserve.map((p) => `${p.requests_per_s.toFixed(1)} [${p.requests_per_s_ci95[0].toFixed(1)}, ${p.requests_per_s_ci95[1].toFixed(1)}]`)),
    '',
    `On the host (no LUO): the agent process served ${a.host.clients} clients at ${span(a.host.requests_per_s, a.host.requests_per_s_ci95)} requests/s (median of ${a.host.rounds} rounds).`,
  ].join('\n');
}

function targetsTable(targets: readonly Target[]): string {
  const rows = targets.map((t) => `| ${t.name} | ${t.value} | [${t.ci95[0]}, ${t.ci95[1]}] | ${t.verdict === 'met' ? 'met' : `**${t.verdict}**`} |`);
  return ['| target | median | 95% interval | verdict |', '|---|---|---|---|', ...rows].join('\n');
}

/** BENCHMARKS.md for one run's result. */
export function benchmarksMarkdown(r: BenchResult): string {
  const m = r.machine;
  const load = m.loadavg === undefined ? '' : ` Load average (1 min) at the start and the end of the run: ${m.loadavg.start} and ${m.loadavg.end}: the host's two cores were shared with other work.`;
  return [
    INTRO,
    '## The run recorded here',
    '',
    `- Kernel ${r.kernel}; ${r.mode} run, ${r.boots} independent boot(s) of four kernels each (three kexecs).`,
    `- Host: ${m.nproc} CPUs (${m.cpu}), clock tick ${m.host_clock_tick} Hz; ${m.qemu ?? 'QEMU'} with ${m.accel} (read in the guest); guest ${m.guest_cpus} vCPUs, ${m.guest_memory}, clock tick ${m.guest_clock_tick} Hz.${load}`,
    `- Date ${r.date}; commit ${r.commit}.`,
    '',
    '```',
    formatTable(r),
    '```',
    '',
    '## The agent path',
    '',
    agentTable(r.agent),
    '',
    ...(r.groups === undefined ? [] : [groupsBlock(r.groups)]),
    '## Targets',
    '',
    targetsTable(r.targets),
    '',
    METHOD,
    '## The JSON of this run',
    '',
    '```json',
    JSON.stringify({ ...r, groups: undefined }, null, 2), // the groups' JSON is in their block
    '```',
    '',
  ].join('\n');
}

/** A full run's result with the groups of a `--groups-only` run in place of its own. */
export function withGroups(result: BenchResult, groups: GroupsOnlyResult | undefined): BenchResult {
  return groups === undefined ? result : { ...result, groups: { ...result.groups, ...groups.groups } };
}

/** The groups of `--groups-only` runs' JSON files: boots of the same group pooled, a later fleet over an earlier one. */
function groupsOf(files: readonly string[]): GroupResults {
  return files.reduce<GroupResults>((merged, file) => {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as GroupsOnlyResult;
    if (r.mode !== 'groups') throw new Error(`${file} is not the JSON of a \`npm run bench -- --groups-only\` run`);
    return mergeGroups(merged, r.groups);
  }, {});
}

function main(): void {
  const args = process.argv.slice(2);
  if (args[0] === '--splice') {
    const [markdown, ...files] = args.slice(1);
    if (markdown === undefined || files.length === 0) throw new Error('usage: node conformance/dist/bench/markdown.js --splice BENCHMARKS.md GROUPS.json... > BENCHMARKS.new.md');
    process.stdout.write(spliceGroups(fs.readFileSync(markdown, 'utf8'), groupsOf(files)));
    return;
  }
  const [file, groupsFile] = args;
  if (file === undefined) throw new Error('usage: node conformance/dist/bench/markdown.js RESULT.json [GROUPS.json] > BENCHMARKS.md');
  const result = JSON.parse(fs.readFileSync(file, 'utf8')) as BenchResult;
  if (!('boots' in result) || !('host' in result) || !('agent' in result)) throw new Error(`${file} is not the JSON of a full \`npm run bench -- --json\``);
  const groups = groupsFile === undefined ? undefined : (JSON.parse(fs.readFileSync(groupsFile, 'utf8')) as GroupsOnlyResult);
  if (groups !== undefined && groups.mode !== 'groups') throw new Error(`${String(groupsFile)} is not the JSON of a \`npm run bench -- --groups-only\` run`);
  process.stdout.write(benchmarksMarkdown(withGroups(result, groups)));
}

if (require.main === module) {
  try {
    main();
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
