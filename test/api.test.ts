import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as lu from '../lib/index.js';
import { expectNoFdLeak } from './helpers/fds.js';

const { memfd } = lu;
const ROOT = path.join(__dirname, '..');

function fdFlags(fd: number): string {
  return fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/^flags:\s+(\d+)/m)?.[1] ?? '';
}

/** O_CLOEXEC is 02000000 (octal) in fdinfo's flags. */
function isCloexec(fd: number): boolean {
  return (parseInt(fdFlags(fd), 8) & 0o2000000) !== 0;
}

describe('memfd', () => {
  it('creates a close-on-exec memfd that reads back what was written', async () => {
    await expectNoFdLeak(() => {
      const fd = memfd.createSync('data');
      try {
        expect(isCloexec(fd)).toBe(true);
        expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toBe('/memfd:data (deleted)');
        fs.writeSync(fd, 'hello');
        expect(fs.readFileSync(`/proc/self/fd/${fd}`, 'utf8')).toBe('hello');
      } finally {
        fs.closeSync(fd);
      }
    });
  });

  it('honours cloexec: false', async () => {
    const fd = await memfd.create('inherit', { cloexec: false });
    expect(isCloexec(fd)).toBe(false);
    fs.closeSync(fd);
  });

  it('without allowSealing the file is born sealed against seals', () => {
    const fd = memfd.createSync('sealed');
    expect(memfd.getSealsSync(fd)).toBe(memfd.SEAL_SEAL);
    expect(() => memfd.addSealsSync(fd, memfd.SEAL_WRITE)).toThrow(expect.objectContaining({ code: 'EPERM', syscall: 'fcntl' }));
    fs.closeSync(fd);
  });

  it('adds and reads seals, which the kernel then enforces', async () => {
    const fd = await memfd.create('seals', { allowSealing: true });
    fs.writeSync(fd, Buffer.alloc(4096));
    expect(await memfd.getSeals(fd)).toBe(0);
    await memfd.addSeals(fd, memfd.SEAL_SHRINK | memfd.SEAL_GROW);
    memfd.addSealsSync(fd, memfd.SEAL_WRITE);
    expect(memfd.getSealsSync(fd)).toBe(memfd.SEAL_SHRINK | memfd.SEAL_GROW | memfd.SEAL_WRITE);
    expect(() => fs.ftruncateSync(fd, 1)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    expect(() => fs.writeSync(fd, 'x', 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    memfd.addSealsSync(fd, memfd.SEAL_SEAL);
    expect(() => memfd.addSealsSync(fd, memfd.SEAL_FUTURE_WRITE)).toThrow(lu.LiveUpdateError);
    fs.closeSync(fd);
  });

  it('noexecSeal makes the file non-executable and seals that', () => {
    const fd = memfd.createSync('noexec', { noexecSeal: true });
    expect(memfd.getSealsSync(fd) & memfd.SEAL_EXEC).toBe(memfd.SEAL_EXEC);
    expect(fs.fstatSync(fd).mode & 0o111).toBe(0);
    fs.closeSync(fd);
  });

  it('exports the seal constants with the kernel values', () => {
    expect([memfd.SEAL_SEAL, memfd.SEAL_SHRINK, memfd.SEAL_GROW, memfd.SEAL_WRITE, memfd.SEAL_FUTURE_WRITE, memfd.SEAL_EXEC]).toEqual([
      1, 2, 4, 8, 16, 32,
    ]);
  });

  it('rejects bad arguments before any syscall, leaking nothing', async () => {
    await expectNoFdLeak(async () => {
      expect(() => memfd.createSync(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      expect(() => memfd.createSync('a\0b')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
      expect(() => memfd.createSync('x'.repeat(250))).toThrow(/at most 249 bytes/);
      expect(() => memfd.createSync('x', { cloexec: 1 as unknown as boolean })).toThrow(TypeError);
      await expect(memfd.create('x', null as unknown as lu.memfd.CreateOptions)).rejects.toThrow(TypeError);
      expect(() => memfd.addSealsSync(0, 64)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect(() => memfd.addSealsSync(-1, memfd.SEAL_SEAL)).toThrow(RangeError);
      await expect(memfd.getSeals(1.5)).rejects.toThrow(RangeError);
    });
  });
});

describe('Session lifetime', () => {
  it('a closed session refuses every call before any syscall', async () => {
    const fd = memfd.createSync('stand-in');
    const session = new lu.Session(fd, 'vm-42', 'outgoing');
    expect(session).toMatchObject({ name: 'vm-42', state: 'outgoing', fd });
    session.closeSync();
    expect(session.state).toBe('closed');
    expect(session.fd).toBe(-1);
    // The fd number is free again; a new file may take it. The refusal must
    // come from the state check, not from an ioctl on that new file.
    const reused = memfd.createSync('reuses-the-number');
    expect(reused).toBe(fd);
    for (const call of [() => session.preserveSync(reused, 1n), () => session.retrieveSync(1n), () => session.finishSync(), () => session.getNameSync()]) {
      expect(call).toThrow(lu.SessionStateError);
      expect(call).toThrow(expect.objectContaining({ code: 'ERR_LIVEUPDATE_SESSION_STATE', errno: undefined, sessionName: 'vm-42' }));
    }
    await expect(session.preserve(reused, 1n)).rejects.toThrow(/session 'vm-42' is closed/);
    session.closeSync(); // twice: a no-op
    await session.close();
    fs.closeSync(reused);
  });

  it('close waits for calls still running on the thread pool; closeSync refuses meanwhile', async () => {
    const fd = memfd.createSync('stand-in');
    const session = new lu.Session(fd, 's', 'incoming');
    const pending = session.retrieve(1n).catch((e: unknown) => e);
    expect(() => session.closeSync()).toThrow(/while 1 call\(s\) on it are running/);
    await session.close();
    expect(await pending).toBeInstanceOf(lu.OperationNotSupportedError);
    expect(session.state).toBe('closed');
  });

  it('Symbol.dispose closes', () => {
    const fd = memfd.createSync('disposable');
    const session = new lu.Session(fd, 'd', 'outgoing');
    session[Symbol.dispose]();
    expect(session.state).toBe('closed');
    expect(() => fs.fstatSync(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('Session.fromFd refuses fds that are not LUO sessions, and bad fds', async () => {
    await expectNoFdLeak(() => {
      const fd = memfd.createSync('not-a-session');
      expect(() => lu.Session.fromFd(fd)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' }) as unknown as Error);
      expect(() => lu.Session.fromFd(fd)).toThrow(/must be a LUO session fd \(fd \d+ is \/memfd:not-a-session/);
      fs.closeSync(fd);
      expect(() => lu.Session.fromFd(fd)).toThrow(lu.BadFileDescriptorError);
      expect(() => lu.Session.fromFd(-1)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }) as unknown as Error);
      expect(() => lu.Session.fromFd('3' as unknown as number)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }) as unknown as Error);
    });
  });

  it('validates tokens and fds before any syscall', async () => {
    const fd = memfd.createSync('stand-in');
    const session = new lu.Session(fd, 's', 'outgoing');
    expect(() => session.preserveSync(fd, -1n)).toThrow(RangeError);
    expect(() => session.preserveSync(fd, 2n ** 64n)).toThrow(RangeError);
    expect(() => session.preserveSync(-3, 1n)).toThrow(RangeError);
    expect(() => session.retrieveSync('1' as unknown as bigint)).toThrow(TypeError);
    await expect(session.preserve(fd, 0.5)).rejects.toThrow(RangeError);
    session.closeSync();
  });
});

describe('LiveUpdate on a kernel without LUO', () => {
  it('open fails, typed, and leaks nothing', async () => {
    await expectNoFdLeak(async () => {
      expect(() => lu.LiveUpdate.openSync('/nonexistent/dev')).toThrow(lu.LiveUpdateUnavailableError);
      await expect(lu.LiveUpdate.open('/nonexistent/dev')).rejects.toThrow(lu.LiveUpdateUnavailableError);
    });
  });

  it('validates the device path', () => {
    expect(() => lu.LiveUpdate.openSync('')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => lu.LiveUpdate.openSync(7 as unknown as string)).toThrow(TypeError);
  });
});

describe('status()', () => {
  it('reports this host: no device, and why', async () => {
    const s = await lu.status({ path: '/nonexistent/dev' });
    expect(s.available).toBe(false);
    expect(s.deviceExists).toBe(false);
    expect(s.kernelRelease).toBe((await import('node:os')).release());
    expect(s.bootId).toBe(fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    expect(s.bootId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(s.reason).toMatch(/CONFIG_LIVEUPDATE|liveupdate=on|kho|older than 6\.19/);
    expect(s.fix).toEqual(expect.any(String));
    expect(s.deviceOpenable).toBeNull();
    expect(s.getName).toBeNull();
  });

  it('reads liveupdate= and kho= from /proc/cmdline', () => {
    const cmdline = fs.readFileSync('/proc/cmdline', 'utf8');
    const s = lu.statusSync({ probe: false });
    expect(s.liveupdateParam).toBe(/(?:^|\s)liveupdate=(\S*)/.exec(cmdline)?.[1] ?? null);
    expect(s.kho.param).toBe(/(?:^|\s)kho=(\S*)/.exec(cmdline)?.[1] ?? null);
  });
});

describe('packaging', () => {
  it('ESM and CJS users get the same classes, so instanceof works across them', () => {
    // A real Node process, so that Node's own ESM/CJS interop is what is tested.
    const script = `
      import * as esm from 'liveupdate';
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)('liveupdate');
      let error;
      try { cjs.LiveUpdate.openSync('/nonexistent/dev'); } catch (e) { error = e; }
      console.log(JSON.stringify({
        sameClass: esm.LiveUpdateError === cjs.LiveUpdateError && esm.Session === cjs.Session,
        sameNames: Object.keys(esm).filter((k) => k !== 'default').sort().join() === Object.keys(cjs).sort().join(),
        instanceOf: error instanceof esm.LiveUpdateUnavailableError,
      }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ sameClass: true, sameNames: true, instanceOf: true });
  });

  it('the addon knows which header its ABI was checked against', async () => {
    const { native } = await import('../lib/native.js');
    const hasHeader = fs.existsSync('/usr/include/linux/liveupdate.h');
    expect(native.abiCheckedAgainst).toBe(hasHeader ? 'linux/liveupdate.h' : '');
  });
});
