/**
 * The opt-in groups as BENCHMARKS.md sections (and the table `npm run
 * bench` prints): every figure a median with its 95% interval and the
 * number of samples it rests on, each section saying when, on what and at
 * what load its group ran. Pure.
 * @internal
 */
import type { FleetRolloutResult } from './fleet-rollout.js';
import type { GroupResults, WithRun } from './groups.js';
import { spanText, type FailedSample, type GroupRun, type SpanEstimate, type SpanSpec } from './intervals.js';
import { BLACKOUT_SPANS, WHERE_SPANS, type BlackoutHostResult, type SystemdBlackoutResult } from './systemd-blackout.js';
import { SYSTEMD_PATH_SPANS, type PathSpanSpec } from '../demo/blackout.js';
import { median } from './stats.js';
import { COLD_SPANS, RESUMED_SPANS, type VmmDowntimeResult, type VmmPathResult } from './vmm-downtime.js';

const row = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
const rule = (columns: number): string => `|${'---|'.repeat(columns)}`;

/** The line saying where a group's figures come from: its run, or each run whose samples were pooled. */
export function runLine(run: GroupRun, samples: string): string {
  const runs = run.runs ?? [run];
  const busy = runs.some((r) => Math.max(r.loadavg.start, r.loadavg.end) > r.loadavg.nproc / 2);
  const each = runs.map((r) => `${r.date} (commit ${r.commit}, load average (1 min) ${r.loadavg.start.toFixed(2)} at its start and ${r.loadavg.end.toFixed(2)} at its end)`);
  return `${runs.length === 1 ? 'Run' : `${runs.length} runs, their boots pooled:`} of ${each.join(' and ')}, on ${run.loadavg.nproc} cores, kernel ${run.kernel}, ${samples}; ${runs.length === 1 ? 'it' : 'they'} took ${Math.round(run.elapsed_s / 60)} min${busy ? '. The machine was shared with other work, which stretches every figure' : ''}.`;
}

/** A span's label: today's words for its marks among `specs` (words may improve after a run; the marks are the data), else those the run recorded. */
function label(s: SpanEstimate, specs: readonly SpanSpec[]): string {
  return specs.find((spec) => spec.from === s.from && spec.to === s.to)?.name ?? s.name;
}

/** The line naming the boots that broke and were left out (empty when none did). */
export function failuresLine(failures: readonly FailedSample[] | undefined): string[] {
  if (failures === undefined || failures.length === 0) return [];
  return [`${failures.length} boot(s) broke and are left out of the figures (the counts say how many remain): ${failures.map((f) => `${f.what}, boot ${f.boot}: ${f.reason}`).join('; ')}.`, ''];
}

/** A table whose rows are spans and whose columns are sets of the same spans. */
function spanTable(head: string, specs: readonly SpanSpec[], columns: ReadonlyArray<{ readonly title: string; readonly spans: readonly SpanEstimate[] }>, bold: (name: string) => boolean = (n) => n.startsWith('total')): string {
  const names = columns[0]?.spans.map((s) => label(s, specs)) ?? [];
  return [
    row([head, ...columns.map((c) => c.title)]),
    rule(columns.length + 1),
    ...names.map((name, i) => {
      const cells = columns.map((c) => spanText(c.spans[i]!));
      return bold(name) ? row([`**${name}**`, ...cells.map((c) => `**${c}**`)]) : row([name, ...cells]);
    }),
  ].join('\n');
}

/** "Blackout on a systemd host": the same client work with the systemd path and the standalone agent. */
export function systemdSection(g: WithRun<SystemdBlackoutResult>): string {
  const boots = g.hosts.map((h) => `${h.boots} ${h.host}`).join(' and ');
  return [
    '## Blackout on a systemd host',
    '',
    `The same client work on the same kernel: the agent, ${g.clients} clients of two uids each preserving a ${g.client_mib} MiB memfd through it, \`liveupdate update\`, and each client claiming and retrieving its memory in the new kernel (the demo's). **standalone**: the test bed's initramfs, the agent as the runner's child, its own \`reboot(KEXEC)\`. **systemd**: the systemd image (systemd 262 as PID 1), the agent as a unit in its systemd mode, the orderly \`systemctl kexec\` (every unit stopped, the agent's sessions parked in its fd store, PID 1 retrieving them and handing them back through \`LISTEN_FDS\`). Instants on the host's clock (\`conformance/lib/vm/clock.ts\`: the kernel's console lines as stamped on arrival, the agent's instants placed through each kernel's quickest clock sample), ms from the agent sealing its manifest.`,
    '',
    runLine(g.run, `${boots} boots, the two paths alternating`),
    '',
    spanTable('ms, median [95% interval] (boots)', BLACKOUT_SPANS, g.hosts.map((h) => ({ title: h.host, spans: h.spans }))),
    '',
    ...failuresLine(g.failures),
  ].join('\n');
}

/** A host's cell of a path span: its figures, or what that host has instead where the span has no meaning there. */
function pathCell(h: BlackoutHostResult, spec: PathSpanSpec | undefined, s: SpanEstimate): string {
  if (h.host === 'standalone' && spec?.standalone !== undefined) return spec.standalone;
  return spanText(s);
}

/** The spread of the new kernel's clock samples over a host's boots, as words (empty when no boot recorded it). */
function clockSpread(h: BlackoutHostResult): string {
  const clocks = h.samples.map((s) => s.new_kernel_clock).filter((c): c is NonNullable<typeof c> => c !== undefined && c !== null);
  if (clocks.length === 0) return '';
  const jitter = clocks.map((c) => c.jitter_ms);
  return `${h.host}: ${clocks[0]!.samples} samples per boot, the slowest ${median(jitter).toFixed(2)} ms (median; at most ${Math.max(...jitter).toFixed(2)} ms) after the quickest`;
}

/** The console's check of the mapping over a host's boots, as words (empty when no boot made it). */
function mappingCheck(h: BlackoutHostResult): string {
  const checks = h.samples.map((s) => s.new_kernel_clock?.console_check_ms).filter((x): x is number => typeof x === 'number');
  if (checks.length === 0) return '';
  return ` A check of the mapping (${h.host}): the guest also wrote its CLOCK_MONOTONIC to the console through the kernel log after the claims, and the quickest of those lines arrived ${median(checks).toFixed(2)} ms (median; ${Math.min(...checks).toFixed(2)} to ${Math.max(...checks).toFixed(2)} ms, n = ${checks.length}) after the mapping places the time it carries. That is the console line's crossing less the mapping's lateness: a figure near zero says both are prompt, and a mapping late by more than a console line's crossing would show as a negative figure.`;
}

/** "The systemd path taken apart": the blackout with systemd in the loop span by span, against the standalone agent's where it has the span. */
export function systemdPathSection(g: WithRun<SystemdBlackoutResult>): string {
  const hosts = g.hosts.filter((h) => h.path !== undefined);
  if (hosts.length === 0) return '';
  const spec = (s: SpanEstimate): PathSpanSpec | undefined => SYSTEMD_PATH_SPANS.find((p) => p.from === s.from && p.to === s.to);
  const spreads = hosts.map(clockSpread).filter((t) => t !== '');
  return [
    '## The systemd path taken apart',
    '',
    "The same boots as above, span by span in the order they happen: the orderly shutdown, systemd-shutdown, the kexec, the new kernel, PID 1's start and its retrieval of the fd stores it preserved in LUO, the agent's unit, and each client's claim. Where the standalone agent has no such step, the cell says so instead of a number. Instants: in the old kernel, console lines as stamped on arrival (a marker unit's line, written to the kernel log by its `ExecStop=` as systemd begins the shutdown, late by one fork and exec; systemd-shutdown's first line; its \"Preserved fd stores in LUO session\"); in the new kernel, PID 1's first console line and its \"Queued start job for default target\" (its startup done: within it, systemd 262's manager_startup() retrieves the stored fd stores right after its units-load-finish timestamp and before the coldplug; its own lines about the retrieval are debug-level, and a debug boot is not the boot measured, so the retrieval is bracketed by that timestamp and this line), and systemd's own CLOCK_MONOTONIC timestamps (`UserspaceTimestampMonotonic`, `UnitsLoadFinishTimestampMonotonic`, each unit's `ExecMainStartTimestampMonotonic`) placed on the host's clock through the new kernel's quickest clock sample on the second serial port: late by that sample's crossing, under a millisecond on an idle host, which is the mapping's error (" + (spreads.length === 0 ? 'the samples\' spread was not recorded' : `the samples' spread: ${spreads.join('; ')}`) + ').' + hosts.map(mappingCheck).join(''),
    '',
    [
      row(['ms, median [95% interval] (boots)', ...hosts.map((h) => h.host)]),
      rule(hosts.length + 1),
      ...hosts[0]!.path!.map((s, i) => {
        const name = label(s, SYSTEMD_PATH_SPANS);
        const cells = hosts.map((h) => pathCell(h, spec(s), h.path![i]!));
        return spec(s)?.sum === true ? row([`**${name}**`, ...cells.map((c) => `**${c}**`)]) : row([name, ...cells]);
      }),
    ].join('\n'),
    '',
  ].join('\n');
}

/** "Where the time goes" for the blackout: the kernel's part, user space with node's start, the clients' part. */
export function whereSection(g: WithRun<SystemdBlackoutResult>): string {
  return [
    '## Where the time goes',
    '',
    "The blackouts above in parts: the kernel's (the old kernel's last line to the new one running /init), user space until the agent answers (node's own start among it: `node -e 0`, timed in the same new kernel, is its floor; under systemd also PID 1's boot to the agent's unit and its retrieval of the parked sessions), and the clients' part (the agent back to the last client holding its memory: the clients' own start, their claims and the package's retrieves). The package's own share of a blackout (require, open, retrieve every fd, against C) is measured apart, in the guest benchmark's blackout above.",
    '',
    [
      row(['ms, median [95% interval] (boots)', ...g.hosts.map((h) => h.host)]),
      rule(g.hosts.length + 1),
      ...(g.hosts[0]?.where ?? []).map((s, i) => row([label(s, WHERE_SPANS), ...g.hosts.map((h) => spanText(h.where[i]!))])),
      row(["node's start alone (`node -e 0` in the new kernel)", ...g.hosts.map((h) => spanText(h.node_floor))]),
    ].join('\n'),
    '',
  ].join('\n');
}

function vmmColumn(p: VmmPathResult): { title: string; spans: readonly SpanEstimate[] } {
  return { title: `${p.mib >= 1024 ? `${p.mib / 1024} GiB` : `${p.mib} MiB`}`, spans: p.spans };
}

/** "A real VMM's downtime": the resumed guest at two RAM sizes, against a cold restart. */
export function vmmSection(g: WithRun<VmmDowntimeResult>): string {
  const resumed = g.paths.filter((p) => p.path === 'resumed');
  const cold = g.paths.filter((p) => p.path === 'cold');
  const states = resumed.map((p) => `${vmmColumn(p).title}: ${[...new Set(p.state_bytes)].join(', ')} bytes`).join('; ');
  return [
    "## A real VMM's downtime",
    '',
    `The counter guest under QEMU (${g.qemu}, ${g.method}; TCG inside the TCG test VM) driven by the example orchestrator of \`examples/qemu-vmm/\`, as \`npm run demo -- --vmm qemu\` runs it on the systemd image: on the agent's \`prepare\` it stops the guest, migrates the device state (not RAM: it lives in a preserved memfd) into a second memfd, preserves it and says ready; after the kexec it claims both, starts QEMU with \`-incoming defer\`, loads the state and \`cont\`s. Host clock, ms from the stop. Device state per boot: ${states}. RAM is not copied: the state's size and the first row below are to be the same at both sizes.`,
    '',
    runLine(g.run, `${resumed.map((p) => `${p.boots} boots at ${vmmColumn(p).title}`).join(', ')}, ${cold.map((p) => `${p.boots} cold restart(s) at ${p.mib} MiB`).join('')}`),
    '',
    spanTable('resumed: ms, median [95% interval] (boots)', RESUMED_SPANS, resumed.map(vmmColumn)),
    '',
    ...failuresLine(g.failures),
    ...cold.map((p) => [`The same guest restarted cold instead (QEMU killed at the stop, booted again after the kexec: the guest's state is lost and it counts from its boot again), ${p.mib} MiB:`, '', spanTable('cold restart: ms, median [95% interval] (boots)', COLD_SPANS, [vmmColumn(p)]), ''].join('\n')),
    "Anchors (quoted, not measured here): Cloud Hypervisor's local upgrade with fd passing, 50 ms against 3000 ms for a 4 GiB VM; Google's OrphanVM goal, under 100 ms; GCE live migration, 50 ms median blackout. Ours runs under double emulation (QEMU TCG inside a QEMU TCG guest) on a shared machine, so the figures here are for the shape (what grows with RAM, what the kernel's boot costs), not the absolute.",
    '',
  ].join('\n');
}

/** "A fleet rollout": time per host and for the fleet, blackout per host. */
export function fleetSection(g: WithRun<FleetRolloutResult>): string {
  // A figure a run did not record (null), or that a run of older code had no field for (undefined), shows as '?'.
  const s = (ms: number | null | undefined, digits = 1): string => (ms == null ? '?' : `${(ms / 1000).toFixed(digits)} s`);
  return [
    '## A fleet rollout',
    '',
    `One real rollout by Debian's \`ansible-playbook\` (\`examples/ansible/rollout.yml\`, serial 1, max_fail_percentage 0) over ${g.hosts} guests of the systemd image (QEMU TCG, each with sshd on a loopback port, the agent as a unit and one VMM-like client holding its memory through it), from the oldest test kernel to the newest; the hosts of the run are the samples. Time per host: the role on that host from its start to its end (preflight, the update, the reconnection, the health gate), on the controller's clock. Blackout per host: the agent's manifest (frozenAt) to the agent back on the device in the new kernel, placed on the host's clock by each kernel's clock samples (to the millisecond); beside it the same span as the role's summary gives it, from the two kernels' wall clocks, each set from the emulated RTC (good to about a second).`,
    '',
    runLine(g.run, `one rollout over ${g.hosts} hosts`),
    '',
    [
      row(['host', 'result', 'release', 'time on the host', 'blackout (host clock)', 'blackout (guest wall clocks)', 'sessions claimed']),
      rule(7),
      ...g.samples.map((x) =>
        row([x.failure === null ? x.host : `${x.host} (${x.failure})`, x.result, `${x.release_before ?? '?'} → ${x.release_after ?? '?'}`, s(x.host_ms), s(x.blackout_ms, 3), s(x.blackout_guest_wall_ms), String(x.sessions_claimed ?? '?')]),
      ),
    ].join('\n'),
    '',
    [
      row(['the fleet', `median [95% interval] (hosts)`]),
      rule(2),
      row(['time per host', spanText(g.per_host, 's')]),
      row(['blackout per host (host clock)', spanText(g.blackout, 's')]),
      row(['the whole rollout (ansible-playbook, one host at a time)', `${g.fleet_rollout_s.toFixed(1)} s (exit ${String(g.playbook_status)})`]),
      row(['booting the hosts before it (in parallel)', `${g.fleet_boot_s.toFixed(1)} s`]),
    ].join('\n'),
    '',
  ].join('\n');
}

/** Every group that ran, as sections. */
export function groupSections(g: GroupResults): string[] {
  return [
    ...(g.systemd === undefined ? [] : [systemdSection(g.systemd), systemdPathSection(g.systemd), whereSection(g.systemd)].filter((section) => section !== '')),
    ...(g.vmm === undefined ? [] : [vmmSection(g.vmm)]),
    ...(g.fleet === undefined ? [] : [fleetSection(g.fleet)]),
  ];
}

/** The groups as the text `npm run bench` prints. */
export function formatGroups(g: GroupResults): string {
  return groupSections(g).join('\n');
}

/** Where the groups' block begins and ends in BENCHMARKS.md (one line each). */
export const GROUPS_BEGIN = '<!-- the opt-in groups: generated by conformance/lib/bench/markdown.ts from the JSON at the end of this block; do not edit -->';
export const GROUPS_END = '<!-- end of the opt-in groups -->';
const GROUPS_JSON_TITLE = '### The JSON of these groups';

const GROUPS_INTRO = `The sections below come from the benchmark's opt-in groups (\`npm run bench -- --systemd\`, \`--vmm\`, \`--fleet N\`, or \`--all\`; \`--groups-only\` without the rest), each its own boots on the newest test kernel, reusing the demo's runs. Each figure is a span between two marks on the host's clock, the median over the samples (boots; for the fleet, the hosts of one rollout) with its percentile-bootstrap 95% interval and, as n, how many samples it rests on: with 3 samples the interval is about their range. Each section says when its group ran and at what load: on a shared machine, load stretches every figure.`;

/** The groups' block: their sections, then their JSON, between the two markers. */
export function groupsBlock(g: GroupResults): string {
  return [GROUPS_BEGIN, '', GROUPS_INTRO, '', ...groupSections(g), GROUPS_JSON_TITLE, '', '```json', JSON.stringify(g, null, 2), '```', '', GROUPS_END, ''].join('\n');
}

/** The groups of a BENCHMARKS.md's block (none when it has no block). */
export function groupsInMarkdown(markdown: string): GroupResults {
  const begin = markdown.indexOf(GROUPS_BEGIN);
  if (begin < 0) return {};
  const end = markdown.indexOf(GROUPS_END, begin);
  const json = /```json\n([\s\S]*?)\n```/.exec(markdown.slice(markdown.indexOf(GROUPS_JSON_TITLE, begin), end));
  if (end < 0 || json?.[1] === undefined) throw new Error("BENCHMARKS.md's groups block is broken: regenerate it from the groups' JSON");
  return JSON.parse(json[1]) as GroupResults;
}

/**
 * BENCHMARKS.md with `groups` in its groups block, over the groups the block
 * had (a group that ran again replaces its old figures; others stay); the
 * block goes before "## Targets" when there is none yet. The rest of the
 * file is left as it is: the groups take hours and run apart from the rest.
 */
export function spliceGroups(markdown: string, groups: GroupResults): string {
  const merged = { ...groupsInMarkdown(markdown), ...groups };
  const begin = markdown.indexOf(GROUPS_BEGIN);
  if (begin >= 0) {
    const end = markdown.indexOf(GROUPS_END, begin) + GROUPS_END.length + 1;
    return markdown.slice(0, begin) + groupsBlock(merged) + markdown.slice(end);
  }
  const targets = markdown.indexOf('\n## Targets\n');
  if (targets < 0) throw new Error('BENCHMARKS.md has no "## Targets" section to put the groups before');
  return `${markdown.slice(0, targets + 1)}${groupsBlock(merged)}\n${markdown.slice(targets + 1)}`;
}
