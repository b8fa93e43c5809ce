import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { Value } from '@sinclair/typebox/value';
import { buildApi } from './server.js';
import { makeTestContext } from './test-context.test-support.js';
import { typeboxValidatorCompiler } from './validation.js';
import type { SqliteStore } from '../store/sqlite.js';
import { CreateInstanceRequestSchema, MigrateRequestSchema, StateChangeRequestSchema } from '../wire/requests.js';

type ErrorAnswer = { error: { code: string; message: string } };

/** Request bodies, params and query strings are checked by TypeBox against the wire schemas. */
describe('request validation (TypeBox)', () => {
  let dir: string;
  let app: FastifyInstance;
  let store: SqliteStore;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-validation-'));
    const made = makeTestContext(dir);
    store = made.store;
    app = await buildApi(made.ctx);
  });
  after(async () => {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object });

  it('refuses a body of the wrong shape with VMKIT_INVALID_ARGUMENT naming the field', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ name: 'x' }, /body\/image/],
      [{ name: 'x', image: 'appliance', cpus: 'two' }, /body\/cpus/],
      [{ name: 'x', image: 'appliance', cpus: 1.5 }, /body\/cpus/],
      [{ name: 'x', image: 'appliance', colour: 'blue' }, /body\/colour/],
      [{ name: 'x', image: 'appliance', nics: [{ model: 'ne2000' }] }, /body\/nics\/0\/model must be one of virtio-net, e1000, rtl8139/],
      [{ name: 'x', image: 'appliance', forwards: [{ hostPort: 8080 }] }, /body\/forwards\/0\/guestPort/],
    ];
    for (const [payload, message] of cases) {
      const r = await post('/1.0/instances', payload);
      assert.equal(r.statusCode, 400, JSON.stringify(payload));
      const { error } = r.json() as ErrorAnswer;
      assert.equal(error.code, 'VMKIT_INVALID_ARGUMENT', JSON.stringify(payload));
      assert.match(error.message, message);
    }
  });

  it('refuses a missing body, and a number sent as a string in a body', async () => {
    const none = await app.inject({ method: 'PUT', url: '/1.0/instances/x/state' });
    assert.equal((none.json() as ErrorAnswer).error.code, 'VMKIT_INVALID_ARGUMENT');
    const text = await app.inject({ method: 'PUT', url: '/1.0/instances/x/state', payload: { action: 'stop', timeout: '5' } });
    assert.match((text.json() as ErrorAnswer).error.message, /body\/timeout/);
    const bad = await app.inject({ method: 'PUT', url: '/1.0/instances/x/state', payload: { action: 'explode' } });
    assert.match((bad.json() as ErrorAnswer).error.message, /body\/action must be one of start, stop, restart, pause, resume, suspend/);
  });

  it('lets a valid body through to the service (which answers for the instance)', async () => {
    const r = await app.inject({ method: 'PUT', url: '/1.0/instances/nope/state', payload: { action: 'stop', force: true, timeout: 5 } });
    assert.equal((r.json() as ErrorAnswer).error.code, 'VMKIT_INSTANCE_NOT_FOUND');
  });

  it('converts query strings and path parameters to the schema types, and refuses what does not convert', async () => {
    const list = await app.inject({ method: 'GET', url: '/1.0/instances?local=true' });
    assert.equal(list.statusCode, 200);
    const notBool = await app.inject({ method: 'GET', url: '/1.0/instances?local=maybe' });
    assert.equal(notBool.statusCode, 400);
    assert.match((notBool.json() as ErrorAnswer).error.message, /query\/local/);
    const port = await app.inject({ method: 'DELETE', url: '/1.0/instances/nope/forwards/8080?proto=tcp' });
    assert.equal((port.json() as ErrorAnswer).error.code, 'VMKIT_INSTANCE_NOT_FOUND');
    const notPort = await app.inject({ method: 'DELETE', url: '/1.0/instances/nope/forwards/http' });
    assert.match((notPort.json() as ErrorAnswer).error.message, /params\/port/);
    const proto = await app.inject({ method: 'DELETE', url: '/1.0/instances/nope/forwards/8080?proto=sctp' });
    assert.match((proto.json() as ErrorAnswer).error.message, /query\/proto must be one of tcp, udp/);
  });

  it('checks limits and enums the wire schemas declare', () => {
    assert.ok(Value.Check(MigrateRequestSchema, { to: 'h2', mode: 'live', downtimeMs: 300 }));
    assert.ok(!Value.Check(MigrateRequestSchema, { to: 'h2', downtimeMs: 0 }));
    assert.ok(!Value.Check(MigrateRequestSchema, { to: 'h2', mode: 'teleport' }));
    assert.ok(!Value.Check(StateChangeRequestSchema, { action: 'stop', timeout: -1 }));
    assert.ok(Value.Check(CreateInstanceRequestSchema, { name: 'a', image: 'b', nics: [{}], forwards: [{ hostPort: 1, guestPort: 2, proto: 'udp' }] }));
  });

  it('refuses, when the API is built, a route whose schema is plain JSON instead of TypeBox', async () => {
    const plain = Fastify();
    plain.setValidatorCompiler(typeboxValidatorCompiler);
    plain.post('/x', { schema: { body: { type: 'object' } } }, async () => 'ok');
    await assert.rejects(async () => plain.ready(), /POST \/x: the body schema is not a TypeBox schema/);
    await plain.close();
  });
});
