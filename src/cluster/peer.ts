import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { ApiClient, type RequestOptions } from '../client/client.js';
import { fetchTransport, type RawResponse } from '../client/transport.js';
import { VmkitError, vmkitError, type ErrorCode } from '../errors.js';

const DEFAULT_TIMEOUT_MS = 15_000;

/**
 * Host-to-host calls: the peer's TCP API with the cluster token, through the shared API
 * client. Errors of the peer come back as the same VmkitError (code, message, hint, details —
 * a code this host does not know is kept as it is); a peer that does not answer becomes
 * VMKIT_HOST_UNREACHABLE.
 */
export class PeerClient {
  private readonly client: ApiClient;

  constructor(
    private readonly address: string,
    token: string,
    private readonly hostName: string,
  ) {
    this.client = new ApiClient({
      transport: fetchTransport(new URL(`http://${address}`)),
      headers: { authorization: `Bearer ${token}` },
      unreachable: (err) => unreachable(hostName, address, err),
      errorOf: (res) => errorFromBody(res.body.toString('utf8'), res.status, hostName),
      // Anything but a 2xx is the peer's refusal.
      errorStatus: 300,
    });
  }

  url(path: string): string {
    return `http://${this.address}${path}`;
  }

  /** The raw answer (request forwarding relays it as it is). */
  async send(method: string, path: string, body?: unknown, timeoutMs = DEFAULT_TIMEOUT_MS, headers: Record<string, string> = {}): Promise<RawResponse> {
    return this.client.raw(method, path, body, { timeoutMs, headers, accept: '*/*' });
  }

  async request<T = unknown>(method: string, path: string, body?: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
    const options: RequestOptions = { timeoutMs };
    return (await this.client.request(method, path, body, options)).metadata as T;
  }

  /** Streams a file as the request body (disk images of a cold or suspend migration). */
  async putFile(path: string, file: string, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<void> {
    const total = (await stat(file)).size;
    let done = 0;
    const rs = createReadStream(file);
    rs.on('data', (c) => {
      done += c.length;
      onProgress?.(done, total);
    });
    const res = await this.client.sendRaw('PUT', path, rs, { 'content-type': 'application/octet-stream', 'content-length': String(total) }, { signal });
    if (res.status >= 300) throw errorFromBody(res.body.toString('utf8'), res.status, this.hostName);
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
