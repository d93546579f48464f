import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BadFileDescriptorError, NotifyTimeoutError, NotifySocketError } from '../lib/errors.js';
import { recvFds, recvFdsSync, type RecvResult } from '../lib/fdpass.js';
import { native } from '../lib/native.js';
import {
  barrier,
  barrierSync,
  describeFd,
  isLuoSessionFd,
  isValidFdName,
  notify,
  notifySync,
} from '../lib/systemd.js';
import { compiledLib, removeCompiledLib, runChild } from './helpers/child.js';
import { closeAll, expectNoFdLeak, memfdWith, openFds } from './helpers/fds.js';

/** A datagram socket standing in for the service manager's notify socket. */
interface FakeManager {
  fd: number;
  address: string;
  close(): void;
}

let tmp = '';
let savedNotify: string | undefined;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'notify-'));
  compiledLib();
}, 60_000);
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  removeCompiledLib();
});
beforeEach(() => {
  savedNotify = process.env['NOTIFY_SOCKET'];
  delete process.env['NOTIFY_SOCKET'];
});
afterEach(() => {
  if (savedNotify === undefined) delete process.env['NOTIFY_SOCKET'];
  else process.env['NOTIFY_SOCKET'] = savedNotify;
});

let serial = 0;

/** Binds a manager socket at a path or (abstract) '@name' and points $NOTIFY_SOCKET at it. */
function fakeManager(kind: 'path' | 'abstract'): FakeManager {
  serial += 1;
  const address = kind === 'path' ? path.join(tmp, `notify-${serial}.sock`) : `@liveupdate-test-${process.pid}-${serial}`;
  const fd = native.unixBind(native.SOCK_DGRAM, address);
  process.env['NOTIFY_SOCKET'] = address;
  return {
    fd,
    address,
    close: () => {
      fs.closeSync(fd);
      if (kind === 'path') fs.rmSync(address, { force: true });
    },
  };
}

/** True if nothing arrives at the manager within 50 ms. */
function nothingArrives(manager: FakeManager): boolean {
  try {
    native.waitReadable(manager.fd, 50);
    return false;
  } catch (error) {
    if ((error as { code?: string }).code === 'ETIMEDOUT') return true;
    throw error;
  }
}

function text(message: RecvResult): string {
  return message.data.toString('utf8');
}

describe('notify without $NOTIFY_SOCKET', () => {
  it('sends nothing and says so, as libsystemd does', async () => {
    await expectNoFdLeak(async () => {
      const result = { sent: false, reason: 'NOTIFY_SOCKET is not set' };
      expect(await notify({ READY: 1 })).toEqual(result);
      expect(notifySync('READY=1')).toEqual(result);
      expect(await barrier()).toEqual(result);
      expect(barrierSync()).toEqual(result);
    });
  });

  it('still validates first', async () => {
    await expect(notify({ FDSTORE: 1, FDNAME: 'a:b' }, [0])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  });
});

describe('notify to a datagram socket', () => {
  it('sends the exact bytes to a filesystem path', async () => {
    const manager = fakeManager('path');
    try {
      await expectNoFdLeak(async () => {
        const result = await notify({ READY: true, STATUS: 'Serving 3 VMs', MAINPID: 42 });
        expect(result).toEqual({ sent: true, socket: manager.address, message: 'READY=1\nSTATUS=Serving 3 VMs\nMAINPID=42' });
        const got = recvFdsSync(manager.fd);
        expect(text(got)).toBe('READY=1\nSTATUS=Serving 3 VMs\nMAINPID=42');
        expect(got.fds).toEqual([]);
      });
    } finally {
      manager.close();
    }
  });

  it('stores fds under a name through an abstract socket: exact bytes, the same files arrive', async () => {
    const manager = fakeManager('abstract');
    const memfds = [memfdWith('session'), memfdWith('guest ram')];
    try {
      await expectNoFdLeak(async () => {
        await notify({ FDSTORE: 1, FDNAME: 'luo-session', FDPOLL: 0 }, memfds);
        const got = await recvFds(manager.fd);
        expect(text(got)).toBe('FDSTORE=1\nFDNAME=luo-session\nFDPOLL=0');
        expect(got.fds.map((fd) => fs.fstatSync(fd).ino)).toEqual(memfds.map((fd) => fs.fstatSync(fd).ino));
        expect(got.fds.map((fd) => native.getCloexec(fd))).toEqual([1, 1]);
        closeAll(got.fds);
      });
    } finally {
      closeAll(memfds);
      manager.close();
    }
  });

  it('takes a string of lines or an array of lines as they are', async () => {
    const manager = fakeManager('abstract');
    try {
      notifySync('STATUS=up\nREADY=1');
      expect(text(recvFdsSync(manager.fd))).toBe('STATUS=up\nREADY=1');
      await notify(['FDSTOREREMOVE=1', 'FDNAME=luo-session']);
      expect(text(recvFdsSync(manager.fd))).toBe('FDSTOREREMOVE=1\nFDNAME=luo-session');
    } finally {
      manager.close();
    }
  });

  it('unsets $NOTIFY_SOCKET afterwards when asked', async () => {
    const manager = fakeManager('path');
    try {
      expect((await notify({ READY: 1 }, [], { unsetEnvironment: true })).sent).toBe(true);
      expect(process.env['NOTIFY_SOCKET']).toBeUndefined();
      expect(text(recvFdsSync(manager.fd))).toBe('READY=1');
    } finally {
      manager.close();
    }
  });

  it('reports an unreachable socket as a NotifySocketError naming $NOTIFY_SOCKET and its value, and refuses non-Unix addresses', async () => {
    const address = path.join(tmp, 'nobody-here.sock');
    process.env['NOTIFY_SOCKET'] = address;
    const unreachable = notify({ READY: 1 });
    await expect(unreachable).rejects.toBeInstanceOf(NotifySocketError);
    await expect(unreachable).rejects.toMatchObject({ code: 'ENOENT', errno: -os.constants.errno.ENOENT, syscall: 'connect', operation: 'notify', path: address });
    await expect(unreachable).rejects.toThrow(`ENOENT: cannot send to NOTIFY_SOCKET=${address}: no such file or directory, connect '${address}'`);
    await expect(unreachable).rejects.toMatchObject({ cause: expect.objectContaining({ code: 'ENOENT', syscall: 'connect' }) });
    expect(() => notifySync({ READY: 1 })).toThrow(NotifySocketError);
    process.env['NOTIFY_SOCKET'] = 'vsock:2:1234';
    expect(() => notifySync({ READY: 1 })).toThrow(NotifySocketError);
    expect(() => notifySync({ READY: 1 })).toThrow(expect.objectContaining({ code: 'EAFNOSUPPORT', errno: -os.constants.errno.EAFNOSUPPORT }) as unknown as Error);
    expect(() => notifySync({ READY: 1 })).toThrow(/NOTIFY_SOCKET=vsock:2:1234.*It is not a Unix socket address/);
  });
});

describe('FDNAME and field rules, checked before anything is sent', () => {
  const bad: Array<[string, Record<string, string | number>, number]> = [
    ['FDNAME with a colon', { FDSTORE: 1, FDNAME: 'a:b' }, 1],
    ['FDNAME with a control character', { FDSTORE: 1, FDNAME: 'tab\there' }, 1],
    ['FDNAME with non-ASCII', { FDSTORE: 1, FDNAME: 'sessión' }, 1],
    ['FDNAME of 256 characters', { FDSTORE: 1, FDNAME: 'x'.repeat(256) }, 1],
    ['FDSTORE=1 without fds', { FDSTORE: 1 }, 0],
    ['fds without FDSTORE=1', { READY: 1 }, 1],
    ['FDSTOREREMOVE=1 without FDNAME', { FDSTOREREMOVE: 1 }, 0],
    ['FDPOLL without FDSTORE', { FDPOLL: 0, FDNAME: 'x' }, 0],
    ['a lower-case key', { ready: 1 }, 0],
    ['a value with a newline', { STATUS: 'a\nb' }, 0],
  ];
  for (const [what, fields, fdCount] of bad) {
    it(`refuses ${what}`, async () => {
      const manager = fakeManager('abstract');
      const m = memfdWith('x');
      try {
        const fds = fdCount ? [m] : [];
        const before = openFds();
        await expect(notify(fields, fds)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
        expect(() => notifySync(fields, fds)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }) as unknown as Error);
        expect(openFds()).toEqual(before);
        expect(nothingArrives(manager)).toBe(true);
      } finally {
        fs.closeSync(m);
        manager.close();
      }
    });
  }

  it('accepts 255 printable ASCII characters and follows fdname_is_valid', async () => {
    expect(isValidFdName('x'.repeat(255))).toBe(true);
    expect(isValidFdName('with spaces & symbols!')).toBe(true);
    expect(isValidFdName('x'.repeat(256))).toBe(false);
    expect(isValidFdName('\x7f')).toBe(false);
    const manager = fakeManager('abstract');
    const m = memfdWith('x');
    try {
      await notify({ FDSTORE: 1, FDNAME: 'x'.repeat(255) }, [m]);
      const got = recvFdsSync(manager.fd);
      expect(text(got)).toBe(`FDSTORE=1\nFDNAME=${'x'.repeat(255)}`);
      closeAll(got.fds);
    } finally {
      fs.closeSync(m);
      manager.close();
    }
  });

  it('refuses more than 253 fds', async () => {
    await expect(notify({ FDSTORE: 1 }, new Array<number>(254).fill(0))).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  });
});

describe('barrier', () => {
  it('sends BARRIER=1 with a pipe write end and resolves only when the manager closes it', async () => {
    const manager = fakeManager('abstract');
    try {
      await expectNoFdLeak(async () => {
        let done = false;
        const pending = barrier().then((r) => {
          done = true;
          return r;
        });
        const got = await recvFds(manager.fd);
        expect(text(got)).toBe('BARRIER=1');
        expect(got.fds).toHaveLength(1);
        expect(describeFd(got.fds[0] ?? -1).kind).toBe('pipe');
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(done).toBe(false);
        closeAll(got.fds);
        expect(await pending).toEqual({ sent: true, socket: manager.address, message: 'BARRIER=1' });
      });
    } finally {
      manager.close();
    }
  });

  it('times out with ETIMEDOUT when the manager keeps the fd, leaking nothing', async () => {
    const manager = fakeManager('path');
    try {
      await expectNoFdLeak(async () => {
        const started = Date.now();
        const late = barrier({ timeout: 150 });
        await expect(late).rejects.toBeInstanceOf(NotifyTimeoutError);
        await expect(late).rejects.toMatchObject({ code: 'ETIMEDOUT', syscall: 'poll', errno: -os.constants.errno.ETIMEDOUT, operation: 'barrier' });
        await expect(late).rejects.toThrow(/BARRIER=1 not acknowledged within 150 ms/);
        expect(Date.now() - started).toBeGreaterThanOrEqual(140);
        const held = recvFdsSync(manager.fd);
        expect(() => barrierSync({ timeout: 50 })).toThrow(NotifyTimeoutError);
        const held2 = recvFdsSync(manager.fd);
        closeAll([...held.fds, ...held2.fds]);
      });
    } finally {
      manager.close();
    }
  });

  it('barrierSync blocks until a manager in another process closes the fd', async () => {
    const manager = fakeManager('abstract');
    try {
      // The child is the manager: it receives on the bound socket (its fd 3), waits, then closes.
      const child = runChild<{ message: string; fds: number }>(
        `const { recvFdsSync } = require(lib + '/fdpass.js'); const fs = require('fs');
         const m = recvFdsSync(3);
         setTimeout(() => { m.fds.forEach((fd) => fs.closeSync(fd)); console.log(JSON.stringify({ message: m.data.toString(), fds: m.fds.length })); }, 100);`,
        [manager.fd],
      );
      const started = Date.now();
      expect(barrierSync({ timeout: 10_000 })).toEqual({ sent: true, socket: manager.address, message: 'BARRIER=1' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(90);
      expect((await child).value).toEqual({ message: 'BARRIER=1', fds: 1 });
    } finally {
      manager.close();
    }
  }, 30_000);
});

// The child reports what listenFds saw; LISTEN_PID is set to its own pid by
// `sh -c 'LISTEN_PID=$$ exec node ...'` (exec keeps the pid), as systemd does after fork.
const LISTENER = `
const { listenFds, describeFd } = require(lib + '/systemd.js');
const { native } = require(lib + '/native.js');
const fds = [3, 4, 5];
// Node marks inherited fds close-on-exec at startup; undo that so the test sees listenFds do it.
fds.forEach((fd) => native.setCloexec(fd, false));
const before = fds.map((fd) => native.getCloexec(fd));
const unset = process.env.TEST_UNSET === '1';
let map;
try { map = [...listenFds({ unsetEnvironment: unset })]; } catch (e) { map = { error: e.code, message: e.message }; }
console.log(JSON.stringify({
  before, after: fds.map((fd) => native.getCloexec(fd)), map,
  kinds: fds.map((fd) => describeFd(fd).kind),
  env: ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'].map((k) => process.env[k] ?? null),
  again: Array.isArray(map) ? [...listenFds()] : null,
}));
`;

interface Listened {
  before: number[];
  after: number[];
  map: Array<[string, number[]]> | { error: string; message: string };
  kinds: string[];
  env: Array<string | null>;
  again: Array<[string, number[]]> | null;
}

describe('listenFds', () => {
  const OWN_PID = ['/bin/sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@"', process.execPath];

  /** A memfd, a socket and a pipe end as the child's fds 3, 4 and 5. */
  async function listen(env: NodeJS.ProcessEnv, command?: string[]): Promise<Listened> {
    const m = memfdWith('stored');
    const [s1, s2] = native.socketPair(native.SOCK_STREAM);
    const [r, w] = native.pipe();
    try {
      const result = await runChild<Listened>(LISTENER, [m, s1, r], env, command);
      expect(result.code, result.stderr).toBe(0);
      return result.value;
    } finally {
      closeAll([m, s1, s2, r, w]);
    }
  }

  it('maps LISTEN_FDNAMES to fds from 3, sets close-on-exec, and can unset the environment', async () => {
    const got = await listen({ LISTEN_FDS: '3', LISTEN_FDNAMES: 'store:sock:store' }, OWN_PID);
    expect(got.before).toEqual([0, 0, 0]);
    expect(got.map).toEqual([
      ['store', [3, 5]],
      ['sock', [4]],
    ]);
    expect(got.after).toEqual([1, 1, 1]);
    expect(got.kinds).toEqual(['memfd', 'socket', 'pipe']);
    expect(got.env[1]).toBe('3');
  });

  it("names every fd 'unknown' without LISTEN_FDNAMES", async () => {
    const got = await listen({ LISTEN_FDS: '3', LISTEN_FDNAMES: undefined }, OWN_PID);
    expect(got.map).toEqual([['unknown', [3, 4, 5]]]);
  });

  it('takes nothing when LISTEN_PID is another process, or missing', async () => {
    const other = await listen({ LISTEN_FDS: '3', LISTEN_PID: '1' });
    expect(other.map).toEqual([]);
    expect(other.after).toEqual([0, 0, 0]); // Not ours: left alone.
    const missing = await listen({ LISTEN_FDS: '3', LISTEN_PID: undefined });
    expect(missing.map).toEqual([]);
  });

  it('refuses names that do not match the count', async () => {
    const got = await listen({ LISTEN_FDS: '3', LISTEN_FDNAMES: 'a:b' }, OWN_PID);
    expect(got.map).toMatchObject({ error: 'ERR_LIVEUPDATE_LISTEN_FDS' });
  });

  it('removes LISTEN_* after reading them when asked', async () => {
    const got = await listen({ LISTEN_FDS: '3', LISTEN_FDNAMES: 'a:b:c', TEST_UNSET: '1' }, OWN_PID);
    expect(got.map).toEqual([
      ['a', [3]],
      ['b', [4]],
      ['c', [5]],
    ]);
    expect(got.env).toEqual([null, null, null]);
    expect(got.again).toEqual([]);
  });
});

describe('describeFd / isLuoSessionFd', () => {
  it('tells memfds, sockets and pipes apart and finds no LUO session among them', () => {
    const m = memfdWith('x');
    const [a, b] = native.socketPair(native.SOCK_DGRAM);
    const [r, w] = native.pipe();
    try {
      expect([m, a, r].map((fd) => describeFd(fd).kind)).toEqual(['memfd', 'socket', 'pipe']);
      expect([m, a, r].map(isLuoSessionFd)).toEqual([false, false, false]);
      expect(isLuoSessionFd(2_000_000_000)).toBe(false);
      expect(() => describeFd(2_000_000_000)).toThrow(BadFileDescriptorError);
      expect(() => describeFd(2_000_000_000)).toThrow(expect.objectContaining({ code: 'EBADF', operation: 'describeFd', fd: 2_000_000_000 }) as unknown as Error);
    } finally {
      closeAll([m, a, b, r, w]);
    }
  });
});
