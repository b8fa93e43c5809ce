import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { vmkitError } from '../errors.js';

/**
 * How a daemon talks to a remote repository: node:http(s), because every hop has to be
 * checked. A repository URL is attacker-chosen (anyone with `repo add` rights, or an index
 * that redirects): the address every connection really goes to is checked at connect time
 * (the DNS answer, not only the name — no rebinding between check and use), loopback,
 * link-local, private and other non-public addresses are refused unless the remote was added
 * with `--allow-private`, a redirect is followed only to the same origin, and bodies are read
 * under a cap: never more than the cap is held.
 */

const BLOCKED = new net.BlockList();
for (const [net4, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  BLOCKED.addSubnet(net4, bits, 'ipv4');
for (const [net6, bits] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
  ['64:ff9b::', 96],
] as const)
  BLOCKED.addSubnet(net6, bits, 'ipv6');

/** Loopback, link-local, private, shared, multicast, unspecified or reserved: not a public repository's address. */
export function isNonPublicAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return isNonPublicAddress(mapped[1]!);
  const family = net.isIP(address);
  if (family === 4) return BLOCKED.check(address, 'ipv4');
  if (family === 6) return BLOCKED.check(address, 'ipv6');
  return true;
}

function forbidden(what: string): never {
  throw vmkitError('VMKIT_REPO_ADDRESS_FORBIDDEN', what, {
    hint: 'A repository on this machine or a private network needs "vmkit repo add NAME URL --allow-private" (only for repositories you trust).',
  });
}

export function tooLarge(what: string, cap: number): never {
  throw vmkitError('VMKIT_REPO_TOO_LARGE', `${what} is larger than the ${cap} bytes allowed; it was not read further.`, {
    hint: 'For an index: VMKIT_REPO_MAX_INDEX_MIB raises the cap (default 16). For a blob: the index lists its size; VMKIT_MAX_IMAGE_GIB caps images.',
  });
}

export interface RepoRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: Readable | Buffer | string;
  signal?: AbortSignal;
  /** Connection + headers (the body is the caller's to time). */
  timeoutMs?: number;
  allowPrivate?: boolean;
}

const MAX_REDIRECTS = 5;

/** One request to a repository, redirects to the same origin followed; the response body is unread. */
export async function repoRequest(url: string, opts: RepoRequest = {}): Promise<http.IncomingMessage> {
  let target = new URL(url);
  const origin = target.origin;
  for (let hop = 0; ; hop++) {
    const res = await once(target, opts);
    const status = res.statusCode ?? 0;
    if (status < 300 || status >= 400 || status === 304) return res;
    res.resume();
    const location = res.headers.location;
    if (!location) return res;
    const next = new URL(location, target);
    if (next.origin !== origin) forbidden(`Repository ${origin} redirected to another origin (${next.origin}); redirects are followed only within one origin.`);
    if (hop >= MAX_REDIRECTS) forbidden(`Repository ${origin} redirected more than ${MAX_REDIRECTS} times.`);
    if (opts.body !== undefined) forbidden(`Repository ${origin} redirected an upload.`);
    target = next;
  }
}

function once(url: URL, opts: RepoRequest): Promise<http.IncomingMessage> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') forbidden(`${url.href} is not an http(s) URL.`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!opts.allowPrivate && net.isIP(host) && isNonPublicAddress(host)) forbidden(`Repository address ${host} is loopback, link-local or private.`);
  // Names are checked on the address the connection really uses.
  const lookup: net.LookupFunction = (hostname, options, cb) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return (cb as (e: Error) => void)(err);
      const list = addresses as dns.LookupAddress[];
      const bad = opts.allowPrivate ? undefined : list.find((a) => isNonPublicAddress(a.address));
      if (bad) {
        const e = vmkitError('VMKIT_REPO_ADDRESS_FORBIDDEN', `Repository host ${hostname} resolves to ${bad.address} (loopback, link-local or private).`, {
          hint: 'A repository on this machine or a private network needs "vmkit repo add NAME URL --allow-private" (only for repositories you trust).',
        });
        return (cb as (e: Error) => void)(e);
      }
      if ((options as dns.LookupOptions).all) return (cb as (e: null, a: dns.LookupAddress[]) => void)(null, list);
      return cb(null, list[0]!.address, list[0]!.family);
    });
  };
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method: opts.method ?? 'GET', headers: opts.headers, signal: opts.signal, lookup, timeout: opts.timeoutMs ?? 15_000 });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 15_000} ms`)));
    req.on('response', (res) => {
      req.setTimeout(0);
      resolve(res);
    });
    req.on('error', (err: Error & { cause?: unknown }) => reject(err));
    const body = opts.body;
    if (body === undefined) req.end();
    else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body);
    else {
      body.on('error', (e) => req.destroy(e));
      // With "Expect: 100-continue" the body waits for the server's go: a refusal (too
      // large, no token) arrives as an answer instead of a connection reset mid-upload.
      const expect = Object.entries(opts.headers ?? {}).some(([k, v]) => k.toLowerCase() === 'expect' && /100-continue/i.test(v));
      if (!expect) body.pipe(req);
      else {
        req.once('continue', () => body.pipe(req));
        req.once('response', () => body.destroy());
        // The headers go now; the body after the server's 100 Continue.
        req.flushHeaders();
      }
    }
  });
}

/** Reads a whole response body, refusing (and dropping the connection) past `cap` bytes. */
export async function readCapped(res: http.IncomingMessage, cap: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > cap) {
    res.destroy();
    tooLarge(`${what} (${declared} bytes declared)`, cap);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    if (n > cap) {
      res.destroy();
      tooLarge(what, cap);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}
