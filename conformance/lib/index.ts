/**
 * liveupdate-conformance: the real-kernel test bed of the liveupdate package.
 * Build a guest image from the installed packages, boot it under QEMU with a
 * LUO kernel, kexec through the stages of the scenarios, and collect every
 * case's results. The `liveupdate-conformance` command runs the shipped
 * suite with it; a project writes its own scenarios with
 * {@link defineScenario} and runs them with {@link runVm}. Scenarios and
 * tests start the agent with {@link AgentProcess} (or
 * {@link startAgentInProcess}) and run the `liveupdate` command with
 * {@link runCli}.
 */
export { runVm, qemuBinary, type RunOptions, type VmRun, type StageResult, type CaseResult } from './vm/qemu.js';
export { debianKernel, findKernels, kernelRelease, kernelInputsHash, NO_KERNEL_HELP, type DebianKernel, type KernelImage } from './vm/kernels.js';
export { buildGuestImage, cacheDir, packageRoot, type GuestImage, type GuestImageOptions } from './vm/initramfs.js';
export { findSystemdImage, systemdImageHash, NO_SYSTEMD_IMAGE_HELP, type SystemdImage } from './vm/systemd-image.js';
export { defineCase, defineScenario, type Case, type Scenario, type StageContext, type StageFunction, type NextStage } from './vm/scenario.js';
export { expectError, memfdWith, sha256At } from './conformance/support.js';
export {
  clearFaults,
  handlerCalls,
  hasTestHandler,
  LUO_TEST_DEVICE,
  openTestFile,
  phases,
  setFault,
  testFileId,
  type FaultOp,
  type TestFile,
} from './conformance/luo-test.js';
export { buildGuestTool, guestToolPath, guestTools, type GuestTool } from './vm/static-program.js';
export { buildUpstreamSelftests, selftestsDir, UPSTREAM_DEVICE_TESTS, UPSTREAM_KEXEC_TESTS, upstreamPath } from './vm/upstream-selftests.js';
export { CpioWriter, fdSink, type CpioSink } from './vm/cpio.js';
export type { JsonValue, ErrorInfo, CheckRecord, GuestRecord } from './vm/protocol.js';
export {
  AgentLog,
  AgentProcess,
  startAgentInProcess,
  DEFAULT_READY_TIMEOUT_MS,
  type AgentProcessOptions,
  type EventMatch,
  type InProcessAgent,
  type InProcessAgentOptions,
} from './harness/agent.js';
export { runCli, cliModule, type CliResult } from './harness/cli.js';
export {
  addUsers,
  AGENT_DEFAULTS,
  AGENT_EXECUTABLE,
  AGENT_UNIT,
  agentPackageFiles,
  installAgent,
  startUnit,
  systemctl,
  unitJsonLines,
  unitLog,
  unitProperty,
} from './harness/systemd.js';
export { libraryBinding, type LibraryBinding } from './native.js';
export { runProcess, DEFAULT_PROCESS_TIMEOUT_MS, type ProcessResult, type RunProcessOptions } from './harness/process.js';
