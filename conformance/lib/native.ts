/**
 * The addons the test bed calls, typed once here. Its own (native/guest.h):
 * the syscalls a test guest's /init needs and Node lacks, which the library
 * does not ship. And the library's, reached directly by the benchmark (which
 * measures the N-API layer without the TypeScript one above it) and by
 * tests that need a socket the API has no reason to offer (a service
 * manager's notify socket).
 */
import * as path from 'node:path';
import nodeGypBuild from 'node-gyp-build';
import { libraryRoot } from './vm/initramfs.js';

/** A call in its synchronous and Promise forms, as the addons export them. @internal */
type Both<Name extends string, Args extends unknown[], Result> = {
  [K in Name]: (...args: Args) => Result;
} & {
  [K in `${Name}Async`]: (...args: Args) => Promise<Result>;
};

/** mount, power-off and the fd limit. @internal */
export type GuestBinding = Both<
  'mount',
  [source: string, target: string, fstype: string, flags: number, data: string | null],
  number
> &
  Both<'powerOff', [], number> &
  Both<'setrlimitNofile', [soft: number, hard: number], number>;

/** The calls of the library's addon that the benchmark and the tests make directly, past its API. */
export interface LibraryBinding {
  /** LIVEUPDATE_SESSION_PRESERVE_FD: `sessionFd`'s session keeps `fd` under `token`. */
  preserveFd(sessionFd: number, fd: number, token: bigint): number;
  /** LIVEUPDATE_SESSION_RETRIEVE_FD: the fd preserved under `token`, a new fd. */
  retrieveFd(sessionFd: number, token: bigint): number;
  /** {@link LibraryBinding.retrieveFd} on the thread pool. */
  retrieveFdAsync(sessionFd: number, token: bigint): Promise<number>;
  /** A Unix socket of `type` bound to `address` (a leading `@`: the abstract namespace), listening unless datagram; a new fd. */
  unixBind(type: number, address: string): number;
  /** The socket types, as this system numbers them. */
  readonly SOCK_DGRAM: number;
  readonly SOCK_SEQPACKET: number;
}

/** The test bed's addon: a prebuild when one matches, else the source build. @internal */
export const guest = nodeGypBuild(path.join(__dirname, '..')) as GuestBinding;

/** The installed liveupdate package's addon (the same one `require('liveupdate')` loaded). */
export function libraryBinding(): LibraryBinding {
  return nodeGypBuild(libraryRoot()) as LibraryBinding;
}
