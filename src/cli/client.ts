import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { ERROR_CODES, VmkitError, type ErrorCode } from '../errors.js';
import type { Operation, VmkitEvent } from '../domain/types.js';

/** Where the daemon is when neither --dir nor VMKIT_DIR says otherwise (same as src/paths.ts). */
export const DEFAULT_DIR = '/var/lib/vmkit';

/** The hint for every "cannot reach the daemon" failure: the first thing a new user hits. */
export const UNREACHABLE_HINT = 'Start the daemon with "vmkit daemon" (or systemctl start vmkitd), or set VMKIT_DIR / --remote.';

export interface ClientOptions {
  /** Data folder holding vmkit.sock (ignored when `remote` is set). */
  dir?: string;
  /** http(s)://HOST:PORT of a daemon started with --listen. */
  remote?: string;
  /** Bearer token for `remote`. */
  token?: string;
}

/** The three JSON shapes of doc/api.md; the CLI never looks at anything else. */
export type ApiAnswer = { type: 'sync'; status_code: number; metadata: unknown } | { type: 'async'; status_code: number; operation: string; metadata: Operation };

/** A response as read off the wire, before the envelope is parsed. */
export interface RawResponse {
  status: number;
  contentType: string;
  body: Buffer;
}

const WAIT_SECONDS = 1;

/**
 * A thin HTTP client for the vmkit REST API. It only knows the transport (unix socket or
 * TCP + bearer token) and the answer envelope; commands decide what to do with metadata.
 */
export class VmkitClient {
  readonly dir: string;
  readonly remote?: URL;
  private readonly token?: string;

  constructor(options: ClientOptions = {}) {
    this.dir = options.dir || process.env.VMKIT_DIR || DEFAULT_DIR;
    const remote = options.remote || process.env.VMKIT_REMOTE || undefined;
    this.token = options.token || process.env.VMKIT_TOKEN || undefined;
    if (remote) {
      let url: URL;
      try {
        url = new URL(remote);
      } catch {
        url = new URL('invalid:');
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new VmkitError('VMKIT_INVALID_ARGUMENT', `The remote ${JSON.stringify(remote)} is not an http(s) URL.`, {
          hint: "Use --remote http://HOST:PORT or https://HOST:PORT (the daemon's --listen address).",
        });
      }
      this.remote = url;
    }
  }

  /** The unix socket the daemon listens on in the data folder. */
  get socketPath(): string {
    return join(this.dir, 'vmkit.sock');
  }

  /** Where the daemon is, for messages. */
  get target(): string {
    return this.remote ? this.remote.origin : this.socketPath;
  }

  /** Headers every request (and the console WebSocket) sends. */
  authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** The console WebSocket URL: `ws+unix:` over the socket, ws(s) over TCP. */
  websocketUrl(path: string): string {
    if (!this.remote) return `ws+unix://${this.socketPath}:${path}`;
    const base = new URL(this.remote.href);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    return new URL(path, base).href;
  }

  /** Sends a request and returns the answer envelope; error answers are thrown as VmkitError. */
  async request(method: string, path: string, body?: unknown): Promise<ApiAnswer> {
    const res = await this.send(method, path, body);
    return parseAnswer(res);
  }

  /** GET: the metadata of a sync answer (or the operation of an async one). */
  async get<T = unknown>(path: string): Promise<T> {
    return (await this.request('GET', path)).metadata as T;
  }

  /** POST: sync metadata, or the operation when the daemon answers 202. */
  async post<T = unknown>(path: string, body?: unknown): Promise<T> {
    return (await this.request('POST', path, body ?? {})).metadata as T;
  }

  /** PUT: sync metadata, or the operation when the daemon answers 202. */
  async put<T = unknown>(path: string, body?: unknown): Promise<T> {
    return (await this.request('PUT', path, body ?? {})).metadata as T;
  }

  /** DELETE: sync metadata, or the operation when the daemon answers 202. */
  async delete<T = unknown>(path: string): Promise<T> {
    return (await this.request('DELETE', path)).metadata as T;
  }

  /** GET of a text/plain resource (logs); a JSON string in a sync answer is accepted too. */
  async text(path: string): Promise<string> {
    const res = await this.send('GET', path, undefined, 'text/plain, application/json');
    if (res.contentType.includes('json') || res.status >= 400) {
      const metadata = parseAnswer(res).metadata;
      return typeof metadata === 'string' ? metadata : JSON.stringify(metadata, null, 2);
    }
    return res.body.toString('utf8');
  }

  /**
   * Waits until operation `id` ends, calling onProgress with each state seen. Uses short
   * `/wait` calls so progress can be drawn; resolves with the successful operation and
   * throws the operation's own error (code, message, hint) when it failed or was cancelled.
   */
  async waitOperation(id: string, onProgress?: (op: Operation) => void): Promise<Operation> {
    const base = `/1.0/operations/${encodeURIComponent(id)}`;
    let useWait = true;
    for (;;) {
      let op: Operation;
      if (useWait) {
        try {
          op = await this.get<Operation>(`${base}/wait?timeout=${WAIT_SECONDS}`);
        } catch (err) {
          // A wait that times out may be reported as an error by some daemons: just ask again.
          if (err instanceof VmkitError && err.code === 'VMKIT_TIMEOUT') continue;
          // No /wait route (a plain 404, not "operation not found"): fall back to polling.
          if (err instanceof VmkitError && err.code === 'VMKIT_NOT_FOUND') {
            useWait = false;
            continue;
          }
          throw err;
        }
      } else {
        op = await this.get<Operation>(base);
        if (!isFinished(op)) await sleep(250);
      }
      onProgress?.(op);
      if (op.status === 'success') return op;
      if (op.status === 'failure') throw operationError(op);
      if (op.status === 'cancelled') {
        throw new VmkitError('VMKIT_OPERATION_CANCELLED', op.error?.message ?? `${op.description} was cancelled.`, {
          hint: op.error?.hint,
        });
      }
    }
  }

  /**
   * Reads the Server-Sent Events stream until it ends or `signal` aborts, calling onEvent
   * for every JSON `data:` message.
   */
  async events(onEvent: (event: VmkitEvent) => void, options: { type?: 'lifecycle' | 'operation'; signal?: AbortSignal } = {}): Promise<void> {
    const path = `/1.0/events${options.type ? `?type=${options.type}` : ''}`;
    const res = await this.open('GET', path, undefined, 'text/event-stream', options.signal);
    if ((res.statusCode ?? 500) >= 400) {
      parseAnswer({ status: res.statusCode ?? 500, contentType: String(res.headers['content-type'] ?? ''), body: await readAll(res) });
    }
    res.setEncoding('utf8');
    let buffer = '';
    let data: string[] = [];
    const dispatch = (): void => {
      if (data.length === 0) return;
      const text = data.join('\n');
      data = [];
      try {
        onEvent(JSON.parse(text) as VmkitEvent);
      } catch {
        // Not JSON (a keep-alive or a future format): skip it rather than stop listening.
      }
    };
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        res.destroy();
        resolve();
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, '');
          buffer = buffer.slice(nl + 1);
          if (line === '') dispatch();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
      });
      res.on('end', () => {
        dispatch();
        options.signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      res.on('error', (err) => (options.signal?.aborted ? resolve() : reject(err)));
    });
  }

  private async send(method: string, path: string, body?: unknown, accept = 'application/json'): Promise<RawResponse> {
    const res = await this.open(method, path, body, accept);
    return { status: res.statusCode ?? 500, contentType: String(res.headers['content-type'] ?? ''), body: await readAll(res) };
  }

  private open(method: string, path: string, body: unknown, accept: string, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept, ...this.authHeaders() };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    return new Promise((resolve, reject) => {
      let req: http.ClientRequest;
      if (this.remote) {
        const url = new URL(path, this.remote);
        const mod = url.protocol === 'https:' ? https : http;
        req = mod.request(url, { method, headers, signal });
      } else {
        req = http.request({ socketPath: this.socketPath, path, method, headers, signal });
      }
      req.on('response', resolve);
      req.on('error', (err) => reject(this.connectionError(err)));
      req.end(payload);
    });
  }

  /** A socket-level failure (refused, missing socket, DNS …) as the error users should see. */
  connectionError(err: Error & { code?: string }): VmkitError {
    const where = this.target;
    switch (err.code) {
      case 'ENOENT':
      case 'ECONNREFUSED':
      case 'ECONNRESET':
      case 'ENOTFOUND':
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
      case 'ETIMEDOUT':
      case 'EAI_AGAIN':
        return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Cannot reach the vmkit daemon at ${where} (${err.code}).`, {
          hint: UNREACHABLE_HINT,
          cause: err,
        });
      case 'EACCES':
      case 'EPERM':
        return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Permission denied on the vmkit socket ${where}.`, {
          hint: 'Run as a member of the group that owns the socket (or with sudo), or use --remote.',
          cause: err,
        });
      default:
        return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Talking to the vmkit daemon at ${where} failed: ${err.message}`, {
          hint: UNREACHABLE_HINT,
          cause: err,
        });
    }
  }
}

/** True once an operation can no longer change. */
export function isFinished(op: Operation): boolean {
  return op.status === 'success' || op.status === 'failure' || op.status === 'cancelled';
}

/** The error a failed operation carries, as a VmkitError the CLI can print. */
export function operationError(op: Operation): VmkitError {
  const e = op.error ?? { code: 'VMKIT_INTERNAL', message: `${op.description} failed.` };
  return toVmkitError(e.code, e.message, e.hint);
}

/**
 * Rebuilds a VmkitError from the wire. A code this CLI does not know (newer daemon) keeps
 * the HTTP status and is kept in details.code so it can still be shown.
 */
export function toVmkitError(code: string, message: string, hint?: string, status?: number): VmkitError {
  if (code in ERROR_CODES) return new VmkitError(code as ErrorCode, message, { hint, status });
  const fallback: ErrorCode = status === undefined || status >= 500 ? 'VMKIT_INTERNAL' : 'VMKIT_BAD_REQUEST';
  return new VmkitError(fallback, message, { hint, status, details: { code } });
}

/** Turns a raw response into an answer envelope, throwing error answers as VmkitError. */
export function parseAnswer(res: RawResponse): ApiAnswer {
  const text = res.body.toString('utf8');
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  const obj = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  if (obj.type === 'error' || res.status >= 400) {
    const err = (typeof obj.error === 'object' && obj.error !== null ? obj.error : {}) as Record<string, unknown>;
    const status = typeof obj.status_code === 'number' ? obj.status_code : res.status;
    const message =
      typeof err.message === 'string'
        ? err.message
        : typeof obj.message === 'string'
          ? obj.message
          : `The daemon answered HTTP ${res.status}${text && json === undefined ? `: ${text.slice(0, 200)}` : '.'}`;
    const hint = typeof err.hint === 'string' ? err.hint : status === 401 ? "Pass the daemon's token with --token or VMKIT_TOKEN." : undefined;
    const code = typeof err.code === 'string' ? err.code : statusCode(status);
    return throwError(toVmkitError(code, message, hint, status));
  }
  if (obj.type === 'async') {
    return { type: 'async', status_code: res.status, operation: String(obj.operation ?? ''), metadata: obj.metadata as Operation };
  }
  if (obj.type === 'sync') return { type: 'sync', status_code: res.status, metadata: obj.metadata };
  throw new VmkitError('VMKIT_INTERNAL', `The daemon answered something that is not a vmkit API answer (HTTP ${res.status}).`, {
    hint: 'Check that --remote / VMKIT_DIR point at a vmkit daemon of a compatible version.',
  });
}

function statusCode(status: number): string {
  if (status === 401) return 'VMKIT_UNAUTHORIZED';
  if (status === 404) return 'VMKIT_NOT_FOUND';
  if (status >= 400 && status < 500) return 'VMKIT_BAD_REQUEST';
  return 'VMKIT_INTERNAL';
}

function throwError(err: VmkitError): never {
  throw err;
}

function readAll(res: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', reject);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
