import net from 'node:net';
import { randomInt } from 'node:crypto';

import { VmkitError, type ErrorCode, type VmkitErrorOptions } from '../errors.js';

/**
 * vmkit's QEMU guest agent (QGA) client, beside the QMP one. The agent runs INSIDE the guest,
 * so everything on this socket is hostile: a dead agent must not hang the daemon (every step
 * has a deadline), a chatty one must not fill its memory (a reply is capped, and so is the
 * garbage skipped before the handshake), and nothing it says is trusted (callers validate the
 * shapes: src/qemu/guest-agent.ts).
 *
 * Protocol: JSON objects, one per line each way, no ids, no events, one command in flight.
 * A session starts with `guest-sync-delimited`: the agent answers `0xFF{"return": ID}`, and
 * everything before the 0xFF (a reply left over from an earlier client that gave up) is
 * dropped. A command that times out leaves its late reply in the pipe, so the client closes
 * the connection then; the next session's handshake flushes it.
 */

type AgentErrorCode = Extract<ErrorCode, 'VMKIT_AGENT_UNAVAILABLE' | 'VMKIT_AGENT_ERROR' | 'VMKIT_AGENT_TIMEOUT'>;

export class QgaError extends VmkitError {
  constructor(code: AgentErrorCode, message: string, options: VmkitErrorOptions = {}) {
    super(code, message, options);
    this.name = 'QgaError';
  }
}

/** The agent answered `{"error": …}`: its own words (class, desc). */
export class QgaCommandError extends QgaError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super('VMKIT_AGENT_ERROR', `guest agent ${command} failed: ${desc}`, { details: { command, errorClass, desc } });
  }
}

export const AGENT_HINT =
  'The guest needs qemu-guest-agent running on the virtio-serial port org.qemu.guest_agent.0 (Debian/Ubuntu: apt install qemu-guest-agent). ' +
  'Instances started before vmkit had the channel get it at their next start.';

export interface QgaOptions {
  /** Connecting to the socket QEMU serves (default 2 s). */
  connectTimeoutMs?: number;
  /** The guest-sync-delimited handshake (default 3 s): no answer = no agent. */
  syncTimeoutMs?: number;
  /** Default deadline of one command (default 10 s). */
  commandTimeoutMs?: number;
  /** The largest reply line accepted, in bytes (default 16 MiB). */
  maxReplyBytes?: number;
}

const DEFAULTS = { connectTimeoutMs: 2_000, syncTimeoutMs: 3_000, commandTimeoutMs: 10_000, maxReplyBytes: 16 * 1024 * 1024 };

interface Pending {
  command: string;
  resolve: (line: Buffer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class QgaClient {
  private buffer: Buffer[] = [];
  private buffered = 0;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closedError: Error | undefined;
  private readonly commandTimeoutMs: number;
  private readonly maxReplyBytes: number;

  private constructor(
    private readonly socket: net.Socket,
    private readonly socketPath: string,
    options: Required<QgaOptions>,
  ) {
    this.commandTimeoutMs = options.commandTimeoutMs;
    this.maxReplyBytes = options.maxReplyBytes;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new QgaError('VMKIT_AGENT_UNAVAILABLE', `guest agent connection failed: ${err.message}`, { cause: err, hint: AGENT_HINT })));
    socket.on('close', () => this.fail(new QgaError('VMKIT_AGENT_UNAVAILABLE', 'guest agent connection closed', { hint: AGENT_HINT })));
  }

  /** Connects and synchronises; throws VMKIT_AGENT_UNAVAILABLE when nothing answers in time. */
  static async connect(socketPath: string, options: QgaOptions = {}): Promise<QgaClient> {
    const o = { ...DEFAULTS, ...options };
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QgaError('VMKIT_AGENT_UNAVAILABLE', `cannot connect to the guest agent socket within ${o.connectTimeoutMs} ms`, { hint: AGENT_HINT }));
      }, o.connectTimeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        s.destroy();
        reject(
          new QgaError('VMKIT_AGENT_UNAVAILABLE', `no guest agent channel (${err.code ?? err.message})`, {
            cause: err,
            hint: err.code === 'ENOENT' ? 'The instance is not running, or was started before vmkit gave instances a guest agent channel: restart it.' : AGENT_HINT,
          }),
        );
      });
    });
    const client = new QgaClient(socket, socketPath, o);
    try {
      await client.sync(o.syncTimeoutMs);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  /**
   * Runs one command and resolves with its `return` value, unchecked: the caller validates it.
   * `noReply` commands (guest-shutdown) resolve once written: the agent never answers them.
   */
  execute(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number; noReply?: boolean } = {}): Promise<unknown> {
    const run = this.queue.then(() => this.executeNow(command, args, options));
    this.queue = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.fail(new QgaError('VMKIT_AGENT_UNAVAILABLE', 'guest agent connection closed by vmkit'));
  }

  private async executeNow(command: string, args: Record<string, unknown> | undefined, options: { timeoutMs?: number; noReply?: boolean }): Promise<unknown> {
    if (this.closedError) throw this.closedError;
    const request: Record<string, unknown> = { execute: command };
    if (args !== undefined) request.arguments = args;
    const text = JSON.stringify(request) + '\n';
    if (options.noReply) {
      await new Promise<void>((resolve, reject) => this.socket.write(text, (err) => (err ? reject(err) : resolve())));
      return undefined;
    }
    const line = await this.request(command, text, options.timeoutMs ?? this.commandTimeoutMs);
    const msg = parseMessage(line, command);
    if (isRecord(msg.error)) {
      throw new QgaCommandError(command, String(msg.error.class ?? 'GenericError').slice(0, 100), String(msg.error.desc ?? 'unknown error').slice(0, 500));
    }
    if (!('return' in msg)) throw new QgaError('VMKIT_AGENT_ERROR', `guest agent sent a reply to ${command} without "return" or "error"`);
    return msg.return;
  }

  /** guest-sync-delimited with a random id; everything before the agent's 0xFF is skipped. */
  private async sync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31 - 1);
    const deadline = Date.now() + timeoutMs;
    const text = JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n';
    this.syncing = true;
    let sent = false;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw this.noAnswer(timeoutMs);
      let line: Buffer;
      try {
        line = await this.request('guest-sync-delimited', sent ? '' : text, left);
      } catch (err) {
        if (err instanceof QgaError && err.code === 'VMKIT_AGENT_TIMEOUT') throw this.noAnswer(timeoutMs);
        throw err;
      }
      sent = true;
      // A stale line (a reply to a client that gave up, garbage) is skipped; only our id ends the handshake.
      let msg: Record<string, unknown> | undefined;
      try {
        msg = parseMessage(line, 'guest-sync-delimited');
      } catch {
        msg = undefined;
      }
      if (msg && msg.return === id) {
        this.syncing = false;
        return;
      }
    }
  }

  private noAnswer(timeoutMs: number): QgaError {
    return new QgaError('VMKIT_AGENT_UNAVAILABLE', `no guest agent answers on ${this.socketPath.split('/').pop()} (nothing within ${timeoutMs} ms)`, {
      hint: AGENT_HINT,
    });
  }

  /** While syncing, bytes up to the agent's 0xFF are dropped, then lines are read as usual. */
  private syncing = false;
  private sawDelimiter = false;

  private request(command: string, text: string, timeoutMs: number): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        const err = new QgaError('VMKIT_AGENT_TIMEOUT', `guest agent did not answer ${command} within ${timeoutMs} ms`, {
          hint: 'The guest may be overloaded or its agent stuck; the connection was dropped (a late reply is discarded).',
        });
        // Only the handshake may keep reading after a timeout (it skips stale lines anyway).
        if (command !== 'guest-sync-delimited') this.fail(err);
        reject(err);
      }, timeoutMs);
      this.pending = { command, resolve, reject, timer };
      if (text) this.socket.write(text);
      this.drain();
    });
  }

  private onData(chunk: Buffer): void {
    if (this.closedError) return;
    if (this.syncing && !this.sawDelimiter) {
      const at = chunk.indexOf(0xff);
      if (at === -1) return; // garbage before the delimiter: dropped, never buffered
      this.sawDelimiter = true;
      chunk = chunk.subarray(at + 1);
    }
    this.buffer.push(chunk);
    this.buffered += chunk.length;
    this.drain();
    if (this.buffered > this.maxReplyBytes) {
      this.fail(new QgaError('VMKIT_AGENT_ERROR', `guest agent sent a reply over ${this.maxReplyBytes} bytes; the connection was dropped`));
    }
  }

  private drain(): void {
    while (this.pending && this.buffered > 0) {
      const all = this.buffer.length === 1 ? this.buffer[0]! : Buffer.concat(this.buffer);
      const nl = all.indexOf(0x0a);
      if (nl === -1) {
        this.buffer = [all];
        return;
      }
      const line = all.subarray(0, nl);
      const rest = all.subarray(nl + 1);
      this.buffer = rest.length ? [rest] : [];
      this.buffered = rest.length;
      if (line.length > this.maxReplyBytes) {
        this.fail(new QgaError('VMKIT_AGENT_ERROR', `guest agent sent a reply over ${this.maxReplyBytes} bytes; the connection was dropped`));
        return;
      }
      // Stray 0xFF bytes (a delimiter the agent adds, a client's reset) and blank lines carry nothing.
      let start = 0;
      while (start < line.length && (line[start] === 0xff || line[start] === 0x0d || line[start] === 0x20)) start++;
      const body = line.subarray(start);
      if (body.length === 0 || (body.length === 1 && body[0] === 0x0d)) continue;
      const p = this.pending;
      this.pending = undefined;
      clearTimeout(p.timer);
      p.resolve(body);
    }
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    this.buffer = [];
    this.buffered = 0;
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.socket.destroy();
  }
}

function parseMessage(line: Buffer, command: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line.toString('utf8'));
  } catch {
    throw new QgaError('VMKIT_AGENT_ERROR', `guest agent sent invalid JSON in reply to ${command}: ${JSON.stringify(line.subarray(0, 80).toString('latin1'))}`);
  }
  if (!isRecord(parsed)) throw new QgaError('VMKIT_AGENT_ERROR', `guest agent sent a non-object reply to ${command}`);
  return parsed;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Opens a session, runs `fn`, always closes. */
export async function withAgent<T>(socketPath: string, options: QgaOptions, fn: (c: QgaClient) => Promise<T>): Promise<T> {
  const c = await QgaClient.connect(socketPath, options);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}
