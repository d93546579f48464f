/**
 * Where the agent's connections come from: the listening socket (created,
 * or given by socket activation) and the accept loop. Everything about a
 * connection after accept is the agent's; this module only hands over fds.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, type Cancellable } from '../native.js';
import { closeQuietly } from './fdstore.js';
import { DEFAULT_SOCKET } from './protocol.js';

/** Options of {@link openListener}. */
export interface ListenOptions {
  /** The socket path to create (default `/run/liveupdate/agent.sock`); ignored with `listenFd`. */
  socket?: string | undefined;
  /** A listening SOCK_SEQPACKET Unix socket to serve instead (socket activation). */
  listenFd?: number | undefined;
  /** Told when an accept fails (the loop goes on). */
  onError(error: Error): void;
}

/** A listening socket and its accept loop. */
export interface Listener {
  /** The socket path created, or null for a socket given. */
  readonly socketPath: string | null;
  /** Stops accepting, closes the socket and removes the path it created. */
  close(): void;
}

/** Listens, and calls `onConnection` with each accepted fd (which it then owns). */
export function openListener(options: ListenOptions, onConnection: (fd: number) => void): Listener {
  let fd: number;
  let socketPath: string | null = null;
  if (options.listenFd !== undefined) {
    if (native.socketType(options.listenFd) !== native.SOCK_SEQPACKET) throw new TypeError('the listening socket must be SOCK_SEQPACKET');
    fd = options.listenFd;
  } else {
    socketPath = options.socket ?? DEFAULT_SOCKET;
    fs.mkdirSync(path.dirname(socketPath), { recursive: true });
    removeStaleSocket(socketPath);
    fd = native.unixBind(native.SOCK_SEQPACKET, socketPath);
    // Anyone may connect; the policy decides who is served.
    fs.chmodSync(socketPath, 0o666);
  }
  let closed = false;
  let accepting: Cancellable<boolean> | null = null;
  const loop = async (): Promise<void> => {
    while (!closed) {
      try {
        accepting = native.waitReadableAsync(fd);
        await accepting;
        if (closed) return;
        onConnection(native.unixAccept(fd));
      } catch (error) {
        if (closed) return;
        options.onError(error as Error);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  };
  void loop();
  return {
    socketPath,
    close(): void {
      if (closed) return;
      closed = true;
      accepting?.cancel();
      closeQuietly(fd);
      if (socketPath !== null) fs.rmSync(socketPath, { force: true });
    },
  };
}

/** A socket file left by an agent that died: removed when nobody answers on it. */
function removeStaleSocket(socketPath: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
  try {
    closeQuietly(native.unixConnect(native.SOCK_SEQPACKET, socketPath));
  } catch {
    fs.rmSync(socketPath, { force: true });
    return;
  }
  throw new Error(`another agent is listening on ${socketPath}`);
}
