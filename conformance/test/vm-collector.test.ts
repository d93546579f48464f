/**
 * The host's reading of a guest's two streams (its console, its records):
 * lines are cut where the guest wrote them, whatever the reads' sizes.
 */
import { describe, expect, it } from 'vitest';
import { Collector } from '../lib/vm/qemu.js';
import { RECORD_PREFIX } from '../lib/vm/protocol.js';

const NAME = 'the late client’s session arrives'; // ’ is three bytes in UTF-8
const record = { t: 'check', stage: 1, case: 'agent/late', name: NAME, ok: true };
const line = Buffer.from(`${RECORD_PREFIX}${JSON.stringify(record)}\n`);
/** Inside the three bytes of ’: a read that ends there leaves a character half read. */
const mid = line.indexOf(Buffer.from('’')) + 1;

describe('the collector of a guest run', () => {
  it('keeps a record whole when a read ends inside one of its characters', () => {
    const collector = new Collector(() => undefined, {});
    collector.resultData(line.subarray(0, mid));
    collector.resultData(line.subarray(mid));
    expect(collector.records).toEqual([record]);
  });

  it('keeps the console text and its records whole the same way', () => {
    const seen: string[] = [];
    const collector = new Collector(() => undefined, { onConsoleLine: (text) => seen.push(text) });
    for (let at = 0; at < line.length; at++) collector.consoleData(line.subarray(at, at + 1)); // one byte a read
    expect(collector.console).toBe(line.toString('utf8'));
    expect(seen).toEqual([line.toString('utf8').trimEnd()]);
    expect(collector.records).toEqual([record]);
  });
});
