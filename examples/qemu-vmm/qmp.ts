/**
 * A small QMP client (QEMU Machine Protocol) over a Unix stream socket:
 * the greeting, `qmp_capabilities`, commands with ids (fds passed with
 * `getfd` go in the same sendmsg as the command, through liveupdate's
 * `sendFds`), and events. QMP is one JSON object per line; a peer is never
 * trusted with sizes: a line longer than `maxLineBytes` ends the connection.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { sendFds } from 'liveupdate';
import { QmpClosedError, QmpCommandError, QmpProtocolError, QmpTimeoutError, VmmError } from './errors.js';

/** The longest line accepted from QEMU by default (its largest answers, `query-qmp-schema`, are a few hundred KiB). */
export const DEFAULT_MAX_LINE_BYTES = 1 << 20;
/** How long a command may take by default. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/** What QEMU says first. */
export interface QmpGreeting {
  /** QEMU's version, e.g. `{ qemu: { major: 7, minor: 2, micro: 22 }, package: '...' }`. */
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  /** The optional capabilities QEMU offers (`oob`). */
  capabilities: string[];
}

/** An asynchronous event from QEMU (`STOP`, `RESUME`, `MIGRATION`, ...). */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** Options of {@link QmpClient.connect}. */
export interface QmpConnectOptions {
  /** How long the greeting and `qmp_capabilities` may take (ms). Default 30 s. */
  timeoutMs?: number;
  /** The longest line accepted from the peer (bytes). */
  maxLineBytes?: number;
}

/** Options of {@link QmpClient.execute}. */
export interface ExecuteOptions {
  /** Fds sent with the command (SCM_RIGHTS), for `getfd` and `add-fd`. */
  fds?: readonly number[];
  /** How long QEMU may take to answer (ms). */
  timeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

type Message = Record<string, unknown>;

const isObject = (value: unknown): value is Message => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * One QMP connection. Events are emitted as `'event'` ({@link QmpEvent});
 * `'closed'` is emitted once, with the error that ended the connection.
 */
export class QmpClient extends EventEmitter {
  readonly #socket: net.Socket;
  readonly #maxLineBytes: number;
  readonly #pending = new Map<number, Pending>();
  #partial: Buffer = Buffer.alloc(0);
  #nextId = 1;
  #ended: VmmError | undefined;
  /** Writes in order, each finished before the next: `sendFds` needs Node's write queue empty. */
  #writes: Promise<void> = Promise.resolve();
  #onGreeting: ((message: Message) => void) | undefined;
  /** What QEMU said when the connection opened. */
  greeting: QmpGreeting | undefined;

  private constructor(socket: net.Socket, maxLineBytes: number) {
    super();
    this.#socket = socket;
    this.#maxLineBytes = maxLineBytes;
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    socket.on('error', (error) => this.#end(new QmpClosedError(error.message, { cause: error })));
    socket.on('close', () => this.#end(new QmpClosedError('the peer closed the socket')));
  }

  /**
   * Connects to QEMU's QMP socket, reads the greeting and leaves
   * capabilities negotiation, so that commands can follow.
   * @throws {@link QmpClosedError} (nothing listens, or it closed), {@link QmpProtocolError}, {@link QmpTimeoutError}.
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const socket = net.createConnection(path);
    const client = new QmpClient(socket, options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    try {
      const greeting = await client.#withTimeout('the greeting', timeoutMs, new Promise<Message>((resolve) => (client.#onGreeting = resolve)));
      const qmp = greeting['QMP'];
      if (!isObject(qmp) || !isObject(qmp['version']) || !Array.isArray(qmp['capabilities'])) throw new QmpProtocolError('the first message is not a QMP greeting');
      client.greeting = qmp as unknown as QmpGreeting;
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
      return client;
    } catch (error) {
      client.#end(error instanceof VmmError ? error : new QmpClosedError(String(error)));
      throw error;
    }
  }

  /** Whether the connection is still open. */
  get open(): boolean {
    return this.#ended === undefined;
  }

  /**
   * Runs a command and resolves to its `return` value.
   * @throws {@link QmpCommandError} when QEMU refuses it, {@link QmpClosedError}, {@link QmpTimeoutError}, {@link QmpProtocolError}.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: ExecuteOptions = {}): Promise<T> {
    if (this.#ended !== undefined) return Promise.reject(this.#ended);
    const id = this.#nextId++;
    const bytes = Buffer.from(`${JSON.stringify({ execute: command, ...(args === undefined ? {} : { arguments: args }), id })}\r\n`);
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const answer = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The id stays known, so that a late answer is not taken for a protocol error.
        const pending = this.#pending.get(id);
        if (pending !== undefined) pending.reject = pending.resolve = () => {};
        reject(new QmpTimeoutError(command, timeoutMs));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer });
    });
    const fds = options.fds ?? [];
    this.#writes = this.#writes.then(() => (this.#ended !== undefined ? undefined : this.#write(bytes, fds))).catch((error: unknown) => this.#end(new QmpClosedError(`sending ${command} failed`, { cause: error })));
    return answer;
  }

  /** Resolves with the next event named `name` (and matching `match`), or rejects after `timeoutMs` or when the connection ends. */
  nextEvent(name: string, timeoutMs: number, match: (event: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    let onEvent!: (event: QmpEvent) => void;
    const waiting = new Promise<QmpEvent>((resolve) => {
      onEvent = (event) => {
        if (event.event === name && match(event)) resolve(event);
      };
      this.on('event', onEvent);
    });
    return this.#withTimeout(`event ${name}`, timeoutMs, waiting).finally(() => this.off('event', onEvent));
  }

  /** Closes the connection; commands still waiting reject with {@link QmpClosedError}. */
  close(): void {
    this.#end(new QmpClosedError('closed by the client'));
  }

  async #write(bytes: Buffer, fds: readonly number[]): Promise<void> {
    if (fds.length > 0) return sendFds(this.#socket, fds, bytes, { framing: 'none' });
    await new Promise<void>((resolve, reject) => this.#socket.write(bytes, (error) => (error ? reject(error) : resolve())));
  }

  #receive(chunk: Buffer): void {
    let data = this.#partial.length === 0 ? chunk : Buffer.concat([this.#partial, chunk]);
    for (let newline = data.indexOf(0x0a); newline >= 0 && this.#ended === undefined; newline = data.indexOf(0x0a)) {
      const line = data.subarray(0, newline);
      data = data.subarray(newline + 1);
      if (line.length > this.#maxLineBytes) return this.#end(new QmpProtocolError(`a line of ${line.length} bytes (at most ${this.#maxLineBytes})`));
      if (line.toString('latin1').trim() !== '') this.#message(line);
    }
    if (data.length > this.#maxLineBytes) return this.#end(new QmpProtocolError(`a line longer than ${this.#maxLineBytes} bytes`));
    this.#partial = Buffer.from(data); // a copy: the chunk it came from can go
  }

  #message(line: Buffer): void {
    let message: unknown;
    try {
      message = JSON.parse(line.toString('utf8'));
    } catch {
      return this.#end(new QmpProtocolError(`a line that is not JSON: ${JSON.stringify(line.subarray(0, 80).toString('utf8'))}`));
    }
    if (!isObject(message)) return this.#end(new QmpProtocolError('a message that is not a JSON object'));
    if (this.#onGreeting !== undefined) {
      const greeted = this.#onGreeting;
      this.#onGreeting = undefined;
      return greeted(message);
    }
    if (typeof message['event'] === 'string') {
      this.emit('event', { event: message['event'], data: isObject(message['data']) ? message['data'] : {}, timestamp: message['timestamp'] } as QmpEvent);
      return;
    }
    const id = message['id'];
    const pending = typeof id === 'number' ? this.#pending.get(id) : undefined;
    if (pending === undefined) return this.#end(new QmpProtocolError(`an answer to no command of ours (id ${JSON.stringify(id ?? null)})`));
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    const error = message['error'];
    if (isObject(error)) pending.reject(new QmpCommandError(pending.command, String(error['class'] ?? 'GenericError'), String(error['desc'] ?? '')));
    else if ('return' in message) pending.resolve(message['return']);
    else this.#end(new QmpProtocolError(`an answer to ${pending.command} with neither return nor error`));
  }

  #end(error: VmmError): void {
    if (this.#ended !== undefined) return;
    this.#ended = error;
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.#pending.clear();
    this.#onGreeting = undefined;
    this.#partial = Buffer.alloc(0);
    this.#socket.destroy();
    this.emit('closed', error);
  }

  /** `promise`, or a rejection when the connection ends or `ms` pass first. */
  #withTimeout<T>(what: string, ms: number, promise: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    let onClosed: ((error: Error) => void) | undefined;
    const bounded = new Promise<never>((_, reject) => {
      if (this.#ended !== undefined) return reject(this.#ended);
      onClosed = reject;
      this.once('closed', onClosed);
      timer = setTimeout(() => reject(new QmpTimeoutError(what, ms)), ms);
    });
    return Promise.race([promise, bounded]).finally(() => {
      clearTimeout(timer);
      if (onClosed !== undefined) this.off('closed', onClosed);
    });
  }
}
