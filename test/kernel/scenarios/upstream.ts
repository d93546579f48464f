/**
 * Linux's own LUO selftests, run in the guest beside our cases (built by
 * conformance/lib/vm/upstream-selftests.ts from the kernel's source tree): the device
 * tests in stage 1, each kexec test's stage 1 (`-s 1`) before the kexec and its
 * stage 2 after. Each upstream test becomes a check named after it.
 */
import { spawnSync } from 'node:child_process';
import { defineCase, defineScenario, UPSTREAM_DEVICE_TESTS, UPSTREAM_KEXEC_TESTS, upstreamPath, type StageContext } from 'liveupdate-conformance';

/** One line of the kselftest harness's TAP output: "ok 3 fixture.test", "not ok 4 fixture.test". */
const TAP_RESULT = /^(ok|not ok) \d+ (\S+)(.*)$/;

function run(program: string, args: readonly string[]): { status: number | null; output: string } {
  const result = spawnSync(upstreamPath(program), args, { encoding: 'utf8', timeout: 300_000 });
  if (result.error !== undefined) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** The tail of a program's output, for a failed check's detail. */
const tail = (output: string): string => output.split('\n').slice(-15).join('\n');

function deviceTests(ctx: StageContext): void {
  const { status, output } = run(UPSTREAM_DEVICE_TESTS, []);
  for (const line of output.split('\n')) {
    const match = TAP_RESULT.exec(line.trim());
    if (match === null) continue;
    const [, verdict, name = '', rest = ''] = match;
    ctx.check(name, verdict === 'ok' && !/# SKIP/.test(rest), line.trim());
  }
  ctx.check('exit status 0', status === 0, tail(output));
}

function kexecStage(program: string, stage: 1 | 2) {
  return (ctx: StageContext): void => {
    // -s: 7.2 also takes --stage, 7.3 only -s.
    const { status, output } = run(program, ['-s', String(stage)]);
    ctx.check(`stage ${stage}`, status === 0, tail(output));
  };
}

export default defineScenario('upstream', [
  defineCase(UPSTREAM_DEVICE_TESTS, [deviceTests]),
  ...UPSTREAM_KEXEC_TESTS.map((program) => defineCase(program, [kexecStage(program, 1), kexecStage(program, 2)])),
]);
