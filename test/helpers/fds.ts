import * as fs from 'node:fs';

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
