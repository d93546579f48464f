/**
 * A systemd service that parks its LUO session in its fd store
 * (FileDescriptorStoreMax=, FileDescriptorStorePreserve=yes: see
 * README.md in this folder). First start: preserve its state and hand the
 * outgoing session to systemd. Started again after the kexec: systemd
 * passes the session back ($LISTEN_FDS), the service takes its state and
 * finishes it. The device is $LIVEUPDATE_DEVICE, else /dev/liveupdate.
 *
 * Exit status: 0 serving (it tells systemd READY=1), 69 LUO is unavailable
 * here, 1 any other failure. Outside systemd, notify() sends nothing.
 */
import * as fs from 'node:fs';
import { barrier, DEVICE_PATH, isLuoSessionFd, listenFds, LiveUpdate, LiveUpdateUnavailableError, memfd, notify, Session } from 'liveupdate';

const EX_UNAVAILABLE = 69;
const FDNAME = 'luo';
const TOKEN = 1n;

/** After the kexec: the stored session is incoming; take the state and finish it. */
async function resume(session: Session): Promise<string> {
  const state = await session.retrieve(TOKEN);
  const text = fs.readFileSync(`/proc/self/fd/${state}`, 'utf8');
  await session.finish();
  await notify({ FDSTOREREMOVE: 1, FDNAME }); // the store's copy is spent
  await session.close();
  return `resumed with: ${text}`;
}

/** First start: preserve the state and park the outgoing session with systemd. */
async function firstStart(): Promise<string> {
  using luo = await LiveUpdate.open(process.env['LIVEUPDATE_DEVICE'] ?? DEVICE_PATH);
  const session = await luo.createSession('systemd-service-example');
  const state = await memfd.create('systemd-service-state');
  fs.writeFileSync(`/proc/self/fd/${state}`, 'state kept by systemd');
  await session.preserve(state, TOKEN);
  const stored = await notify({ FDSTORE: 1, FDNAME, FDPOLL: 0 }, [session.fd]);
  if (stored.sent) await barrier(); // systemd holds a copy now; closing ours keeps the session
  return stored.sent ? 'state preserved, session in the fd store' : `state preserved, but not stored (${stored.reason ?? 'not sent'})`;
}

try {
  const sessionFd = (listenFds({ unsetEnvironment: true }).get(FDNAME) ?? []).find(isLuoSessionFd);
  const kept = sessionFd === undefined ? undefined : Session.fromFd(sessionFd);
  // An outgoing session in the store means a plain restart: it still waits for the kexec.
  const status = kept === undefined ? await firstStart() : kept.state === 'incoming' ? await resume(kept) : 'restarted, session still stored';
  console.log(status);
  await notify({ READY: 1, STATUS: status });
} catch (error) {
  if (!(error instanceof LiveUpdateUnavailableError)) throw error;
  console.error(`${error.name} (${error.code}): ${error.message}`);
  await notify({ STATUS: `Live Update Orchestrator unavailable: ${error.reason ?? error.message}` });
  process.exitCode = EX_UNAVAILABLE;
}
