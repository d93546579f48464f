// The node side of the benchmark's blackout: what an agent does first in a
// new kernel, started by pid 1 (bench/luo_bench.c) the way an init starts a
// service. Prints the instant of each step (CLOCK_MONOTONIC ns, the clock of
// process.hrtime), the same fields as `luo_bench blackout-agent`:
//   start_ns     node's own start (performance's time origin)
//   script_ns    this file's first line: node is running
//   required_ns  require('liveupdate') done
//   opened_ns    the device open
//   session_ns   the session retrieved
//   done_ns      its N files retrieved
// and the process's major page faults (pages read from the disk) so far at
// script_ns, required_ns and done_ns: script_faults, required_faults, done_faults.
// Usage (guest): node blackout-agent.js SESSION N
'use strict';
const scriptNs = process.hrtime.bigint();
const scriptFaults = process.resourceUsage().majorPageFault;
const startNs = scriptNs - BigInt(Math.round(performance.now() * 1e6));
const { LiveUpdate } = require('liveupdate');
const requiredNs = process.hrtime.bigint();
const requiredFaults = process.resourceUsage().majorPageFault;
const fs = require('node:fs');

const [name, count] = process.argv.slice(2);
const n = Number(count);
const luo = LiveUpdate.openSync();
const openedNs = process.hrtime.bigint();
const session = luo.retrieveSessionSync(name);
const sessionNs = process.hrtime.bigint();
// Tokens 1..N in one batch, as a VMM restoring its files does: the same N
// RETRIEVE_FD ioctls as the C agent's loop, from one call into the addon.
const fds = session.retrieveManySync(Array.from({ length: n }, (_, i) => BigInt(i + 1)));
const doneNs = process.hrtime.bigint();
const doneFaults = process.resourceUsage().majorPageFault;
session.finishSync();
session.closeSync();
luo.closeSync();
for (const fd of fds) fs.closeSync(fd);
const out = {
  start_ns: startNs,
  script_ns: scriptNs,
  required_ns: requiredNs,
  opened_ns: openedNs,
  session_ns: sessionNs,
  done_ns: doneNs,
  retrieved: fds.length,
  script_faults: scriptFaults,
  required_faults: requiredFaults,
  done_faults: doneFaults,
};
process.stdout.write(`${JSON.stringify(out, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}\n`);
