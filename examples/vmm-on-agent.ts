/**
 * A VMM on the agent: its guest memory is a memfd the agent's session
 * carries across a kexec. First start: create the memory, preserve it,
 * tell the agent it is ready. After the kexec: claim it back, check it,
 * finish. Run it as `node vmm-on-agent.js [VM-NAME]`; the agent's socket is
 * $LIVEUPDATE_AGENT_SOCKET, else the agent's default.
 * With the agent's default policy (`onClientExit: "keep"`) the session
 * outlives this process: a real VMM keeps running from the memfd meanwhile.
 *
 * Exit status: 0 done, 69 no agent answers (nothing to hold the memory), 1
 * any other failure.
 */
import * as fs from 'node:fs';
import { AGENT_SOCKET, AgentClient, AgentUnavailableError, memfd, SessionExistsError, SessionNotFoundError } from 'liveupdate';

const EX_UNAVAILABLE = 69;
const vm = process.argv[2] ?? 'vm-example';
const GUEST_BYTES = 16 << 20;
const RAM_TOKEN = 1n;
const SIGNATURE = `guest memory of ${vm}`;

/** First start: a memfd as guest memory, preserved in a session the agent creates and keeps. */
async function firstStart(agent: AgentClient): Promise<void> {
  let session;
  try {
    session = await agent.createSession(vm, { metadata: { bytes: GUEST_BYTES } });
  } catch (error) {
    if (!(error instanceof SessionExistsError)) throw error;
    // Restarted before the kexec: the agent still holds the memory an earlier run preserved.
    await (await agent.attach(vm)).session.close();
    await agent.ready();
    console.log(`${vm}: already preserved by an earlier run, ready for the kexec`);
    return;
  }
  const ram = await memfd.create(`${vm}-ram`);
  fs.ftruncateSync(ram, GUEST_BYTES); // size it first: LUO freezes the size once preserved
  fs.writeSync(ram, SIGNATURE, 0);
  await session.preserve(ram, RAM_TOKEN);
  // ... run the guest from `ram`; when the host announces an update, quiesce it, then:
  await agent.ready();
  console.log(`${vm}: guest memory preserved, ready for the kexec`);
}

/** After the kexec: the same memory, byte for byte. */
async function afterKexec(agent: AgentClient): Promise<boolean> {
  let claimed;
  try {
    claimed = await agent.retrieveSession(vm);
  } catch (error) {
    if (error instanceof SessionNotFoundError) return false; // no kexec happened: a first start
    throw error;
  }
  const ram = await claimed.session.retrieve(RAM_TOKEN);
  const head = Buffer.alloc(SIGNATURE.length);
  fs.readSync(ram, head, 0, head.length, 0);
  console.log(`${vm}: guest memory back (${fs.fstatSync(ram).size} bytes, metadata ${JSON.stringify(claimed.metadata)}): "${head.toString()}"`);
  await claimed.session.finish();
  await claimed.session.close();
  await agent.release(vm);
  return true;
}

try {
  await using agent = await AgentClient.connect({ socket: process.env['LIVEUPDATE_AGENT_SOCKET'] ?? AGENT_SOCKET });
  if (!(await afterKexec(agent))) await firstStart(agent);
} catch (error) {
  if (!(error instanceof AgentUnavailableError)) throw error;
  console.error(`${error.name} (${error.code}): ${error.message}`);
  process.exitCode = EX_UNAVAILABLE;
}
