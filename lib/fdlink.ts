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

/** hugetlbfs's f_type (linux/magic.h): the file system of an MFD_HUGETLB memfd. */
const HUGETLBFS_MAGIC = 0x958458f6;

/** Whether the file of `fd` lives on hugetlbfs (an MFD_HUGETLB memfd); false when that cannot be told. @internal */
export function isHugetlbFile(fd: number): boolean {
  try {
    return fs.statfsSync(`/proc/self/fd/${fd}`).type === HUGETLBFS_MAGIC;
  } catch {
    return false;
  }
}
