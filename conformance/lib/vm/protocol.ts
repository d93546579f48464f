/**
 * What the host and the guest agree on: where things live in the guest image,
 * the manifest the host writes into it, and the records the guest sends back
 * over its result channel (one `@@LU {json}` line each).
 */

/** A JSON value: what stage functions return and records carry. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Everything the test bed adds to the guest lives under here. */
export const GUEST_ROOT = '/lu';
/**
 * The initrd this kernel booted with, kept by the kernel (`retain_initrd`,
 * Linux 6.10+): the guest hands these bytes, plus a new state archive, to
 * the next kernel.
 */
export const RETAINED_INITRD = '/sys/firmware/initrd';
/** Per-case values carried from one stage to the next (in the last state archive). */
export const GUEST_STATE = '/lu/state.json';
/** The host's description of the run (in archive A). */
export const GUEST_MANIFEST = '/lu/manifest.json';
/**
 * The test bed's package as built, where `require('liveupdate-conformance')`
 * finds it from /lu; its dependencies, liveupdate among them, are beside it.
 */
export const GUEST_PACKAGE = '/lu/node_modules/liveupdate-conformance';
/**
 * The result channel: the second serial port, so records never interleave
 * with kernel messages on the console (ttyS0).
 */
export const GUEST_RESULTS_TTY = '/dev/ttyS1';
/** Every result line starts with this. */
export const RECORD_PREFIX = '@@LU ';
/** The kernel parameter that tells the guest which stage it is (1-based). */
export const STAGE_PARAM = 'lu.stage';

/** The host's description of a run, at {@link GUEST_MANIFEST}. */
export interface Manifest {
  /** Guest paths of the scenario modules, in run order. */
  readonly scenarios: readonly string[];
  /** Guest path of the kernel image of each stage (index 0 = stage 1); the last one repeats. */
  readonly kernels: readonly string[];
  /** The RLIMIT_NOFILE the guest sets before running cases. */
  readonly nofile: number;
  /**
   * Kernel parameters of one stage only (index 0 = stage 1), beside those of
   * every stage: what the guest adds when it kexecs into that stage.
   */
  readonly stageParams: readonly string[];
}

/** Per-case values carried across a kexec, at {@link GUEST_STATE}. */
export interface CarriedState {
  /** case name → what its previous stage returned. */
  readonly values: Record<string, JsonValue>;
  /** case name → why it stopped (it failed in an earlier stage). */
  readonly stopped: Record<string, string>;
}

/** An error as it crosses the serial line. */
export interface ErrorInfo {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  readonly stack?: string;
}

/** One named check a case made. */
export interface CheckRecord {
  readonly t: 'check';
  readonly stage: number;
  readonly case: string;
  readonly name: string;
  readonly ok: boolean;
  readonly detail?: JsonValue;
}

/** A guest → host record. */
export type GuestRecord =
  | {
      readonly t: 'boot';
      readonly stage: number;
      readonly stages: number;
      readonly release: string;
      readonly uptimeMs: number;
      readonly cases: readonly string[];
      /** How many stages each of `cases` has. */
      readonly caseStages: readonly number[];
    }
  | { readonly t: 'case-start'; readonly stage: number; readonly case: string }
  | CheckRecord
  | { readonly t: 'report'; readonly stage: number; readonly case: string; readonly name: string; readonly value: JsonValue }
  | {
      readonly t: 'case';
      readonly stage: number;
      readonly case: string;
      readonly ok: boolean;
      readonly ms: number;
      readonly value?: JsonValue;
      readonly error?: ErrorInfo;
      readonly skipped?: string;
    }
  | {
      readonly t: 'kexec';
      readonly stage: number;
      readonly next: number;
      readonly kernel: string;
      readonly initrdBytes: number;
      /** Time to write the next initrd. */
      readonly writeMs: number;
      /** Time to write it and load it with kexec_file_load. */
      readonly ms: number;
    }
  | { readonly t: 'fatal'; readonly stage: number; readonly error: ErrorInfo }
  | { readonly t: 'end'; readonly stage: number; readonly ok: boolean };

/** Turns anything thrown into an {@link ErrorInfo}. */
export function errorInfo(error: unknown): ErrorInfo {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return {
      name: error.name,
      message: error.message,
      ...(typeof code === 'string' ? { code } : {}),
      ...(error.stack === undefined ? {} : { stack: error.stack }),
    };
  }
  return { name: 'NonError', message: String(error) };
}

/** One record as a console line (newline included). */
export function formatRecord(record: GuestRecord): string {
  return `${RECORD_PREFIX}${JSON.stringify(record)}\n`;
}

/**
 * The record in a line, or undefined when the line is not one. Tolerates the
 * carriage returns a tty adds and noise before the prefix.
 */
export function parseRecord(line: string): GuestRecord | undefined {
  const at = line.indexOf(RECORD_PREFIX);
  if (at < 0) return undefined;
  const json = line.slice(at + RECORD_PREFIX.length).trim();
  try {
    const value: unknown = JSON.parse(json);
    if (value !== null && typeof value === 'object' && typeof (value as { t?: unknown }).t === 'string') {
      return value as GuestRecord;
    }
  } catch {
    // A damaged line: the caller reports the run as broken if a record is missing.
  }
  return undefined;
}
