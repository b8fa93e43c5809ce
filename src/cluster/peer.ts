import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { checkServerIdentity, connect, type PeerCertificate } from 'node:tls';
import { isIP } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { ApiClient, type RequestOptions } from '../client/client.js';
import WebSocket from 'ws';
import { nodeHttpTransport, type RequestBody, type StreamResponse, type TlsOptions } from '../client/transport.js';
import { VmkitError, vmkitError, type ErrorCode } from '../errors.js';
import type { TlsMaterial } from './pki.js';

const DEFAULT_TIMEOUT_MS = 15_000;

/**
 * The peer listener serves `/1.0/internal/…` only; a public route a peer forwards (a request
 * for an instance it owns, its instance list) goes under this prefix and is served as it is.
 */
export const FORWARD_PREFIX = '/1.0/internal/forward';

function onPeerListener(path: string): string {
  return path.startsWith('/1.0/internal/') ? path : `${FORWARD_PREFIX}${path}`;
}

/**
 * Host-to-host calls: the peer's listener over mutual TLS (this host's certificate, and only
 * a certificate of the cluster's CA for the host named `hostName` is accepted), through the
 * shared API client. Errors of the peer come back as the same VmkitError (code, message, hint, details —
 * a code this host does not know is kept as it is); a peer that does not answer becomes
 * VMKIT_HOST_UNREACHABLE.
 */
export class PeerClient {
  private readonly client: ApiClient;
  private readonly tls: TlsOptions;

  constructor(
    private readonly address: string,
    tls: TlsMaterial,
    private readonly hostName: string,
  ) {
    this.tls = {
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      // The address must be in the certificate (the default check), and it must be that host's.
      checkServerIdentity: (host, cert) => checkServerIdentity(host, cert) ?? wrongHost(cert, hostName),
      servername: sniFor(address),
    };
    this.client = new ApiClient({
      transport: nodeHttpTransport(new URL(`https://${address}`), this.tls),
      unreachable: (err) => unreachable(hostName, address, err),
      errorOf: (res) => errorFromBody(res.body.toString('utf8'), res.status, hostName),
      // Anything but a 2xx is the peer's refusal.
      errorStatus: 300,
    });
  }

  url(path: string): string {
    return `https://${this.address}${onPeerListener(path)}`;
  }

  /** A WebSocket to the same route on the peer (a console of an instance it runs), over the same mutual TLS. */
  webSocket(path: string, headers: Record<string, string>): WebSocket {
    return new WebSocket(`wss://${this.address}${onPeerListener(path)}`, { ...this.tls, headers, handshakeTimeout: 10_000 });
  }

  /** The answer as it arrives (forwarding streams files through without holding them). */
  async open(method: string, path: string, body: RequestBody | undefined, headers: Record<string, string>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<StreamResponse> {
    const all = { accept: '*/*', ...this.client.options.headers, ...headers };
    try {
      return await this.client.options.transport.open(method, onPeerListener(path), body, { headers: all, timeoutMs });
    } catch (err) {
      throw this.client.options.unreachable(err as Error);
    }
  }

  async request<T = unknown>(method: string, path: string, body?: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
    const options: RequestOptions = { timeoutMs };
    return (await this.client.request(method, onPeerListener(path), body, options)).metadata as T;
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
    const res = await this.client.sendRaw('PUT', onPeerListener(path), rs, { 'content-type': 'application/octet-stream', 'content-length': String(total) }, { signal });
    if (res.status >= 300) throw errorFromBody(res.body.toString('utf8'), res.status, this.hostName);
  }
}

/** No SNI for an IP address (RFC 6066; Node warns when one is set). */
function sniFor(address: string): string {
  const host = splitAddress(address)[0];
  return isIP(host) ? '' : host;
}

function wrongHost(cert: PeerCertificate, hostName: string): Error | undefined {
  if (cert.subject?.CN === hostName) return undefined;
  return new Error(`the certificate is host "${cert.subject?.CN}"'s, not "${hostName}"'s`);
}

/**
 * A joiner's first contact with a member (it has no certificate yet): the member's chain is
 * read without trusting it, and the CA in it must have the fingerprint the join token carries
 * and must have signed the member's certificate. Returns that CA (PEM), which the join
 * request then trusts alone — the secret is sent only to a member of that cluster.
 */
export function memberCa(address: string, expectedFingerprint: string, timeoutMs = 10_000): Promise<string> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve, reject) => {
    const refuse = (why: string) =>
      vmkitError('VMKIT_FORBIDDEN', `The host at ${address} is not a member of the cluster the join token names: ${why}.`, {
        hint: 'Check the token (make a new one with "vmkit cluster add HOST" on a member) and that the address is the member\'s.',
      });
    const sock = connect({ host, port, rejectUnauthorized: false, timeout: timeoutMs, servername: sniFor(address) });
    sock.once('timeout', () => sock.destroy(new Error('timed out')));
    sock.once('error', (err) => reject(unreachable('member', address, err)));
    sock.once('secureConnect', () => {
      const leaf = sock.getPeerCertificate(true);
      sock.end();
      const issuer = leaf?.issuerCertificate;
      if (!leaf?.raw || !issuer?.raw || issuer === leaf) return reject(refuse('it sent no CA with its certificate'));
      const ca = new X509Certificate(issuer.raw);
      if (ca.fingerprint256 !== expectedFingerprint) return reject(refuse(`its CA's fingerprint is ${ca.fingerprint256}`));
      if (!new X509Certificate(leaf.raw).verify(ca.publicKey)) return reject(refuse('its certificate is not signed by that CA'));
      resolve(ca.toString());
    });
  });
}

/** A client for a member, to join (no client certificate yet; the member's CA pinned). */
export function joinClient(address: string, ca: string): ApiClient {
  return new ApiClient({
    transport: nodeHttpTransport(new URL(`https://${address}`), { ca, servername: sniFor(address) }),
    unreachable: (err) => unreachable('member', address, err),
    errorOf: (res) => errorFromBody(res.body.toString('utf8'), res.status, address),
    errorStatus: 300,
  });
}

export function splitAddress(address: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!m) throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${address}" is not HOST:PORT.`, { hint: 'Example: --address 10.0.0.1:8443' });
  return [m[1]!, Number(m[2])];
}

function unreachable(host: string, address: string, err: unknown): VmkitError {
  // A deadline ends the request with an AbortError: say what it means.
  const why = (err as Error).name === 'AbortError' ? 'no answer in time' : (err as Error).message;
  return vmkitError('VMKIT_HOST_UNREACHABLE', `Cluster host "${host}" (${address}) does not answer: ${why}.`, {
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
