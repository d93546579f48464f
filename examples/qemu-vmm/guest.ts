/**
 * What the orchestrator knows of its guest, the counter guest
 * (conformance/vm/counter-guest.S in the liveupdate repository): where its
 * state block lies in guest-physical RAM (= the offset in the RAM memfd),
 * and which RAM it never touches. A real VMM would ask its guest agent; a
 * bare-metal guest is simpler to read from outside.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';

/** Guest-physical address (RAM memfd offset) of the guest's state block. */
export const STATE_BLOCK = 0x300000;
/** "LUVM", the state block's first word once the guest has started. */
const STATE_MAGIC = 0x4d56554c;
/** Below this the guest's image, stack, state block and QEMU's boot data live. */
const UNTOUCHED_START = 4 << 20;
/** The smallest RAM the guest runs in with an untouched region. */
export const MIN_RAM_BYTES = 16 << 20;
const CHUNK = 1 << 20;

/** The guest's state block. */
export interface GuestCounters {
  /** The state block carries the guest's magic: it has started at least once. */
  started: boolean;
  /** The counter (the guest keeps it in a CPU register and stores it here on every step). */
  count: number;
  /** How many times the guest started from its entry point: 1 for a guest resumed any number of times. */
  boots: number;
}

/** Reads the guest's state block from its RAM. */
export function readCounters(ram: number): GuestCounters {
  const block = Buffer.alloc(12);
  fs.readSync(ram, block, 0, block.length, STATE_BLOCK);
  return { started: block.readUInt32LE(0) === STATE_MAGIC, count: block.readUInt32LE(4), boots: block.readUInt32LE(8) };
}

/**
 * The part of RAM neither the guest nor the firmware touches: [4 MiB, half
 * the RAM). Above half, QEMU's boot firmware writes (seen near 48 MiB of 64).
 */
export function untouchedRegion(ramBytes: number): { offset: number; length: number } {
  return { offset: UNTOUCHED_START, length: ramBytes / 2 - UNTOUCHED_START };
}

/**
 * The 64 bytes the orchestrator writes over and over into the untouched
 * region before the first start: its VM's name, padded. (64 divides the
 * region's size, so the fill is the same however it is cut.)
 */
export function untouchedPattern(vm: string): Buffer {
  return Buffer.from(`untouched RAM of ${vm} `.padEnd(64, '.').slice(0, 64), 'latin1');
}

/** Fills the untouched region with {@link untouchedPattern} (before QEMU first starts). */
export function fillUntouched(ram: number, ramBytes: number, vm: string): void {
  const { offset, length } = untouchedRegion(ramBytes);
  const chunk = Buffer.alloc(CHUNK, untouchedPattern(vm));
  for (let done = 0; done < length; done += CHUNK) fs.writeSync(ram, chunk, 0, Math.min(CHUNK, length - done), offset + done);
}

/** SHA-256 of the untouched region as it is now. */
export function digestUntouched(ram: number, ramBytes: number): string {
  const { offset, length } = untouchedRegion(ramBytes);
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(CHUNK);
  for (let done = 0; done < length; done += CHUNK) {
    const n = fs.readSync(ram, chunk, 0, Math.min(CHUNK, length - done), offset + done);
    hash.update(chunk.subarray(0, n));
  }
  return hash.digest('hex');
}
