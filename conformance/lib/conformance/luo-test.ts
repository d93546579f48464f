/**
 * The guest side of the test-only LUO file handler (vm/luo-test-handler,
 * CONFIG_LIVEUPDATE_TEST_HANDLER): its files, their faults, and the calls
 * the kernel made to it. Faults are set by ioctls on the file, which the
 * static control program vm/luo-test-ctl.c makes on the fd it inherits: the
 * library has no ioctl of the handler, and must not.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { guestToolPath } from '../vm/static-program.js';

/** The handler's device: every open of it is a file the handler preserves. */
export const LUO_TEST_DEVICE = '/dev/luo_test';
const DEBUGFS = '/sys/kernel/debug/luo_test';

/** The callbacks a test can make fail. */
export type FaultOp = 'preserve' | 'freeze' | 'retrieve' | 'can_finish';

/** An open file of the handler and the id its call log names it by. */
export interface TestFile {
  readonly fd: number;
  readonly id: number;
}

/** Whether this kernel has the handler's device (built with CONFIG_LIVEUPDATE_TEST_HANDLER). */
export function hasTestHandler(): boolean {
  return fs.existsSync(LUO_TEST_DEVICE);
}

/** Opens a new handler file (close-on-exec, as every fd Node opens). */
export function openTestFile(): TestFile {
  const fd = fs.openSync(LUO_TEST_DEVICE, fs.constants.O_RDWR);
  return { fd, id: testFileId(fd) };
}

/** The id of a handler file (opened, or retrieved after a kexec), from /proc/self/fdinfo. */
export function testFileId(fd: number): number {
  const match = /^luo_test_id:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (match?.[1] === undefined) throw new Error(`fd ${fd} is not a ${LUO_TEST_DEVICE} file`);
  return Number(match[1]);
}

/** Makes callback `op` of the file of `fd` fail with `errno` (positive); 0 clears it. */
export function setFault(fd: number, op: FaultOp, errno: number): void {
  control(fd, ['fail', op, String(errno)]);
}

/** Clears every fault of the file of `fd`. */
export function clearFaults(fd: number): void {
  control(fd, ['clear']);
}

function control(fd: number, args: readonly string[]): void {
  const run = spawnSync(guestToolPath('luo-test-ctl'), args, { stdio: ['ignore', 'ignore', 'pipe', fd], encoding: 'utf8' });
  if (run.error !== undefined) throw run.error;
  if (run.status !== 0) throw new Error(`luo-test-ctl ${args.join(' ')} on fd ${fd} failed: ${run.stderr.trim()}`);
}

/**
 * The calls this kernel (`'calls'`) or the kernel before the kexec
 * (`'previous'`, up to the jump) made to the handler for the named files, in
 * order, as `"op NAME result"` (result 0 or a negative errno; can_finish's
 * "no" is -EBUSY). `files` maps a name to a file id.
 */
export function handlerCalls(which: 'calls' | 'previous', files: Readonly<Record<string, number>>): string[] {
  const names = new Map(Object.entries(files).map(([name, id]) => [id, name]));
  const calls: string[] = [];
  for (const line of fs.readFileSync(`${DEBUGFS}/${which}`, 'utf8').split('\n')) {
    const [op, id, result] = line.split(' ');
    const name = names.get(Number(id));
    if (op !== undefined && name !== undefined) calls.push(`${op} ${name} ${result ?? '?'}`);
  }
  return calls;
}

/**
 * Calls grouped into phases: consecutive calls of one op with one result
 * become one entry naming their files in sorted order (`"finish A,B 0"`).
 * LUO promises the order of the phases, not the order of files within one.
 */
export function phases(calls: readonly string[]): string[] {
  const out: { key: string; names: string[] }[] = [];
  for (const call of calls) {
    const [op = '', name = '', result = ''] = call.split(' ');
    const key = `${op} ${result}`;
    const last = out[out.length - 1];
    if (last !== undefined && last.key === key) last.names.push(name);
    else out.push({ key, names: [name] });
  }
  return out.map(({ key, names }) => {
    const [op, result] = key.split(' ');
    return `${op} ${names.sort().join(',')} ${result}`;
  });
}
