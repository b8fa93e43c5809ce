import http from 'node:http';
import https from 'node:https';

/** A request body as it goes on the wire; a stream needs its content-length in the headers. */
export type RequestBody = string | Uint8Array | AsyncIterable<Uint8Array>;

/** A response as read off the wire, before the envelope is parsed. */
export interface RawResponse {
  status: number;
  contentType: string;
  body: Buffer;
}

/** A response whose body is still arriving (the event stream). */
export interface StreamResponse {
  status: number;
  contentType: string;
  body: AsyncIterable<Uint8Array>;
}

export interface SendOptions {
  headers?: Record<string, string>;
  /** Abort after this long (the error is the transport's own, mapped by the client). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * How requests reach a daemon. Failures to connect are thrown as they come (with their
 * `code`, or a `cause` that has one): the client decides what its callers see.
 */
export interface Transport {
  /** Where the daemon is, for messages. */
  readonly target: string;
  open(method: string, path: string, body: RequestBody | undefined, options: SendOptions): Promise<StreamResponse>;
}

/** Sends a request and reads the whole answer. */
export async function send(transport: Transport, method: string, path: string, body?: RequestBody, options: SendOptions = {}): Promise<RawResponse> {
  const res = await transport.open(method, path, body, options);
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(Buffer.from(c));
  return { status: res.status, contentType: res.contentType, body: Buffer.concat(chunks) };
}

function signalOf(options: SendOptions): AbortSignal | undefined {
  const timeout = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
  if (timeout && options.signal) return AbortSignal.any([timeout, options.signal]);
  return timeout ?? options.signal;
}

/** The daemon's unix socket (the local CLI, the tests): node:http, as fetch has no socketPath. */
export function unixTransport(socketPath: string): Transport {
  return nodeTransport(socketPath, (method, path, options) => http.request({ socketPath, path, method, headers: options.headers, signal: signalOf(options) }));
}

/**
 * A daemon's http(s) URL through node:http — the CLI's `--remote`, which has always used
 * it: unlike fetch it reaches every port (fetch refuses a list of "bad ports", 6000 among
 * them) and its errors carry the socket's code the CLI's messages name.
 */
export function nodeHttpTransport(base: URL, tls?: TlsOptions): Transport {
  return nodeTransport(base.origin, (method, path, options) => {
    const url = new URL(path, base);
    return (url.protocol === 'https:' ? https : http).request(url, { method, headers: options.headers, signal: signalOf(options), ...tls });
  });
}

/**
 * What an https request presents and checks beyond the defaults: cluster peers trust only
 * their cluster's CA (`ca`), show their own host certificate (`cert`/`key`: mutual TLS) and
 * may check more than the address in the peer's certificate (`checkServerIdentity`).
 */
export type TlsOptions = Pick<https.RequestOptions, 'ca' | 'cert' | 'key' | 'checkServerIdentity' | 'servername' | 'rejectUnauthorized'>;

export function nodeTransport(target: string, start: (method: string, path: string, options: SendOptions) => http.ClientRequest): Transport {
  return {
    target,
    open(method, path, body, options) {
      return new Promise((resolve, reject) => {
        const req = start(method, path, options);
        req.on('response', (res) => resolve({ status: res.statusCode ?? 500, contentType: String(res.headers['content-type'] ?? ''), body: res }));
        req.on('error', reject);
        if (body === undefined || typeof body === 'string' || body instanceof Uint8Array) {
          req.end(body);
        } else {
          void (async () => {
            try {
              for await (const c of body) if (!req.write(c)) await new Promise((r) => req.once('drain', r));
              req.end();
            } catch (err) {
              req.destroy(err as Error);
            }
          })();
        }
      });
    },
  };
}

/** A daemon's TCP address (cluster peers): fetch, with its timeouts and streamed bodies. */
export function fetchTransport(base: URL): Transport {
  return {
    target: base.origin,
    async open(method, path, body, options) {
      const stream = body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array);
      // Streamed bodies (disk images) must say so to fetch (`duplex`, not in the DOM types).
      const init = { method, headers: options.headers, body, signal: signalOf(options), ...(stream ? { duplex: 'half' } : {}) } as FetchInit;
      const res = await fetch(new URL(path, base), init);
      const reader = res.body;
      return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: reader ?? emptyBody() };
    },
  };
}

type FetchInit = NonNullable<Parameters<typeof fetch>[1]>;

async function* emptyBody(): AsyncIterable<Uint8Array> {}
