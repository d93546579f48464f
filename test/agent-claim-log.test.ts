/**
 * The time on the agent's log lines, written for a burst of clients from a
 * text kept per second: it must read exactly as Date's toISOString, at every
 * millisecond of a second, across seconds, days and years, and when the
 * clock goes back.
 */
import { describe, expect, it } from 'vitest';
import { isoTime } from '../lib/agent/server.js';

describe("the agent's log time", () => {
  it('reads as toISOString at every millisecond of a second and at the edges of seconds, days and years', () => {
    const base = Date.UTC(2026, 11, 5, 16, 20, 59);
    for (let ms = 0; ms < 2000; ms++) expect(isoTime(base + ms)).toBe(new Date(base + ms).toISOString());
    for (const t of [0, 999, 1000, Date.UTC(2026, 11, 31, 23, 59, 59, 999), Date.UTC(2027, 0, 1), Date.UTC(2024, 1, 29, 12, 0, 0, 7)]) {
      expect(isoTime(t)).toBe(new Date(t).toISOString());
    }
  });

  it('follows the clock back and forth (a second seen before is formatted again, not taken from the last one)', () => {
    const later = Date.UTC(2026, 11, 5, 16, 21, 3, 450);
    const earlier = Date.UTC(2026, 11, 5, 16, 20, 1, 5);
    for (const t of [later, earlier, later + 1, earlier + 999, earlier + 1000]) expect(isoTime(t)).toBe(new Date(t).toISOString());
  });
});
