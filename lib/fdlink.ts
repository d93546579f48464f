/**
 * What an fd is, from its /proc/self/fd link: the one home of the LUO
 * session link's prefix and of reading a link as a typed error.
 * @internal
 */
import * as fs from 'node:fs';
import { translateError, type ErrorContext } from './errors.js';

/** The link text of a session fd in /proc/self/fd: `anon_inode:[luo_session] NAME`. @internal */
export const SESSION_LINK_PREFIX = 'anon_inode:[luo_session] ';

/**
 * The /proc/self/fd link of `fd`. An fd that is not open fails with EBADF
 * (from fstat, as a syscall on it would), typed for `context`. @internal
 */
export function readFdLink(fd: number, context: ErrorContext): string {
  try {
    fs.fstatSync(fd);
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch (error) {
    throw translateError(error, context);
  }
}
