/**
 * A single owner of /dev/liveupdate, without the agent: a script that
 * keeps a memfd across a kexec. `node single-owner.js preserve` before the
 * update (then load and execute the next kernel, e.g. with
 * `liveupdate kexec-load`), `node single-owner.js retrieve` after it. The
 * device is $LIVEUPDATE_DEVICE, else /dev/liveupdate.
 *
 * The outgoing session lives as long as this process holds it, so
 * `preserve` waits (until the kexec, or Ctrl-C, which drops it).
 *
 * Exit status: 0 done, 69 LUO is unavailable here (the message says why
 * and what to do), 1 any other failure, 2 a usage error.
 */
import * as fs from 'node:fs';
import { DEVICE_PATH, LiveUpdate, LiveUpdateUnavailableError, memfd } from 'liveupdate';

const EX_UNAVAILABLE = 69;
const SESSION = 'single-owner-example';
const TOKEN = 1n;
const device = process.env['LIVEUPDATE_DEVICE'] ?? DEVICE_PATH;

async function preserve(luo: LiveUpdate): Promise<void> {
  const session = await luo.createSession(SESSION);
  const state = await memfd.create('single-owner-state');
  fs.writeFileSync(`/proc/self/fd/${state}`, `kept since ${new Date().toISOString()}`);
  await session.preserve(state, TOKEN);
  console.log(`preserved in session ${SESSION}: now kexec into the next kernel (Ctrl-C drops it)`);
  await new Promise<never>(() => setInterval(() => {}, 1 << 30)); // hold the session until the kexec
}

async function retrieve(luo: LiveUpdate): Promise<void> {
  const session = await luo.retrieveSession(SESSION);
  const state = await session.retrieve(TOKEN);
  console.log(`retrieved: ${fs.readFileSync(`/proc/self/fd/${state}`, 'utf8')}`);
  await session.finish();
  await session.close();
}

const command = process.argv[2];
if (command !== 'preserve' && command !== 'retrieve') {
  console.error('usage: node single-owner.js preserve|retrieve');
  process.exit(2);
}
try {
  using luo = await LiveUpdate.open(device);
  await (command === 'preserve' ? preserve(luo) : retrieve(luo));
} catch (error) {
  if (!(error instanceof LiveUpdateUnavailableError)) throw error;
  console.error(`${error.name} (${error.code}): ${error.message}`);
  process.exitCode = EX_UNAVAILABLE;
}
