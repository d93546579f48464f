/**
 * Two live updates in a row (three kernels): a file retrieved in the second
 * kernel and preserved again arrives in the third; a session the second
 * kernel never retrieved, or retrieved but never finished, does not.
 * @internal
 */
import * as fs from 'node:fs';
import { FileAlreadyPreservedError, memfd, SessionNotFoundError } from 'liveupdate';
import type { JsonValue } from '../../vm/protocol.js';
import { defineScenario, type StageContext } from '../../vm/scenario.js';
import { carried, conformanceCase, contentOf, expectError, memfdWith, PREFIX, withDevice } from '../support.js';

const SIZE = 4096;
const TOKEN = 9n;
const chainName = (stage: number): string => `${PREFIX}chain-${stage}`;
/** Where each kernel writes its mark in the file. */
const markAt = (stage: number): number => (stage - 1) * 100;
const mark = (stage: number, release: string): string => `stage ${stage} on ${release}`;

async function chainFirst(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.createSessionSync(chainName(1));
    const fd = memfd.createSync('conf-chain');
    fs.ftruncateSync(fd, SIZE);
    fs.writeSync(fd, mark(1, ctx.release), markAt(1));
    session.preserveSync(fd, TOKEN);
    ctx.keep(session, fd);
    return { marks: [mark(1, ctx.release)] };
  });
}

/**
 * Stage 2 re-preserves what it retrieved. The kernel keeps a retrieved file
 * registered as preserved until its incoming session is finished, so
 * preserving it earlier is refused (EBUSY), and after finish it succeeds.
 */
async function chainSecond(ctx: StageContext): Promise<JsonValue> {
  const marks = checkMarks(ctx, 2);
  return withDevice(async (luo) => {
    const incoming = luo.retrieveSessionSync(chainName(1));
    const fd = incoming.retrieveSync(TOKEN);
    const outgoing = luo.createSessionSync(chainName(2));
    await expectError(ctx, 'preserve before the incoming session is finished', () => outgoing.preserveSync(fd, TOKEN), FileAlreadyPreservedError, 'EBUSY');
    incoming.finishSync();
    incoming.closeSync();
    fs.writeSync(fd, mark(2, ctx.release), markAt(2));
    outgoing.preserveSync(fd, TOKEN);
    ctx.keep(outgoing, fd);
    return { marks: [...marks, mark(2, ctx.release)] };
  });
}

async function chainThird(ctx: StageContext): Promise<JsonValue> {
  const marks = checkMarks(ctx, 3);
  return withDevice(async (luo) => {
    const session = luo.retrieveSessionSync(chainName(2));
    const fd = session.retrieveSync(TOKEN);
    const text = contentOf(fd);
    ctx.equal('marks of both earlier kernels', [1, 2].map((s) => text.slice(markAt(s), markAt(s) + (marks[s - 1]?.length ?? 0))), marks);
    ctx.equal('size', fs.fstatSync(fd).size, SIZE);
    await expectError(ctx, 'the first kernel\'s session, finished in the second', () => luo.retrieveSessionSync(chainName(1)), SessionNotFoundError, 'ENOENT');
    session.finishSync();
    session.closeSync();
    fs.closeSync(fd);
    return { marks };
  });
}

/** The marks carried so far (the file's content is checked where it is retrieved). */
function checkMarks(ctx: StageContext, stage: number): string[] {
  const marks = carried(ctx)['marks'];
  if (!Array.isArray(marks) || marks.length !== stage - 1) throw new Error(`stage ${stage}: expected ${stage - 1} marks, got ${JSON.stringify(marks)}`);
  return marks.map(String);
}

const UNTOUCHED = `${PREFIX}drop-untouched`;
const UNFINISHED = `${PREFIX}drop-unfinished`;

async function dropFirst(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    for (const name of [UNTOUCHED, UNFINISHED]) {
      const session = luo.createSessionSync(name);
      const fd = memfdWith(`conf-${name}`, name);
      session.preserveSync(fd, 1n);
      ctx.keep(session, fd);
    }
    return null;
  });
}

/** Leaves one session alone, and retrieves the other but neither finishes nor closes it. */
async function dropSecond(ctx: StageContext): Promise<JsonValue> {
  return withDevice((luo) => {
    const session = luo.retrieveSessionSync(UNFINISHED);
    const fd = session.retrieveSync(1n);
    ctx.equal('content', contentOf(fd), UNFINISHED);
    ctx.keep(session, fd);
    return null;
  });
}

async function dropThird(ctx: StageContext): Promise<JsonValue> {
  return withDevice(async (luo) => {
    await expectError(ctx, 'a session the second kernel never retrieved', () => luo.retrieveSessionSync(UNTOUCHED), SessionNotFoundError, 'ENOENT');
    await expectError(ctx, 'a session the second kernel retrieved but never finished', () => luo.retrieveSessionSync(UNFINISHED), SessionNotFoundError, 'ENOENT');
    return null;
  });
}

/** @internal */
export default defineScenario('chain', [
  conformanceCase('two-live-updates', ['memfd'], [chainFirst, chainSecond, chainThird]),
  conformanceCase('unretrieved-session-dropped', ['memfd'], [dropFirst, dropSecond, dropThird]),
]);
