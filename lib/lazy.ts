/**
 * Modules loaded on first use. A module the package needs only for some
 * calls (the update, the systemd host, kexec, the client, the status) is
 * `require`d by the function that first needs it (the simulator's session
 * calls too, for a session fd the kernel does not know), so the agent's start and a
 * bare `require('liveupdate')` compile none of it: under emulation, compiling
 * JavaScript is most of a fresh node's time in the blackout.
 *
 * A loader that runs lib/ as ES module source (the host tests, through Vite)
 * has no `require` that finds TypeScript: it imports those modules ahead and
 * hands them over with {@link provideModule}; the package itself never does.
 * @internal
 */

/** Modules handed over ahead, by their path under lib/ without extension (`agent/update`). */
const provided = new Map<string, unknown>();

/** Hands over a module loaded ahead (see the top of this file). @internal */
export function provideModule(name: string, module: unknown): void {
  provided.set(name, module);
}

/** The module `name` (its path under lib/), loaded by `load` on first use unless it was handed over. @internal */
export function onFirstUse<T>(name: string, load: () => T): T {
  return (provided.get(name) as T | undefined) ?? load();
}
