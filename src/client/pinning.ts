import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { VmkitError } from '../errors.js';
import { nodeTransport, type SendOptions, type Transport } from './transport.js';

/**
 * Certificate pinning, like `incus remote add`: the daemon's HTTPS certificate is usually
 * self-signed (made on its first start), so no CA vouches for it. The client learns its
 * SHA-256 fingerprint once (`vmkit remote add`, shown to the user or accepted with
 * --accept-certificate) and from then on talks to that remote only when the server presents
 * exactly that certificate. The check runs on the TLS connection before the request — and so
 * the token — is written to it.
 */

/** `AB:CD:…`, as node's X509Certificate.fingerprint256 and tls' getPeerCertificate() spell it. */
export function normalizeFingerprint(fp: string): string {
  const hex = fp.replace(/[^0-9a-f]/gi, '').toUpperCase();
  return hex.match(/../g)?.join(':') ?? '';
}

export function certificateChanged(target: string, pinned: string, presented: string, remoteName?: string): VmkitError {
  const who = remoteName ? `remote "${remoteName}"` : target;
  const repin = remoteName ? `vmkit remote remove ${remoteName} && vmkit remote add ${remoteName} ${target}` : 'vmkit remote remove NAME && vmkit remote add NAME URL';
  return new VmkitError('VMKIT_CERTIFICATE_CHANGED', `The HTTPS certificate of ${who} changed: pinned ${pinned}, presented ${presented}. Nothing was sent.`, {
    hint: `Someone may be intercepting the connection. If the daemon's certificate was replaced on purpose (compare with the fingerprint its log shows at start), re-pin it: ${repin}`,
    details: { pinned, presented },
  });
}

/** An https agent that hands out a connection only once the server showed the pinned certificate. */
export class PinnedAgent extends https.Agent {
  constructor(
    readonly fingerprint: string,
    private readonly remoteName?: string,
  ) {
    super({ keepAlive: false });
  }

  override createConnection(options: http.RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | undefined {
    // No CA to check against: the fingerprint is the check (below, before any byte is sent).
    const socket = tls.connect({ ...(options as tls.ConnectionOptions), rejectUnauthorized: false });
    const done = (err: Error | null, s?: Duplex) => callback?.(err, s as Duplex);
    const fail = (err: Error) => done(err);
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      socket.off('error', fail);
      const presented = normalizeFingerprint(socket.getPeerCertificate().fingerprint256 ?? '');
      if (presented !== normalizeFingerprint(this.fingerprint)) {
        socket.destroy();
        done(certificateChanged(`https://${options.host ?? ''}:${options.port ?? ''}`, normalizeFingerprint(this.fingerprint), presented, this.remoteName));
        return;
      }
      done(null, socket);
    });
    return undefined;
  }
}

/** The CLI's transport to a pinned https remote (node:http, like nodeHttpTransport). */
export function pinnedTransport(base: URL, fingerprint: string, remoteName?: string): Transport {
  const agent = new PinnedAgent(fingerprint, remoteName);
  return nodeTransport(base.origin, (method, path, options: SendOptions) => {
    const url = new URL(path, base);
    const signal =
      options.timeoutMs === undefined
        ? options.signal
        : options.signal
          ? AbortSignal.any([options.signal, AbortSignal.timeout(options.timeoutMs)])
          : AbortSignal.timeout(options.timeoutMs);
    const req: https.RequestOptions = { method, headers: options.headers, signal, agent };
    return https.request(url, req);
  });
}

export interface PresentedCertificate {
  fingerprint: string;
  subject: string;
  issuer: string;
  validTo: string;
  /** Whether a CA this machine trusts vouches for it (rarely, for a daemon's own certificate). */
  trusted: boolean;
}

/** Connects to an https URL and reads the certificate it presents (nothing is sent). */
export function presentedCertificate(url: URL, timeoutMs = 10_000): Promise<PresentedCertificate> {
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const socket = tls.connect({ host, port: Number(url.port || 443), servername: /^[\d.:]+$/.test(host) ? undefined : host, rejectUnauthorized: false, timeout: timeoutMs });
    socket.once('timeout', () => socket.destroy(Object.assign(new Error(`no TLS answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      const name = (x: unknown) =>
        typeof x === 'object' && x !== null
          ? Object.entries(x)
              .map(([k, v]) => `${k}=${String(v)}`)
              .join(', ')
          : '';
      resolve({
        fingerprint: normalizeFingerprint(cert.fingerprint256 ?? ''),
        subject: name(cert.subject),
        issuer: name(cert.issuer),
        validTo: cert.valid_to,
        trusted: socket.authorized,
      });
      socket.end();
    });
  });
}
