import type { Image } from '../domain/types.js';
import type { ClusterManager } from './cluster.js';
import { joinedCluster } from './support.js';
import type { RequestBody, StreamResponse } from '../client/transport.js';

/** A request as it came in, as much of it as forwarding needs. */
export interface IncomingRequest {
  method: string;
  /** Path and query string, as sent. */
  url: string;
  body: unknown;
  /** The x-vmkit-forwarded-by header: set, the request was forwarded here and stays here. */
  forwardedBy: string | undefined;
  /** The body's type and length as sent (a raw body — a file pushed into a guest — goes on as it came). */
  contentType?: string;
  contentLength?: string;
}

/**
 * Another host's answer, relayed as it is: JSON read whole (an operation it starts is
 * remembered), anything else — a file pulled from a guest, an image download, logs — streamed
 * through byte for byte, never held whole in memory nor decoded as text.
 */
export interface RelayedAnswer {
  status: number;
  contentType: string;
  /** The host that answered (sent back as x-vmkit-host). */
  host: string;
  body: Buffer | AsyncIterable<Uint8Array>;
}

/** What forwarding needs of the cluster manager (a ClusterManager; tests pass a fake). */
export interface ForwardingCluster extends Pick<ClusterManager, 'joined' | 'name' | 'requireJoined' | 'place' | 'host'> {
  owner(name: string): Promise<{ record: { host: string } } | undefined>;
  peer(name: string): Promise<{ open(method: string, path: string, body: RequestBody | undefined, headers: Record<string, string>, timeoutMs: number): Promise<StreamResponse> }>;
}

export interface ForwardingDeps {
  cluster: ForwardingCluster | undefined;
  instances: { has(name: string): Promise<boolean> };
  images: { get(name: string): Promise<Image> };
  operations: { has(id: string): boolean };
}

// An hour and a bit: operation waits (`/wait?timeout=`) may take up to an hour.
const FORWARD_TIMEOUT_MS = 3_700_000;

/**
 * Any host acts on any instance: a request about an instance another host owns, a create
 * placed on another host, or a wait on an operation another host runs is sent there and its
 * answer relayed. The operations of forwarded requests are remembered here (one service per
 * daemon, shared by every listener) so their polls reach the host that runs them.
 */
export class ForwardingService {
  /** Operation id → the host that runs it (operations of forwarded requests). */
  private readonly remoteOperations = new Map<string, string>();

  constructor(private readonly deps: ForwardingDeps) {}

  /** Where the request belongs: another host's answer, or undefined to handle it here. */
  async route(req: IncomingRequest): Promise<RelayedAnswer | undefined> {
    const cluster = this.deps.cluster;
    if (!cluster?.joined || req.forwardedBy) return undefined;
    const path = req.url.split('?')[0]!;
    const inst = /^\/1\.0\/instances\/([^/]+)(\/.*)?$/.exec(path);
    if (inst) {
      const host = await this.ownerElsewhere(decodeURIComponent(inst[1]!));
      return host ? this.forward(req, host) : undefined;
    }
    if (path === '/1.0/instances' && req.method === 'POST') {
      const body = req.body as { target?: string; image: string; memoryMiB?: number; name: string };
      let target = body.target;
      if (!target) {
        // The image may exist on other hosts only: placement then goes by the 256 MiB default.
        const image = await this.deps.images.get(body.image).catch(() => undefined);
        target = await cluster.place(body.image, body.memoryMiB ?? image?.defaults.memoryMiB ?? 256);
      }
      if (target === cluster.name) return undefined;
      const { target: _t, ...rest } = body;
      void _t;
      await cluster.host(target);
      return this.forward(req, target, rest);
    }
    const op = /^\/1\.0\/operations\/([^/]+)(\/wait)?$/.exec(path);
    if (op) {
      const host = this.remoteOperations.get(op[1]!);
      if (host && !this.deps.operations.has(op[1]!)) return this.forward(req, host);
    }
    return undefined;
  }

  /**
   * The other host that owns an instance this host does not have, or undefined (it is here,
   * nobody owns it, or ownership cannot be read: then it is answered here, where the
   * instance's absence gives a clear 404). Console WebSockets use it to bridge to the owner.
   */
  async ownerElsewhere(name: string): Promise<string | undefined> {
    const cluster = this.deps.cluster;
    if (!cluster?.joined) return undefined;
    if (await this.deps.instances.has(name)) return undefined;
    const owner = await cluster.owner(name).catch(() => undefined);
    return owner && owner.record.host !== cluster.name ? owner.record.host : undefined;
  }

  /** Sends the request as it came (or with `body`) to `host` and returns its answer. */
  async forward(req: IncomingRequest, host: string, body?: unknown): Promise<RelayedAnswer> {
    const cluster = joinedCluster(this.deps.cluster);
    const peer = await cluster.peer(host);
    const headers: Record<string, string> = { 'x-vmkit-forwarded-by': cluster.name! };
    const b = body ?? req.body;
    let payload: RequestBody | undefined;
    if (isStream(b)) {
      payload = b;
      headers['content-type'] = req.contentType ?? 'application/octet-stream';
      if (req.contentLength !== undefined) headers['content-length'] = req.contentLength;
    } else if (b !== undefined && b !== null) {
      payload = Buffer.from(JSON.stringify(b));
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    const res = await peer.open(req.method, req.url, payload, headers, FORWARD_TIMEOUT_MS);
    const contentType = res.contentType || 'application/json';
    if (!/\bjson\b/.test(contentType)) return { status: res.status, contentType, host, body: res.body };
    const chunks: Buffer[] = [];
    for await (const c of res.body) chunks.push(Buffer.from(c));
    const text = Buffer.concat(chunks);
    try {
      const j = JSON.parse(text.toString('utf8')) as { type?: string; metadata?: { id?: string } };
      if (j.type === 'async' && j.metadata?.id) this.remoteOperations.set(j.metadata.id, host);
    } catch {
      /* a JSON type with a body that is not: relayed as it is */
    }
    return { status: res.status, contentType, host, body: text };
  }
}

/** A body still arriving (a raw upload), not an object to send as JSON. */
function isStream(b: unknown): b is AsyncIterable<Uint8Array> {
  return typeof b === 'object' && b !== null && !Buffer.isBuffer(b) && typeof (b as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}
