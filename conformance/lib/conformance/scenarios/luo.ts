/**
 * What the kernel offers, checked first in every kernel of the run: the
 * device (and why not, if it is missing), Kexec HandOver, memfd preservation,
 * and the guest's limits the other cases rely on (open files, memory).
 * @internal
 */
import * as fs from 'node:fs';
import { statusSync } from 'liveupdate';
import type { JsonValue } from '../../vm/protocol.js';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { conformanceCase, lacks } from '../support.js';

/** Open files the scale cases need: 2000 sessions, 2000 memfd fds and slack. */
const NOFILE_NEEDED = 8192;

function meminfoMiB(field: string): number | null {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return match?.[1] === undefined ? null : Math.round(Number(match[1]) / 1024);
}

function openFileLimit(): number | null {
  const match = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return match?.[1] === undefined ? null : Number(match[1]);
}

/** The device, KHO and the limits, in each kernel. */
function device(ctx: StageContext): JsonValue {
  const s = statusSync({ probe: true });
  const missing = lacks('luo');
  ctx.check('/dev/liveupdate exists', missing === null, missing);
  ctx.check('status() says available', s.available, s.reason);
  // The kernel reads the parameter with kstrtobool: y..., t..., 1 or on all mean on.
  ctx.check('liveupdate= enabled on the command line', /^([yt1]|on)/i.test(s.liveupdateParam ?? ''), s.liveupdateParam);
  ctx.equal('GET_NAME supported', s.getName, true);
  // With KHO's debugfs (the test kernels have it) the handover itself is visible.
  if (s.kho.debugfs) ctx.equal('booted with handed-over KHO state', s.kho.incoming, ctx.stage > 1);
  const nofile = openFileLimit();
  ctx.check(`RLIMIT_NOFILE >= ${NOFILE_NEEDED}`, nofile !== null && nofile >= NOFILE_NEEDED, nofile);
  const memory = { totalMiB: meminfoMiB('MemTotal'), availableMiB: meminfoMiB('MemAvailable') };
  ctx.report('memory', memory);
  return { release: ctx.release, nofile, kho: s.kho, memory, reason: s.reason };
}

/** A memfd can be preserved at all (the kernel has CONFIG_LIVEUPDATE_MEMFD). */
function memfdSupport(ctx: StageContext): JsonValue {
  const missing = lacks('memfd');
  ctx.check('a memfd can be preserved', missing === null, missing);
  return { preservable: missing === null };
}

/** @internal */
export default defineScenario('luo', [
  conformanceCase('device', [], [device, device, device]),
  conformanceCase('memfd-support', ['luo'], [memfdSupport]),
]);
