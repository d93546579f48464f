/**
 * What booting a LUO kernel needs on the host, and the one line that says
 * how to get what is missing: the demo and the kernel tests print these.
 */
import { spawnSync } from 'node:child_process';
import { mke2fsPath, MKE2FS_HELP } from './initramfs.js';
import { findKernels, kernelsCanMountSystemDisk, NO_KERNEL_HELP } from './kernels.js';
import { qemuBinary } from './qemu.js';

/** One line: QEMU is missing, and how to install it. */
export function qemuHelp(qemu = qemuBinary()): string {
  return `${qemu} not found: install QEMU (\`apt-get install qemu-system-x86\`), or run \`bash .ci/run\`, which installs everything`;
}

/** Whether the QEMU binary in use starts. */
export function hasQemu(qemu = qemuBinary()): boolean {
  return spawnSync(qemu, ['--version'], { stdio: 'ignore' }).error === undefined;
}

/** One line per missing prerequisite of the kernel tests (QEMU, a kernel, mke2fs for a system disk); empty when all are there. */
export function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (!hasQemu()) missing.push(qemuHelp());
  const kernels = findKernels();
  if (kernels.length === 0) missing.push(NO_KERNEL_HELP);
  const needsDisk = kernels.length > 0 && kernelsCanMountSystemDisk(kernels.map((k) => k.path));
  if (needsDisk && mke2fsPath() === undefined) missing.push(MKE2FS_HELP);
  return missing;
}
