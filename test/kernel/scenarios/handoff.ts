/**
 * Handing a LUO session between processes (issue 5), on a real kernel:
 * process A creates a session, preserves a memfd, hands the session fd over
 * a Unix socket to the guest runner (process B) and exits; B keeps the
 * session across the kexec and retrieves it after. The same through an
 * sd_notify FDSTORE=1 message to a stand-in service manager, which after the
 * kexec hands the retrieved session to a new service through LISTEN_FDS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { describeFd, LiveUpdate, recvFds, Session, SessionNotFoundError, socketPair, type LiveUpdateError } from 'liveupdate';
import { defineCase, defineScenario, libraryBinding, type StageContext } from 'liveupdate-conformance';

const INDEX = require.resolve('liveupdate');
const HANDOFF = 'lu-handoff';
const CONTROL = 'lu-handoff-control';
const FDSTORE = 'lu-fdstore';
const FDNAME = 'vm-42-session';

/**
 * Process A: owns the device, preserves 1 MiB of random bytes under token 1,
 * then hands the session fd on (over fd 3, or to $NOTIFY_SOCKET) and exits,
 * closing its own session fd, memfd and device.
 */
const AGENT = `
const lu = require(process.env.LU_INDEX);
const fs = require('node:fs');
const crypto = require('node:crypto');
const luo = lu.LiveUpdate.openSync();
const session = luo.createSessionSync(process.env.LU_SESSION);
const fd = lu.memfd.createSync('guest-ram');
const bytes = crypto.randomBytes(1 << 20);
fs.writeSync(fd, bytes, 0, bytes.length, 0);
session.preserveSync(fd, 1n);
const sha = crypto.createHash('sha256').update(bytes).digest('hex');
fs.writeFileSync(process.env.LU_SHA_FILE, sha);
if (process.env.NOTIFY_SOCKET) lu.notifySync({ FDSTORE: 1, FDNAME: process.env.LU_FDNAME }, [session.fd]);
else lu.sendFdsSync(3, [session.fd], sha);
`;

/** A service started with LISTEN_FDS after the update: finds its session and reports what it retrieved. */
const SERVICE = `
// A service manager sets LISTEN_PID between fork and exec; this stands in for that.
process.env.LISTEN_PID = String(process.pid);
const lu = require(process.env.LU_INDEX);
const crypto = require('node:crypto');
const fs = require('node:fs');
const fds = lu.listenFds({ unsetEnvironment: true });
const fd = (fds.get(process.env.LU_FDNAME) || [])[0];
const isSession = lu.isLuoSessionFd(fd);
const session = lu.Session.fromFd(fd);
const file = session.retrieveSync(1n);
const sha = crypto.createHash('sha256').update(fs.readFileSync('/proc/self/fd/' + file)).digest('hex');
session.finishSync();
const state = session.state;
session.closeSync();
process.stdout.write(JSON.stringify({ fd, isSession, name: session.name, state, sha }));
`;

function exitCode(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

function collect(stream: NodeJS.ReadableStream | null): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    stream?.on('data', (chunk: Buffer) => (text += chunk.toString()));
    stream?.on('end', () => resolve(text));
  });
}

/** Starts `script` in a new node process with `fd3` as its fd 3 (if given). */
function startNode(script: string, env: Record<string, string>, fd3?: number): { child: ChildProcess; out: Promise<string>; err: Promise<string> } {
  const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe'];
  if (fd3 !== undefined) stdio.push(fd3);
  const child = spawn(process.execPath, ['-e', script], { stdio, env: { ...process.env, LU_INDEX: INDEX, ...env } });
  return { child, out: collect(child.stdout), err: collect(child.stderr) };
}

async function runAgent(ctx: StageContext, name: string, env: Record<string, string>, fd3?: number): Promise<string> {
  const shaFile = `/tmp/${name}.sha`;
  const agent = startNode(AGENT, { LU_SESSION: name, LU_SHA_FILE: shaFile, ...env }, fd3);
  if (fd3 !== undefined) fs.closeSync(fd3);
  const code = await exitCode(agent.child);
  ctx.equal('process A exited cleanly', code, 0) || ctx.report('process A stderr', await agent.err);
  return fs.readFileSync(shaFile, 'utf8');
}

/** Receives the session fd that process A sends over a socket pair; A has exited by the end. */
async function receiveFromAgent(ctx: StageContext, name: string): Promise<{ session: Session; sha: string }> {
  const [mine, theirs] = socketPair('stream');
  const received = recvFds(mine, { maxFds: 1 });
  const sha = await runAgent(ctx, name, {}, theirs);
  const { fds, data } = await received;
  fs.closeSync(mine);
  const fd = fds[0] ?? -1;
  ctx.equal('one fd arrived with its bytes', [fds.length, data.toString()], [1, sha]);
  ctx.equal('describeFd sees a LUO session', describeFd(fd).kind, 'luo-session');
  const session = Session.fromFd(fd);
  ctx.equal('Session.fromFd', [session.name, session.state], [name, 'outgoing']);
  return { session, sha };
}

async function handOver(ctx: StageContext): Promise<{ sha: string }> {
  const { session, sha } = await receiveFromAgent(ctx, HANDOFF);
  ctx.keep(session);
  return { sha };
}

function retrieveHandedOver(ctx: StageContext): void {
  const luo = LiveUpdate.openSync();
  const session = luo.retrieveSessionSync(HANDOFF);
  const fd = session.retrieveSync(1n);
  const sha = createHash('sha256').update(fs.readFileSync(`/proc/self/fd/${fd}`)).digest('hex');
  ctx.equal('memfd intact after the kexec', sha, (ctx.previous as { sha: string }).sha);
  session.finishSync();
  session.closeSync();
  luo.closeSync();
  fs.closeSync(fd);
}

async function handOverThenClose(ctx: StageContext): Promise<void> {
  const { session } = await receiveFromAgent(ctx, CONTROL);
  // The last fd of the session: closing it unpreserves everything in it.
  session.closeSync();
}

function controlIsGone(ctx: StageContext): void {
  const luo = LiveUpdate.openSync();
  try {
    luo.retrieveSessionSync(CONTROL);
    ctx.check('closed before the kexec: gone', false, 'retrieveSession succeeded');
  } catch (error) {
    const e = error as LiveUpdateError;
    ctx.check('closed before the kexec: gone', error instanceof SessionNotFoundError && e.code === 'ENOENT', e.message);
  } finally {
    luo.closeSync();
  }
}

/** Stage 1 as a service manager: A stores its session with FDSTORE=1 on our notify socket. */
async function storeInFdStore(ctx: StageContext): Promise<{ sha: string }> {
  const address = `@lu-test-notify-${process.pid}`;
  const addon = libraryBinding();
  const manager = addon.unixBind(addon.SOCK_DGRAM, address);
  const message = recvFds(manager, { maxFds: 4 });
  const sha = await runAgent(ctx, FDSTORE, { NOTIFY_SOCKET: address, LU_FDNAME: FDNAME });
  const { fds, data } = await message;
  fs.closeSync(manager);
  ctx.equal('the notify message', data.toString(), `FDSTORE=1\nFDNAME=${FDNAME}`);
  ctx.equal('one fd in the fd store', fds.length, 1);
  ctx.equal('it is the session', describeFd(fds[0] ?? -1).kind, 'luo-session');
  ctx.keep(Session.fromFd(fds[0] ?? -1));
  return { sha };
}

/** Stage 2 as a service manager: retrieve the session and start the service with it in LISTEN_FDS. */
async function serviceGetsItBack(ctx: StageContext): Promise<void> {
  const luo = LiveUpdate.openSync();
  const session = luo.retrieveSessionSync(FDSTORE);
  luo.closeSync();
  const service = startNode(SERVICE, { LISTEN_FDS: '1', LISTEN_FDNAMES: FDNAME, LU_FDNAME: FDNAME }, session.fd);
  const code = await exitCode(service.child);
  session.closeSync();
  const out = await service.out;
  ctx.equal('service exited cleanly', code, 0) || ctx.report('service stderr', await service.err);
  const report = JSON.parse(out || '{}') as { fd?: number; isSession?: boolean; name?: string; state?: string; sha?: string };
  ctx.equal('service found its session at fd 3 by name', [report.fd ?? null, report.isSession ?? null, report.name ?? null], [3, true, FDSTORE]);
  ctx.equal('service retrieved the memfd intact and finished', [report.sha ?? null, report.state ?? null], [(ctx.previous as { sha: string }).sha, 'finished']);
}

export default defineScenario('handoff', [
  defineCase('session-fd-to-another-process', [handOver, retrieveHandedOver]),
  defineCase('closed-by-receiver-before-kexec', [handOverThenClose, controlIsGone]),
  defineCase('systemd-fd-store', [storeInFdStore, serviceGetsItBack]),
]);
