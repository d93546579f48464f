/**
 * The real-kernel test bed: build a guest image from the installed package,
 * boot it under QEMU with a LUO kernel, kexec through the stages of the
 * scenarios, and collect every case's results. Used by the project's kernel
 * tests and by `liveupdate-conformance`.
 */
export { runVm, qemuBinary, type RunOptions, type VmRun, type StageResult, type CaseResult } from './qemu.js';
export { findKernels, kernelRelease, kernelInputsHash, NO_KERNEL_HELP, type KernelImage } from './kernels.js';
export { buildGuestImage, cacheDir, packageRoot, type GuestImage, type GuestImageOptions } from './initramfs.js';
export { defineCase, defineScenario, type Case, type Scenario, type StageContext, type StageFunction } from './scenario.js';
export { CpioWriter, fdSink, type CpioSink } from './cpio.js';
export type { JsonValue, ErrorInfo, CheckRecord, GuestRecord } from './protocol.js';

import * as path from 'node:path';

/** Host path of one of the scenarios shipped in the package (dist/vm/scenarios/<name>.js). */
export function shippedScenario(name: string): string {
  return path.join(__dirname, 'scenarios', `${name}.js`);
}
