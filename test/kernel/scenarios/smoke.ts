/**
 * The smallest scenario: two stages that only report where they run. Proves
 * the test bed itself (boot, records, kexec through the package's API,
 * power-off) before any LUO behaviour is asserted.
 */
import * as fs from 'node:fs';
import { defineCase, defineScenario } from 'liveupdate-conformance';

export default defineScenario('smoke', [
  defineCase('stages', [
    (ctx) => {
      ctx.check('has /dev/liveupdate', fs.existsSync('/dev/liveupdate'));
      return { stage: ctx.stage, release: ctx.release, cmdline: fs.readFileSync('/proc/cmdline', 'utf8').trim() };
    },
    (ctx) => {
      ctx.check('has /dev/liveupdate', fs.existsSync('/dev/liveupdate'));
      return { stage: ctx.stage, release: ctx.release, previous: ctx.previous ?? null };
    },
  ]),
]);
