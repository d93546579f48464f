/**
 * The `liveupdate` command: what scripts of host maintenance need without
 * writing JavaScript.
 *
 *   liveupdate status [--json] [--probe]   is LUO usable here, and if not, why (--probe takes the device)
 *   liveupdate kexec-load --kernel K [--initrd I] [--cmdline C | --reuse-cmdline]
 *   liveupdate kexec-unload
 * @internal
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import * as kexec from './kexec.js';
import { statusSync, type Status } from './status.js';

const USAGE = `usage:
  liveupdate status [--json] [--probe]
      Whether Live Update Orchestrator is usable on this machine, and if not, why.
      --probe also opens the device and makes a throw-away session: the device has
      one owner, so the real owner's open() fails (EBUSY) meanwhile.
      Exit status 0 when available, 1 when not.
  liveupdate kexec-load --kernel PATH [--initrd PATH] (--cmdline TEXT | --reuse-cmdline)
      Load the next kernel (kexec_file_load). --reuse-cmdline takes /proc/cmdline.
  liveupdate kexec-unload
      Forget the loaded kernel.`;

function yesNo(value: boolean | null): string {
  return value === null ? 'unknown' : value ? 'yes' : 'no';
}

function formatStatus(s: Status): string {
  const device = `${s.devicePath} ${s.deviceExists ? 'exists' : 'missing'}${s.deviceOpenable === null ? '' : s.deviceOpenable ? ', opens' : ', does not open'}`;
  const rows: Array<[string, string]> = [
    ['available', `${s.available ? 'yes' : 'no'}${s.reason === null ? '' : ` (${s.reason})`}`],
    ['kernel', s.kernelRelease],
    ['device', device],
    ['liveupdate=', s.liveupdateParam ?? '(not on the command line)'],
    ['kho=', `${s.kho.param ?? '(not on the command line)'}${s.kho.incoming === true ? ', booted with handed-over state' : ''}`],
    ['CONFIG_LIVEUPDATE', yesNo(s.configLiveupdate)],
    ['GET_NAME', yesNo(s.getName)],
    ['kexec loaded', yesNo(s.kexecLoaded)],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`).join('\n');
}

function statusCommand(args: string[]): number {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, probe: { type: 'boolean' }, 'no-probe': { type: 'boolean' } } });
  // Probing opens the single-owner device, so it is asked for (--no-probe, the old default's opt-out, is accepted).
  const s = statusSync({ probe: values.probe === true && values['no-probe'] !== true });
  process.stdout.write(values.json === true ? `${JSON.stringify(s, null, 2)}\n` : `${formatStatus(s)}\n`);
  return s.available ? 0 : 1;
}

function kexecLoadCommand(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: { kernel: { type: 'string' }, initrd: { type: 'string' }, cmdline: { type: 'string' }, 'reuse-cmdline': { type: 'boolean' } },
  });
  if (values.kernel === undefined) throw new Error('--kernel is required');
  const cmdline = values['reuse-cmdline'] === true ? fs.readFileSync('/proc/cmdline', 'utf8').trim() : values.cmdline;
  if (cmdline === undefined) throw new Error('--cmdline or --reuse-cmdline is required');
  if (!/(^|\s)liveupdate=(1|y|on|yes|true)(\s|$)/i.test(cmdline)) {
    process.stderr.write('warning: the command line lacks liveupdate=on: the next kernel will not retrieve sessions\n');
  }
  kexec.loadSync({ kernel: values.kernel, cmdline, ...(values.initrd === undefined ? {} : { initrd: values.initrd }) });
  process.stdout.write(`loaded ${values.kernel}\n`);
  return 0;
}

/** Runs the command line `argv` (without node and script); returns the exit status. */
export function main(argv: string[]): number {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'status':
        return statusCommand(rest);
      case 'kexec-load':
        return kexecLoadCommand(rest);
      case 'kexec-unload':
        kexec.unloadSync();
        return 0;
      case undefined:
      case '-h':
      case '--help':
        process.stdout.write(`${USAGE}\n`);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`liveupdate: unknown command '${command}'\n${USAGE}\n`);
        return 2;
    }
  } catch (error) {
    process.stderr.write(`liveupdate ${command}: ${(error as Error).message}\n`);
    return 1;
  }
}
