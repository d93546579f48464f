/** What status()'s diagnosis looks at, made up: the tests of each reason start from a kernel where all is well. */
import type { Facts } from '../../lib/diagnosis.js';

/** Facts of a kernel where all is well (built with every LUO option, booted with LUO on); `change` is what a case needs. */
export function facts(change: Partial<Facts> = {}): Facts {
  const options = new Map(['CONFIG_LIVEUPDATE', 'CONFIG_KEXEC_HANDOVER', 'CONFIG_KEXEC_FILE', 'CONFIG_LIVEUPDATE_MEMFD'].map((o) => [o, 'y']));
  return {
    release: '7.2.13',
    cmdline: 'console=ttyS0 liveupdate=on kho=on',
    config: { source: '/proc/config.gz', options },
    kernelLog: '',
    devicePath: '/dev/liveupdate',
    deviceExists: true,
    luoDevice: { major: 10, minor: 123 },
    miscListReadable: true,
    pathDevice: { major: 10, minor: 123 },
    accessible: true,
    owners: [],
    pid: 4242,
    ...change,
  };
}

/** What changes when the device is missing. */
export const MISSING_DEVICE: Partial<Facts> = { deviceExists: false, pathDevice: null, accessible: false, luoDevice: null };
