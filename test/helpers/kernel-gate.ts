/**
 * The one switch for the kernel tests: LIVEUPDATE_SKIP_KERNEL_TESTS=1 skips
 * them for a quick local loop. CI never sets it; without it, a missing kernel
 * or tool fails the tests loudly.
 */
export function kernelTestsSkipped(): boolean {
  return process.env.LIVEUPDATE_SKIP_KERNEL_TESTS === '1';
}
