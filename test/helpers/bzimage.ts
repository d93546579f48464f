import * as fs from 'node:fs';

/**
 * Writes a file with an x86-64 bzImage setup header and no kernel behind it:
 * what the kernel preflight reads (release, boot protocol), for tests of the
 * update's plumbing on a host without kernel images. kexec_file_load refuses
 * it; tests of the preflight itself read the real images.
 */
export function writeHeaderOnlyImage(file: string, release = '7.3.4'): string {
  const image = Buffer.alloc(2048);
  image[0x1f1] = 1; // setup_sects: the setup code ends at 1024
  image.writeUInt32LE((image.length - 1024) / 16, 0x1f4); // syssize: the rest of the file
  image.writeUInt16LE(0xaa55, 0x1fe);
  image.write('HdrS', 0x202, 'latin1');
  image.writeUInt16LE(0x020f, 0x206); // boot protocol 2.15
  image.writeUInt16LE(0x100, 0x20e); // the version string at 0x300
  image[0x211] = 0x01; // LOADED_HIGH
  image.writeUInt16LE(0x03, 0x236); // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
  image.write(`${release} (test@header-only) #1\0`, 0x300, 'latin1');
  fs.writeFileSync(file, image);
  return file;
}
