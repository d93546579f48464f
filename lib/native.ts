/**
 * The compiled addon, typed, and loaded on first use. Every kernel call comes as `name` (synchronous,
 * throws a Node-style system error) and `nameAsync` (runs on the libuv thread
 * pool, returns a Promise). Nothing here validates more than argument types:
 * the public API in the other modules does that before calling in.
 * @internal
 */
import * as path from 'node:path';
import { callNative, errorFromNative, nativeCallState, nativeSyscalls, packageError, type Operation } from './errors.js';

/** A kernel call in its synchronous and Promise forms. @internal */
type Both<Name extends string, Args extends unknown[], Result> = {
  [K in Name]: (...args: Args) => Result;
} & {
  [K in `${Name}Async`]: (...args: Args) => Promise<Result>;
};

/**
 * A batch of RETRIEVE_FD (native/napi_luo.cc): the fds in token order, or,
 * where one failed, which one and its errno (negative), the fds already
 * retrieved closed. @internal
 */
export type RetrievedFds = number[] | { readonly index: number; readonly errno: number };

/** LUO device and session ioctls (native/luo.h). @internal */
export type LuoBinding = Both<'openDevice', [path: string], number> &
  Both<'createSession', [deviceFd: number, name: string], number> &
  Both<'retrieveSession', [deviceFd: number, name: string], number> &
  Both<'preserveFd', [sessionFd: number, fd: number, token: bigint], number> &
  Both<'retrieveFd', [sessionFd: number, token: bigint], number> &
  Both<'retrieveFds', [sessionFd: number, tokens: BigUint64Array], RetrievedFds> &
  Both<'finishSession', [sessionFd: number], number> &
  Both<'getSessionName', [sessionFd: number], string> & {
    /** Synchronous only: a deferred close could close whatever file has the number by then. */
    close(fd: number): number;
  };

/** memfd_create, seals and hole punching (native/memfd.h). @internal */
export type MemfdBinding = Both<'memfdCreate', [name: string, flags: number], number> &
  Both<'addSeals', [fd: number, seals: number], number> &
  Both<'getSeals', [fd: number], number> &
  Both<'punchHole', [fd: number, offset: bigint, length: bigint], number>;

/** kexec_file_load and reboot (native/kexec.h). @internal */
export type KexecBinding = Both<'kexecOpenImage', [path: string], number> &
  Both<'kexecLoad', [kernelFd: number, initrdFd: number | null, cmdline: string], number> &
  Both<'kexecUnload', [], number> &
  Both<'kexecLoaded', [], number> &
  Both<'kexecFileProbe', [], number> &
  Both<'kexecExecute', [sync: boolean], number>;

/** One receive as the addon reports it (native/fdpass.h FdReceiver). @internal */
export interface NativeRecvResult {
  /** RecvStatus: 0 ok, 1 eof, 2 fds truncated, 3 message truncated, 4 bad frame, 5 short frame. */
  status: number;
  /** The message's bytes (empty unless status is 0). */
  data: Buffer;
  /** The fds that arrived, now owned by the caller (empty unless status is 0). */
  fds: number[];
  /** How many fds arrived and were closed because of the error. */
  dropped: number;
  /** The message's real length (datagram, frame), where known. */
  length: number;
  /** The stream is no longer at a frame boundary (a bad frame): only closing it is safe. */
  outOfStep: boolean;
}

/**
 * A native fd-passing error. `outOfStep` is set when it stopped part way
 * through a stream message (the stream can no longer be read or written as
 * frames). @internal
 */
export type NativeStepError = Error & { code?: string; outOfStep?: boolean };

/** A Promise settled by the event loop that can be cancelled: rejects with ECANCELED, or the errno given. @internal */
export type Cancellable<T> = Promise<T> & { cancel(errno?: number): void };

/**
 * A socket's readiness watcher, kept across waits (native/napi_fdpass.cc,
 * ReadableWatch): it watches its own copy of the file the fd was when it
 * was made, and holds that file open until closed. @internal
 */
export interface NativeReadableWatch {
  /** True once readable or hung up; false when cancelled, closed, or not armed. Never rejects; one at a time. */
  wait(): Promise<boolean>;
  /** Settles a pending wait with false. */
  cancel(): void;
  /** Cancels, and closes the copy. */
  close(): void;
}

/** SCM_RIGHTS over Unix sockets and the socket helpers (native/fdpass.h). @internal */
export type FdPassBinding = {
  /** `timeoutMs` (default -1: none) bounds the whole send; then ETIMEDOUT. `fds`: an array, or one fd as a number. */
  sendFds(fd: number, data: Uint8Array, fds: readonly number[] | number, framing: number, timeoutMs?: number): number;
  /** Tried at once on the caller's numbers: the bytes sent when done then, else a Cancellable (the operation took copies). */
  sendFdsAsync(fd: number, data: Uint8Array, fds: readonly number[] | number, framing: number): number | Cancellable<number>;
  recvFds(fd: number, maxBytes: number, maxFds: number, framing: number, into?: false): NativeRecvResult;
  /** With `into` true: the result written into the buffers given to setRooms, the byte count returned (see fdpass.ts, readInto). */
  recvFds(fd: number, maxBytes: number, maxFds: number, framing: number, into: boolean): number | NativeRecvResult;
  /** Tried at once as sendFdsAsync is: the result when a message was there, else a Cancellable. */
  recvFdsAsync(fd: number, maxBytes: number, maxFds: number, framing: number, into?: false): NativeRecvResult | Cancellable<NativeRecvResult>;
  /** With `into` true as for recvFds: a receive done at once is written there (the byte count returned). */
  recvFdsAsync(fd: number, maxBytes: number, maxFds: number, framing: number, into: boolean): number | NativeRecvResult | Cancellable<NativeRecvResult>;
  /** sendFds with its numbers in the registered `args` (fdpass.ts, SEND_ARG), and its bytes in `data` when `args` gives their length. */
  sendFdsArgs(data: Uint8Array | undefined): number;
  /** recvFds with its numbers, `into` among them, in the registered `args` (fdpass.ts, RECV_ARG). */
  recvFdsArgs(): number | NativeRecvResult;
  /** Registers where receives given `true` write and where the `*Args` calls read; once per environment: a later call (another copy of the package) gets the first arrays back. */
  setRooms(data: Buffer, meta: Int32Array, args: Int32Array): [Buffer, Int32Array, Int32Array];
  waitReadable(fd: number, timeoutMs: number): boolean;
  waitReadableAsync(fd: number): Cancellable<boolean>;
  /** A watcher of `fd`'s file for as many waits as it is used for (see NativeReadableWatch). */
  readonly ReadableWatch: new (fd: number) => NativeReadableWatch;
  /** Whether a message, a connection or EOF waits on `fd`, without waiting (POLLNVAL counts: the next call on it says why). */
  readableNow(fd: number): boolean;
  readonly SOCK_STREAM: number;
  readonly SOCK_DGRAM: number;
  readonly SOCK_SEQPACKET: number;
} & Both<'socketPair', [type: number], [number, number]> &
  Both<'pipe', [], [number, number]> &
  Both<'unixBind', [type: number, path: string], number> &
  Both<'unixConnect', [type: number, path: string], number> &
  Both<'unixAccept', [fd: number], number> &
  Both<'socketType', [fd: number], number> & {
    /**
     * F_DUPFD_CLOEXEC copies of `fds`, owned by the returned array until
     * unpinFds(array) closes them (or, failing that, its finalizer does).
     */
    pinFds(fds: readonly number[]): number[];
    unpinFds(pinned: number[]): void;
    /** FD_CLOEXEC belongs to the number, so these are synchronous only. */
    setCloexec(fd: number, on: boolean): number;
    getCloexec(fd: number): number;
    /**
     * SO_PASSRIGHTS (Linux 6.16+): `false` refuses every SCM_RIGHTS sent to
     * this socket (the sender gets EPERM; sockets accepted from a listener
     * inherit it). Returns false when the kernel does not know the option.
     */
    setPassRights(fd: number, on: boolean): boolean;
  };

/** The credentials of a Unix socket's peer (native/peercred.h). @internal */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  /** SO_PEERGROUPS: the primary gid first, then the supplementary groups, each once (at most NGROUPS_MAX). */
  groups: number[];
}

/** SO_PEERCRED and SO_PEERGROUPS (native/peercred.h). @internal */
export type PeerCredBinding = Both<'peerCredentials', [fd: number], PeerCredentials>;

/** The whole addon. @internal */
export type NativeBinding = LuoBinding &
  FdPassBinding &
  MemfdBinding &
  KexecBinding &
  PeerCredBinding & {
    /** The system header the ABI was compared with at build time, or "" if none. */
    readonly abiCheckedAgainst: string;
    /** The digest of the sources it was built from (scripts/addon-digest.mjs); a build from before it has none. */
    readonly sourceDigest?: string;
    /**
     * Registers the factory the addon asks for each system error it makes
     * (errorFromNative): it answers `[constructor, ...arguments]`, which
     * the addon constructs, or undefined, and the addon makes the system
     * error itself; and the state a sync call armed by callNative reports
     * its failure in. Optional: a build from before it has none.
     */
    setErrorFactory?(
      factory: ((errno: number, code: string, text: string, syscall: string) => readonly unknown[] | undefined) | undefined,
      callState?: Int32Array,
      syscalls?: string[],
    ): void;
  };

/** How to get the addon, for users whose install skipped its build. */
const ADDON_FIX =
  'approve the package\'s install script (npm approve-scripts liveupdate, or "allowScripts": { "liveupdate": true } in package.json) and reinstall, ' +
  'or build it now: npm rebuild liveupdate (needs python3, make and g++)';

/**
 * The digest of the addon's sources the JavaScript was built beside
 * (scripts/addon-digest.mjs), which the build writes into dist/native.js.
 * Empty in the TypeScript sources the tests run, where no check is made: the
 * repository builds the addon and dist/ from one tree (npm run compile).
 */
const BUILT_SOURCE_DIGEST: string = '';

let binding: NativeBinding | undefined;

/**
 * Loads the addon (a prebuild when one matches, else the source build; or
 * the build `LIVEUPDATE_ADDON` names: npm run test:asan points it at the
 * sanitizer build) on first use, so that `require('liveupdate')` itself never fails and status()
 * can still diagnose the kernel without it. Failing, it throws an
 * AddonLoadError that says how to get the addon, with the loader's error as
 * its cause; every later call tries again (the user may have rebuilt). An
 * addon built from other sources than the JavaScript (a stale prebuild that
 * was packed) is refused the same way, before a call can miss a function.
 * @internal
 */
export function loadNative(): NativeBinding {
  if (binding !== undefined) return binding;
  const root = path.join(__dirname, '..');
  let found: LoadedAddon;
  try {
    const chosen = process.env['LIVEUPDATE_ADDON'];
    found = chosen !== undefined ? { file: chosen, addon: require(chosen) as unknown } : (sourceBuild(root) ?? findAddon(root));
  } catch (cause) {
    const why = `the native addon of liveupdate is not built for this platform (node ${process.version}, ${process.platform}-${process.arch}) or does not load`;
    throw packageError('ERR_LIVEUPDATE_ADDON_NOT_LOADED', why, { operation: 'load', path: root, fix: ADDON_FIX, cause });
  }
  // The refusal's words load only for a refusal (the blackout loads this module); never from
  // the TypeScript sources, whose digest is empty.
  const loaded = found.addon as NativeBinding;
  if (BUILT_SOURCE_DIGEST !== '' && loaded.sourceDigest !== BUILT_SOURCE_DIGEST) {
    throw (require('./stale-addon.js') as typeof import('./stale-addon.js')).staleAddonError(found.file, loaded.sourceDigest, BUILT_SOURCE_DIGEST);
  }
  // A build older than the factory makes every error itself, as before.
  if (typeof loaded.setErrorFactory === 'function') loaded.setErrorFactory(errorFromNative, nativeCallState, nativeSyscalls);
  binding = loaded;
  return binding;
}

/** An addon loaded, and the file it was loaded from. */
interface LoadedAddon {
  readonly file: string;
  readonly addon: unknown;
}

/**
 * The source build (build/Release/liveupdate.node), loaded directly where
 * node-gyp-build would pick it too: it looks in build/Release first, unless
 * its two variables ask for a prebuild. Undefined where there is none. This
 * spares the blackout node-gyp-build's module, its read of package.json and
 * its directory listings, which cost tens of milliseconds in a fresh guest
 * under emulation.
 */
function sourceBuild(root: string): LoadedAddon | undefined {
  if (process.env['PREBUILDS_ONLY'] || process.env['LIVEUPDATE_PREBUILD']) return undefined;
  const file = path.join(root, 'build', 'Release', 'liveupdate.node');
  try {
    return { file, addon: require(file) as unknown };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw error;
  }
}

/** node-gyp-build's search (prebuilds/, build/Debug), loaded only when there is no source build. */
function findAddon(root: string): LoadedAddon {
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  const file = nodeGypBuild.path(root);
  return { file, addon: require(file) as unknown };
}

/** The addon, loaded on first use (see {@link loadNative}). @internal */
export const native: NativeBinding = new Proxy({} as NativeBinding, {
  get: (_target, key) => Reflect.get(loadNative(), key) as unknown,
  has: (_target, key) => Reflect.has(loadNative(), key),
  ownKeys: () => Reflect.ownKeys(loadNative()),
  getOwnPropertyDescriptor: (_target, key) => {
    const descriptor = Reflect.getOwnPropertyDescriptor(loadNative(), key);
    // The target is an empty object: a proxy may only report configurable properties it lacks.
    return descriptor === undefined ? undefined : { ...descriptor, configurable: true };
  },
});

/** Closes an fd this package owns; a failure is a typed error for `operation` (`close` by default). @internal */
export function closeFd(fd: number, operation: Operation = 'close'): void {
  callNative({ operation, fd }, native.close, fd);
}
