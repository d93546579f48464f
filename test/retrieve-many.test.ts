/**
 * Session.retrieveMany / retrieveManySync on this host, which has no LUO:
 * bad input refused before any syscall with Node's argument errors, and the
 * whole path (all or nothing, the failed token named, no fd left behind)
 * through the simulated kernel (lib/simulator), which answers the addon's
 * batch as its single retrieves. On a real kernel: test/kernel/api.test.ts.
 */
import * as fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memfd, SessionStateError, TokenNotFoundError, type Session } from 'liveupdate';
import { SimulatedDevice } from 'liveupdate/simulator';
import { SimulatedLuo } from '../dist/simulator/kernel.js';
import { contentOf, openFds } from './helpers/fds.js';

/** A sealable memfd holding `text` (the simulator freezes a preserved file's size). */
function memfdOf(text: string): number {
  const fd = memfd.createSync('ram', { allowSealing: true });
  fs.writeSync(fd, Buffer.from(text), 0, Buffer.byteLength(text), 0);
  return fd;
}

const TEXTS = ['zero', 'one', 'two', 'three'];
/** The tokens the files of TEXTS are preserved under: the u64 range's ends among them. */
const TOKENS = [0n, 7n, 2n ** 63n, 2n ** 64n - 1n];

let luo: SimulatedLuo;
let device: SimulatedDevice;
let incoming: Session;
let before: string[];

beforeEach(() => {
  before = openFds();
  luo = new SimulatedLuo();
  const first = new SimulatedDevice(luo);
  const outgoing = first.createSessionSync('many');
  for (const [i, text] of TEXTS.entries()) {
    const fd = memfdOf(text);
    outgoing.preserveSync(fd, TOKENS[i]!);
    fs.closeSync(fd);
  }
  luo.kexec();
  outgoing.closeSync();
  device = new SimulatedDevice(luo);
  incoming = device.retrieveSessionSync('many');
});

afterEach(() => {
  if (incoming.state !== 'closed') incoming.closeSync();
  device.closeSync();
  luo.close();
  expect(openFds()).toEqual(before);
});

describe('Session.retrieveMany', () => {
  it('gives an fd per token, in the order asked, in both forms; the same tokens again give new fds to the same files', async () => {
    const fds = incoming.retrieveManySync(TOKENS);
    expect(fds.map(contentOf)).toEqual(TEXTS);
    const again = await incoming.retrieveMany([TOKENS[3]!, 7, TOKENS[0]!]);
    expect(again.map(contentOf)).toEqual(['three', 'one', 'zero']);
    expect(new Set([...fds, ...again]).size).toBe(fds.length + again.length);
    [...fds, ...again].forEach((fd) => fs.closeSync(fd));
    expect(incoming.retrieveManySync([])).toEqual([]);
  });

  it('is all or nothing: a token not there fails the batch, names that token, and leaves no fd open', async () => {
    const open = openFds();
    const sync = (): unknown => incoming.retrieveManySync([TOKENS[0]!, TOKENS[1]!, 99n, TOKENS[2]!]);
    expect(sync).toThrow(expect.objectContaining({ constructor: TokenNotFoundError, code: 'ENOENT', syscall: 'ioctl', token: 99n, sessionName: 'many', operation: 'retrieve' }));
    expect(openFds()).toEqual(open);
    await expect(incoming.retrieveMany([TOKENS[0]!, 5n])).rejects.toMatchObject({ constructor: TokenNotFoundError, token: 5n });
    expect(openFds()).toEqual(open);
    // Nothing was lost: every file is retrieved after the failures.
    const fds = incoming.retrieveManySync(TOKENS);
    expect(fds.map(contentOf)).toEqual(TEXTS);
    fds.forEach((fd) => fs.closeSync(fd));
  });

  it('refuses bad input before any syscall with the argument errors of a single retrieve, naming the element', async () => {
    const open = openFds();
    const cases: [unknown, object][] = [
      [undefined, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('"tokens"') }],
      [new BigUint64Array([1n]), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
      [[1n, -1n], { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('"tokens[1]"') }],
      [[1n, 2n ** 64n], { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }],
      [[0.5], { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('"tokens[0]"') }],
      [['1'], { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('"tokens[0]"') }],
      [[1n, , 2n], { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('"tokens[1]"') }],
    ];
    for (const [tokens, shape] of cases) {
      expect(() => incoming.retrieveManySync(tokens as bigint[])).toThrow(expect.objectContaining(shape));
      await expect(incoming.retrieveMany(tokens as bigint[])).rejects.toMatchObject(shape);
    }
    expect(openFds()).toEqual(open);
  });

  it('refuses a closed or finished session with SessionStateError, as a single retrieve', async () => {
    incoming.finishSync();
    expect(() => incoming.retrieveManySync([TOKENS[0]!])).toThrow(SessionStateError);
    incoming.closeSync();
    await expect(incoming.retrieveMany([TOKENS[0]!])).rejects.toBeInstanceOf(SessionStateError);
  });
});
