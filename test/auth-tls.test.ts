import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { freePort, startTestDaemon, tokenFile, VMKIT_BIN, testEnv, type TestDaemon } from './helpers.js';

/**
 * Scoped tokens and HTTPS on a real daemon: --listen on 127.0.0.1 serves HTTPS with the
 * certificate the daemon made in its data folder; tokens of each role are made with the CLI
 * over the unix socket (root, admin without a token) and used over HTTPS; the CLI pins the
 * certificate at `remote add` and refuses a changed one after a restart.
 */
const ADMIN = 'auth-tls-admin-token-0123456789abcdef0123';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: { error?: { code: string; message: string; hint?: string }; metadata?: unknown };
  fingerprint?: string;
}

/** One HTTPS request; the server's certificate is read, not verified (it is compared by the caller). */
function call(port: number, method: string, path: string, options: { token?: string; body?: unknown; cookie?: string; from?: string } = {}): Promise<Answer> {
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        rejectUnauthorized: false,
        agent: false,
        localAddress: options.from,
        headers: {
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(options.cookie ? { cookie: options.cookie } : {}),
          ...(payload ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}),
        },
      },
      (res) => {
        const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: Answer['body'] = {};
          try {
            body = JSON.parse(text) as Answer['body'];
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, fingerprint });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('scoped tokens over HTTPS', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let port: number;
  const tokens: Record<string, string> = {};

  before(async () => {
    port = await freePort();
    d = await startTestDaemon({ extraArgs: ['--listen', `127.0.0.1:${port}`, '--token-file', tokenFile(ADMIN)] });
    for (const [name, role] of [
      ['view', 'viewer'],
      ['ops', 'operator'],
    ] as const) {
      const r = d.cli(['token', 'create', name, '--role', role]);
      assert.equal(r.code, 0, r.stderr);
      tokens[name] = r.stdout.trim();
      assert.match(tokens[name]!, /^vmkit_/);
    }
  });
  after(async () => {
    await d?.stop();
  });

  it('serves HTTPS with the certificate made in the data folder, and never plain HTTP', async () => {
    const pem = readFileSync(join(d.dir, 'tls', 'server.crt'));
    const expected = new X509Certificate(pem).fingerprint256;
    const r = await call(port, 'GET', '/1.0', { token: ADMIN });
    assert.equal(r.status, 200);
    assert.equal(r.fingerprint, expected);
    assert.match(d.log(), new RegExp(`fingerprint: ${expected}`), 'the daemon logs the fingerprint clients pin');
    // Plain HTTP to the HTTPS port: no answer at all (the TLS handshake fails), no API.
    const plain = await new Promise<string>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/1.0', headers: { authorization: `Bearer ${ADMIN}` } }, (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', (err: NodeJS.ErrnoException) => resolve(`refused: ${err.code ?? err.message}`));
      req.end();
    });
    assert.match(plain, /^refused/);
  });

  it('viewer reads; its writes are 403 naming operator; no console', async () => {
    const list = await call(port, 'GET', '/1.0/instances', { token: tokens.view });
    assert.equal(list.status, 200);
    const who = await call(port, 'GET', '/1.0/auth/whoami', { token: tokens.view });
    assert.deepEqual(who.body.metadata, { name: 'view', role: 'viewer', method: 'bearer' });
    const create = await call(port, 'POST', '/1.0/instances', { token: tokens.view, body: { name: 'nope', image: 'appliance' } });
    assert.equal(create.status, 403);
    assert.equal(create.body.error?.code, 'VMKIT_FORBIDDEN');
    assert.match(create.body.error!.message, /needs the operator role/);
    const console = await call(port, 'GET', '/1.0/instances/x/console', { token: tokens.view });
    assert.equal(console.status, 403);
    assert.equal(d.cliJson<unknown[]>(['list']).length, 0, 'nothing was created');
  });

  it('operator stops and starts an instance through a pinned remote, but cannot create a network or list tokens', async () => {
    const launched = d.cli(['launch', 'appliance', 'op1', '--type', 'small']);
    assert.equal(launched.code, 0, launched.stderr);
    const add = d.cli(['remote', 'add', 'lab', `https://127.0.0.1:${port}`, '--token-file', tokenFile(tokens.ops!), '--accept-certificate']);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /token "ops" with role operator/);
    assert.match(add.stderr, /SHA-256 fingerprint [0-9A-F:]{95}/);
    // Forced: the guest may still be booting (an ACPI press before its handler is up is lost);
    // what is tested is the operator's right to stop, not the guest's power-off.
    const stop = d.cli(['--remote', 'lab', 'stop', 'op1', '--force']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(d.cliJson<{ state: string }>(['info', 'op1']).state, 'stopped');
    const start = d.cli(['--remote', 'lab', 'start', 'op1']);
    assert.equal(start.code, 0, start.stderr);
    assert.equal(d.cliJson<{ state: string }>(['info', 'op1']).state, 'running');
    const net = d.cli(['--remote', 'lab', 'network', 'create', 'n1', '--mode', 'internal']);
    assert.equal(net.code, 1);
    assert.match(net.stderr, /needs the admin role/);
    assert.match(net.stderr, /VMKIT_FORBIDDEN/);
    assert.equal(d.cliJson<unknown[]>(['network', 'list']).length, 0, 'no network was made');
    const list = d.cli(['--remote', 'lab', 'token', 'list']);
    assert.match(list.stderr, /VMKIT_FORBIDDEN/);
    const del = d.cli(['delete', 'op1', '--force']);
    assert.equal(del.code, 0, del.stderr);
  });

  it('a revoked token and an expired one are refused (401), sessions made with them too; the cookie is Secure', async () => {
    const r = d.cli(['token', 'create', 'temp', '--role', 'viewer']);
    const temp = r.stdout.trim();
    const signIn = await call(port, 'POST', '/1.0/auth/session', { body: { token: temp } });
    assert.equal(signIn.status, 200);
    const cookie = String(signIn.headers['set-cookie']);
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Strict/);
    assert.match(cookie, /; Secure/);
    const session = cookie.split(';')[0]!;
    assert.deepEqual((await call(port, 'GET', '/1.0/auth/whoami', { cookie: session })).body.metadata, { name: 'temp', role: 'viewer', method: 'cookie' });
    assert.equal((await call(port, 'GET', '/1.0/instances', { token: temp })).status, 200);
    const listed = d.cliJson<Array<{ name: string; lastUsedAt?: string }>>(['token', 'list']).find((t) => t.name === 'temp');
    assert.ok(listed?.lastUsedAt, 'last use shown');
    assert.equal(d.cli(['token', 'revoke', 'temp']).code, 0);
    const revoked = await call(port, 'GET', '/1.0/instances', { token: temp });
    assert.equal(revoked.status, 401);
    assert.equal(revoked.body.error?.code, 'VMKIT_UNAUTHORIZED');
    assert.equal((await call(port, 'GET', '/1.0/instances', { cookie: session })).status, 401, 'its browser session ended too');

    const e = d.cli(['token', 'create', 'short', '--role', 'admin', '--expires', '2s']);
    assert.equal(e.code, 0, e.stderr);
    const short = e.stdout.trim();
    assert.equal((await call(port, 'GET', '/1.0/instances', { token: short })).status, 200);
    await new Promise((res) => setTimeout(res, 2_500));
    const expired = await call(port, 'GET', '/1.0/instances', { token: short });
    assert.equal(expired.status, 401);
    assert.match(expired.body.error!.message, /expired/);
  });

  it('11 wrong tokens from one address: the 11th call is 429 with Retry-After, even with a right token; other addresses go on', async () => {
    const from = '127.0.0.9';
    for (let i = 1; i <= 10; i++) {
      const r = await call(port, 'GET', '/1.0', { token: `vmkit_wrong-${i}`, from });
      assert.equal(r.status, 401, `attempt ${i}`);
    }
    const eleventh = await call(port, 'GET', '/1.0', { token: 'vmkit_wrong-11', from });
    assert.equal(eleventh.status, 429);
    assert.equal(eleventh.body.error?.code, 'VMKIT_TOO_MANY_REQUESTS');
    assert.ok(Number(eleventh.headers['retry-after']) >= 59, `Retry-After ${eleventh.headers['retry-after']}`);
    assert.equal((await call(port, 'GET', '/1.0', { token: ADMIN, from })).status, 429, 'locked out: no more guesses, right or wrong');
    assert.equal((await call(port, 'GET', '/1.0', { token: ADMIN, from: '127.0.0.10' })).status, 200);
    assert.match(d.log(), /auth: failed authentication from 127\.0\.0\.9/);
    assert.match(d.log(), /auth: 127\.0\.0\.9 locked out for 60 s/);
  });

  it('the CLI refuses a changed certificate after a restart, and re-pins after remove + add', async () => {
    const before = d.cli(['--remote', 'lab', 'list', '--format', 'json']);
    assert.equal(before.code, 0, before.stderr);
    await d.kill9();
    rmSync(join(d.dir, 'tls'), { recursive: true, force: true });
    await d.restart(); // a new certificate is made
    const refused = d.cli(['--remote', 'lab', 'list']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /VMKIT_CERTIFICATE_CHANGED/);
    assert.match(refused.stderr, /vmkit remote remove lab && vmkit remote add lab/);
    assert.equal(d.cli(['remote', 'remove', 'lab']).code, 0);
    const again = d.cli(['remote', 'add', 'lab', `https://127.0.0.1:${port}`, '--token-file', tokenFile(tokens.view!), '--accept-certificate']);
    assert.equal(again.code, 0, again.stderr);
    const ok = d.cli(['--remote', 'lab', 'list', '--format', 'json']);
    assert.equal(ok.code, 0, ok.stderr);
  });
});

describe('listener settings refused at start', () => {
  const tryDaemon = (args: string[]) => {
    const dir = mkdtempSync('/tmp/vmkt-');
    try {
      return spawnSync(process.execPath, [VMKIT_BIN, 'daemon', '--dir', dir, ...args], { env: testEnv(dir), encoding: 'utf8', timeout: 60_000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('plain HTTP on a non-loopback address', async () => {
    const port = await freePort();
    const r = tryDaemon(['--listen', `0.0.0.0:${port}`, '--insecure-http']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /only allowed on a loopback address/);
  });

  it('a token shorter than 32 characters, and --token on the command line', () => {
    const short = tryDaemon(['--listen', '127.0.0.1:1', '--token-file', tokenFile('too-short')]);
    assert.equal(short.status, 1);
    assert.match(short.stderr, /at least 32/);
    const inline = tryDaemon(['--listen', '127.0.0.1:1', '--token', ADMIN]);
    assert.equal(inline.status, 1);
    assert.match(inline.stderr, /--token-file/);
  });
});
