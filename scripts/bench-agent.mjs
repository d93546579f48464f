#!/usr/bin/env node
// Requests per second the agent serves from many concurrent clients, on this
// host (no LUO needed): each client connects (hello), then repeats
// ready + sessions. Creating and preserving sessions needs a LUO kernel: on
// one, pass --create to add createSession + preserve of a 4 KiB memfd + release
// to each round. Usage: node scripts/bench-agent.mjs [--clients N] [--rounds N] [--create]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const lu = require('../dist/index.js');
const { values } = parseArgs({ options: { clients: { type: 'string', default: '100' }, rounds: { type: 'string', default: '50' }, create: { type: 'boolean' } } });
const clients = Number(values.clients);
const rounds = Number(values.rounds);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lu-bench-agent-'));
const socket = path.join(dir, 'agent.sock');
const agent = await lu.Agent.start({ socket, ...(values.create ? {} : { devicePath: path.join(dir, 'no-device') }) });

async function one(i) {
  const client = await lu.AgentClient.connect({ socket });
  let requests = 1;
  for (let r = 0; r < rounds; r++) {
    if (values.create) {
      const session = await client.createSession(`bench-${i}-${r}`);
      const fd = await lu.memfd.create('bench');
      fs.ftruncateSync(fd, 4096);
      await session.preserve(fd, 1);
      await client.release(`bench-${i}-${r}`);
      await session.close();
      fs.closeSync(fd);
      requests += 2;
    }
    await client.ready();
    await client.sessions();
    requests += 2;
  }
  await client.close();
  return requests;
}

const started = performance.now();
const counts = await Promise.all(Array.from({ length: clients }, (_, i) => one(i)));
const ms = performance.now() - started;
const requests = counts.reduce((a, b) => a + b, 0);
await agent.stop();
fs.rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({ clients, rounds, create: values.create === true, requests, ms: Math.round(ms), requestsPerSecond: Math.round((requests / ms) * 1000) }));
