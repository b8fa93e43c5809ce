import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from './context.js';
import { buildApi } from './server.js';
import { cookieValue, isPublicPath, resolveStatic, WebSessions } from './routes-web.js';
import { makeTestContext } from './test-context.test-support.js';
import type { SqliteStore } from '../store/sqlite.js';

describe('web routes: helpers', () => {
  it('keeps static paths inside the web root', () => {
    assert.equal(resolveStatic('/srv/web', '/index.html'), '/srv/web/index.html');
    assert.equal(resolveStatic('/srv/web', '/assets/a.js'), '/srv/web/assets/a.js');
    assert.equal(resolveStatic('/srv/web', '/../etc/passwd'), undefined);
    assert.equal(resolveStatic('/srv/web', '/%2e%2e/%2e%2e/etc/passwd'), undefined);
    assert.equal(resolveStatic('/srv/web', '/a/%00'), undefined);
    assert.equal(resolveStatic('/srv/web', '/..\\..\\x'), undefined);
    assert.equal(resolveStatic('/srv/web', '/%E0%A4%A'), undefined);
  });

  it('knows which paths need no token', () => {
    assert.equal(isPublicPath('GET', '/ui/'), true);
    assert.equal(isPublicPath('GET', '/'), true);
    assert.equal(isPublicPath('GET', '/1.0'), false);
    assert.equal(isPublicPath('GET', '/1.0/instances'), false);
    assert.equal(isPublicPath('GET', '/1.0/events?type=lifecycle'), false);
    assert.equal(isPublicPath('POST', '/1.0/auth/session'), true);
    assert.equal(isPublicPath('GET', '/1.0/auth/session'), false);
    for (const url of ['//1.0/instances', '/1.0%2Finstances', '/%31.0/instances', '/x', '/openapi.json']) assert.equal(isPublicPath('GET', url), false, url);
    assert.equal(isPublicPath('POST', '/ui/'), false);
  });

  it('parses cookies and expires sessions', () => {
    assert.equal(cookieValue('a=1; vmkit_session=xyz; b=2', 'vmkit_session'), 'xyz');
    assert.equal(cookieValue(undefined, 'vmkit_session'), undefined);
    const s = new WebSessions();
    const id = s.create(0);
    assert.equal(s.valid(id, 1000), true);
    assert.equal(s.valid(id, 13 * 3600 * 1000), false);
    assert.equal(s.valid('nope', 1000), false);
  });
});

describe('web routes through the API', () => {
  let dir: string;
  let app: FastifyInstance;
  let store: SqliteStore;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-web-'));
    const web = join(dir, 'web');
    mkdirSync(join(web, 'assets'), { recursive: true });
    writeFileSync(join(web, 'index.html'), '<!doctype html><title>vmkit</title>');
    writeFileSync(join(web, 'assets', 'app-1.js'), 'console.log(1)');
    writeFileSync(join(dir, 'secret.txt'), 'secret');
    process.env.VMKIT_WEB_ROOT = web;
    let ctx: ApiContext;
    ({ ctx, store } = makeTestContext(join(dir, 'data'), join(dir, 'db')));
    app = await buildApi(ctx, { token: 'secret' });
    delete process.env.VMKIT_WEB_ROOT;
  });
  after(async () => {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the app without a token, with content types and an SPA fallback', async () => {
    const root = await app.inject({ method: 'GET', url: '/' });
    assert.equal(root.statusCode, 302);
    assert.equal(root.headers.location, '/ui/');
    const index = await app.inject({ method: 'GET', url: '/ui/' });
    assert.equal(index.statusCode, 200);
    assert.match(String(index.headers['content-type']), /text\/html/);
    const js = await app.inject({ method: 'GET', url: '/ui/assets/app-1.js' });
    assert.equal(js.statusCode, 200);
    assert.match(String(js.headers['content-type']), /javascript/);
    assert.match(String(js.headers['cache-control']), /immutable/);
    const page = await app.inject({ method: 'GET', url: '/ui/instances/web1' });
    assert.equal(page.statusCode, 200);
    assert.match(page.body, /<title>vmkit/);
    assert.equal((await app.inject({ method: 'GET', url: '/ui/assets/missing.js' })).statusCode, 404);
  });

  it('lets no spelling of an API path past the token check', async () => {
    for (const url of ['//1.0/instances', '/1.0%2Finstances', '/%31.0/instances', '/ui/../1.0/instances', '/ui/%2e%2e/1.0/instances', '/1.0/instances/', '/1.0//instances']) {
      const r = await app.inject({ method: 'GET', url });
      assert.ok(r.statusCode === 401 || r.statusCode === 404, `${url}: ${r.statusCode}`);
      assert.ok(!r.body.includes('"type":"sync"'), `${url} answered data: ${r.body}`);
    }
  });

  it('never serves files outside the web root', async () => {
    for (const url of ['/ui/../secret.txt', '/ui/%2e%2e/secret.txt', '/ui/..%2fsecret.txt', '/ui/%2e%2e%2fsecret.txt']) {
      const r = await app.inject({ method: 'GET', url });
      assert.notEqual(r.body, 'secret', `${url} leaked the file`);
    }
  });

  it('refuses API calls without the token or a session, and signs a browser in with a cookie', async () => {
    assert.equal((await app.inject({ method: 'GET', url: '/1.0/instances' })).statusCode, 401);
    assert.equal((await app.inject({ method: 'GET', url: '/1.0/auth/session' })).statusCode, 401);
    const wrong = await app.inject({ method: 'POST', url: '/1.0/auth/session', payload: { token: 'nope' } });
    assert.equal(wrong.statusCode, 401);
    assert.equal(wrong.headers['set-cookie'], undefined);
    const ok = await app.inject({ method: 'POST', url: '/1.0/auth/session', payload: { token: 'secret' } });
    assert.equal(ok.statusCode, 200);
    const setCookie = String(ok.headers['set-cookie']);
    assert.match(setCookie, /^vmkit_session=[A-Za-z0-9_-]{20,};/);
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    const cookie = setCookie.split(';')[0]!;
    const list = await app.inject({ method: 'GET', url: '/1.0/instances', headers: { cookie } });
    assert.equal(list.statusCode, 200);
    const who = await app.inject({ method: 'GET', url: '/1.0/auth/session', headers: { cookie } });
    assert.equal((who.json() as { metadata: { method: string } }).metadata.method, 'cookie');
    // A page on another origin cannot use the cookie.
    const foreign = await app.inject({ method: 'GET', url: '/1.0/instances', headers: { cookie, origin: 'http://evil.example', host: 'localhost:80' } });
    assert.equal(foreign.statusCode, 401);
    const same = await app.inject({ method: 'GET', url: '/1.0/instances', headers: { cookie, origin: 'http://localhost:80', host: 'localhost:80' } });
    assert.equal(same.statusCode, 200);
    // Sign-out forgets the session.
    assert.equal((await app.inject({ method: 'DELETE', url: '/1.0/auth/session', headers: { cookie } })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/1.0/instances', headers: { cookie } })).statusCode, 401);
    assert.equal((await app.inject({ method: 'GET', url: '/1.0/instances', headers: { authorization: 'Bearer secret' } })).statusCode, 200);
  });
});
