import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import os from 'node:os';
import { existsSync, mkdtempSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, qemuPidsUnder, startTestDaemon, tokenFile, unixRequest, type TestDaemon } from './helpers.js';

const TOKEN = 'bad-input-test-token-0123456789abcdef';

/** Every bad request: a clear code, a non-zero exit, and nothing left behind. */
describe('bad input', () => {
  let d: TestDaemon;

  before(async () => {
    d = await startTestDaemon();
  });
  after(async () => {
    await d.stop();
  });

  function assertNothingLeft(): void {
    assert.deepEqual(d.cliJson<unknown[]>(['list']), []);
    assert.deepEqual(readdirSync(join(d.dir, 'instances')), []);
    assert.deepEqual(qemuPidsUnder(d.dir), []);
  }

  function expectError(args: string[], code: string, exit = 1): string {
    const r = d.cli(args);
    assert.equal(r.code, exit, `vmkit ${args.join(' ')} should exit ${exit}: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, new RegExp(code), r.stderr);
    assert.match(r.stderr, /Hint: /, 'the message says what to do');
    return r.stderr;
  }

  it('rejects invalid names', () => {
    for (const name of ['', '../x', 'a;b', '$(x)', 'a\nb', 'x'.repeat(200), 'wеb1' /* Cyrillic е */, 'Web1', '-a', 'a_b', 'a b']) {
      expectError(['create', 'appliance', '--', name], 'VMKIT_NAME_INVALID');
    }
    assertNothingLeft();
  });

  it('rejects a duplicate name, unknown image and unknown type', () => {
    assert.equal(d.cli(['create', 'appliance', 'dup']).code, 0);
    expectError(['create', 'appliance', 'dup'], 'VMKIT_ALREADY_EXISTS');
    assert.equal(d.cliJson<unknown[]>(['list']).length, 1);
    assert.equal(d.cli(['delete', 'dup']).code, 0);
    expectError(['create', 'no-such-image', 'x1'], 'VMKIT_IMAGE_NOT_FOUND');
    expectError(['create', 'appliance', 'x2', '--type', 'huge'], 'VMKIT_TYPE_UNKNOWN');
    assertNothingLeft();
  });

  it('rejects vCPUs or memory beyond the host', () => {
    expectError(['create', 'appliance', 'big', '--cpus', String(os.cpus().length + 1)], 'VMKIT_RESOURCES_EXCEEDED');
    expectError(['create', 'appliance', 'big', '--memory', String(Math.ceil(os.totalmem() / 1048576) + 1024)], 'VMKIT_RESOURCES_EXCEEDED');
    expectError(['create', 'appliance', 'big', '--cpus', '0'], 'VMKIT_RESOURCES_EXCEEDED|VMKIT_INVALID_ARGUMENT');
    assertNothingLeft();
  });

  it('rejects forwards to a port in use, privileged ports and colliding forwards', async () => {
    const busy = net.createServer();
    const port = await new Promise<number>((res) => busy.listen(0, '127.0.0.1', () => res((busy.address() as net.AddressInfo).port)));
    try {
      expectError(['launch', 'appliance', 'f1', '--forward', `${port}:80`], 'VMKIT_PORT_IN_USE');
    } finally {
      busy.close();
    }
    expectError(['create', 'appliance', 'f2', '--forward', '80:80'], 'VMKIT_PORT_PRIVILEGED');
    expectError(['create', 'appliance', 'f3', '--forward', 'abc'], 'VMKIT_INVALID_ARGUMENT');
    const p = await freePort();
    expectError(['create', 'appliance', 'f4', '--forward', `${p}:80`, '--forward', `${p}:81`], 'VMKIT_FORWARD_CONFLICT');
    assertNothingLeft();
    assert.equal(d.cli(['create', 'appliance', 'f5', '--forward', `${p}:80`]).code, 0);
    expectError(['create', 'appliance', 'f6', '--forward', `${p}:22`], 'VMKIT_FORWARD_CONFLICT');
    expectError(['forward', 'add', 'f5', `${p}:22`], 'VMKIT_FORWARD_CONFLICT');
    expectError(['forward', 'remove', 'f5', '1'], 'VMKIT_FORWARD_NOT_FOUND');
    assert.equal(d.cli(['delete', 'f5']).code, 0);
    assertNothingLeft();
  });

  it('rejects state changes that make no sense', () => {
    assert.equal(d.cli(['create', 'appliance', 's1']).code, 0);
    expectError(['pause', 's1'], 'VMKIT_INVALID_STATE');
    expectError(['resume', 's1'], 'VMKIT_INVALID_STATE');
    expectError(['stop', 's1'], 'VMKIT_INVALID_STATE');
    assert.equal(d.cli(['start', 's1']).code, 0);
    expectError(['start', 's1'], 'VMKIT_INSTANCE_RUNNING');
    expectError(['delete', 's1'], 'VMKIT_INSTANCE_RUNNING');
    assert.equal(d.cli(['delete', 's1', '--force']).code, 0);
    expectError(['info', 's1'], 'VMKIT_INSTANCE_NOT_FOUND');
    assertNothingLeft();
  });

  it('answers malformed JSON and unknown fields with a clear 400', async () => {
    const sock = join(d.dir, 'vmkit.sock');
    const bad = await unixRequest<{ type: string; error: { code: string } }>(sock, 'POST', '/1.0/instances', '{"name": "x",');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.type, 'error');
    assert.equal(bad.body.error.code, 'VMKIT_BAD_REQUEST');
    const extra = await unixRequest<{ error: { code: string } }>(sock, 'POST', '/1.0/instances', { name: 'x', image: 'appliance', bogus: 1 });
    assert.equal(extra.status, 400);
    assert.equal(extra.body.error.code, 'VMKIT_INVALID_ARGUMENT');
    const wrongType = await unixRequest<{ error: { code: string } }>(sock, 'PUT', '/1.0/instances/x/state', { action: 'explode' });
    assert.equal(wrongType.status, 400);
    const unknown = await unixRequest<{ error: { code: string } }>(sock, 'GET', '/2.0/nothing');
    assert.equal(unknown.status, 404);
    assertNothingLeft();
  });
});

describe('the TCP API needs the token (plain HTTP on loopback with --insecure-http)', () => {
  let d: TestDaemon;
  let port: number;

  before(async () => {
    port = await freePort();
    d = await startTestDaemon({ extraArgs: ['--listen', `127.0.0.1:${port}`, '--insecure-http', '--token-file', tokenFile(TOKEN)] });
  });
  after(async () => {
    await d.stop();
  });

  it('refuses requests without or with a wrong token, accepts the right one', async () => {
    const none = await fetch(`http://127.0.0.1:${port}/1.0/instances`);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { error: { code: string } }).error.code, 'VMKIT_UNAUTHORIZED');
    const wrong = await fetch(`http://127.0.0.1:${port}/1.0/instances`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
    const right = await fetch(`http://127.0.0.1:${port}/1.0/instances`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(right.status, 200);
    const cliNoToken = d.cli(['list', '--remote', `http://127.0.0.1:${port}`]);
    assert.notEqual(cliNoToken.code, 0);
    assert.match(cliNoToken.stderr, /VMKIT_UNAUTHORIZED/);
    const cli = d.cli(['list', '--remote', `http://127.0.0.1:${port}`, '--token-file', tokenFile(TOKEN), '--format', 'json']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(JSON.parse(cli.stdout), []);
  });

  it('refuses a console WebSocket without the token', async () => {
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/1.0/instances/any/console`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => undefined);
    });
    assert.equal(status, 401);
  });
});

describe('QEMU missing from PATH', () => {
  let d: TestDaemon;

  before(async () => {
    // A PATH with every tool vmkit uses except qemu-system-x86_64.
    const bin = mkdtempSync('/tmp/vmkt-bin-');
    for (const tool of ['qemu-img', 'mkfs.vfat', 'mcopy']) {
      const found = ['/usr/bin', '/usr/sbin', '/sbin', '/bin'].map((dir) => join(dir, tool)).find((p) => existsSync(p));
      assert.ok(found, `${tool} is installed`);
      symlinkSync(found, join(bin, tool));
    }
    d = await startTestDaemon({ env: { PATH: bin } });
  });
  after(async () => {
    await d.stop();
  });

  it('doctor says how to fix it and a start fails cleanly', () => {
    const doc = d.cli(['doctor', '--format', 'json']);
    assert.notEqual(doc.code, 0);
    const report = JSON.parse(doc.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; hint?: string }> };
    assert.equal(report.ok, false);
    const qemu = report.checks.find((c) => c.name === 'qemu');
    assert.equal(qemu?.ok, false);
    assert.match(qemu?.hint ?? '', /apt-get install qemu-system-x86/);
    const r = d.cli(['launch', 'appliance', 'nq']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /VMKIT_QEMU_MISSING/);
    assert.deepEqual(d.cliJson<unknown[]>(['list']), [], 'a failed launch leaves no instance');
    assert.deepEqual(readdirSync(join(d.dir, 'instances')), []);
  });
});
