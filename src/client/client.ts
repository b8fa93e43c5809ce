import { VmkitError } from '../errors.js';
import type { Operation, VmkitEvent } from '../wire/types.js';
import { errorOfAnswer, isFinished, operationError, parseAnswer, type ApiAnswer } from './envelope.js';
import { send, type RawResponse, type RequestBody, type StreamResponse, type Transport } from './transport.js';

export interface ApiClientOptions {
  transport: Transport;
  /** Sent with every request (the bearer token). */
  headers?: Record<string, string>;
  /** A failure to reach the daemon (refused, timeout …) as the error callers see. */
  unreachable: (err: Error & { code?: string }) => VmkitError;
  /** An error answer as the error callers see (default: errorOfAnswer, the daemon's own error). */
  errorOf?: (res: RawResponse) => VmkitError;
  /** The lowest HTTP status that is an error (default 400). */
  errorStatus?: number;
}

export interface RequestOptions {
  timeoutMs?: number;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

const WAIT_SECONDS = 1;

/**
 * The one client of the vmkit REST API (the CLI, cluster peers, the tests): a transport
 * (unix socket or fetch), the answer envelope, operation waiting and the event stream. What
 * an error looks like to its callers is theirs to say (options), the parsing is not.
 */
export class ApiClient {
  constructor(readonly options: ApiClientOptions) {}

  get target(): string {
    return this.options.transport.target;
  }

  /** Sends a request (objects as JSON) and reads the whole answer, whatever its status. */
  async raw(method: string, path: string, body?: unknown, options: RequestOptions & { accept?: string } = {}): Promise<RawResponse> {
    const payload = body === undefined || body === null ? undefined : Buffer.from(JSON.stringify(body));
    return this.sendRaw(
      method,
      path,
      payload,
      { ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}), ...options.headers },
      options,
    );
  }

  /** Sends a body as it is (a file stream, say); `headers` name its type and length. */
  async sendRaw(
    method: string,
    path: string,
    body: RequestBody | undefined,
    headers: Record<string, string>,
    options: RequestOptions & { accept?: string } = {},
  ): Promise<RawResponse> {
    const all = { accept: options.accept ?? 'application/json', ...this.options.headers, ...headers };
    try {
      return await send(this.options.transport, method, path, body, { headers: all, timeoutMs: options.timeoutMs, signal: options.signal });
    } catch (err) {
      throw this.options.unreachable(err as Error);
    }
  }

  /** Sends a request and returns the answer envelope; error answers are thrown. */
  async request(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<ApiAnswer> {
    return this.parse(await this.raw(method, path, body, options));
  }

  /** The envelope of a response read elsewhere (the console's WebSocket upgrade). */
  parse(res: RawResponse): ApiAnswer {
    return parseAnswer(res, this.options.errorOf ?? errorOfAnswer, this.options.errorStatus);
  }

  /** GET: the metadata of a sync answer (or the operation of an async one). */
  async get<T = unknown>(path: string, options?: RequestOptions): Promise<T> {
    return (await this.request('GET', path, undefined, options)).metadata as T;
  }

  /** POST: sync metadata, or the operation when the daemon answers 202. */
  async post<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return (await this.request('POST', path, body ?? {}, options)).metadata as T;
  }

  /** PUT: sync metadata, or the operation when the daemon answers 202. */
  async put<T = unknown>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return (await this.request('PUT', path, body ?? {}, options)).metadata as T;
  }

  /** DELETE: sync metadata, or the operation when the daemon answers 202. */
  async delete<T = unknown>(path: string, options?: RequestOptions): Promise<T> {
    return (await this.request('DELETE', path, undefined, options)).metadata as T;
  }

  /** GET of a text/plain resource (logs); a JSON string in a sync answer is accepted too. */
  async text(path: string): Promise<string> {
    const res = await this.raw('GET', path, undefined, { accept: 'text/plain, application/json' });
    if (res.contentType.includes('json') || res.status >= 400) {
      const metadata = this.parse(res).metadata;
      return typeof metadata === 'string' ? metadata : JSON.stringify(metadata, null, 2);
    }
    return res.body.toString('utf8');
  }

  /**
   * Opens a GET whose answer is bytes to keep (a guest file, an image export) and returns the
   * body as it arrives; an error answer is read and thrown as the daemon's error.
   */
  async download(path: string, options: { signal?: AbortSignal } = {}): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.open('GET', path, { accept: '*/*' }, options.signal);
    if (res.status !== 200) {
      await this.throwAnswer(res);
      throw new VmkitError('VMKIT_INTERNAL', `The daemon answered ${res.status} to the download.`);
    }
    return res.body;
  }

  /** Opens a request whose answer is read as it arrives; a failure to connect is the client's error. */
  private async open(method: string, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<StreamResponse> {
    try {
      return await this.options.transport.open(method, path, undefined, { headers: { ...this.options.headers, ...headers }, signal });
    } catch (err) {
      throw this.options.unreachable(err as Error);
    }
  }

  /** Reads a streamed answer whole and throws it when it is an error answer. */
  private async throwAnswer(res: StreamResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of res.body) chunks.push(Buffer.from(c));
    this.parse({ status: res.status, contentType: res.contentType, body: Buffer.concat(chunks) });
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
    let res;
    try {
      res = await this.open('GET', path, { accept: 'text/event-stream' }, options.signal);
    } catch (err) {
      if (options.signal?.aborted) return;
      throw err;
    }
    const decoder = new TextDecoder();
    if (res.status >= 400) await this.throwAnswer(res);
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
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, '');
          buffer = buffer.slice(nl + 1);
          if (line === '') dispatch();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
      }
    } catch (err) {
      // Aborting is how callers stop listening, not a failure.
      if (!options.signal?.aborted) throw err;
      return;
    }
    dispatch();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
