/**
 * The `liveupdate` command: what scripts of host maintenance need without
 * writing JavaScript. One table of commands ({@link COMMANDS}); each entry
 * declares its options, and the table gives every command `--help`, `--json`
 * where it reports, and the same exit statuses:
 *
 *   0  success (or "yes": LUO is available)
 *   1  a negative answer or a failed operation (LUO unavailable, a kexec refused)
 *   2  a usage error (unknown command or option, a missing or bad argument)
 *
 * and the agent's commands 3, 69 and 77 ({@link EXIT_STATUSES} lists them all).
 *
 * Usage and errors go to stderr with a "see --help" hint; reports to stdout.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type * as DiagnosisModule from './diagnosis.js';
import { AGENT_COMMANDS, AGENT_EXIT_STATUSES } from './agent/cli.js';
import { printable } from './agent/names.js';
import { onFirstUse } from './lazy.js';
import type * as KexecModule from './kexec.js';
import type { Status } from './status.js';
import type * as StatusModule from './status.js';

// Each command loads what it runs on first use: `liveupdate agent`, which starts in every
// blackout, compiles no status, diagnosis or kexec module it does not call.
function statusModule(): typeof StatusModule {
  return onFirstUse('status', () => require('./status.js') as typeof StatusModule);
}

function kexecModule(): typeof KexecModule {
  return onFirstUse('kexec', () => require('./kexec.js') as typeof KexecModule);
}

function diagnosisModule(): typeof DiagnosisModule {
  return onFirstUse('diagnosis', () => require('./diagnosis.js') as typeof DiagnosisModule);
}

/** Exit statuses. */
export const EXIT = { ok: 0, negative: 1, usage: 2 } as const;

/** The parsed options of one command: strings and booleans by name. */
export type OptionValues = Record<string, string | boolean | undefined>;

/** Where a command writes. */
export interface Output {
  stdout(text: string): void;
  stderr(text: string): void;
}

/**
 * One subcommand. To add one, write an object of this shape and list it in
 * {@link COMMANDS}: help, `--json`, option parsing and exit statuses come
 * from the table.
 */
export interface Command {
  /** The word after `liveupdate`. */
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The arguments' synopsis (`--kernel PATH [--initrd PATH]`). */
  readonly synopsis: string;
  /** More lines for `liveupdate NAME --help`: each option, what the exit status means. */
  readonly details: string;
  /** Options as node:util parseArgs takes them; `--help` (and `--json` if it reports) are added. */
  readonly options: NonNullable<ParseArgsConfig['options']>;
  /** Whether it reports something, and so takes `--json`. */
  readonly reports: boolean;
  /** Runs it; returns the exit status. Throws {@link UsageError} for a bad argument. */
  run(values: OptionValues, out: Output): number | Promise<number>;
}

/** A usage error: exit status 2, with a hint to see the command's help. */
export class UsageError extends Error {
  readonly code = 'ERR_LIVEUPDATE_USAGE';
}

function printJson(out: Output, value: unknown): void {
  out.stdout(`${JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

function yesNo(value: boolean | null): string {
  return value === null ? 'unknown' : value ? 'yes' : 'no';
}

/** status() as the table `liveupdate status` prints. */
export function formatStatus(s: Status): string {
  const opened = s.deviceOpenable === null ? '' : s.deviceOpenable ? ', opens' : ', does not open';
  const owners = s.deviceOwners.map((o) => `pid ${o.pid} (${o.command ?? '?'})`).join(', ');
  const rows: Array<[string, string]> = [
    ['available', s.available ? 'yes' : 'no'],
    ...(s.reason === null ? [] : ([['reason', s.reason]] as Array<[string, string]>)),
    ...(s.fix === null ? [] : ([['fix', s.fix]] as Array<[string, string]>)),
    ['kernel', `${s.kernelRelease}${s.releaseHasLuo === false ? ' (older than 6.19: no LUO)' : ''}`],
    ['device', `${s.devicePath} ${s.deviceExists ? 'exists' : 'missing'}${opened}${owners === '' ? '' : `, held by ${owners}`}`],
    ...(s.agent === null ? [] : ([['agent', agentRow(s.agent)]] as Array<[string, string]>)),
    ['liveupdate=', s.liveupdateParam ?? '(not on the command line)'],
    ['kho=', `${s.kho.param ?? '(not on the command line)'}${s.kho.incoming === true ? ', booted with handed-over state' : ''}`],
    ['CONFIG_LIVEUPDATE', `${yesNo(s.configLiveupdate)}${s.configSource === null ? ' (no readable config)' : ` (${s.configSource})`}`],
    ['GET_NAME', yesNo(s.getName)],
    ['kexec_file_load', s.kexecFile.available === true ? 'yes' : `${yesNo(s.kexecFile.available)}: ${s.kexecFile.reason ?? ''}`],
    ['kexec loaded', yesNo(s.kexecLoaded)],
    ...(s.addon === null ? [] : ([['addon', s.addon]] as Array<[string, string]>)),
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`).join('\n');
}

/** The agent's row: LUO through it, its mode and why, its socket. */
function agentRow(a: NonNullable<Status['agent']>): string {
  const how = a.mode === 'standalone' ? 'holds the device: LUO is available through the agent' : 'opens the device only for each create: LUO is available through the agent';
  return `pid ${a.pid}, ${a.mode} mode (${a.reason}); ${how} at ${a.socket ?? 'the socket systemd passed it'}`;
}

const statusCommand: Command = {
  name: 'status',
  summary: 'Whether Live Update Orchestrator is usable here; if not, why and what to do.',
  synopsis: '[--json] [--probe | --no-probe] [--path PATH]',
  details: `  --probe       also open the device and create a throw-away session: the device has one
                owner, so the real owner's open() fails (EBUSY) meanwhile
  --no-probe    read files only, never open the device (the default)
  --path PATH   the device to examine (default /dev/liveupdate)
  --json        print status() as JSON
Exit status 0 when LUO is available, 1 when not.`,
  options: { probe: { type: 'boolean' }, 'no-probe': { type: 'boolean' }, path: { type: 'string' } },
  reports: true,
  run(values, out) {
    if (values['probe'] === true && values['no-probe'] === true) throw new UsageError('--probe and --no-probe exclude each other');
    // Probing takes the single-owner device, so it is asked for.
    const s = statusModule().statusSync({ probe: values['probe'] === true, ...(typeof values['path'] === 'string' ? { path: values['path'] } : {}) });
    if (values['json'] === true) printJson(out, s);
    else out.stdout(`${formatStatus(s)}\n`);
    return s.available ? EXIT.ok : EXIT.negative;
  },
};

function requiredString(values: OptionValues, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

const kexecLoadCommand: Command = {
  name: 'kexec-load',
  summary: 'Load the next kernel (kexec_file_load); LUO needs liveupdate=on in its command line.',
  synopsis: '--kernel PATH [--initrd PATH] (--cmdline TEXT | --reuse-cmdline) [--json]',
  details: `  --kernel PATH      the kernel image (bzImage)
  --initrd PATH      its initramfs, if any
  --cmdline TEXT     the next kernel's command line
  --reuse-cmdline    use this kernel's (/proc/cmdline)
  --json             print { loaded, kernel, initrd, cmdline } as JSON
Warns on stderr when the command line does not turn liveupdate on.
Exit status 0 when loaded, 1 when the kernel refused.`,
  options: { kernel: { type: 'string' }, initrd: { type: 'string' }, cmdline: { type: 'string' }, 'reuse-cmdline': { type: 'boolean' } },
  reports: true,
  run(values, out) {
    const kernel = requiredString(values, 'kernel');
    const reuse = values['reuse-cmdline'] === true;
    if (reuse && values['cmdline'] !== undefined) throw new UsageError('--cmdline and --reuse-cmdline exclude each other');
    const cmdline = reuse ? fs.readFileSync('/proc/cmdline', 'utf8').trim() : values['cmdline'];
    if (typeof cmdline !== 'string') throw new UsageError('--cmdline or --reuse-cmdline is required');
    const initrd = typeof values['initrd'] === 'string' ? values['initrd'] : undefined;
    if (!diagnosisModule().kernelBoolParam(cmdline, 'liveupdate', false)) {
      out.stderr('warning: the command line does not turn liveupdate on: the next kernel will not retrieve sessions\n');
    }
    kexecModule().loadSync({ kernel, cmdline, ...(initrd === undefined ? {} : { initrd }) });
    if (values['json'] === true) printJson(out, { loaded: true, kernel, initrd: initrd ?? null, cmdline });
    else out.stdout(`loaded ${kernel}\n`);
    return EXIT.ok;
  },
};

const kexecUnloadCommand: Command = {
  name: 'kexec-unload',
  summary: 'Forget the loaded kernel.',
  synopsis: '[--json]',
  details: `  --json   print { loaded: false } as JSON
Exit status 0 when nothing is loaded afterwards, 1 when the kernel refused.`,
  options: {},
  reports: true,
  run(values, out) {
    kexecModule().unloadSync();
    if (values['json'] === true) printJson(out, { loaded: false });
    else out.stdout('unloaded\n');
    return EXIT.ok;
  },
};

/** Every subcommand, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [statusCommand, kexecLoadCommand, kexecUnloadCommand, ...AGENT_COMMANDS];

/** Every exit status of every command, for the main help. */
export const EXIT_STATUSES: ReadonlyArray<readonly [number, string]> = [
  [EXIT.ok, 'success (status: LUO is available)'],
  [EXIT.negative, 'a negative answer or a failed operation (status: LUO unavailable; a kexec refused; an update check failed)'],
  [EXIT.usage, 'a usage error'],
  ...AGENT_EXIT_STATUSES,
];

const HELP_SUMMARY = "This text, or a command's: liveupdate help COMMAND";

function version(): string {
  const file = path.join(__dirname, '..', 'package.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
}

/** `liveupdate --help`. */
export function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'usage: liveupdate COMMAND [OPTIONS]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    `  ${'help'.padEnd(width)}${HELP_SUMMARY}`,
    '',
    'Every command takes --help. Options: --version prints the version.',
    'Reports go to stdout; errors, with what to do about them, to stderr.',
    '',
    'Exit status:',
    ...EXIT_STATUSES.map(([status, meaning]) => `  ${String(status).padStart(2)}  ${meaning}`),
  ].join('\n');
}

/** `liveupdate help help`. */
function helpUsage(): string {
  return `usage: liveupdate help [COMMAND]\n\n${HELP_SUMMARY}. Same as liveupdate --help, or liveupdate COMMAND --help.`;
}

/** `liveupdate COMMAND --help`. */
export function commandUsage(command: Command): string {
  const json = command.reports && !command.synopsis.includes('--json') ? ' [--json]' : '';
  return `usage: liveupdate ${command.name} ${command.synopsis}${json}\n\n${command.summary}\n\n${command.details}`;
}

/** What a command line asks for. */
export type Invocation =
  | { kind: 'help'; text: string }
  | { kind: 'version' }
  | { kind: 'run'; command: Command; values: OptionValues }
  | { kind: 'usage-error'; message: string; hint: string; command?: string };

const HINT = "see 'liveupdate --help'";
const commandHint = (c: Command): string => `see 'liveupdate ${c.name} --help'`;

/** Parses a command line (without node and the script). Pure: it runs nothing. */
export function parseCommandLine(argv: readonly string[]): Invocation {
  const [first, ...rest] = argv;
  if (first === undefined) return { kind: 'usage-error', message: 'no command given', hint: HINT };
  if (first === '--help' || first === '-h') return { kind: 'help', text: usage() };
  if (first === '--version' || first === '-V') return { kind: 'version' };
  if (first === 'help') {
    if (rest.length === 0) return { kind: 'help', text: usage() };
    if (rest.length === 1 && rest[0] === 'help') return { kind: 'help', text: helpUsage() };
    const named = COMMANDS.find((c) => c.name === rest[0]);
    if (named === undefined || rest.length > 1) return { kind: 'usage-error', message: `unknown command '${rest.join(' ')}'`, hint: HINT };
    return { kind: 'help', text: commandUsage(named) };
  }
  if (first.startsWith('-')) return { kind: 'usage-error', message: `unknown option '${first}'`, hint: HINT };
  const command = COMMANDS.find((c) => c.name === first);
  if (command === undefined) return { kind: 'usage-error', message: `unknown command '${first}'`, hint: HINT };
  const options = {
    ...command.options,
    help: { type: 'boolean', short: 'h' },
    ...(command.reports ? { json: { type: 'boolean' } } : {}),
  } as const satisfies NonNullable<ParseArgsConfig['options']>;
  let values: OptionValues;
  try {
    values = parseArgs({ args: [...rest], options, strict: true, allowPositionals: false }).values as OptionValues;
  } catch (error) {
    // parseArgs's own message names the option; its code says which rule.
    return { kind: 'usage-error', message: (error as Error).message, hint: commandHint(command), command: command.name };
  }
  if (values['help'] === true) return { kind: 'help', text: commandUsage(command) };
  return { kind: 'run', command, values };
}

/** The library's own argument errors (a path with a NUL, ...) are usage errors too. */
function isArgumentError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('ERR_INVALID_ARG') || code === 'ERR_OUT_OF_RANGE');
}

const processOutput: Output = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Runs the command line `argv` (without node and script); returns the exit status. */
export function main(argv: string[], out: Output = processOutput): number | Promise<number> {
  const invocation = parseCommandLine(argv);
  switch (invocation.kind) {
    case 'help':
      out.stdout(`${invocation.text}\n`);
      return EXIT.ok;
    case 'version':
      out.stdout(`${version()}\n`);
      return EXIT.ok;
    case 'usage-error':
      out.stderr(`liveupdate${invocation.command === undefined ? '' : ` ${invocation.command}`}: ${invocation.message}; ${invocation.hint}\n`);
      return EXIT.usage;
    case 'run':
      break;
  }
  const { command, values } = invocation;
  try {
    const status = command.run(values, out);
    // The agent's commands run until they are done: their status comes as a Promise.
    return typeof status === 'number' ? status : status.catch((error: unknown) => failed(command, error, out));
  } catch (error) {
    return failed(command, error, out);
  }
}

/** The exit status (and message) of a command that threw. */
function failed(command: Command, error: unknown, out: Output): number {
  if (error instanceof UsageError || isArgumentError(error)) {
    out.stderr(`liveupdate ${command.name}: ${printable((error as Error).message)}; ${commandHint(command)}\n`);
    return EXIT.usage;
  }
  out.stderr(`liveupdate ${command.name}: ${printable((error as Error).message)}\n`);
  return EXIT.negative;
}
