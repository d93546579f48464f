import * as fs from 'node:fs';

/**
 * Whether this process may start a child as `uid`: root, with `uid` mapped in
 * its user namespace. Not so inside the single-uid user namespace of
 * `npm run test:newest-node`, where such a spawn fails with EINVAL; npm test
 * (root on the host) runs the tests that need it.
 */
export function canRunAs(uid: number): boolean {
  if (process.getuid?.() !== 0) return false;
  return fs
    .readFileSync('/proc/self/uid_map', 'utf8')
    .trim()
    .split('\n')
    .some((line) => {
      const [inner, , count] = line.trim().split(/\s+/).map(Number);
      return inner !== undefined && count !== undefined && uid >= inner && uid < inner + count;
    });
}
