/**
 * abi/*: the kernel's own refusals. The library refuses bad names and sizes
 * before any syscall, so the rest of the suite never learns whether the
 * kernel would; these cases issue the ioctls raw, through the static program
 * vm/luo-raw-ioctl.c (the conformance package's test-only native path, not
 * the library's addon). Each checks what the extensible-struct convention of
 * the LUO uAPI promises (copy_struct_from_user: a size below the struct's
 * first version is EINVAL, a larger size with a zero tail is accepted, with a
 * non-zero tail E2BIG; reserved fields must be zero: EINVAL; an unknown
 * request is ENOTTY, as ioctl(2) says; a bad pointer is EFAULT). Where the
 * documentation names no errno (a name without its NUL, an empty name), the
 * refusal is checked and the errno only observed.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import { constants } from 'node:os';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { guestToolPath } from '../../vm/static-program.js';
import { conformanceCase, expectPromise, observe, PREFIX, withDevice } from '../support.js';

/** `_IO(0xBA, nr)`: LUO's requests carry no size or direction. */
const request = (nr: number): number => (0xba << 8) | nr;
const CREATE_SESSION = request(0x00);
const SESSION_FINISH = request(0x42);
const SESSION_GET_NAME = request(0x43);
/** One past the device's last request, and past the session's. */
const UNKNOWN_DEVICE_REQUEST = request(0x02);
const UNKNOWN_SESSION_REQUEST = request(0x44);

/** struct liveupdate_ioctl_create_session: size, fd, name[64]. */
const SESSION_ARGS_SIZE = 72;
/** struct liveupdate_session_get_name: size, reserved, name[64]. */
const GET_NAME_ARGS_SIZE = 72;
/** struct liveupdate_session_finish: size, reserved. */
const FINISH_ARGS_SIZE = 8;

/** What one raw ioctl did. */
interface RawResult {
  readonly rc: number;
  /** The errno's name ("EINVAL"), or null when the call succeeded. */
  readonly errno: string | null;
  /** The argument bytes after the call. */
  readonly bytes: Buffer;
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/** Issues `req` on `target` ("device", "session", "incoming:NAME") with `arg` exactly as given. */
function rawIoctl(target: string, req: number, arg: Buffer | 'badptr'): RawResult {
  const hex = arg === 'badptr' ? arg : arg.toString('hex');
  const run = spawnSync(guestToolPath('luo-raw-ioctl'), [target, `0x${req.toString(16)}`, hex], { encoding: 'utf8' });
  if (run.error !== undefined) throw run.error;
  if (run.status !== 0) throw new Error(`luo-raw-ioctl ${target} failed: ${run.stderr.trim()}`);
  const [rc = '', errno = '', out = ''] = run.stdout.trim().split(' ');
  const code = Number(errno);
  return { rc: Number(rc), errno: code === 0 ? null : (ERRNO_NAMES.get(code) ?? `errno ${code}`), bytes: Buffer.from(out, 'hex') };
}

/** Session-creation arguments: `size` as given (whatever the buffer's length), `name` at offset 8 (64 bytes at most), then `tail`. */
function sessionArgs(size: number, name: Buffer, tail: Buffer = Buffer.alloc(0)): Buffer {
  const args = Buffer.alloc(SESSION_ARGS_SIZE + tail.length);
  args.writeUInt32LE(size, 0);
  args.writeInt32LE(-1, 4);
  name.copy(args, 8, 0, Math.min(name.length, 64));
  tail.copy(args, SESSION_ARGS_SIZE);
  return args;
}

/** A `size`, `reserved` header followed by `length - 8` zero bytes. */
function reservedArgs(length: number, reserved: number): Buffer {
  const args = Buffer.alloc(length);
  args.writeUInt32LE(length, 0);
  args.writeUInt32LE(reserved, 4);
  return args;
}

const nameOf = (what: string): Buffer => Buffer.from(`${PREFIX}abi-${what}\0`);

/** Records the refusal as the promise and its errno as observed. */
function refusedObserved(ctx: StageContext, result: RawResult): void {
  expectPromise(ctx, 'refused', result.rc < 0, true);
  observe(ctx, 'errno', result.errno);
}

/** Checks the errno the convention promises (null: success); returns whether the kernel kept it. */
function promisedErrno(ctx: StageContext, what: string, result: RawResult, errno: string | null): boolean {
  return expectPromise(ctx, what, result.errno, errno);
}

export default defineScenario('abi', [
  conformanceCase('name-without-nul', ['luo'], [
    (ctx) => refusedObserved(ctx, rawIoctl('device', CREATE_SESSION, sessionArgs(SESSION_ARGS_SIZE, Buffer.alloc(64, 'a')))),
  ]),
  conformanceCase('empty-name', ['luo'], [
    (ctx) => refusedObserved(ctx, rawIoctl('device', CREATE_SESSION, sessionArgs(SESSION_ARGS_SIZE, Buffer.alloc(0)))),
  ]),
  conformanceCase('size-below-struct', ['luo'], [
    (ctx) => promisedErrno(ctx, 'EINVAL', rawIoctl('device', CREATE_SESSION, sessionArgs(8, nameOf('small'))), 'EINVAL'),
  ]),
  conformanceCase('size-above-struct-zero-tail', ['luo'], [
    (ctx) => {
      const result = rawIoctl('device', CREATE_SESSION, sessionArgs(SESSION_ARGS_SIZE + 8, nameOf('zero-tail'), Buffer.alloc(8)));
      if (promisedErrno(ctx, 'accepted', result, null)) ctx.check('the new session fd is written back', result.bytes.readInt32LE(4) >= 0, result.bytes.readInt32LE(4));
    },
  ]),
  conformanceCase('size-above-struct-nonzero-tail', ['luo'], [
    (ctx) => promisedErrno(ctx, 'E2BIG', rawIoctl('device', CREATE_SESSION, sessionArgs(SESSION_ARGS_SIZE + 8, nameOf('tail'), Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]))), 'E2BIG'),
  ]),
  conformanceCase('get-name-reserved', ['luo'], [
    (ctx) => promisedErrno(ctx, 'EINVAL', rawIoctl('session', SESSION_GET_NAME, reservedArgs(GET_NAME_ARGS_SIZE, 1)), 'EINVAL'),
  ]),
  conformanceCase('finish-reserved', ['luo'], [
    (ctx) =>
      withDevice((luo) => {
        ctx.keep(luo.createSessionSync(`${PREFIX}abi-finish`));
        return null;
      }),
    (ctx) => promisedErrno(ctx, 'EINVAL', rawIoctl(`incoming:${PREFIX}abi-finish`, SESSION_FINISH, reservedArgs(FINISH_ARGS_SIZE, 1)), 'EINVAL'),
  ]),
  conformanceCase('unknown-request', ['luo'], [
    (ctx) => {
      promisedErrno(ctx, 'the device answers ENOTTY', rawIoctl('device', UNKNOWN_DEVICE_REQUEST, sessionArgs(SESSION_ARGS_SIZE, nameOf('unknown'))), 'ENOTTY');
      return promisedErrno(ctx, 'a session answers ENOTTY', rawIoctl('session', UNKNOWN_SESSION_REQUEST, reservedArgs(FINISH_ARGS_SIZE, 0)), 'ENOTTY');
    },
  ]),
  conformanceCase('bad-pointer', ['luo'], [
    (ctx) => {
      promisedErrno(ctx, 'the device answers EFAULT', rawIoctl('device', CREATE_SESSION, 'badptr'), 'EFAULT');
      return promisedErrno(ctx, 'a session answers EFAULT', rawIoctl('session', SESSION_GET_NAME, 'badptr'), 'EFAULT');
    },
  ]),
]);
