/**
 * A next kernel without the file handler of a preserved file: files of the
 * test-only handler (vm/luo-test-handler) preserved in stage 2, stage 3
 * booted with `luo_test.register=0`. Such a kernel cannot deserialize what it
 * was handed, and keeps /dev/liveupdate unusable: no other case may need
 * stage 3 of the boot this runs in.
 */
import * as fs from 'node:fs';
import { IncomingStateError, LiveUpdate, readKernelLog } from 'liveupdate';
import { defineCase, defineScenario, expectError, handlerCalls, memfdWith, openTestFile, type StageContext } from 'liveupdate-conformance';

/** The kernel parameter that leaves the handler unregistered; the test boots stage 3 with it. */
export const UNREGISTER_PARAM = 'luo_test.register=0';

/** Stage 2: J (a handler file) and K (a memfd) in one session. */
async function preserve(ctx: StageContext): Promise<Record<string, number>> {
  const j = openTestFile();
  const k = memfdWith('lu-fault-absent', 'preserved beside a file of a missing handler');
  const luo = await LiveUpdate.open();
  const session = await luo.createSession('lu-fault-absent');
  await session.preserve(j.fd, 1n);
  await session.preserve(k, 2n);
  await luo.close();
  ctx.keep(session, j, k);
  return { J: j.id };
}

/** Stage 3, without the handler: what the device says, and why. */
async function look(ctx: StageContext): Promise<void> {
  const ids = ctx.previous as Record<string, number>;
  ctx.check(`booted with ${UNREGISTER_PARAM}`, fs.readFileSync('/proc/cmdline', 'utf8').split(/\s+/).includes(UNREGISTER_PARAM));
  ctx.equal('the previous kernel froze J', handlerCalls('previous', ids).slice(-1), ['freeze J 0']);
  const first = await expectError(ctx, 'open: the incoming state failed to load', () => LiveUpdate.open(), IncomingStateError, 'EIO');
  ctx.check('the error says why', /handler/.test(first.message), first.message);
  await expectError(ctx, 'open again: the same', () => LiveUpdate.open(), IncomingStateError, 'EIO');
  ctx.check('the kernel log names the missing handler', /No registered handler for compatible 'luo-test-v1'/.test(readKernelLog() ?? ''));
  ctx.report('retrieveSession and retrieve', 'unreachable: /dev/liveupdate does not open, so no session or file can be retrieved');
  ctx.equal('the handler was never called', handlerCalls('calls', ids), []);
}

export default defineScenario('fault-absent', [defineCase('handler-absent', [null, preserve, look])]);
