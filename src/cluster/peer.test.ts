import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeerClient } from './peer.js';

type Handler = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void;

async function withPeer(handler: Handler, fn: (peer: PeerClient) => Promise<void>): Promise<void> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await fn(new PeerClient(`127.0.0.1:${(server.address() as AddressInfo).port}`, 'tok', 'h2'));
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

const json = (res: http.ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

test('peer requests carry the cluster token and return the metadata', () =>
  withPeer(
    (req, body, res) => json(res, 200, { type: 'sync', status_code: 200, metadata: { auth: req.headers.authorization, got: JSON.parse(body.toString()) } }),
    async (peer) => assert.deepEqual(await peer.request('POST', '/1.0/internal/migrations/check', { a: 1 }), { auth: 'Bearer tok', got: { a: 1 } }),
  ));

test("a peer's error keeps its code (even one this host does not know), hint and details", () =>
  withPeer(
    (_req, _body, res) => json(res, 409, { type: 'error', status_code: 409, error: { code: 'VMKIT_FROM_THE_FUTURE', message: 'no', hint: 'h', details: { x: 1 } } }),
    async (peer) => await assert.rejects(peer.request('GET', '/x'), { code: 'VMKIT_FROM_THE_FUTURE', message: 'no', hint: 'h', details: { x: 1 } }),
  ));

test('an answer that is not a vmkit error, and a peer that does not answer in time, are VMKIT_HOST_UNREACHABLE', () =>
  withPeer(
    (req, _body, res) => (req.url === '/slow' ? setTimeout(() => json(res, 200, {}), 2000) : res.writeHead(502).end('bad gateway')),
    async (peer) => {
      await assert.rejects(peer.request('GET', '/x'), { code: 'VMKIT_HOST_UNREACHABLE', message: 'Cluster host "h2" answered 502: bad gateway' });
      await assert.rejects(peer.request('GET', '/slow', undefined, 100), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'VMKIT_HOST_UNREACHABLE');
        assert.match(err.message, /^Cluster host "h2" \(127\.0\.0\.1:\d+\) does not answer: The operation was aborted due to timeout\.$/);
        return true;
      });
    },
  ));

test('putFile streams the file with its length and reports progress; a refusal is thrown', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-peer-'));
  const file = join(dir, 'disk.qcow2');
  writeFileSync(file, Buffer.alloc(300_000, 7));
  let seen: { length?: string; type?: string; bytes: number } | undefined;
  await withPeer(
    (req, body, res) => {
      if (req.url === '/refuse') return json(res, 400, { type: 'error', status_code: 400, error: { code: 'VMKIT_INVALID_ARGUMENT', message: 'nope' } });
      seen = { length: req.headers['content-length'], type: req.headers['content-type'], bytes: body.length };
      json(res, 200, { type: 'sync', status_code: 200, metadata: {} });
    },
    async (peer) => {
      const progress: number[] = [];
      await peer.putFile('/disk', file, (done) => progress.push(done));
      assert.deepEqual(seen, { length: '300000', type: 'application/octet-stream', bytes: 300_000 });
      assert.equal(progress.at(-1), 300_000);
      await assert.rejects(peer.putFile('/refuse', file), { code: 'VMKIT_INVALID_ARGUMENT', message: 'nope' });
    },
  ).finally(() => rmSync(dir, { recursive: true, force: true }));
});

test('send returns the raw answer for forwarding', () =>
  withPeer(
    (req, _body, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(`by ${req.headers['x-vmkit-forwarded-by']}`),
    async (peer) => {
      const res = await peer.send('GET', '/1.0/instances/x/logs', undefined, 1000, { 'x-vmkit-forwarded-by': 'h1' });
      assert.deepEqual({ status: res.status, contentType: res.contentType, text: res.body.toString() }, { status: 200, contentType: 'text/plain', text: 'by h1' });
    },
  ));
