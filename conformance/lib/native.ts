/**
 * The addons the test bed calls. Its own (native/guest.h): the syscalls a
 * test guest's /init needs and Node lacks, which the library does not ship.
 * And the library's, reached directly only by the benchmark, which measures
 * the N-API layer without the TypeScript one above it.
 * @internal
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

/** The one call of the library's addon the benchmark makes directly. @internal */
export interface LibraryBinding {
  preserveFd(sessionFd: number, fd: number, token: bigint): number;
}

/** The test bed's addon: a prebuild when one matches, else the source build. @internal */
export const guest = nodeGypBuild(path.join(__dirname, '..')) as GuestBinding;

/** The installed liveupdate package's addon (the same one `require('liveupdate')` loaded). @internal */
export function libraryBinding(): LibraryBinding {
  return nodeGypBuild(libraryRoot()) as LibraryBinding;
}
