import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { Image } from '../domain/types.js';
import { vmkitError } from '../errors.js';
import { ForwardingService, type ForwardingCluster, type IncomingRequest } from './forwarding.js';

interface Sent {
  host: string;
  method: string;
  path: string;
  body: unknown;
  headers: Record<string, string>;
}

/** A joined host "h1" whose peers answer with `answer` (JSON, or raw bytes); every request is recorded. */
function fakeCluster(owners: Record<string, string>, answer: { status: number; body: unknown; contentType?: string }, joined = true): { cluster: ForwardingCluster; sent: Sent[] } {
  const sent: Sent[] = [];
  const cluster: ForwardingCluster = {
    joined,
    name: 'h1',
    requireJoined: () => {
      if (!joined) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'not joined');
    },
    owner: async (name) => (owners[name] ? { record: { host: owners[name] } } : undefined),
    place: async () => 'h3',
    host: async (name) => {
      if (!['h1', 'h2', 'h3'].includes(name)) throw vmkitError('VMKIT_HOST_NOT_FOUND', `no host ${name}`);
      return { name } as unknown as Awaited<ReturnType<ForwardingCluster['host']>>;
    },
    peer: async (host) => ({
      open: async (method, path, body, headers) => {
        let got: unknown = body;
        if (body !== undefined) {
          const chunks: Buffer[] = [];
          if (body instanceof Uint8Array || typeof body === 'string') chunks.push(Buffer.from(body));
          else for await (const c of body) chunks.push(Buffer.from(c));
          const raw = Buffer.concat(chunks);
          got = headers['content-type'] === 'application/json' ? JSON.parse(raw.toString('utf8')) : raw;
        }
        sent.push({ host, method, path, body: got, headers });
        const bytes = Buffer.isBuffer(answer.body) ? answer.body : Buffer.from(JSON.stringify(answer.body));
        return { status: answer.status, contentType: answer.contentType ?? 'application/json', body: Readable.from([bytes.subarray(0, 3), bytes.subarray(3)]) };
      },
    }),
  };
  return { cluster, sent };
}

async function bytesOf(body: Buffer | AsyncIterable<Uint8Array> | undefined): Promise<Buffer> {
  if (!body || Buffer.isBuffer(body)) return body ?? Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

const request = (method: string, url: string, body?: unknown, forwardedBy?: string): IncomingRequest => ({ method, url, body, forwardedBy });
const noImage = async (name: string): Promise<Image> => {
  throw vmkitError('VMKIT_IMAGE_NOT_FOUND', `no image ${name}`);
};

describe('ForwardingService', () => {
  it('handles everything here when the host has not joined a cluster', async () => {
    const { cluster, sent } = fakeCluster({ vm: 'h2' }, { status: 200, body: {} }, false);
    const f = new ForwardingService({ cluster, instances: { has: async () => false }, images: { get: noImage }, operations: { has: () => false } });
    assert.equal(await f.route(request('GET', '/1.0/instances/vm')), undefined);
    assert.deepEqual(sent, []);
  });

  it('forwards a request about an instance another host owns and relays the answer', async () => {
    const { cluster, sent } = fakeCluster({ vm: 'h2' }, { status: 404, body: { type: 'error' } });
    const f = new ForwardingService({ cluster, instances: { has: async () => false }, images: { get: noImage }, operations: { has: () => false } });
    const a = await f.route(request('GET', '/1.0/instances/vm/logs?tail=5'));
    assert.deepEqual(a && { status: a.status, host: a.host, text: (await bytesOf(a.body)).toString() }, { status: 404, host: 'h2', text: '{"type":"error"}' });
    assert.deepEqual(
      sent.map((s) => [s.host, s.method, s.path, s.headers['x-vmkit-forwarded-by']]),
      [['h2', 'GET', '/1.0/instances/vm/logs?tail=5', 'h1']],
    );
    // A local instance, an unowned one, and an already forwarded request stay here.
    const local = new ForwardingService({ cluster, instances: { has: async () => true }, images: { get: noImage }, operations: { has: () => false } });
    assert.equal(await local.route(request('GET', '/1.0/instances/vm')), undefined);
    assert.equal(await f.route(request('GET', '/1.0/instances/other')), undefined);
    assert.equal(await f.route(request('GET', '/1.0/instances/vm', undefined, 'h3')), undefined);
    assert.equal(sent.length, 1);
  });

  it('sends a create to its placed host without "target", and remembers the operation it started there', async () => {
    const op = { type: 'async', metadata: { id: 'op-1' } };
    const { cluster, sent } = fakeCluster({}, { status: 202, body: op });
    let localOps = false;
    const f = new ForwardingService({ cluster, instances: { has: async () => false }, images: { get: noImage }, operations: { has: () => localOps } });
    const a = await f.route(request('POST', '/1.0/instances', { name: 'vm', image: 'appliance', target: 'h2' }));
    assert.equal(a?.host, 'h2');
    assert.deepEqual(sent[0]!.body, { name: 'vm', image: 'appliance' });
    // Placement when no target is named (the image is unknown here: default memory).
    assert.equal((await f.route(request('POST', '/1.0/instances', { name: 'vm2', image: 'appliance' })))?.host, 'h3');
    // Waits on that operation go to the host that last answered with it (h3), unless the id is local.
    assert.equal((await f.route(request('GET', '/1.0/operations/op-1/wait?timeout=5')))?.host, 'h3');
    assert.equal(await f.route(request('GET', '/1.0/operations/unknown')), undefined);
    localOps = true;
    assert.equal(await f.route(request('GET', '/1.0/operations/op-1')), undefined);
    // A create for this host stays here.
    assert.equal(await f.route(request('POST', '/1.0/instances', { name: 'vm3', image: 'appliance', target: 'h1' })), undefined);
  });

  it('streams raw bodies both ways byte for byte: a file pushed into a guest, a file pulled from one', async () => {
    const binary = Buffer.from([0, 255, 254, 0xc3, 0x28, 10, 13, 0x80, 1, 2, 3]);
    const { cluster, sent } = fakeCluster({ vm: 'h2' }, { status: 200, body: binary, contentType: 'application/octet-stream' });
    const f = new ForwardingService({ cluster, instances: { has: async () => false }, images: { get: noImage }, operations: { has: () => false } });
    const pulled = await f.route(request('GET', '/1.0/instances/vm/files?path=%2Fbin%2Fx'));
    assert.ok(pulled && !Buffer.isBuffer(pulled.body), 'a non-JSON answer is streamed, not read whole');
    assert.deepEqual(await bytesOf(pulled.body), binary, 'bytes not decoded as text on the way');
    const upload = {
      ...request('PUT', '/1.0/instances/vm/files?path=%2Ftmp%2Fy', Readable.from([binary])),
      contentType: 'application/octet-stream',
      contentLength: String(binary.length),
    };
    await f.route(upload);
    assert.deepEqual(sent[1]!.body, binary);
    assert.equal(sent[1]!.headers['content-type'], 'application/octet-stream');
    assert.equal(sent[1]!.headers['content-length'], String(binary.length));
  });

  it("refuses an unknown target host with the cluster's own error", async () => {
    const { cluster } = fakeCluster({}, { status: 202, body: {} });
    const f = new ForwardingService({ cluster, instances: { has: async () => false }, images: { get: noImage }, operations: { has: () => false } });
    await assert.rejects(f.route(request('POST', '/1.0/instances', { name: 'vm', image: 'appliance', target: 'h9' })), { code: 'VMKIT_HOST_NOT_FOUND' });
  });
});
