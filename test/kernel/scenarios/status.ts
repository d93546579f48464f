/**
 * status() and open() on a LUO kernel booted with liveupdate=on: all is
 * well and says so; kexec_file_load is there; open() accepts the real
 * liveupdate device and refuses another; a device held by another process
 * (or by this one) is diagnosed with its pid and command, without opening
 * the device, and DeviceBusyError names the same owner.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceBusyError, kexec, LiveUpdate, NotLiveUpdateDeviceError, status, statusSync, type LiveUpdateError } from 'liveupdate';
import { defineCase, defineScenario, type StageContext } from 'liveupdate-conformance';
import { asJson } from './support.js';

const INDEX = require.resolve('liveupdate');

/** A process that opens the device, says "ready" and holds it until killed. */
const HOLDER = `
const lu = require(process.env.LU_INDEX);
const luo = lu.LiveUpdate.openSync();
process.stdout.write('ready ' + luo.fd + '\\n');
setInterval(() => {}, 1 << 30);
`;

function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').sort();
}

function thrown(fn: () => unknown): LiveUpdateError | undefined {
  try {
    fn();
  } catch (error) {
    return error as LiveUpdateError;
  }
  return undefined;
}

async function available(ctx: StageContext): Promise<void> {
  const s = await status({ probe: false });
  ctx.check('available', s.available, s.reason);
  ctx.equal('no diagnosis, reason or fix', [s.diagnosis, s.reason, s.fix], [null, null, null]);
  ctx.equal('the release has LUO', s.releaseHasLuo, true);
  ctx.equal('liveupdate=', s.liveupdateParam, 'on');
  ctx.equal('nobody holds the device', asJson(s.deviceOwners), []);
  ctx.equal('kexec_file_load is available', asJson(s.kexecFile), { available: true, reason: null });
  ctx.equal('kexecLoaded agrees with kexec.isLoaded()', s.kexecLoaded, kexec.isLoadedSync());
  ctx.equal('the addon loaded', s.addon, null);
  ctx.equal("bootId is this boot's", s.bootId, fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  ctx.report('status', asJson(s));
}

async function openChecksTheDevice(ctx: StageContext): Promise<void> {
  const sysfs = fs.readFileSync('/sys/class/misc/liveupdate/dev', 'utf8').trim();
  const procMisc = /^\s*(\d+) liveupdate$/m.exec(fs.readFileSync('/proc/misc', 'utf8'))?.[1];
  ctx.equal('/proc/misc and sysfs agree on the minor', `10:${procMisc}`, sysfs);
  const rdev = fs.statSync('/dev/liveupdate').rdev;
  ctx.report('device', { sysfs, rdev });
  const before = openFds();
  const refused = thrown(() => LiveUpdate.openSync('/dev/null'));
  ctx.check('/dev/null is refused at open', refused instanceof NotLiveUpdateDeviceError && refused.code === 'ERR_LIVEUPDATE_NOT_LUO_DEVICE', refused?.message);
  ctx.check('the message names the real device', refused?.message.includes(`the liveupdate device is ${sysfs}`) === true, refused?.message);
  const refusedAsync = await LiveUpdate.open('/dev/null').catch((e: unknown) => e);
  ctx.check('the Promise form refuses too', refusedAsync instanceof NotLiveUpdateDeviceError);
  ctx.equal('no fd leaked by the refusals', openFds(), before);
  const luo = await LiveUpdate.open();
  ctx.check('the real device is accepted', luo.fd >= 0);
  const session = luo.createSessionSync('lu-status-open');
  ctx.equal('and works', session.getNameSync(), 'lu-status-open');
  session.closeSync();
  luo.closeSync();
}

function waitForReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('exit', (code) => reject(new Error(`the holder exited (${code}) before it was ready: ${err}`)));
  });
}

async function heldByAnotherProcess(ctx: StageContext): Promise<void> {
  const holder = spawn(process.execPath, ['-e', HOLDER], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LU_INDEX: INDEX } });
  try {
    await waitForReady(holder);
    const pid = holder.pid ?? -1;
    const command = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    const s = statusSync({ probe: false });
    ctx.equal('diagnosis', s.diagnosis, 'device-busy');
    ctx.check('not available', !s.available);
    ctx.equal('the owner, by pid and command', asJson(s.deviceOwners), [{ pid, command }]);
    ctx.check('the reason names it', s.reason?.includes(`pid ${pid} (${command}) holds it open`) === true, s.reason);
    ctx.check('with a fix', /^stop that process/.test(s.fix ?? ''), s.fix);
    const busy = thrown(() => LiveUpdate.openSync());
    ctx.check('open: DeviceBusyError', busy instanceof DeviceBusyError && busy.code === 'EBUSY', busy?.message);
    ctx.check('naming the same owner', busy?.message.includes(`pid ${pid} (${command})`) === true, busy?.message);
    ctx.equal('and the same fix', busy?.fix, s.fix);
  } finally {
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.on('close', resolve));
  }
  ctx.equal('free again once it exited', statusSync({ probe: false }).diagnosis, null);
}

function heldByThisProcess(ctx: StageContext): void {
  const luo = LiveUpdate.openSync();
  try {
    const s = statusSync({ probe: false });
    ctx.equal('diagnosis', s.diagnosis, 'device-busy');
    ctx.check('the reason says this process', s.reason?.includes(`this process (pid ${process.pid})`) === true, s.reason);
    ctx.check('the fix says to use it', /already opened/.test(s.fix ?? ''), s.fix);
  } finally {
    luo.closeSync();
  }
}

/** @internal */
export default defineScenario('status', [
  defineCase('available', [available]),
  defineCase('open-checks-the-device', [openChecksTheDevice]),
  defineCase('held-by-another-process', [heldByAnotherProcess]),
  defineCase('held-by-this-process', [heldByThisProcess]),
]);
