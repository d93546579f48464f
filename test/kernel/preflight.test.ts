/**
 * The kernel preflight on the newest test kernel, in one boot without a
 * kexec: the agent's dry run into the other test kernel is accepted (with
 * the cross-release warning), an update into Debian's own kernel of the
 * same series, built without LUO (fetched with `vm/build-kernel.sh
 * --debian-image`), is refused at the checks with nothing loaded, and the
 * running kernel's handover format and KHO scratch come from the kernel.
 * The releases expected are read on the host by the test bed's own header
 * reader, not by the code under test.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, it } from 'vitest';
import { debianKernel, findKernels } from '../../conformance/lib/vm/kernels.js';
import type { VmRun } from '../../conformance/lib/vm/qemu.js';
import { EXPECTED, OTHER_KERNEL } from './scenarios/preflight.js';
import { boot, describeOneKernel, itEveryCheckPasses, newest, scenario } from './support.js';

describeOneKernel(
  'kernel preflight',
  (running) => {
    let run: VmRun;
    let dir: string;
    let startedAt: number;

    beforeAll(async () => {
      startedAt = Date.now();
      const other = findKernels().find((k) => k.path !== running.path) ?? running;
      // Debian's own kernel of the same series, downloaded once (about 15 MB) and cached beside the test kernels.
      const debian = debianKernel(running.release.split('.').slice(0, 2).join('.'));
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'liveupdate-preflight-'));
      const expected = path.join(dir, 'expected.json');
      fs.writeFileSync(expected, JSON.stringify({ running: running.release, other: other.release, debian: debian.release }));
      run = await boot({
        name: `preflight-${running.release}`,
        kernels: [running.path],
        scenarios: [scenario('preflight')],
        files: {
          [EXPECTED]: expected,
          [OTHER_KERNEL]: other.path,
          [path.join(path.dirname(OTHER_KERNEL), 'config')]: path.join(path.dirname(other.path), 'config'),
          ...debian.guestFiles,
        },
        timeoutMs: 300_000,
      });
    }, 420_000);

    afterAll(() => {
      if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
    });

    itEveryCheckPasses(() => run, {
      'preflight/running-kernel': {
        1: [
          'the release is uname -r',
          'the format is what the kernel wrote at the start of its outgoing LUO state',
          'which is the format 7.2 and later write (luo-v5, from the 7.2.13 and 7.3.4 sources)',
          'the scratch reservation is what debugfs lists, area by area',
          'and it is not empty',
        ],
      },
      'preflight/other-kernel-accepted': {
        1: [
          'the dry run passes (exit 0)',
          'every check passed, the kernel preflight among them',
          'both releases and formats',
          'LUO found in the config beside the image',
          'verdict: a warning exactly when the releases differ',
          "the next command line's scratch size is read",
          "the running kernel's KHO scratch is in the report",
        ],
      },
      'preflight/kernel-without-luo-refused': {
        1: [
          'nothing is loaded before',
          'a real update (not a dry run) is refused: exit 1',
          'at the checks, kernel-luo the one that failed',
          'the refusal is KernelWithoutLiveUpdateError, naming the release and CONFIG_LIVEUPDATE',
          'its config is the one Debian installs beside the image',
          'nothing was loaded (/sys/kernel/kexec_loaded)',
          'the agent still serves',
          'kernel.preflightSync throws KernelWithoutLiveUpdateError',
          'with both releases and the options off',
          'the agent stops cleanly',
        ],
      },
    });

    it('reports what the kernel exposes and what the preflight cost', () => {
      const reports = { ...run.result('preflight/running-kernel', 1)?.reports, ...run.result('preflight/other-kernel-accepted', 1)?.reports };
      process.stderr.write(`preflight: ${JSON.stringify(reports)}; the test took ${((Date.now() - startedAt) / 1000).toFixed(1)} s\n`);
    });
  },
  newest,
);
