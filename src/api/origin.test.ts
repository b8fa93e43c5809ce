import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi } from './server.js';
import { makeTestContext } from './test-context.test-support.js';
import { peerInstance, prepareRequest } from '../cluster/migration/payload.test-support.js';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { createCa, issueCertificate } from '../host/pki.js';
import type { SqliteStore } from '../store/sqlite.js';

const AUTH = { authorization: 'Bearer secret-token-for-tests' };

/** Who may name host paths, and what a peer may name: through inject(), real managers. */
describe('host paths: local callers only; peer payloads validated', () => {
  let top: string;
  let dir: string;
  let local: FastifyInstance;
  let remote: FastifyInstance;
  /** The peer listener (mutual TLS, the only one serving /1.0/internal/…) and a member's credentials. */
  let peer: FastifyInstance;
  let peerPort = 0;
  let member: { ca: Buffer; cert: Buffer; key: Buffer };
  let store: SqliteStore;

  /** A request to the peer listener as a member host would make it (its CA-signed certificate). */
  const peerInject = (o: { method: string; url: string; headers?: Record<string, string>; payload?: unknown }) =>
    new Promise<{ statusCode: number; body: string; json(): unknown }>((resolve, reject) => {
      const body = o.payload === undefined ? undefined : Buffer.isBuffer(o.payload) ? o.payload : Buffer.from(JSON.stringify(o.payload));
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      if (body && !headers['content-type']) headers['content-type'] = 'application/json';
      const req = https.request({ host: '127.0.0.1', port: peerPort, method: o.method, path: o.url, headers, ...member, checkServerIdentity: () => undefined }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body: text, json: () => JSON.parse(text) as unknown }));
      });
      req.on('error', reject);
      req.end(body);
    });

  before(async () => {
    top = mkdtempSync(join(tmpdir(), 'vmkit-origin-'));
    dir = join(top, 'data');
    mkdirSync(dir);
    const made = makeTestContext(dir);
    store = made.store;
    local = await buildApi(made.ctx, { origin: 'local' });
    remote = await buildApi(made.ctx, { token: 'secret-token-for-tests' });
    const pki = join(top, 'pki');
    const ca = await createCa({ cert: join(pki, 'ca.pem'), key: join(pki, 'ca.key') }, 'test cluster CA');
    const host = await issueCertificate(ca, { cert: join(pki, 'h.pem'), key: join(pki, 'h.key') }, { commonName: 'h1', names: ['127.0.0.1'] });
    member = { ca: readFileSync(ca.cert), cert: readFileSync(host.cert), key: readFileSync(host.key) };
    peer = await buildApi(made.ctx, { peer: { key: member.key, cert: Buffer.concat([member.cert, member.ca]), ca: member.ca }, origin: 'remote' });
    await peer.listen({ host: '127.0.0.1', port: 0 });
    peerPort = (peer.server.address() as { port: number }).port;
    writeFileSync(join(top, 'host-file.raw'), Buffer.alloc(1024 * 1024));
  });
  after(async () => {
    await local.close();
    await remote.close();
    await peer.close();
    await store.close();
    rmSync(top, { recursive: true, force: true });
  });

  it('a remote caller cannot import from a host path: 403, no operation, no image', async () => {
    const r = await remote.inject({ method: 'POST', url: '/1.0/images', headers: AUTH, payload: { source: join(top, 'host-file.raw'), format: 'raw', name: 'stolen' } });
    assert.equal(r.statusCode, 403);
    const err = (r.json() as { error: { code: string; hint: string } }).error;
    assert.equal(err.code, 'VMKIT_FORBIDDEN');
    assert.match(err.hint, /upload/);
    const ops = (await local.inject({ method: 'GET', url: '/1.0/operations' })).json() as { metadata: unknown[] };
    assert.equal(ops.metadata.length, 0);
    const images = (await local.inject({ method: 'GET', url: '/1.0/images' })).json() as { metadata: unknown[] };
    assert.equal(images.metadata.length, 0);
  });

  it('a remote caller cannot export to a host path: 403 before the image is even looked up, nothing written', async () => {
    const target = join(top, 'written-by-remote.ova');
    const r = await remote.inject({ method: 'POST', url: '/1.0/images/any/export', headers: AUTH, payload: { path: target } });
    assert.equal(r.statusCode, 403);
    assert.equal((r.json() as { error: { code: string } }).error.code, 'VMKIT_FORBIDDEN');
    assert.equal(existsSync(target), false);
  });

  it('a local caller still may (the request reaches the image service)', async () => {
    const r = await local.inject({ method: 'POST', url: '/1.0/images/nope/export', payload: { path: join(top, 'x.ova') } });
    assert.equal((r.json() as { error: { code: string } }).error.code, 'VMKIT_IMAGE_NOT_FOUND');
    const imp = await local.inject({ method: 'POST', url: '/1.0/images', payload: { source: join(top, 'missing.raw'), format: 'raw' } });
    assert.equal(imp.statusCode, 202);
  });

  it('the download route answers for any caller (404 for a missing image, bad format refused)', async () => {
    const r = await remote.inject({ method: 'GET', url: '/1.0/images/nope/export?format=ova', headers: AUTH });
    assert.equal((r.json() as { error: { code: string } }).error.code, 'VMKIT_IMAGE_NOT_FOUND');
    const bad = await remote.inject({ method: 'GET', url: '/1.0/images/nope/export?format=exe', headers: AUTH });
    assert.equal(bad.statusCode, 400);
  });

  const instance = peerInstance;
  const prepare = prepareRequest;

  it('peer payloads with ../ ids, absolute or dotted disk files are refused; nothing is created or removed', async () => {
    const victim = join(top, 'victim');
    mkdirSync(victim);
    writeFileSync(join(victim, 'keep'), 'x');
    const before = readdirSync(top).sort();
    const bad = [
      prepare(instance({ id: '../../x' })),
      prepare(instance({ id: '../victim' })),
      prepare(instance({ id: '/etc' })),
      prepare(instance({ name: '../x' })),
      prepare(instance({ disks: [{ name: 'root', file: '../../victim/keep', format: 'qcow2' }] })),
      prepare(instance({ disks: [{ name: '../root', file: 'root.qcow2', format: 'qcow2' }] })),
      prepare(instance(), { id: '../../m' }),
      prepare(instance(), { unexpected: true }),
    ];
    for (const body of bad) {
      for (const url of ['/1.0/internal/migrations', '/1.0/internal/migrations/check']) {
        const payload = url.endsWith('check') ? { instance: body.instance, mode: 'cold', sharedDisks: false, source: 'a' } : body;
        const r = await peerInject({ method: 'POST', url, headers: AUTH, payload });
        if (url.endsWith('check') && body.instance === undefined) continue;
        // The check route's payload here is valid when only the migration id or an extra top-level field is wrong.
        if (url.endsWith('check') && (body.id === '../../m' || 'unexpected' in body)) continue;
        assert.equal(r.statusCode, 400, `${url} ${JSON.stringify(body)}: ${r.body}`);
        assert.equal((r.json() as { error: { code: string } }).error.code, 'VMKIT_INVALID_ARGUMENT');
      }
    }
    for (const [method, url] of [
      ['GET', '/1.0/internal/migrations/..%2F..%2Fx'],
      ['DELETE', '/1.0/internal/migrations/..%2F..%2Fx'],
      ['POST', '/1.0/internal/migrations/..%2Fx/finish'],
      ['PUT', '/1.0/internal/migrations/abc/disks/..%2F..%2Fetc'],
    ] as const) {
      const r = await peerInject({
        method,
        url,
        headers: { ...AUTH, ...(method === 'PUT' ? { 'content-type': 'application/octet-stream' } : {}) },
        payload: method === 'POST' ? { ownerRevision: 1 } : method === 'PUT' ? Buffer.from('data') : undefined,
      });
      assert.equal(r.statusCode, 400, `${method} ${url}: ${r.body}`);
    }
    assert.deepEqual(readdirSync(top).sort(), before);
    assert.equal(existsSync(join(victim, 'keep')), true);
    assert.deepEqual(existsSync(join(dir, 'instances')) ? readdirSync(join(dir, 'instances')) : [], []);
  });

  it('deleting an instance removes its own folder only, never a path its row names outside', async () => {
    const victim = join(top, 'victim-of-delete');
    mkdirSync(victim);
    writeFileSync(join(victim, 'disk.qcow2'), 'x');
    const own = join(dir, 'instances', 'aaaabbbbcccc');
    mkdirSync(own, { recursive: true });
    writeFileSync(join(own, 'root.qcow2'), 'x');
    // A row as a hostile peer (or an old bug) could have left it: an absolute disk outside any shared folder.
    await store.put('instances', 'doomed', {
      ...instance({ id: 'aaaabbbbcccc', name: 'doomed', disks: [{ name: 'root', file: join(victim, 'disk.qcow2'), format: 'qcow2' }] }),
    });
    const r = await local.inject({ method: 'DELETE', url: '/1.0/instances/doomed' });
    assert.equal(r.statusCode, 202, r.body);
    const op = (r.json() as { metadata: { id: string } }).metadata;
    const done = (await local.inject({ method: 'GET', url: `/1.0/operations/${op.id}/wait?timeout=30` })).json() as { metadata: { status: string } };
    assert.equal(done.metadata.status, 'success', JSON.stringify(done));
    assert.equal(existsSync(own), false, 'its own folder is gone');
    assert.equal(existsSync(join(victim, 'disk.qcow2')), true, 'the outside file is kept');
    // An id that is not one folder name: nothing is removed at all.
    await store.put('instances', 'evil', { ...instance({ id: '..', name: 'evil' }) });
    const e = await local.inject({ method: 'DELETE', url: '/1.0/instances/evil' });
    const eop = (e.json() as { metadata: { id: string } }).metadata;
    const edone = (await local.inject({ method: 'GET', url: `/1.0/operations/${eop.id}/wait?timeout=30` })).json() as { metadata: { status: string; error?: { code: string } } };
    assert.equal(edone.metadata.status, 'failure');
    assert.equal(edone.metadata.error?.code, 'VMKIT_PATH_FORBIDDEN');
    assert.equal(existsSync(join(dir, 'instances')), true, 'the instances folder is still there');
    assert.equal(existsSync(join(dir, 'vmkit.db')) || existsSync(join(dir, 'db')), true);
  });
});
