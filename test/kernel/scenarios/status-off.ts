/**
 * status() and open() on a LUO kernel booted WITHOUT liveupdate=on (the
 * test boots it with liveupdate=off after the test bed's liveupdate=on: the
 * kernel takes the last one). No device: status() says why and what to do,
 * and LiveUpdate.open() throws LiveUpdateUnavailableError with the same
 * reason and fix.
 */
import * as fs from 'node:fs';
import { kexec, LiveUpdate, LiveUpdateUnavailableError, status, statusSync } from 'liveupdate';
import { defineCase, defineScenario, type StageContext } from 'liveupdate-conformance';
import { asJson } from './support.js';

async function unavailable(ctx: StageContext): Promise<void> {
  const s = await status({ probe: false });
  ctx.check('not available', !s.available);
  ctx.equal('no device', [s.deviceExists, fs.existsSync('/sys/class/misc/liveupdate')], [false, false]);
  ctx.equal('diagnosis', s.diagnosis, 'not-enabled');
  ctx.check('the reason', /^kernel \S+ was booted with liveupdate=off, which is not on/.test(s.reason ?? ''), s.reason);
  ctx.check('the fix', /^add liveupdate=on to the kernel command line/.test(s.fix ?? ''), s.fix);
  ctx.equal('the release has LUO', s.releaseHasLuo, true);
  ctx.equal('kexec is still there', asJson(s.kexecFile), { available: true, reason: null });
  ctx.equal('kexecLoaded agrees with kexec.isLoaded()', s.kexecLoaded, kexec.isLoadedSync());
  ctx.report('status', asJson(s));
  let error: unknown;
  try {
    LiveUpdate.openSync();
  } catch (e) {
    error = e;
  }
  ctx.check('open: LiveUpdateUnavailableError', error instanceof LiveUpdateUnavailableError && error.code === 'ENOENT', String(error));
  const typed = error as LiveUpdateUnavailableError;
  ctx.equal('with the same reason and fix', [typed.reason ?? null, typed.fix ?? null], [s.reason, s.fix]);
  // The message writes the reason as a sentence of its own: capitalised.
  const reason = (s.reason ?? '?').replace(/^./, (c) => c.toUpperCase());
  ctx.check('both in its message', typed.message.includes(reason) && typed.message.includes(`Fix: ${s.fix ?? '?'}`), typed.message);
  ctx.equal('a probe changes nothing in the diagnosis', statusSync({ probe: true }).diagnosis, 'not-enabled');
}

/** @internal */
export default defineScenario('status-off', [defineCase('unavailable', [unavailable])]);
