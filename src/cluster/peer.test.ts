import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueCertificate } from '../host/pki.js';
import { PeerClient } from './peer.js';
import type { TlsMaterial } from './pki.js';

type Handler = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void;

// A cluster CA, the peer "h2" (server) and this host "h1" (client), made once.
let pkiDir: string;
let h1: TlsMaterial;
let h2: TlsMaterial;
let stranger: TlsMaterial;

before(async () => {
  pkiDir = mkdtempSync(join(tmpdir(), 'vmkit-peer-pki-'));
  const ca = await createCa({ cert: join(pkiDir, 'ca.pem'), key: join(pkiDir, 'ca.key') }, 'test CA');
  const other = await createCa({ cert: join(pkiDir, 'o.pem'), key: join(pkiDir, 'o.key') }, 'other CA');
  const load = (p: { cert: string; key: string }, caPath: string): TlsMaterial => ({ ca: readFileSync(caPath), cert: readFileSync(p.cert), key: readFileSync(p.key) });
  h1 = load(await issueCertificate(ca, { cert: join(pkiDir, 'h1.pem'), key: join(pkiDir, 'h1.key') }, { commonName: 'h1', names: ['127.0.0.1', 'h1'] }), ca.cert);
  h2 = load(await issueCertificate(ca, { cert: join(pkiDir, 'h2.pem'), key: join(pkiDir, 'h2.key') }, { commonName: 'h2', names: ['127.0.0.1', 'h2'] }), ca.cert);
  stranger = load(await issueCertificate(other, { cert: join(pkiDir, 's.pem'), key: join(pkiDir, 's.key') }, { commonName: 'h1', names: ['127.0.0.1'] }), ca.cert);
});

after(() => rmSync(pkiDir, { recursive: true, force: true }));

async function withPeer(handler: Handler, fn: (peer: PeerClient, address: string) => Promise<void>, me: () => TlsMaterial = () => h1): Promise<void> {
  // The peer listener's TLS: its certificate, client certificates of the CA required.
  const server = https.createServer({ key: h2.key, cert: h2.cert, ca: h2.ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    await fn(new PeerClient(address, me(), 'h2'), address);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

const json = (res: http.ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

test("peer requests show this host's certificate (mutual TLS) and return the metadata; public paths go under the forward prefix", () =>
  withPeer(
    (req, body, res) =>
      json(res, 200, {
        type: 'sync',
        status_code: 200,
        metadata: {
          who: (req.socket as TLSSocket).getPeerCertificate().subject.CN,
          url: req.url,
          auth: req.headers.authorization,
          got: body.length ? JSON.parse(body.toString()) : null,
        },
      }),
    async (peer) => {
      assert.deepEqual(await peer.request('POST', '/1.0/internal/migrations/check', { a: 1 }), { who: 'h1', url: '/1.0/internal/migrations/check', got: { a: 1 } });
      assert.deepEqual(await peer.request('GET', '/1.0/instances?local=true'), { who: 'h1', url: '/1.0/internal/forward/1.0/instances?local=true', got: null });
    },
  ));

test('a peer whose certificate names another host, or a client of another CA, gets no answer', async () => {
  // This host expects "h3" at that address: h2's certificate is refused by the client.
  await withPeer(
    (_req, _body, res) => json(res, 200, { type: 'sync', status_code: 200, metadata: {} }),
    async (_peer, address) => {
      await assert.rejects(new PeerClient(address, h1, 'h3').request('GET', '/1.0/internal/migrations/x'), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'VMKIT_HOST_UNREACHABLE');
        assert.match(err.message, /not "h3"'s/);
        return true;
      });
    },
  );
  // A client certificate from another CA: the peer's TLS handshake refuses it.
  await withPeer(
    (_req, _body, res) => json(res, 200, { type: 'sync', status_code: 200, metadata: {} }),
    async (peer) => await assert.rejects(peer.request('GET', '/1.0/internal/migrations/x'), { code: 'VMKIT_HOST_UNREACHABLE' }),
    () => stranger,
  );
});

test("a peer's error keeps its code (even one this host does not know), hint and details", () =>
  withPeer(
    (_req, _body, res) => json(res, 409, { type: 'error', status_code: 409, error: { code: 'VMKIT_FROM_THE_FUTURE', message: 'no', hint: 'h', details: { x: 1 } } }),
    async (peer) => await assert.rejects(peer.request('GET', '/x'), { code: 'VMKIT_FROM_THE_FUTURE', message: 'no', hint: 'h', details: { x: 1 } }),
  ));

test('an answer that is not a vmkit error, and a peer that does not answer in time, are VMKIT_HOST_UNREACHABLE', () =>
  withPeer(
    (req, _body, res) => (req.url === '/1.0/internal/forward/slow' ? setTimeout(() => json(res, 200, {}), 2000) : res.writeHead(502).end('bad gateway')),
    async (peer) => {
      await assert.rejects(peer.request('GET', '/x'), { code: 'VMKIT_HOST_UNREACHABLE', message: 'Cluster host "h2" answered 502: bad gateway' });
      await assert.rejects(peer.request('GET', '/slow', undefined, 100), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'VMKIT_HOST_UNREACHABLE');
        assert.match(err.message, /^Cluster host "h2" \(127\.0\.0\.1:\d+\) does not answer: no answer in time\.$/);
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
      if (req.url === '/1.0/internal/forward/refuse') return json(res, 400, { type: 'error', status_code: 400, error: { code: 'VMKIT_INVALID_ARGUMENT', message: 'nope' } });
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

test('open streams the raw answer for forwarding (bytes as they are, headers passed on)', () =>
  withPeer(
    (req, body, res) =>
      res
        .writeHead(200, { 'content-type': 'application/octet-stream' })
        .end(Buffer.concat([Buffer.from(`by ${req.headers['x-vmkit-forwarded-by']} `), body, Buffer.from([0xff, 0])])),
    async (peer) => {
      const res = await peer.open(
        'PUT',
        '/1.0/instances/x/files',
        Buffer.from([0x80, 0xc3]),
        { 'x-vmkit-forwarded-by': 'h1', 'content-type': 'application/octet-stream', 'content-length': '2' },
        1000,
      );
      const chunks: Buffer[] = [];
      for await (const c of res.body) chunks.push(Buffer.from(c));
      assert.equal(res.status, 200);
      assert.equal(res.contentType, 'application/octet-stream');
      assert.deepEqual(Buffer.concat(chunks), Buffer.concat([Buffer.from('by h1 '), Buffer.from([0x80, 0xc3, 0xff, 0])]));
    },
  ));
