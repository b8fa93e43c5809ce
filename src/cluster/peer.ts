import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import { VmkitError, vmkitError, type ErrorCode } from '../errors.js';

/**
 * Host-to-host calls: the peer's TCP API with the cluster token. Errors of the peer come back
 * as the same VmkitError (code, message, hint); a peer that does not answer becomes
 * VMKIT_HOST_UNREACHABLE.
 */
export class PeerClient {
  constructor(
    private readonly address: string,
    private readonly token: string,
    private readonly hostName: string,
  ) {}

  url(path: string): string {
    return `http://${this.address}${path}`;
  }

  /** The raw answer (request forwarding relays it as it is). */
  async send(method: string, path: string, body?: unknown, timeoutMs = 15_000, headers: Record<string, string> = {}): Promise<Response> {
    try {
      return await fetch(this.url(path), {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body === undefined || body === null ? {} : { 'content-type': 'application/json' }), ...headers },
        body: body === undefined || body === null ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw unreachable(this.hostName, this.address, err);
    }
  }

  async request<T = unknown>(method: string, path: string, body?: unknown, timeoutMs = 15_000): Promise<T> {
    return parseReply<T>(await this.send(method, path, body, timeoutMs), this.hostName);
  }

  /** Streams a file as the request body (disk images of a cold or suspend migration). */
  async putFile(path: string, file: string, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<void> {
    const total = (await stat(file)).size;
    await new Promise<void>((resolve, reject) => {
      const [host, port] = splitAddress(this.address);
      const req = http.request(
        { host, port, path, method: 'PUT', headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/octet-stream', 'content-length': total }, signal },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (d: string) => (text += d));
          res.on('end', () => {
            if ((res.statusCode ?? 500) < 300) return resolve();
            reject(errorFromBody(text, res.statusCode ?? 500, this.hostName));
          });
        },
      );
      req.on('error', (err) => reject(unreachable(this.hostName, this.address, err)));
      let done = 0;
      const rs = createReadStream(file);
      rs.on('data', (c) => {
        done += c.length;
        onProgress?.(done, total);
      });
      rs.on('error', reject);
      rs.pipe(req);
    });
  }
}

export function splitAddress(address: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!m) throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${address}" is not HOST:PORT.`, { hint: 'Example: --address 10.0.0.1:8443' });
  return [m[1]!, Number(m[2])];
}

function unreachable(host: string, address: string, err: unknown): VmkitError {
  return vmkitError('VMKIT_HOST_UNREACHABLE', `Cluster host "${host}" (${address}) does not answer: ${(err as Error).message}.`, {
    hint: `"vmkit cluster list" shows whether its lease is alive; check its daemon and the network to it.`,
  });
}

function errorFromBody(text: string, status: number, host: string): VmkitError {
  try {
    const j = JSON.parse(text) as { error?: { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> } };
    if (j.error?.code) return new VmkitError(j.error.code, j.error.message, { hint: j.error.hint, details: j.error.details, status });
  } catch {
    /* not JSON */
  }
  return vmkitError('VMKIT_HOST_UNREACHABLE', `Cluster host "${host}" answered ${status}: ${text.slice(0, 200)}`, { hint: 'Check that every host runs the same vmkit version.' });
}

async function parseReply<T>(res: Response, host: string): Promise<T> {
  const text = await res.text();
  if (res.status >= 300) throw errorFromBody(text, res.status, host);
  const j = JSON.parse(text || '{}') as { metadata?: T };
  return j.metadata as T;
}
