import { EventEmitter } from 'node:events';
import net from 'node:net';

import { VmkitError, type ErrorCode, type VmkitErrorOptions } from '../errors.js';

type QmpErrorCode = Extract<ErrorCode, 'VMKIT_QMP_ERROR' | 'VMKIT_QMP_TIMEOUT' | 'VMKIT_QMP_CLOSED'>;

/** Base class of every QMP failure, so callers can catch the whole module with one `instanceof`. */
export class QmpError extends VmkitError {
  constructor(message: string, options: VmkitErrorOptions = {}, code: QmpErrorCode = 'VMKIT_QMP_ERROR') {
    super(code, message, options);
    this.name = new.target.name;
  }
}

/** QEMU answered with `{"error": {...}}`; `errorClass`/`desc` are QEMU's own words (desc is what a user should see). */
export class QmpCommandError extends QmpError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${desc}`, { details: { command, errorClass, desc } });
  }
}

/** A connect or command took longer than allowed; QEMU may be wedged or still starting. */
export class QmpTimeoutError extends QmpError {
  constructor(message: string, options: VmkitErrorOptions = {}) {
    super(message, options, 'VMKIT_QMP_TIMEOUT');
  }
}

/** The monitor connection is gone (QEMU exited, crashed or we closed it); nothing sent can be answered any more. */
export class QmpClosedError extends QmpError {
  constructor(message: string, options: VmkitErrorOptions = {}) {
    super(message, { hint: 'QEMU may have exited; check the instance log.', ...options }, 'VMKIT_QMP_CLOSED');
  }
}

/**
 * The socket could not be reached at all. `errno` (ENOENT, ECONNREFUSED, ...) tells a retry loop
 * whether QEMU simply has not created its socket yet.
 */
export class QmpConnectError extends QmpError {
  constructor(
    readonly socketPath: string,
    readonly errno: string | undefined,
    cause: unknown,
  ) {
    super(`cannot connect to QMP socket ${socketPath}: ${errno ?? String(cause)}`, {
      cause,
      hint: 'Is the instance running? QEMU creates the socket when it starts and removes it when it exits.',
    });
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** `byUs` is true when the end was requested through close() or quit(); false means QEMU went away on its own. */
export interface QmpCloseInfo {
  byUs: boolean;
  error?: Error;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [QmpCloseInfo];
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpConnectOptions {
  /** Covers connect + greeting + capabilities negotiation. */
  timeoutMs?: number;
  /** Default timeout of execute() when the call does not give one. */
  commandTimeoutMs?: number;
}

export interface QmpRetryOptions extends QmpConnectOptions {
  totalMs?: number;
  intervalMs?: number;
  /** Lets the caller stop waiting early, e.g. when the QEMU process has already exited. */
  signal?: AbortSignal;
}

export interface QmpStatus {
  status: string;
  running: boolean;
}

interface PendingReply {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

type QmpMessage = Record<string, unknown>;

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/**
 * Minimal QMP client: one JSON object per line in each direction, replies matched by `id`
 * (so concurrent commands are safe), asynchronous events re-emitted as `event`.
 */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  readonly greeting: QmpGreeting;
  private readonly socket: net.Socket;
  private readonly commandTimeoutMs: number;
  private readonly pending = new Map<number, PendingReply>();
  private nextId = 1;
  private closed = false;
  private closeRequested = false;
  private socketError: Error | undefined;

  private constructor(socket: net.Socket, greeting: QmpGreeting, commandTimeoutMs: number) {
    super();
    this.socket = socket;
    this.greeting = greeting;
    this.commandTimeoutMs = commandTimeoutMs;
  }

  /** Connects, waits for QEMU's greeting and leaves capabilities-negotiation mode, so the client is ready to use. */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const socket = net.createConnection(socketPath);
    socket.setEncoding('utf8');
    const lines = new LineReader();

    // Until the client exists, the handshake owns the socket; afterwards it hands the
    // listeners over, so no line can fall between the two.
    let timer: NodeJS.Timeout | undefined;
    const greeting = await new Promise<QmpGreeting>((resolve, reject) => {
      const fail = (error: Error): void => {
        cleanup();
        socket.destroy();
        reject(error);
      };
      let connected = false;
      socket.once('connect', () => (connected = true));
      const onError = (err: NodeJS.ErrnoException): void => {
        fail(connected ? new QmpClosedError('QMP connection failed during handshake', { cause: err }) : new QmpConnectError(socketPath, err.code, err));
      };
      const onClose = (): void => fail(new QmpClosedError(`QMP socket ${socketPath} closed before the greeting`));
      const onData = (chunk: string): void => {
        let first: QmpMessage | undefined;
        try {
          lines.push(chunk);
          first = lines.next();
        } catch (err) {
          fail(err as Error);
          return;
        }
        if (first === undefined) return;
        if (!isRecord(first.QMP)) {
          fail(new QmpError(`expected a QMP greeting on ${socketPath}, got ${JSON.stringify(first)}`));
          return;
        }
        cleanup();
        socket.pause(); // hold further lines until the client has its listeners attached
        resolve(first.QMP as unknown as QmpGreeting);
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        socket.off('error', onError).off('close', onClose).off('data', onData);
      };
      timer = setTimeout(() => fail(new QmpTimeoutError(`no QMP greeting on ${socketPath} within ${timeoutMs} ms`)), timeoutMs);
      socket.on('error', onError).on('close', onClose).on('data', onData);
    });

    const client = new QmpClient(socket, greeting, options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    client.attach(lines);
    try {
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs a QMP command and resolves with its `return` value (typed by the caller; QEMU's schema is not checked). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closed || this.socket.destroyed) {
      return Promise.reject(new QmpClosedError(`QMP connection closed; cannot run ${command}`, { cause: this.socketError }));
    }
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(`QMP ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer });
      const request: QmpMessage = { execute: command, id };
      if (args !== undefined) request.arguments = args;
      this.socket.write(JSON.stringify(request) + '\r\n');
    });
  }

  /**
   * Resolves with the first matching event. Subscribe before triggering the action that
   * causes it, or the event may already have gone by.
   */
  waitForEvent(name: string, options: { timeoutMs?: number; predicate?: (event: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    if (this.closed) return Promise.reject(new QmpClosedError(`QMP connection closed; ${name} will never arrive`));
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<QmpEvent>((resolve, reject) => {
      const onEvent = (event: QmpEvent): void => {
        if (event.event !== name || (options.predicate && !options.predicate(event))) return;
        cleanup();
        resolve(event);
      };
      const onClose = (): void => {
        cleanup();
        reject(new QmpClosedError(`QMP connection closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpTimeoutError(`no QMP ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent).off('close', onClose);
      };
      this.on('event', onEvent).on('close', onClose);
    });
  }

  /** HMP passthrough for commands QMP lacks (hostfwd_add/remove). HMP reports errors as text, so this never rejects for them. */
  humanMonitorCommand(commandLine: string, options?: { timeoutMs?: number }): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine }, options);
  }

  /**
   * HMP commands report failure only as text, so any output counts as an error unless it
   * matches `success`: hostfwd_add prints nothing when it works, but hostfwd_remove prints
   * "host forwarding rule for ... removed" (and "... not found" when it does not).
   */
  async hmpOrThrow(commandLine: string, options: { timeoutMs?: number; success?: RegExp } = {}): Promise<string> {
    const output = (await this.humanMonitorCommand(commandLine, options)).trim();
    if (output === '' || options.success?.test(output)) return output;
    throw new QmpCommandError(`human-monitor-command ${commandLine}`, 'HmpError', output);
  }

  async queryStatus(): Promise<QmpStatus> {
    const { status, running } = await this.execute<QmpStatus>('query-status');
    return { status, running };
  }

  async cont(): Promise<void> {
    await this.execute('cont');
  }

  async stop(): Promise<void> {
    await this.execute('stop');
  }

  /** Sends an ACPI power-button press; the guest decides whether and when to shut down. */
  async systemPowerdown(): Promise<void> {
    await this.execute('system_powerdown');
  }

  /**
   * Makes QEMU exit. QEMU may drop the connection before its reply reaches us, so a close
   * after sending counts as success.
   */
  async quit(): Promise<void> {
    this.closeRequested = true;
    try {
      await this.execute('quit');
    } catch (err) {
      if (!(err instanceof QmpClosedError)) throw err;
    }
  }

  async queryKvm(): Promise<{ enabled: boolean; present: boolean }> {
    const { enabled, present } = await this.execute<{ enabled: boolean; present: boolean }>('query-kvm');
    return { enabled, present };
  }

  /** Closes the connection; QEMU keeps running. Pending commands reject with QmpClosedError. */
  close(): void {
    this.closeRequested = true;
    this.socket.destroy();
  }

  private attach(lines: LineReader): void {
    const drain = (): void => {
      for (let message = lines.next(); message !== undefined; message = lines.next()) this.dispatch(message);
    };
    this.socket.on('data', (chunk: string) => {
      try {
        lines.push(chunk);
      } catch (err) {
        this.socket.destroy(err as Error);
        return;
      }
      drain();
    });
    // Without an error listener a broken pipe would crash the process; the close handler reports it.
    this.socket.on('error', (err) => {
      this.socketError = err;
    });
    this.socket.on('close', () => this.onClose());
    // Messages that arrived in the same chunk as the greeting.
    drain();
    this.socket.resume();
  }

  private dispatch(message: QmpMessage): void {
    if (typeof message.event === 'string') {
      this.emit('event', {
        event: message.event,
        data: isRecord(message.data) ? message.data : {},
        timestamp: isRecord(message.timestamp) ? (message.timestamp as QmpEvent['timestamp']) : { seconds: 0, microseconds: 0 },
      });
      return;
    }
    // Replies without our numeric id (e.g. QEMU's answer to unparseable input) cannot be matched; drop them.
    if (typeof message.id !== 'number') return;
    const pending = this.pending.get(message.id);
    if (!pending) return; // already timed out
    this.pending.delete(message.id);
    clearTimeout(pending.timer);
    if (isRecord(message.error)) {
      pending.reject(new QmpCommandError(pending.command, String(message.error.class ?? 'GenericError'), String(message.error.desc ?? 'unknown error')));
    } else {
      pending.resolve(message.return);
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(new QmpClosedError(`QMP connection closed before ${pending.command} was answered`, { cause: this.socketError }));
    }
    const info: QmpCloseInfo = { byUs: this.closeRequested };
    if (this.socketError) info.error = this.socketError;
    this.emit('close', info);
  }
}

/**
 * QEMU creates its socket some time after the process starts, so the first attempts
 * legitimately fail with ENOENT/ECONNREFUSED; keep trying until `totalMs` runs out.
 */
export async function connectWithRetry(socketPath: string, options: QmpRetryOptions = {}): Promise<QmpClient> {
  const totalMs = options.totalMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + totalMs;
  for (;;) {
    options.signal?.throwIfAborted();
    const remaining = deadline - Date.now();
    try {
      return await QmpClient.connect(socketPath, {
        ...options,
        timeoutMs: Math.max(1, Math.min(options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, remaining)),
      });
    } catch (err) {
      // A command error means QEMU answered and refused: retrying cannot help.
      if (err instanceof QmpCommandError || Date.now() + intervalMs >= deadline) throw err;
    }
    await new Promise<void>((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Splits the byte stream into JSON messages (QEMU ends each with \r\n) and queues them until taken. */
class LineReader {
  private buffer = '';
  private readonly queue: QmpMessage[] = [];

  push(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line === '') continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch (err) {
        throw new QmpError(`invalid JSON from QMP: ${line.slice(0, 200)}`, { cause: err });
      }
      if (!isRecord(parsed)) throw new QmpError(`unexpected QMP message: ${line.slice(0, 200)}`);
      this.queue.push(parsed);
    }
  }

  next(): QmpMessage | undefined {
    return this.queue.shift();
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
