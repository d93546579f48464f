/**
 * status() and LiveUpdate.open() on each LUO kernel, booted with
 * liveupdate=on (all well; a device held by another process or this one is
 * diagnosed by pid and command; open() accepts only the liveupdate device)
 * and with liveupdate=off (not-enabled, with its fix, and open() says the
 * same). Every check the guest made is asserted by name.
 */
import { beforeAll, expect, it } from 'vitest';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { boot, describeKernels, scenario } from './support.js';

const ON: Record<string, string[]> = {
  'status/available': [
    'available',
    'no diagnosis, reason or fix',
    'the release has LUO',
    'liveupdate=',
    'nobody holds the device',
    'kexec_file_load is available',
    'kexecLoaded agrees with kexec.isLoaded()',
    'the addon loaded',
    "bootId is this boot's",
  ],
  'status/open-checks-the-device': [
    '/proc/misc and sysfs agree on the minor',
    '/dev/null is refused at open',
    'the message names the real device',
    'the Promise form refuses too',
    'no fd leaked by the refusals',
    'the real device is accepted',
    'and works',
  ],
  'status/held-by-another-process': [
    'diagnosis',
    'not available',
    'the owner, by pid and command',
    'the reason names it',
    'with a fix',
    'open: DeviceBusyError',
    'naming the same owner',
    'and the same fix',
    'free again once it exited',
  ],
  'status/held-by-this-process': ['diagnosis', 'the reason says this process', 'the fix says to use it'],
};

const OFF: Record<string, string[]> = {
  'status-off/unavailable': [
    'not available',
    'no device',
    'diagnosis',
    'the reason',
    'the fix',
    'the release has LUO',
    'kexec is still there',
    'kexecLoaded agrees with kexec.isLoaded()',
    'open: LiveUpdateUnavailableError',
    'with the same reason and fix',
    'both in its message',
    'a probe changes nothing in the diagnosis',
  ],
};

function expectChecks(run: () => VmRun, expected: Record<string, string[]>): void {
  for (const [name, checks] of Object.entries(expected)) {
    it(`${name}: every check passes`, () => {
      const result = run().result(name, 1);
      expect(result, `no result for ${name}\n${run().report()}`).toBeDefined();
      expect(result?.error, run().report()).toBeUndefined();
      expect(result?.checks.filter((c) => !c.ok) ?? [], run().report()).toEqual([]);
      expect(result?.checks.map((c) => c.name)).toEqual(checks);
    });
  }
}

describeKernels('status() with liveupdate=on', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({ name: `status-on-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('status')], timeoutMs: 300_000 });
  });

  it('boots and finishes', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  expectChecks(() => run, ON);
});

describeKernels('status() without liveupdate=on', (kernel) => {
  let run: VmRun;

  beforeAll(async () => {
    run = await boot({ name: `status-off-${kernel.release}`, kernels: [kernel.path], scenarios: [scenario('status-off')], cmdline: 'liveupdate=off', timeoutMs: 300_000 });
  });

  it('boots and finishes', () => {
    expect(run.ok, run.report()).toBe(true);
  });

  it('the reason names this kernel and the value given', () => {
    const reported = run.result('status-off/unavailable', 1)?.reports?.['status'] as { reason?: string; kernelRelease?: string } | undefined;
    expect(reported?.reason).toBe(
      `kernel ${kernel.release} was booted with liveupdate=off, which is not on (its config is not readable: no /proc/config.gz or /boot/config-${kernel.release}, so it may also lack CONFIG_LIVEUPDATE)`,
    );
  });

  expectChecks(() => run, OFF);
});
