/**
 * Setup of the test projects that run lib/ as source: the modules the package
 * loads on first use with `require` (lib/lazy.ts), which finds no TypeScript
 * here, are imported ahead and handed over. Importing status.ts also gives an
 * open that fails its diagnosis (lib/device.ts).
 */
import * as client from '../../lib/agent/client.js';
import * as server from '../../lib/agent/server.js';
import * as systemdHost from '../../lib/agent/systemd-host.js';
import * as update from '../../lib/agent/update.js';
import * as diagnosis from '../../lib/diagnosis.js';
import * as kexec from '../../lib/kexec.js';
import { provideModule } from '../../lib/lazy.js';
import * as simulatorCalls from '../../lib/simulator/calls.js';
import * as status from '../../lib/status.js';

for (const [name, module] of Object.entries({ 'agent/client': client, 'agent/server': server, 'agent/systemd-host': systemdHost, 'agent/update': update, diagnosis, kexec, 'simulator/calls': simulatorCalls, status })) {
  provideModule(name, module);
}
