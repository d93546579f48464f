/** A file with the one field of a bzImage header the conformance command reads (enough to pass its kernel check, nothing to boot). */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Writes a fake bzImage of release `release` in `dir`; returns its path. */
export function fakeBzImage(dir: string, release = '7.9.9 (fake) #1'): string {
  const fake = path.join(dir, 'fake-bzImage');
  const header = Buffer.alloc(0x600);
  header.write('HdrS', 0x202, 'latin1');
  header.writeUInt16LE(0x200, 0x20e);
  header.write(release, 0x400, 'latin1');
  fs.writeFileSync(fake, header);
  return fake;
}
