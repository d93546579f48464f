/**
 * A simulated Live Update Orchestrator, for tests on machines without one:
 * the device, its sessions and their files, and a "kexec" between two
 * simulated kernels, in this process. What each call answers is what
 * Linux 7.2/7.3 answer (kernel/liveupdate/luo_session.c, luo_file.c,
 * mm/memfd_luo.c, in the order they check; the conformance suite measured
 * the same), and test/kernel/differential.test.ts holds it to a real kernel:
 *
 * - a session fd is one end of a SOCK_SEQPACKET socket pair whose other
 *   end the simulator keeps. A session lives while any fd of that end is
 *   open, anywhere (the simulator sees the last close as EOF), as a kernel
 *   session lives while its file does. The binding's session calls reach the
 *   simulator through lib/simulator/calls.ts: the kernel answers a LUO
 *   ioctl on a socket with ENOTTY, and the binding then asks here;
 * - preserved files are REAL memfds: the simulator keeps its own
 *   reference, freezes their size (seals SHRINK and GROW, so ftruncate and
 *   writes past the end fail with EPERM as under LUO) and, at the kexec,
 *   copies them into new memfds with their contents, size, file position
 *   and original seals, as memfd_luo's retrieve does;
 * - every failure is a system error `{ errno, code, syscall }` of the
 *   native layer's shape, so the binding types it exactly as the kernel's.
 * @internal
 */
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { recvFdsSync, sendFdsSync, socketPair, type RecvResult } from '../fdpass.js';
import { isHugetlbFile } from '../fdlink.js';
import { SEAL_GROW, SEAL_SEAL, SEAL_SHRINK } from '../memfd.js';
import { readableNow } from '../agent/listener.js';
import { native } from '../native.js';

/** An errno name. */
export type Errno = keyof typeof constants.errno;

/** The kernel's field for a session name: 64 bytes, the NUL included. */
export const SESSION_NAME_BYTES = 64;

/** memfd_create's flags the copies made at the kexec use (MFD_CLOEXEC | MFD_ALLOW_SEALING), as memfd_luo's retrieve does. */
const COPY_FLAGS = 0x1 | 0x2;

/** What LUO freezes on a preserved memfd: its size (shmem_freeze). */
const SIZE_SEALS = SEAL_SHRINK | SEAL_GROW;

/** A failed simulated syscall, shaped as the native layer's failures. */
export function systemError(code: Errno, syscall = 'ioctl'): Error & { errno: number; code: string; syscall: string } {
  return Object.assign(new Error(`${code}: simulated ${syscall}`), { errno: -constants.errno[code], code, syscall });
}

/** Another fd (SCM_RIGHTS through a private pair, close-on-exec) to the same open file as `fd`; null when `fd` is not open. */
export function duplicate(fd: number): number | null {
  const [a, b] = socketPair('seqpacket');
  try {
    sendFdsSync(a, [fd], 'd');
    return recvFdsSync(b, { maxFds: 1 }).fds[0] ?? null;
  } catch (error) {
    if ((error as { code?: unknown }).code === 'EBADF') return null;
    throw error;
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
}

/** A file the simulator keeps preserved: its own reference, the file's identity and the seals it had. */
interface PreservedFile {
  readonly fd: number;
  readonly inode: string;
  readonly seals: number;
}

/** The simulator's end of a session fd. */
interface SessionEnd {
  readonly fd: number;
  /** The inode of the holders' end: what identifies the session fd in this process. */
  readonly holderInode: number;
  /** The wait for its next message (the native layer's Cancellable). */
  waiter: { cancel(): void } | null;
}

/** A session created in this simulated kernel. */
export interface OutgoingSession {
  readonly kind: 'outgoing';
  readonly name: string;
  readonly files: Map<bigint, PreservedFile>;
  readonly end: SessionEnd;
}

/** A session handed over by the previous simulated kernel. */
export interface IncomingSession {
  readonly kind: 'incoming';
  readonly name: string;
  /** Each token's file in this kernel (the copy made at the kexec); emptied by finish. */
  readonly files: Map<bigint, number>;
  /** Its fd's end once retrieved; null before. */
  end: SessionEnd | null;
}

/** A session of either direction. */
export type SimulatedSession = OutgoingSession | IncomingSession;

/** The sessions whose fds live in this process, by the inode of the holders' end. */
const local = new Map<number, { luo: SimulatedLuo; session: SimulatedSession }>();

/** The simulated session (and its simulator) an fd of this process stands for, by its inode; undefined when none here. */
export function localSession(inode: number): { luo: SimulatedLuo; session: SimulatedSession } | undefined {
  return local.get(inode);
}

/** What a session call asks over the wire from another process (lib/simulator/calls.ts). */
export interface WireRequest {
  op: 'preserve' | 'retrieve' | 'finish' | 'getName';
  /** The token as a decimal string. */
  token?: string;
  /** preserve: the fd given was not open (the sender could not pass it). */
  badFd?: boolean;
}

/** The answer over the wire: a name, an fd beside it, or the errno. */
export type WireReply = { ok: true; name?: string } | { ok: false; code: Errno };

/**
 * The simulated LUO of one machine across its simulated kernels: one
 * device, one owner at a time, the sessions of the running kernel and those
 * handed over by the previous one.
 */
export class SimulatedLuo {
  #generation = 0;
  #owner: number | null = null;
  readonly #outgoing = new Map<string, OutgoingSession>();
  #incoming = new Map<string, IncomingSession>();
  /** Which session holds each preserved file (by inode: memfd_luo's get_id). */
  readonly #preserved = new Map<string, OutgoingSession>();
  #closed = false;

  /** How many simulated kexecs this machine made. */
  get kexecCount(): number {
    return this.#generation;
  }

  /** Opens the device: a handle valid in this kernel; EBUSY (from open) while it is open already. */
  open(): number {
    if (this.#owner !== null || this.#closed) throw systemError(this.#closed ? 'ENOENT' : 'EBUSY', 'open');
    this.#owner = this.#generation;
    return this.#generation;
  }

  /** Closes the device opened by `handle` (a handle of an earlier kernel closes nothing: that device is gone). */
  release(handle: number): void {
    if (this.#owner === handle && handle === this.#generation) this.#owner = null;
  }

  /** LIVEUPDATE_IOCTL_CREATE_SESSION through the device `handle`: the new session fd. */
  createSession(handle: number, name: string): number {
    this.#device(handle);
    const bytes = Buffer.byteLength(name, 'utf8');
    if (bytes === 0 || bytes > SESSION_NAME_BYTES - 1) throw systemError('EINVAL');
    this.settle();
    if (this.#outgoing.has(name)) throw systemError('EEXIST');
    const [end, holder] = this.#pair();
    const session: OutgoingSession = { kind: 'outgoing', name, files: new Map(), end };
    this.#outgoing.set(name, session);
    this.#watch(session);
    return holder;
  }

  /** LIVEUPDATE_IOCTL_RETRIEVE_SESSION: ENOENT for no such session, EINVAL once retrieved. */
  retrieveSession(handle: number, name: string): number {
    this.#device(handle);
    this.settle();
    const session = this.#incoming.get(name);
    if (session === undefined) throw systemError('ENOENT');
    if (session.end !== null) throw systemError('EINVAL');
    const [end, holder] = this.#pair();
    session.end = end;
    this.#watch(session);
    return holder;
  }

  /**
   * LIVEUPDATE_SESSION_PRESERVE_FD, in luo_preserve_file's order: EINVAL on
   * an incoming session, EEXIST for a token in use, EBADF for an fd not
   * open (`take` answers the simulator's own reference, or null), ENOENT for
   * a file no handler takes (not a shmem memfd), EBUSY for a file preserved
   * already (in any session).
   */
  preserve(session: SimulatedSession, token: bigint, take: () => number | null): void {
    if (session.kind !== 'outgoing') throw systemError('EINVAL');
    if (session.files.has(token)) throw systemError('EEXIST');
    const fd = take();
    if (fd === null) throw systemError('EBADF');
    try {
      if (!isMemfd(fd)) throw systemError('ENOENT');
      const stat = fs.fstatSync(fd);
      const inode = `${stat.dev}:${stat.ino}`;
      if (this.#preserved.has(inode)) throw systemError('EBUSY');
      const seals = native.getSeals(fd);
      // The size freezes (shmem_freeze): a memfd born with SEAL_SEAL cannot take the seals that model it (README: not modelled).
      if ((seals & SEAL_SEAL) === 0) native.addSeals(fd, SIZE_SEALS);
      session.files.set(token, { fd, inode, seals });
      this.#preserved.set(inode, session);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
  }

  /** LIVEUPDATE_SESSION_RETRIEVE_FD: a new fd (close-on-exec) to the token's file; EINVAL on an outgoing session, ENOENT for no such token. */
  retrieve(session: SimulatedSession, token: bigint): number {
    if (session.kind !== 'incoming') throw systemError('EINVAL');
    const file = session.files.get(token);
    if (file === undefined) throw systemError('ENOENT');
    const fd = duplicate(file);
    if (fd === null) throw systemError('EIO');
    return fd;
  }

  /** LIVEUPDATE_SESSION_FINISH: files never retrieved are discarded; EINVAL on an outgoing session. */
  finish(session: SimulatedSession): void {
    if (session.kind !== 'incoming') throw systemError('EINVAL');
    for (const fd of session.files.values()) fs.closeSync(fd);
    session.files.clear();
  }

  /** LIVEUPDATE_SESSION_GET_NAME. */
  getName(session: SimulatedSession): string {
    return session.name;
  }

  /**
   * The simulated kexec: every outgoing session still open becomes an
   * incoming session of the next kernel, its files copied as memfd_luo
   * restores them; everything else of this kernel ends (sessions handed
   * over before and not finished are dropped, as at a real live update).
   * Every session fd of this kernel is dead from now on (ESTALE), the
   * device has no owner.
   */
  kexec(): void {
    this.settle();
    const next = new Map<string, IncomingSession>();
    for (const s of this.#outgoing.values()) {
      const files = new Map([...s.files].map(([token, file]) => [token, copyForNextKernel(file)] as const));
      next.set(s.name, { kind: 'incoming', name: s.name, files, end: null });
    }
    this.#endEverything();
    this.#incoming = next;
    this.#generation += 1;
    this.#owner = null;
  }

  /** Ends the simulation: every session and file it holds is closed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#endEverything();
  }

  /** Takes every pending message and EOF of this kernel's session fds now (a close elsewhere is seen before the next call, as the kernel sees it at once). */
  settle(): void {
    for (const s of [...this.#outgoing.values(), ...this.#incoming.values()]) this.#pump(s);
  }

  /** The request of a session fd in another process, answered as the local calls answer it. */
  answer(session: SimulatedSession, request: WireRequest, fds: number[]): { reply: WireReply; fd?: number } {
    const [passed] = fds;
    let taken = false;
    const take = (): number | null => {
      taken = true;
      return request.badFd === true ? null : (passed ?? null);
    };
    try {
      const token = BigInt(request.token ?? '0');
      if (request.op === 'preserve') {
        this.preserve(session, token, take);
        return { reply: { ok: true } };
      }
      if (request.op === 'retrieve') return { reply: { ok: true }, fd: this.retrieve(session, token) };
      if (request.op === 'finish') {
        this.finish(session);
        return { reply: { ok: true } };
      }
      return { reply: { ok: true, name: this.getName(session) } };
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      // A token that is no number is the kernel's EINVAL for a malformed request.
      const errno = error instanceof SyntaxError ? 'EINVAL' : typeof code === 'string' && code in constants.errno ? (code as Errno) : 'EIO';
      return { reply: { ok: false, code: errno } };
    } finally {
      // A preserve keeps the file it took (or closed it failing); one never taken is closed here.
      if (passed !== undefined && !taken) fs.closeSync(passed);
    }
  }

  // ---- inside ------------------------------------------------------------------------

  #device(handle: number): void {
    if (this.#owner !== handle || handle !== this.#generation) throw systemError('EBADF');
  }

  #pair(): [SessionEnd, number] {
    const [end, holder] = socketPair('seqpacket');
    return [{ fd: end, holderInode: fs.fstatSync(holder).ino, waiter: null }, holder];
  }

  /** Registers the session as this process's and answers its fd's messages as they come. */
  #watch(session: SimulatedSession): void {
    const end = session.end;
    if (end === null) return;
    local.set(end.holderInode, { luo: this, session });
    const wait = (): void => {
      const waiter = native.waitReadableAsync(end.fd);
      end.waiter = waiter;
      waiter.then(
        () => {
          end.waiter = null;
          // A session ended meanwhile (its kernel left, the simulation closed) has nothing more to answer.
          if (local.get(end.holderInode)?.session === session && this.#pump(session)) wait();
        },
        () => {},
      );
    };
    wait();
  }

  /** Answers what waits on the session's fd; at EOF (its last holder closed it) the session ends. Answers whether it lives on. */
  #pump(session: SimulatedSession): boolean {
    const end = session.end;
    if (end === null) return true;
    while (readableNow(end.fd)) {
      let message: RecvResult;
      try {
        message = recvFdsSync(end.fd, { maxFds: 1, maxBytes: 4096 });
      } catch {
        // More than a request can be (too long, too many fds: closed unread): not one of the binding's.
        continue;
      }
      if (message.eof) {
        this.#closeSession(session);
        return false;
      }
      const { reply, fd } = this.answer(session, parseRequest(message.data), message.fds);
      try {
        sendFdsSync(end.fd, fd === undefined ? [] : [fd], JSON.stringify(reply));
      } catch {
        // The holder went away meanwhile: EOF comes next.
      } finally {
        if (fd !== undefined) fs.closeSync(fd);
      }
    }
    return true;
  }

  /** The session's last fd was closed: an outgoing session unpreserves its files and frees its name; an incoming one is finished and gone. */
  #closeSession(session: SimulatedSession): void {
    this.#dropEnd(session.end);
    if (session.kind === 'outgoing') {
      this.#unpreserve(session);
      this.#outgoing.delete(session.name);
    } else {
      this.finish(session);
      this.#incoming.delete(session.name);
    }
  }

  #unpreserve(session: OutgoingSession): void {
    for (const file of session.files.values()) {
      this.#preserved.delete(file.inode);
      fs.closeSync(file.fd);
    }
    session.files.clear();
  }

  #dropEnd(end: SessionEnd | null): void {
    if (end === null) return;
    end.waiter?.cancel();
    end.waiter = null;
    local.delete(end.holderInode);
    fs.closeSync(end.fd);
  }

  #endEverything(): void {
    for (const s of this.#outgoing.values()) {
      this.#dropEnd(s.end);
      this.#unpreserve(s);
    }
    for (const s of this.#incoming.values()) {
      this.#dropEnd(s.end);
      this.finish(s);
    }
    this.#outgoing.clear();
    this.#incoming.clear();
    this.#preserved.clear();
  }
}

/** A request as sent over a session fd; anything else is a request for nothing, answered EINVAL. */
function parseRequest(data: Buffer): WireRequest {
  try {
    const request = JSON.parse(data.toString('utf8')) as Partial<WireRequest> | null;
    if (request !== null && typeof request === 'object' && ['preserve', 'retrieve', 'finish', 'getName'].includes(request.op ?? '')) return request as WireRequest;
  } catch {
    // Not JSON: as below.
  }
  return { op: 'preserve', token: 'invalid' };
}

/** Whether memfd_luo would take the file: a shmem memfd (hugetlb memfds are not shmem). */
function isMemfd(fd: number): boolean {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('/memfd:') && !isHugetlbFile(fd);
  } catch {
    return false;
  }
}

/** The file position of `fd` (/proc/self/fdinfo). */
function filePosition(fd: number): number {
  const match = /^pos:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return match === null ? 0 : Number(match[1]);
}

/** The next kernel's file: a new memfd with the contents, size, position and original seals of `file` (memfd_luo_retrieve). */
function copyForNextKernel(file: PreservedFile): number {
  const size = fs.fstatSync(file.fd).size;
  const position = filePosition(file.fd);
  const copy = native.memfdCreate('', COPY_FLAGS);
  try {
    const chunk = Buffer.alloc(Math.min(size, 1 << 20));
    for (let at = 0; at < size; ) {
      const n = fs.readSync(file.fd, chunk, 0, Math.min(chunk.length, size - at), at);
      if (n === 0) break;
      fs.writeSync(copy, chunk, 0, n, at);
      at += n;
    }
    fs.ftruncateSync(copy, size);
    // Node has no lseek: reading up to the position moves it there.
    for (let at = 0; at < Math.min(position, size); ) at += fs.readSync(copy, chunk, 0, Math.min(chunk.length, position - at), null) || position;
    if (file.seals !== 0) native.addSeals(copy, file.seals);
    return copy;
  } catch (error) {
    fs.closeSync(copy);
    throw error;
  }
}
