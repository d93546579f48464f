/**
 * `npm run bench -- --agent-only`: the agent path's boots and its host cases
 * without the rest, for measuring a change to the agent in a few boots.
 */
import { describe, expect, it } from 'vitest';
import { parseArgs } from '../lib/bench/run.js';

describe('--agent-only', () => {
  it('asks for the agent path alone, with its boots, kernel and quick mode', () => {
    expect(parseArgs(['--agent-only', '--boots', '2', '--kernel', '7.3', '--quick'])).toMatchObject({ agentOnly: true, hostOnly: false, groupsOnly: false, boots: 2, kernel: '7.3', quick: true });
    expect(parseArgs([]).agentOnly).toBe(false);
  });

  it('takes nothing that runs something else: --host-only, --groups-only, a group', () => {
    for (const other of [['--host-only'], ['--groups-only', '--systemd'], ['--systemd'], ['--fleet', '2'], ['--all']]) {
      expect(() => parseArgs(['--agent-only', ...other])).toThrow(/--agent-only runs the agent path alone/);
    }
  });
});
