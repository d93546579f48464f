import * as fs from 'node:fs';
import { constants } from 'node:os';
import * as path from 'node:path';
import { getSystemErrorMap } from 'node:util';
import { describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { kernelErrors, packageErrors, translateError, type ErrorContext, type Operation } from '../lib/errors.js';
import { callSync } from '../lib/errors.js';

const KERNEL_ERRORS = kernelErrors();
const PACKAGE_ERRORS = packageErrors();
import { native } from '../lib/native.js';
import { ERRNO } from './helpers/errno.js';
import { expectNoFdLeak } from './helpers/fds.js';

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
  ['createSession', 'ENAMETOOLONG', lu.SessionNameTooLongError],
  ['retrieveSession', 'ENAMETOOLONG', lu.SessionNameTooLongError],
  ['kexec.load', 'ENOSYS', lu.KexecUnsupportedError],
  ['kexec.unload', 'ENOSYS', lu.KexecUnsupportedError],
  ['kexec.execute', 'ENOSYS', lu.KexecUnsupportedError],
  ['memfd.addSeals', 'EPERM', lu.SealingNotAllowedError],
  ['memfd.addSeals', 'EINVAL', lu.NotSealableError],
  ['memfd.getSeals', 'EINVAL', lu.NotSealableError],
  ['sendFds', 'EPIPE', lu.PeerClosedError],
  ['recvFds', 'ECONNRESET', lu.PeerClosedError],
  ['notify', 'ECONNREFUSED', lu.NotifySocketError],
  ['barrier', 'ETIMEDOUT', lu.NotifyTimeoutError],
  ['close', 'EIO', lu.LiveUpdateError],
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
    // The native error is kept as the cause.
    expect(error.cause).toMatchObject({ code, errno: -ERRNO[code], syscall: 'ioctl' });
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
    const typed = translateError(nativeError('EBUSY'), { operation: 'preserve' });
    expect(translateError(typed, { operation: 'notify' })).toBe(typed);
  });

  it('takes the errno text from the errno, never from the message', () => {
    const odd = Object.assign(new Error('something else entirely'), { errno: -ERRNO.EIO, code: 'EIO', syscall: 'ioctl' });
    expect((translateError(odd, { operation: 'getName' }) as Error).message).toBe('EIO: getName failed: i/o error, ioctl');
  });
});

/** A representative errno for a row that takes any other: one no row names. */
const UNLISTED_CODE = 'EXDEV';

describe('the error table itself (lib/errors.ts)', () => {
  it('every row is reachable: each (operation, errno) it lists selects it, not an earlier row', () => {
    for (const rule of KERNEL_ERRORS) {
      const operations = rule.operations === '*' ? (['getName'] as const) : rule.operations;
      const codes = rule.codes === '*' ? [UNLISTED_CODE] : rule.codes;
      const reached = operations.flatMap((operation) =>
        codes.map((code) => {
          const errno = constants.errno[code as keyof typeof constants.errno];
          expect(errno, `${code} is an errno name`).toEqual(expect.any(Number));
          const error = translateError(Object.assign(new Error('x'), { errno: -errno, code, syscall: 'ioctl' }), { operation }) as lu.LiveUpdateError;
          expect(error).toBeInstanceOf(lu.LiveUpdateError);
          expect(error).toMatchObject({ code, errno: -errno, syscall: 'ioctl', operation });
          return error.constructor === rule.type;
        }),
      );
      // A row for any other errno may share its operations with earlier rows; it must still be reached by one.
      if (rule.codes === '*') expect(reached.some(Boolean), `${rule.type.name} ${rule.meaning}`).toBe(true);
      else expect(reached.every(Boolean), `${rule.type.name} ${rule.meaning}`).toBe(true);
    }
  });

  it('ends with a row that catches everything, so no failure goes untyped', () => {
    expect(KERNEL_ERRORS[KERNEL_ERRORS.length - 1]).toMatchObject({ type: lu.LiveUpdateError, operations: '*', codes: '*' });
  });

  it('every exported error class is in a table, and every class in the tables is exported', () => {
    const exported = Object.values(lu).filter((v): v is typeof lu.LiveUpdateError => typeof v === 'function' && (v === lu.LiveUpdateError || v.prototype instanceof lu.LiveUpdateError));
    const tabled = new Set<unknown>([...KERNEL_ERRORS.map((r) => r.type), ...PACKAGE_ERRORS.map((r) => r.type)]);
    // FdPassError and AgentError are the abstract bases of tabled classes.
    const bases: unknown[] = [lu.FdPassError, lu.AgentError];
    expect(exported.filter((c) => !tabled.has(c) && !bases.includes(c)).map((c) => c.name)).toEqual([]);
    for (const type of tabled) if (type !== TypeError && type !== RangeError) expect(exported).toContain(type);
  });

  it('every ERR_LIVEUPDATE_* code the library raises is in the package table', () => {
    const libDir = path.join(__dirname, '..', 'lib');
    // cli.ts's UsageError never leaves main(): it becomes exit status 2.
    const sources = fs.readdirSync(libDir).filter((f) => f.endsWith('.ts') && f !== 'errors.ts' && f !== 'cli.ts');
    const raised = new Set(sources.flatMap((f) => fs.readFileSync(path.join(libDir, f), 'utf8').match(/ERR_LIVEUPDATE_[A-Z_]+/g) ?? []));
    for (const rule of PACKAGE_ERRORS) expect(rule.code, 'a package code (a kernel errno plan relies on the prefix)').toMatch(/^ERR_/);
    const listed = new Set(PACKAGE_ERRORS.map((r) => r.code));
    expect([...raised].filter((c) => !listed.has(c))).toEqual([]);
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
    const status = lu.statusSync({ path, probe: false });
    // The reason is a sentence of the message: it starts with a capital there.
    const reason = status.reason ?? '';
    expect(error.message).toContain(`. ${reason.charAt(0).toUpperCase()}${reason.slice(1)}. `);
    expect(error.message).toContain(`Fix: ${status.fix}`);
    // The same reason and fix as status(), as fields.
    expect(error).toMatchObject({ reason: status.reason, fix: status.fix });
    expect(status.fix).toEqual(expect.any(String));
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

/** The error `fn` throws (fails the test if it returns). */
function thrown(fn: () => unknown): lu.LiveUpdateError {
  try {
    fn();
  } catch (error) {
    return error as lu.LiveUpdateError;
  }
  throw new Error('it did not throw');
}

/** Whether the running kernel has kexec at all: sysfs shows kexec_loaded exactly then. */
const hostHasKexec = fs.existsSync('/sys/kernel/kexec_loaded');

describe('messages that tell the truth', () => {
  it('open() of a path that is not the liveupdate device: NotLiveUpdateDeviceError at open, fd closed', async () => {
    await expectNoFdLeak(async () => {
      const error = thrown(() => lu.LiveUpdate.openSync('/dev/null'));
      expect(error).toBeInstanceOf(lu.NotLiveUpdateDeviceError);
      expect(error).toMatchObject({ code: 'ERR_LIVEUPDATE_NOT_LUO_DEVICE', errno: undefined, operation: 'open', path: '/dev/null' });
      expect(error.message).toMatch(/^ERR_LIVEUPDATE_NOT_LUO_DEVICE: \/dev\/null is device 1:3, not Live Update Orchestrator's/);
      expect(error.fix).toMatch(/\/dev\/liveupdate/);
      await expect(lu.LiveUpdate.open('/dev/null')).rejects.toBeInstanceOf(lu.NotLiveUpdateDeviceError);
      // A regular file is no character device at all.
      expect(() => lu.LiveUpdate.openSync('/etc/hostname')).toThrow(/\/etc\/hostname is not a character device/);
    });
  });

  it('a name too long for the kernel, passed below the TypeScript checks, is ENAMETOOLONG, not "already retrieved"', () => {
    const fd = lu.memfd.createSync('any-fd');
    try {
      const name = 'x'.repeat(64);
      // The native wrapper refuses before the ioctl, so any fd shows it.
      expect(() => native.retrieveSession(fd, name)).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG', errno: -ERRNO.ENAMETOOLONG, syscall: 'ioctl' }));
      expect(() => native.createSession(fd, name)).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
      // A NUL inside would cut the name where the kernel reads it: refused too.
      expect(() => native.createSession(fd, 'a\0b')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      const error = thrown(() => callSync({ operation: 'retrieveSession', sessionName: name }, () => native.retrieveSession(fd, name)));
      expect(error).toBeInstanceOf(lu.SessionNameTooLongError);
      expect(error).not.toBeInstanceOf(lu.SessionAlreadyRetrievedError);
      expect(error.message).toMatch(/^ENAMETOOLONG: session name 'x{64}' is longer than 63 bytes, ioctl$/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('kexec.execute() says whether this kernel has kexec at all', () => {
    const error = thrown(() => lu.kexec.executeSync({ sync: false }));
    if (hostHasKexec) {
      expect(error).not.toBeInstanceOf(lu.KexecUnsupportedError);
    } else {
      expect(error).toBeInstanceOf(lu.KexecUnsupportedError);
      expect(error).toMatchObject({ code: 'ENOSYS', errno: -ERRNO.ENOSYS, syscall: 'reboot' });
      expect(error.message).toMatch(/^ENOSYS: this kernel has no kexec \(built without CONFIG_KEXEC_CORE\)/);
      expect(error.message).not.toMatch(/no kernel is loaded/);
    }
  });

  it('kexec.load() where kexec_file_load is missing: KexecUnsupportedError, not "the kernel refused the image"', () => {
    const support = lu.kexec.supportSync();
    const error = thrown(() => lu.kexec.loadSync({ kernel: '/etc/hostname', cmdline: '' }));
    if (support.available === false) {
      expect(error).toBeInstanceOf(lu.KexecUnsupportedError);
      expect(error.message).toMatch(/^ENOSYS: this kernel has no kexec_file_load \(built without CONFIG_KEXEC_FILE\), kexec_file_load/);
      expect(support.reason).toMatch(/no kexec_file_load/);
    } else {
      expect(error).not.toBeInstanceOf(lu.KexecUnsupportedError);
    }
    // The support probe agrees with what a load did: ENOSYS exactly when it says unavailable.
    expect(error.code === 'ENOSYS').toBe(support.available === false);
  });

  it('kexec.isLoaded() and status() agree, and status() reports kexec_file_load support', async () => {
    const s = lu.statusSync({ probe: false });
    expect(s.kexecLoaded).toBe(lu.kexec.isLoadedSync());
    expect(await lu.kexec.isLoaded()).toBe(s.kexecLoaded);
    if (!hostHasKexec) expect(s.kexecLoaded).toBe(false);
    expect(s.kexecFile).toEqual(lu.kexec.supportSync());
    expect(s.kexecFile.available === true ? s.kexecFile.reason : typeof s.kexecFile.reason).toBe(s.kexecFile.available === true ? null : 'string');
  });

  it('addSeals on a memfd created without allowSealing says so (EPERM, and F_GET_SEALS shows SEAL_SEAL)', async () => {
    const fd = lu.memfd.createSync('born-sealed');
    try {
      expect(lu.memfd.getSealsSync(fd) & lu.memfd.SEAL_SEAL).toBe(lu.memfd.SEAL_SEAL);
      const error = thrown(() => lu.memfd.addSealsSync(fd, lu.memfd.SEAL_WRITE));
      expect(error).toBeInstanceOf(lu.SealingNotAllowedError);
      expect(error).toMatchObject({ code: 'EPERM', errno: -ERRNO.EPERM, syscall: 'fcntl', operation: 'memfd.addSeals', fd });
      expect(error.message).toMatch(/It carries SEAL_SEAL.*created without allowSealing/);
      expect(error.fix).toBe('create the memfd with memfd.create(name, { allowSealing: true })');
      await expect(lu.memfd.addSeals(fd, lu.memfd.SEAL_WRITE)).rejects.toThrow(/created without allowSealing/);
    } finally {
      fs.closeSync(fd);
    }
    // EPERM for the other reason: a read-only fd of a memfd that allows sealing.
    const sealable = lu.memfd.createSync('sealable', { allowSealing: true });
    const readOnly = fs.openSync(`/proc/self/fd/${sealable}`, 'r');
    try {
      expect(() => lu.memfd.addSealsSync(readOnly, lu.memfd.SEAL_WRITE)).toThrow(/The fd is not open for writing/);
    } finally {
      fs.closeSync(readOnly);
      fs.closeSync(sealable);
    }
  });

  it('seals on a file that is not a memfd: NotSealableError', () => {
    const pipe = native.pipe();
    try {
      expect(() => lu.memfd.getSealsSync(pipe[0])).toThrow(lu.NotSealableError);
    } finally {
      pipe.forEach((fd) => fs.closeSync(fd));
    }
  });

  it('every error has a code: a kexec that returns, a closed device, a closed session', () => {
    const fd = lu.memfd.createSync('stand-in');
    const session = new lu.Session(fd, 's', 'outgoing');
    session.closeSync();
    expect(thrown(() => session.preserveSync(0, 1n))).toMatchObject({ code: 'ERR_LIVEUPDATE_SESSION_STATE' });
    // close() of an fd already closed behind the session's back: typed, with the fd.
    const other = lu.memfd.createSync('closed-behind');
    const stale = new lu.Session(other, 'stale', 'outgoing');
    fs.closeSync(other);
    const error = thrown(() => stale.closeSync());
    expect(error).toBeInstanceOf(lu.BadFileDescriptorError);
    expect(error).toMatchObject({ code: 'EBADF', syscall: 'close', operation: 'close', fd: other });
  });
});
