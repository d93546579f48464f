/**
 * The host benchmark's errors case in a process of its own: host.ts starts
 * this file in several fresh node processes (ERROR_PROCESSES), each given
 * the case's parameters as JSON, and reads the rounds each prints.
 * @internal
 */
import { errorRoundsHere, type HostParams } from './host.js';

async function main(): Promise<void> {
  const params = JSON.parse(process.argv[2] ?? '') as HostParams;
  process.stdout.write(JSON.stringify(await errorRoundsHere(params)));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  });
}
