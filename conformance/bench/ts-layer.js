#!/usr/bin/env node
// The TypeScript layer's own cost per Session.preserveSync/retrieveSync, on
// the host (no LUO needed): the addon's calls are stubbed out, so what is
// timed is validation, the state check and error-context handling alone.
// Usage, after `npm run compile`: node bench/ts-layer.js [the library's dist directory]
'use strict';
const path = require('node:path');
const dist = path.resolve(process.argv[2] ?? path.join(path.dirname(require.resolve('liveupdate/package.json')), 'dist'));
const { native } = require(`${dist}/native.js`);
const { Session } = require(`${dist}/session.js`);
native.preserveFd = () => 0;
native.retrieveFd = () => 3;
const out = new Session(100, 'x', 'outgoing');
const inc = new Session(101, 'y', 'incoming');
const N = 1_000_000;
const tokens = Array.from({ length: 1000 }, (_, i) => BigInt(i + 1));
function run(label, f) {
  const res = [];
  for (let r = 0; r < 7; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < N; i++) f(i);
    res.push(Number(process.hrtime.bigint() - t) / N);
  }
  res.sort((a, b) => a - b);
  console.log(label, 'ns/call median', res[3].toFixed(1));
}
// Cold: the first 1000 calls in a fresh process (interpreter / baseline tiers).
let t = process.hrtime.bigint();
for (let i = 0; i < 1000; i++) out.preserveSync(5, tokens[i]);
console.log('preserveSync first 1000 calls: ns/call', (Number(process.hrtime.bigint() - t) / 1000).toFixed(0));
run('preserveSync', (i) => out.preserveSync(5, tokens[i % 1000]));
run('retrieveSync', (i) => inc.retrieveSync(tokens[i % 1000]));
