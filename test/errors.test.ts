import * as fs from 'node:fs';
import { getSystemErrorMap } from 'node:util';
import { describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { translateError, type ErrorContext, type Operation } from '../lib/errors.js';
import { native } from '../lib/native.js';
import { ERRNO } from './helpers/errno.js';

/** A system error exactly as the native layer builds one. */
function nativeError(code: keyof typeof ERRNO, syscall = 'ioctl'): Error {
  const text = getSystemErrorMap().get(-ERRNO[code])?.[1] ?? 'unknown';
  return Object.assign(new Error(`${code}: ${text}, ${syscall}`), { errno: -ERRNO[code], code, syscall });
}

/** Every row of the README's error table: (operation, errno) → class. */
const TABLE: Array<[Operation, keyof typeof ERRNO, new (...args: never[]) => lu.LiveUpdateError]> = [
  ['open', 'ENOENT', lu.LiveUpdateUnavailableError],
  ['open', 'EBUSY', lu.DeviceBusyError],
  ['open', 'EACCES', lu.PermissionDeniedError],
  ['open', 'EPERM', lu.PermissionDeniedError],
  ['open', 'EIO', lu.IncomingStateError],
  ['createSession', 'EEXIST', lu.SessionExistsError],
  ['retrieveSession', 'ENOENT', lu.SessionNotFoundError],
  ['retrieveSession', 'EINVAL', lu.SessionAlreadyRetrievedError],
  ['preserve', 'EEXIST', lu.TokenInUseError],
  ['preserve', 'EBUSY', lu.FileAlreadyPreservedError],
  ['preserve', 'ENOENT', lu.UnsupportedFileError],
  ['preserve', 'EOPNOTSUPP', lu.UnsupportedSealsError],
  ['preserve', 'EBADF', lu.BadFileDescriptorError],
  ['preserve', 'ENOSPC', lu.SessionFullError],
  ['preserve', 'EFBIG', lu.FileTooLargeError],
  ['preserve', 'ENOMEM', lu.OutOfMemoryError],
  ['retrieve', 'ENOENT', lu.TokenNotFoundError],
  ['preserve', 'EINVAL', lu.SessionStateError],
  ['retrieve', 'EINVAL', lu.SessionStateError],
  ['finish', 'EINVAL', lu.SessionStateError],
  ['finish', 'EBUSY', lu.FinishNotReadyError],
  ['retrieve', 'EIO', lu.RetrieveFailedError],
  ['createSession', 'ENOTTY', lu.OperationNotSupportedError],
  ['getName', 'ENOTTY', lu.OperationNotSupportedError],
  ['kexec.execute', 'EINVAL', lu.KexecNotLoadedError],
  ['kexec.load', 'ENOEXEC', lu.KexecImageRejectedError],
  ['kexec.load', 'EINVAL', lu.KexecImageRejectedError],
  ['kexec.execute', 'ENOMEM', lu.LiveUpdateAbortedError],
  ['kexec.execute', 'EAGAIN', lu.LiveUpdateAbortedError],
  ['kexec.unload', 'EPERM', lu.KexecError],
];

describe('error table', () => {
  it.each(TABLE)('%s %s → %o', (operation, code, type) => {
    const context: ErrorContext = { operation, sessionName: 'vm-42', token: 7n, fd: 5, request: 'REQ' };
    const error = translateError(nativeError(code), context) as lu.LiveUpdateError;
    expect(error).toBeInstanceOf(type);
    expect(error).toBeInstanceOf(lu.LiveUpdateError);
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe(type.name);
    expect(error.code).toBe(code);
    expect(error.errno).toBe(-ERRNO[code]);
    expect(error.syscall).toBe('ioctl');
    expect(error.operation).toBe(operation);
    expect(error.message).toMatch(new RegExp(`^${code}: .+, ioctl REQ$`));
  });

  it('carries the session, token and fd it was about', () => {
    const error = translateError(nativeError('EEXIST'), { operation: 'preserve', sessionName: 'vm-42', token: 2n ** 64n - 1n, fd: 9 });
    expect(error).toMatchObject({ sessionName: 'vm-42', token: 2n ** 64n - 1n, fd: 9 });
    expect((error as Error).message).toContain('token 18446744073709551615 is already used in session \'vm-42\'');
  });

  it('falls back to LiveUpdateError with the system text for an errno it does not know', () => {
    const error = translateError(nativeError('EIO'), { operation: 'preserve' }) as lu.LiveUpdateError;
    expect(error.constructor).toBe(lu.LiveUpdateError);
    expect(error.message).toBe('EIO: preserve failed: i/o error, ioctl');
  });

  it('says that a finish refused with EBUSY finished nothing and is to be retried', () => {
    const error = translateError(nativeError('EBUSY'), { operation: 'finish', sessionName: 'vm-42' }) as lu.LiveUpdateError;
    expect(error.message).toBe("EBUSY: a file in session 'vm-42' is not ready to finish; nothing was finished: retry later, ioctl");
  });

  it('says that a failed retrieve fails the same way every time', () => {
    const error = translateError(nativeError('EIO'), { operation: 'retrieve', sessionName: 'vm-42', token: 3n }) as lu.LiveUpdateError;
    expect(error.message).toBe("EIO: the kernel could not restore the file under token 3 of session 'vm-42' (i/o error); every retrieve of this token will fail the same way, ioctl");
  });

  it('lets errors that are not system errors through unchanged', () => {
    const type = new TypeError('bad');
    expect(translateError(type, { operation: 'open' })).toBe(type);
  });
});

describe('errors provoked through the native layer', () => {
  it('open ENOENT: LiveUpdateUnavailableError saying why, from status()', () => {
    const path = '/nonexistent/liveupdate';
    const error = (() => {
      try {
        lu.LiveUpdate.openSync(path);
      } catch (e) {
        return e as lu.LiveUpdateError;
      }
      throw new Error('open succeeded');
    })();
    expect(error).toBeInstanceOf(lu.LiveUpdateUnavailableError);
    expect(error).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', operation: 'open', path });
    expect(error.message).toMatch(/^ENOENT: \/nonexistent\/liveupdate does not exist: .*, open '\/nonexistent\/liveupdate'\. .+/);
    expect(error.message).toContain(lu.statusSync({ path, probe: false }).reason);
  });

  it('open ENOENT, Promise form', async () => {
    await expect(lu.LiveUpdate.open('/nonexistent/liveupdate')).rejects.toBeInstanceOf(lu.LiveUpdateUnavailableError);
  });

  it('open of a directory: a LiveUpdateError with the system text', () => {
    expect(() => lu.LiveUpdate.openSync('/')).toThrow(expect.objectContaining({ code: 'EISDIR', syscall: 'open' }));
  });

  it('PRESERVE_FD on a non-session fd: the kernel says ENOTTY → OperationNotSupportedError', () => {
    const memfd = lu.memfd.createSync('not-a-session');
    try {
      const session = new lu.Session(memfd, 'fake', 'outgoing');
      expect(() => session.preserveSync(memfd, 1n)).toThrow(lu.OperationNotSupportedError);
      expect(() => session.preserveSync(memfd, 1n)).toThrow(/^ENOTTY: .*LIVEUPDATE_SESSION_PRESERVE_FD/);
    } finally {
      fs.closeSync(memfd);
    }
  });

  it('an ioctl on a closed fd: EBADF → BadFileDescriptorError', () => {
    const memfd = lu.memfd.createSync('closed');
    fs.closeSync(memfd);
    const session = new lu.Session(memfd, 'fake', 'outgoing');
    expect(() => session.preserveSync(0, 1n)).toThrow(lu.BadFileDescriptorError);
    // The raw binding reports it as Node would.
    expect(() => native.preserveFd(memfd, 0, 1n)).toThrow(expect.objectContaining({ code: 'EBADF', errno: -9, syscall: 'ioctl' }));
  });

  it('kexec.load of a missing kernel: KexecError naming the path', () => {
    expect(() => lu.kexec.loadSync({ kernel: '/nonexistent/bzImage', cmdline: '' })).toThrow(lu.KexecError);
    expect(() => lu.kexec.loadSync({ kernel: '/nonexistent/bzImage', cmdline: '' })).toThrow(/ENOENT: .*\/nonexistent\/bzImage/);
  });

  it('kexec.load of a file that is no kernel: KexecImageRejectedError', () => {
    // kexec_file_load parses the image before anything is replaced, so this is safe on any host.
    const loadedBefore = lu.kexec.isLoadedSync();
    expect(() => lu.kexec.loadSync({ kernel: '/etc/hostname', cmdline: '' })).toThrow(lu.KexecError);
    expect(lu.kexec.isLoadedSync()).toBe(loadedBefore);
  });
});
