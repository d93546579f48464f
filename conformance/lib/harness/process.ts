/**
 * A child process run to its end with a bound on how long it may take: the
 * one way the tests, the demo and the benchmark run a command and look at
 * its exit status and output. The event loop stays free meanwhile (an agent
 * serving in this very process keeps answering).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { statFields } from './proc-stat.js';

/** How a process ended and what it printed. */
export interface ProcessResult {
  /** The exit status; null when a signal ended it. */
  readonly status: number | null;
  /** The signal that ended it, or null. */
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of {@link runProcess}. */
export interface RunProcessOptions {
  /** How long it may run before it is killed (SIGKILL, with every process it started) and the call fails (default 60000 ms). */
  readonly timeoutMs?: number;
  /** Added to this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Run as this user and group (this process must be root). */
  readonly uid?: number;
  readonly gid?: number;
  /** How error messages name the command (default: its command line). */
  readonly label?: string;
}

/** The default bound on a child's run. */
export const DEFAULT_PROCESS_TIMEOUT_MS = 60_000;

/**
 * Runs `command ARGS` to its end; resolves to its status, signal, stdout and
 * stderr. Rejects when it cannot be started, or when it is still running
 * after `timeoutMs` (it is killed first, with its descendants: an `npm run`
 * killed alone leaves the node and QEMU under it running and holding the
 * output pipes, so the call would end only when they do; the error carries
 * what it printed).
 */
export function runProcess(command: string, args: readonly string[], options: RunProcessOptions = {}): Promise<ProcessResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROCESS_TIMEOUT_MS;
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.uid === undefined ? {} : { uid: options.uid }),
    ...(options.gid === undefined ? {} : { gid: options.gid }),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killWithDescendants(child.pid);
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    // 'close', not 'exit': the output pipes are drained by then.
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(`${options.label ?? describeCommand(command, args)} still ran after ${timeoutMs} ms and was killed\nstdout: ${stdout}\nstderr: ${stderr}`));
      else resolve({ status, signal, stdout, stderr });
    });
  });
}

/** A command line as a message shows it. */
export function describeCommand(command: string, args: readonly string[]): string {
  return [command, ...args].map((word) => (/^[\w./=:@-]+$/.test(word) ? word : JSON.stringify(word))).join(' ');
}

/** The pids of every living descendant of `pid`, read from /proc (children before their own children). */
export function descendantsOf(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const ppid = Number(statFields(stat)[1]);
    const siblings = parents.get(ppid) ?? [];
    siblings.push(Number(entry));
    parents.set(ppid, siblings);
  }
  const found: number[] = [];
  for (let queue = [pid]; queue.length > 0; ) {
    const children = queue.flatMap((p) => parents.get(p) ?? []);
    found.push(...children);
    queue = children;
  }
  return found;
}

/**
 * SIGKILLs `pid` and its descendants, gathered first (a parent killed first
 * would hand its children to init, out of reach of the walk). Where some
 * already ended, nothing is thrown.
 */
function killWithDescendants(pid: number | undefined): void {
  if (pid === undefined) return;
  for (const p of [pid, ...descendantsOf(pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // ended meanwhile
    }
  }
}
