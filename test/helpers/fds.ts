import * as fs from 'node:fs';
import { native } from '../../lib/native.js';

/** The fds open in this process now. */
export function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').sort();
}

/**
 * Runs `fn` and asserts that it leaves no fd open that was not open before.
 * An fd that closed meanwhile is no leak: a handle of an earlier test (a
 * child's pipe, a socket) may close on its own while `fn` runs.
 */
export async function expectNoFdLeak(fn: () => unknown): Promise<void> {
  const before = openFds();
  await fn();
  const after = openFds();
  const opened = after.filter((fd) => !before.includes(fd));
  if (opened.length > 0) {
    throw new Error(`fd leak: [${opened.join(',')}] left open (before [${before.join(',')}], after [${after.join(',')}])`);
  }
}

/** Closes each of `fds`. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) fs.closeSync(fd);
}

/** A new close-on-exec memfd holding `text`. */
export function memfdWith(text: string): number {
  const fd = native.memfdCreate('test', 1 /* MFD_CLOEXEC */);
  fs.writeSync(fd, text, 0);
  return fd;
}

/** The whole content of the file of `fd`, read through a new open of it (the fd's offset stays). */
export function contentOf(fd: number): string {
  return fs.readFileSync(`/proc/self/fd/${fd}`, 'utf8');
}
