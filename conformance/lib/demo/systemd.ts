/**
 * `npm run demo -- --host systemd`: the demo's run on the systemd guest
 * image (Debian sid, systemd 262 as PID 1) instead of the test bed's own
 * init: the agent and the two VMM-like clients run as units, the update goes
 * through `systemctl kexec` (./systemd-scenario.ts).
 */
import * as path from 'node:path';
import { agentPackageFiles } from '../harness/systemd.js';
import { libraryRoot } from '../vm/initramfs.js';
import type { RunOptions } from '../vm/qemu.js';
import { findSystemdImage, NO_SYSTEMD_IMAGE_HELP } from '../vm/systemd-image.js';
import { VMS } from './scenario.js';

/** Where the demo runs: the test bed's own init in an initramfs, or systemd as PID 1. */
export const HOSTS = ['initramfs', 'systemd'] as const;
/** One of {@link HOSTS}. */
export type DemoHost = (typeof HOSTS)[number];

/** Checks a `--host` value: the host, or what is wrong with it. */
export function parseHost(value: string | undefined): DemoHost | string {
  const host = value ?? 'initramfs';
  return (HOSTS as readonly string[]).includes(host) ? (host as DemoHost) : `--host takes ${HOSTS.join(' or ')}, got ${host}`;
}

/**
 * The run options that boot the systemd image with the demo's systemd
 * scenario, or the one line saying how to build the image. Guest RAM: the
 * systemd tests' 3 GiB (systemd, journald and node, held around a kexec)
 * plus both VMs.
 */
export function systemdHostRun(mib: number): Pick<RunOptions, 'scenarios' | 'systemdImage' | 'files' | 'memory'> | string {
  const image = findSystemdImage();
  if (image === undefined) return NO_SYSTEMD_IMAGE_HELP;
  return { scenarios: [path.join(__dirname, 'systemd-scenario.js')], systemdImage: image.path, files: agentPackageFiles(libraryRoot()), memory: `${3072 + VMS.length * mib}M` };
}

/** The boot's first progress line for this host. */
export function hostLine(host: DemoHost): string {
  return host === 'systemd' ? `the systemd guest image (${findSystemdImage()?.versions ?? '?'}), systemd as PID 1` : 'the test bed\'s initramfs';
}
