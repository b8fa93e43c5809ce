import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from './context.js';
import { buildApi } from './server.js';
import { generateOpenApi } from './openapi-gen.js';
import { makeTestContext } from './test-context.test-support.js';
import type { SqliteStore } from '../store/sqlite.js';

/** API tests through inject(): no sockets, real store and managers, no VM started. */
describe('REST API', () => {
  let dir: string;
  let app: FastifyInstance;
  let tokenApp: FastifyInstance;
  let store: SqliteStore;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-api-'));
    let ctx: ApiContext;
    ({ ctx, store } = makeTestContext(dir));
    app = await buildApi(ctx);
    tokenApp = await buildApi(ctx, { token: 'secret' });
  });
  after(async () => {
    await app.close();
    await tokenApp.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers sync documents', async () => {
    const r = await app.inject({ method: 'GET', url: '/1.0' });
    assert.equal(r.statusCode, 200);
    const body = r.json() as { type: string; metadata: { apiVersion: string; accel: string } };
    assert.equal(body.type, 'sync');
    assert.equal(body.metadata.apiVersion, '1.0');
    assert.equal(body.metadata.accel, 'tcg');
    const types = (await app.inject({ method: 'GET', url: '/1.0/types' })).json() as { metadata: Array<{ name: string }> };
    assert.ok(types.metadata.some((t) => t.name === 'small'));
  });

  it('answers errors with a stable code, status and hint', async () => {
    const r = await app.inject({ method: 'GET', url: '/1.0/instances/nope' });
    assert.equal(r.statusCode, 404);
    const body = r.json() as { type: string; error: { code: string; hint: string } };
    assert.equal(body.type, 'error');
    assert.equal(body.error.code, 'VMKIT_INSTANCE_NOT_FOUND');
    assert.ok(body.error.hint);
    const bad = await app.inject({ method: 'POST', url: '/1.0/instances', headers: { 'content-type': 'application/json' }, payload: '{oops' });
    assert.equal(bad.statusCode, 400);
    assert.equal((bad.json() as { error: { code: string } }).error.code, 'VMKIT_BAD_REQUEST');
    const invalid = await app.inject({ method: 'POST', url: '/1.0/instances', payload: { name: '../x', image: 'appliance' } });
    assert.equal(invalid.statusCode, 400);
    assert.equal((invalid.json() as { error: { code: string } }).error.code, 'VMKIT_NAME_INVALID');
    const noImage = await app.inject({ method: 'POST', url: '/1.0/instances', payload: { name: 'x', image: 'none' } });
    assert.equal((noImage.json() as { error: { code: string } }).error.code, 'VMKIT_IMAGE_NOT_FOUND');
  });

  it('requires the bearer token on token listeners', async () => {
    assert.equal((await tokenApp.inject({ method: 'GET', url: '/1.0' })).statusCode, 401);
    assert.equal((await tokenApp.inject({ method: 'GET', url: '/1.0', headers: { authorization: 'Bearer wrong' } })).statusCode, 401);
    assert.equal((await tokenApp.inject({ method: 'GET', url: '/1.0', headers: { authorization: 'Bearer secret' } })).statusCode, 200);
  });

  it('serves an OpenAPI document equal to the committed doc/openapi.json', async () => {
    const served = (await app.inject({ method: 'GET', url: '/1.0/openapi.json' })).json() as { paths: Record<string, unknown> };
    assert.ok(served.paths['/1.0/instances']);
    const committed = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'doc', 'openapi.json'), 'utf8');
    assert.equal(await generateOpenApi(), committed, 'doc/openapi.json is stale: run "npm run openapi"');
  });
});
