import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from './context.js';
import { buildApi } from './server.js';
import { makeTestContext } from './test-context.test-support.js';
import type { SqliteStore } from '../store/sqlite.js';

/** POST /1.0/images/upload through inject(): a real qemu-img, the real import. */
describe('image upload', () => {
  let dir: string;
  let ctx: ApiContext;
  let app: FastifyInstance;
  let tokenApp: FastifyInstance;
  let store: SqliteStore;
  let qcow2: Buffer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-upload-'));
    mkdirSync(join(dir, 'data'), { recursive: true });
    ({ ctx, store } = makeTestContext(join(dir, 'data')));
    app = await buildApi(ctx);
    tokenApp = await buildApi(ctx, { token: 'secret' });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'tiny.qcow2'), '16M']);
    qcow2 = readFileSync(join(dir, 'tiny.qcow2'));
  });
  after(async () => {
    await app.close();
    await tokenApp.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const upload = (a: FastifyInstance, query: string, payload: Buffer, headers: Record<string, string> = {}) =>
    a.inject({ method: 'POST', url: `/1.0/images/upload?${query}`, headers: { 'content-type': 'application/octet-stream', ...headers }, payload });
  const leftovers = () => readdirSync(join(dir, 'data', 'images')).filter((f) => f.startsWith('.upload-'));
  const waitOp = async (id: string) => {
    for (let i = 0; i < 300; i++) {
      const op = ctx.operations.get(id);
      if (op.status !== 'pending' && op.status !== 'running') return op;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('operation did not end');
  };

  it('imports an uploaded qcow2 as an operation and removes the temporary file', async () => {
    const r = await upload(app, 'name=tiny&diskFormat=qcow2', qcow2);
    assert.equal(r.statusCode, 202, r.body);
    const body = r.json() as { metadata: { id: string; kind: string } };
    assert.equal(body.metadata.kind, 'image.import');
    const op = await waitOp(body.metadata.id);
    assert.equal(op.status, 'success', JSON.stringify(op.error));
    const image = await ctx.images.get('tiny');
    assert.equal(image.disks[0]?.format, 'qcow2');
    assert.equal(image.disks[0]?.virtualSize, 16 * 1024 * 1024);
    assert.deepEqual(leftovers(), []);
  });

  it('refuses a crafted file exactly as an import does, and still removes it', async () => {
    // Named .raw, but it starts with a qcow2 header: the untrusted-file check refuses it.
    const r = await upload(app, 'name=crafted&filename=crafted.raw', qcow2);
    assert.equal(r.statusCode, 202, r.body);
    const op = await waitOp((r.json() as { metadata: { id: string } }).metadata.id);
    assert.equal(op.status, 'failure');
    assert.equal(op.error?.code, 'VMKIT_IMAGE_FORMAT', JSON.stringify(op.error));
    await assert.rejects(ctx.images.get('crafted'));
    assert.deepEqual(leftovers(), []);
  });

  it('checks the query, the name and the size before importing anything', async () => {
    assert.equal((await upload(app, 'name=x&diskFormat=iso', qcow2)).statusCode, 400);
    assert.equal((await upload(app, 'name=Bad_Name&diskFormat=qcow2', qcow2)).json().error.code, 'VMKIT_NAME_INVALID');
    assert.equal((await upload(app, 'name=tiny&diskFormat=qcow2', qcow2)).statusCode, 409);
    // Neither a declared format nor a known extension: the import's own refusal.
    const unknown = await upload(app, 'name=anon&filename=disk.bin', qcow2);
    const op = await waitOp((unknown.json() as { metadata: { id: string } }).metadata.id);
    assert.equal(op.error?.code, 'VMKIT_IMAGE_FORMAT', JSON.stringify(op.error));
    const old = process.env.VMKIT_MAX_IMAGE_GIB;
    process.env.VMKIT_MAX_IMAGE_GIB = String(64 / 1024 ** 3); // 64 bytes
    try {
      const r = await upload(app, 'name=big&diskFormat=qcow2', qcow2);
      assert.equal(r.json().error.code, 'VMKIT_IMAGE_TOO_LARGE');
      // Without a Content-Length the cap applies while streaming.
      const s = await upload(app, 'name=big&diskFormat=qcow2', qcow2, { 'transfer-encoding': 'chunked' });
      assert.equal(s.json().error.code, 'VMKIT_IMAGE_TOO_LARGE', s.body);
    } finally {
      if (old === undefined) delete process.env.VMKIT_MAX_IMAGE_GIB;
      else process.env.VMKIT_MAX_IMAGE_GIB = old;
    }
    assert.deepEqual(leftovers(), []);
  });

  it('needs the token like every /1.0 route', async () => {
    assert.equal((await upload(tokenApp, 'name=t2&diskFormat=qcow2', qcow2)).statusCode, 401);
    const ok = await upload(tokenApp, 'name=t2&diskFormat=qcow2', qcow2, { authorization: 'Bearer secret' });
    assert.equal(ok.statusCode, 202, ok.body);
    await waitOp((ok.json() as { metadata: { id: string } }).metadata.id);
  });
});
