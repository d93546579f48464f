import * as fs from 'node:fs';

/** The fds open in this process now. */
export function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').sort();
}

/** Runs `fn` and asserts that it leaves the same set of fds open. */
export async function expectNoFdLeak(fn: () => unknown): Promise<void> {
  const before = openFds();
  await fn();
  const after = openFds();
  if (after.join(',') !== before.join(',')) {
    throw new Error(`fd leak: before [${before.join(',')}], after [${after.join(',')}]`);
  }
}
