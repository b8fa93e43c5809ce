import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildApi } from './server.js';
import { makeTestContext } from './test-context.test-support.js';
import { fromOpenApiPath, ROUTE_ROLES, ruleFor, type RouteRule } from './roles.js';
import { TokenManager } from '../auth/tokens.js';
import { ROLES, roleAtLeast, type Role } from '../wire/auth.js';
import type { SqliteStore } from '../store/sqlite.js';

const OPENAPI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'doc', 'openapi.json');

/** Every (method, route) of the committed OpenAPI file, in Fastify's spelling. */
function openApiRoutes(): Array<{ method: string; url: string }> {
  const doc = JSON.parse(readFileSync(OPENAPI, 'utf8')) as { paths: Record<string, Record<string, unknown>> };
  return Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => ({ method: m.toUpperCase(), url: fromOpenApiPath(path) })));
}

/** A concrete URL for a route pattern (any value will do: the role is checked before anything else). */
function concrete(url: string): string {
  return url
    .replace(/:port/g, '8080')
    .replace(/:[a-z]+/gi, 'x')
    .replace(/\*$/, 'index.html');
}

describe('roles: one rule per route, enforced for every role', () => {
  let dir: string;
  let app: FastifyInstance;
  let store: SqliteStore;
  let base: string;
  const tokens = new Map<Role, string>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-roles-'));
    const made = makeTestContext(dir);
    store = made.store;
    made.ctx.tokens = new TokenManager(store);
    for (const role of ROLES) tokens.set(role, (await made.ctx.tokens.create({ name: `t-${role}`, role })).token);
    app = await buildApi(made.ctx, { authenticate: true });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every route of doc/openapi.json has a rule', () => {
    const missing = openApiRoutes().filter((r) => ruleFor(r.method, r.url) === undefined);
    assert.deepEqual(missing, [], 'add these routes to ROUTE_ROLES in src/api/roles.ts');
  });

  it('every route the server registers has a rule, and every rule a route', () => {
    const registered = app.vmkitRoutes.filter((r) => r.method !== 'HEAD');
    const missing = registered.filter((r) => ruleFor(r.method, r.url) === undefined);
    assert.deepEqual(missing, [], 'add these routes to ROUTE_ROLES in src/api/roles.ts');
    const known = new Set(registered.map((r) => `${r.method} ${r.url}`));
    assert.deepEqual(
      Object.keys(ROUTE_ROLES).filter((k) => !known.has(k)),
      [],
      'rules for routes that do not exist',
    );
  });

  it('each role is allowed and refused exactly as the table says', async () => {
    const all = new Map<string, { method: string; url: string }>();
    for (const r of [...openApiRoutes(), ...app.vmkitRoutes.filter((x) => x.method !== 'HEAD')]) all.set(`${r.method} ${r.url}`, r);
    const wrong: string[] = [];
    let checked = 0;
    for (const { method, url } of all.values()) {
      const rule = ruleFor(method, url) as RouteRule;
      for (const role of [undefined, ...ROLES] as Array<Role | undefined>) {
        const headers: Record<string, string> = role ? { authorization: `Bearer ${tokens.get(role)}` } : {};
        const res = await fetch(base + concrete(url), { method, headers, signal: AbortSignal.timeout(10_000) });
        // The event stream never ends: its headers are enough.
        const text = res.headers.get('content-type')?.includes('event-stream') ? (void res.body?.cancel(), '') : await res.text();
        checked++;
        const allowed = rule === 'public' || (role !== undefined && roleAtLeast(role, rule));
        if (allowed) {
          if (res.status === 401 || res.status === 403) wrong.push(`${role ?? 'anonymous'} ${method} ${url}: ${res.status}, expected to pass`);
        } else if (role === undefined) {
          if (res.status !== 401) wrong.push(`anonymous ${method} ${url}: ${res.status}, expected 401`);
        } else if (res.status !== 403) {
          wrong.push(`${role} ${method} ${url}: ${res.status}, expected 403`);
        } else if (!(text.includes('VMKIT_FORBIDDEN') && text.includes(`needs the ${rule} role`))) {
          wrong.push(`${role} ${method} ${url}: 403 without VMKIT_FORBIDDEN naming ${rule}: ${text}`);
        }
      }
    }
    assert.deepEqual(wrong, []);
    assert.ok(checked > 200, `only ${checked} calls`);
  });

  it('viewer only reads; operator never touches images, networks, cluster or tokens', () => {
    for (const [key, rule] of Object.entries(ROUTE_ROLES)) {
      const [method, url] = key.split(' ') as [string, string];
      if (rule === 'viewer') assert.equal(method, 'GET', `${key} is not a read`);
      if (rule === 'operator') assert.ok(!/^\/1\.0\/(images|networks|cluster|tokens|repos?|internal)/.test(url), `${key} is admin work`);
      if (/console|vnc/.test(url)) assert.notEqual(rule, 'viewer', 'consoles are read-write');
    }
  });
});
