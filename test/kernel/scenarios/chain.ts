/**
 * Two live updates in a row (three kernels): a memfd preserved in the first
 * kernel is retrieved in the second, preserved again there, and retrieved in
 * the third with the bytes the second kernel added.
 */
import * as fs from 'node:fs';
import { LiveUpdate, memfd } from 'liveupdate';
import { defineCase, defineScenario, type StageContext } from 'liveupdate-conformance';
import { fillRandom, sha256At } from './support.js';

const SIZE = 1024 * 1024;
const TOKEN = 7n;
const sessionOf = (stage: number): string => `lu-test-chain-${stage}`;

/** What each stage hands to the next. */
type Carried = {
  readonly sha256: string;
  readonly release: string;
};

function first(ctx: StageContext): Carried {
  const luo = LiveUpdate.openSync();
  const session = luo.createSessionSync(sessionOf(1));
  const fd = memfd.createSync('lu-test-chain');
  fs.ftruncateSync(fd, SIZE);
  const sha256 = fillRandom(fd, SIZE);
  session.preserveSync(fd, TOKEN);
  luo.closeSync();
  ctx.keep(session, fd);
  return { sha256, release: ctx.release };
}

/** Retrieves the previous stage's memfd, checks it, and (if a stage follows) preserves it again. */
function later(ctx: StageContext): Carried {
  const before = ctx.previous as unknown as Carried;
  const luo = LiveUpdate.openSync();
  const incoming = luo.retrieveSessionSync(sessionOf(ctx.stage - 1));
  const fd = incoming.retrieveSync(TOKEN);
  ctx.equal('size', fs.fstatSync(fd).size, SIZE);
  ctx.equal('sha256', sha256At(fd, 0, SIZE), before.sha256);
  incoming.finishSync();
  incoming.closeSync();
  // This kernel leaves its mark, so the next one sees a file this one wrote.
  fs.writeSync(fd, `stage ${ctx.stage} on ${ctx.release}`, 0);
  const sha256 = sha256At(fd, 0, SIZE);
  if (ctx.stage < ctx.stages) {
    const outgoing = luo.createSessionSync(sessionOf(ctx.stage));
    outgoing.preserveSync(fd, TOKEN);
    ctx.keep(outgoing, fd);
  } else {
    fs.closeSync(fd);
  }
  luo.closeSync();
  return { sha256, release: ctx.release };
}

export default defineScenario('chain', [defineCase('memfd-through-two-updates', [first, later, later])]);
