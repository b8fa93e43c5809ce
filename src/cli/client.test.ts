import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VmkitError } from '../errors.js';
import type { Operation, VmkitEvent } from '../domain/types.js';
import { VmkitClient } from './client.js';
import { FakeDaemon } from './fake-daemon.test-support.js';

function op(status: Operation['status'], extra: Partial<Operation> = {}): Operation {
  return {
    id: 'op1',
    kind: 'instance.start',
    description: 'Starting web1',
    target: 'web1',
    status,
    progress: { phase: status === 'running' ? 'booting' : 'done', percent: status === 'running' ? 50 : 100 },
    mayCancel: false,
    createdAt: 't',
    updatedAt: 't',
    ...extra,
  };
}

async function withDaemon(fn: (d: FakeDaemon, client: VmkitClient) => Promise<void>): Promise<void> {
  const d = new FakeDaemon();
  await d.listen();
  try {
    await fn(d, new VmkitClient({ dir: d.dir }));
  } finally {
    await d.close();
  }
}

test('sync answers return their metadata over the unix socket', () =>
  withDaemon(async (d, client) => {
    d.sync('GET /1.0/instances', [{ name: 'web1' }]);
    assert.deepEqual(await client.get('/1.0/instances'), [{ name: 'web1' }]);
    assert.equal(d.seen[0].headers.authorization, undefined);
  }));

test('POST sends JSON; async answers return the operation; waitOperation follows it', () =>
  withDaemon(async (d, client) => {
    d.routes.set('POST /1.0/instances', { status: 202, json: { type: 'async', status_code: 202, operation: '/1.0/operations/op1', metadata: op('pending') } });
    let waits = 0;
    d.routes.set('GET /1.0/operations/op1/wait?timeout=1', () => ({ json: { type: 'sync', status_code: 200, metadata: op(++waits < 3 ? 'running' : 'success') } }));
    const answer = await client.request('POST', '/1.0/instances', { name: 'web1', image: 'appliance', start: true });
    assert.equal(answer.type, 'async');
    assert.deepEqual(d.seen[0].body, { name: 'web1', image: 'appliance', start: true });
    assert.equal(d.seen[0].headers['content-type'], 'application/json');
    const seen: string[] = [];
    const done = await client.waitOperation('op1', (o) => seen.push(o.status));
    assert.equal(done.status, 'success');
    assert.deepEqual(seen, ['running', 'running', 'success']);
  }));

test('a failed operation throws its own error', () =>
  withDaemon(async (d, client) => {
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('failure', { error: { code: 'VMKIT_QEMU_FAILED', message: 'QEMU exited', hint: 'see logs' } }));
    await assert.rejects(client.waitOperation('op1'), (err: unknown) => {
      assert.ok(err instanceof VmkitError);
      assert.equal(err.code, 'VMKIT_QEMU_FAILED');
      assert.equal(err.message, 'QEMU exited');
      assert.equal(err.hint, 'see logs');
      return true;
    });
  }));

test('a cancelled operation throws VMKIT_OPERATION_CANCELLED', () =>
  withDaemon(async (d, client) => {
    d.sync('GET /1.0/operations/op1/wait?timeout=1', op('cancelled'));
    await assert.rejects(client.waitOperation('op1'), { code: 'VMKIT_OPERATION_CANCELLED' });
  }));

test('without a /wait route, waitOperation polls the operation', () =>
  withDaemon(async (d, client) => {
    let gets = 0;
    d.routes.set('GET /1.0/operations/op1', () => ({ json: { type: 'sync', status_code: 200, metadata: op(++gets < 2 ? 'running' : 'success') } }));
    assert.equal((await client.waitOperation('op1')).status, 'success');
  }));

test('error answers become VmkitError with code, message, hint and status', () =>
  withDaemon(async (d, client) => {
    d.routes.set('DELETE /1.0/instances/web1', {
      status: 409,
      json: { type: 'error', status_code: 409, error: { code: 'VMKIT_INSTANCE_RUNNING', message: 'web1 is running', hint: 'Use --force.' } },
    });
    await assert.rejects(client.delete('/1.0/instances/web1'), (err: unknown) => {
      assert.ok(err instanceof VmkitError);
      assert.deepEqual([err.code, err.message, err.hint, err.status], ['VMKIT_INSTANCE_RUNNING', 'web1 is running', 'Use --force.', 409]);
      return true;
    });
  }));

test('unknown error codes and non-envelope errors keep their status', () =>
  withDaemon(async (d, client) => {
    d.routes.set('GET /a', { status: 418, json: { type: 'error', status_code: 418, error: { code: 'VMKIT_FROM_THE_FUTURE', message: 'new' } } });
    d.routes.set('GET /b', { status: 500, text: 'oops' });
    await assert.rejects(client.get('/a'), (err: unknown) => err instanceof VmkitError && err.status === 418 && err.details?.code === 'VMKIT_FROM_THE_FUTURE');
    await assert.rejects(client.get('/b'), (err: unknown) => err instanceof VmkitError && err.code === 'VMKIT_INTERNAL' && /oops/.test(err.message));
  }));

test('text() returns plain text bodies', () =>
  withDaemon(async (d, client) => {
    d.routes.set('GET /1.0/instances/web1/logs?tail=2', { text: 'line1\nline2\n' });
    assert.equal(await client.text('/1.0/instances/web1/logs?tail=2'), 'line1\nline2\n');
  }));

test('events() parses the SSE stream', () =>
  withDaemon(async (d, client) => {
    const e1: VmkitEvent = { type: 'lifecycle', action: 'instance-started', target: 'web1', timestamp: 't' };
    const e2: VmkitEvent = { type: 'lifecycle', action: 'instance-stopped', target: 'web1', timestamp: 't' };
    d.routes.set('GET /1.0/events?type=lifecycle', { sse: [': hello\n\n', `data: ${JSON.stringify(e1)}\n\n`, `data: ${JSON.stringify(e2)}\r\n\r\n`] });
    const got: VmkitEvent[] = [];
    await client.events((e) => got.push(e), { type: 'lifecycle' });
    assert.deepEqual(got, [e1, e2]);
  }));

test('a missing socket is VMKIT_DAEMON_UNREACHABLE with the start hint', async () => {
  const client = new VmkitClient({ dir: '/nonexistent/vmkit-test' });
  await assert.rejects(client.get('/1.0'), (err: unknown) => {
    assert.ok(err instanceof VmkitError);
    assert.equal(err.code, 'VMKIT_DAEMON_UNREACHABLE');
    assert.match(err.hint ?? '', /vmkit daemon/);
    return true;
  });
});

test('--remote sends the bearer token; a refused port is unreachable', async () => {
  const d = new FakeDaemon();
  const url = await d.listen(true);
  try {
    d.sync('GET /1.0', { version: '0.1.0' });
    const client = new VmkitClient({ remote: url, token: 's3cret' });
    assert.deepEqual(await client.get('/1.0'), { version: '0.1.0' });
    assert.equal(d.seen[0].headers.authorization, 'Bearer s3cret');
    assert.equal(client.websocketUrl('/1.0/instances/web1/console'), `${url.replace('http', 'ws')}/1.0/instances/web1/console`);
  } finally {
    await d.close();
  }
  await assert.rejects(new VmkitClient({ remote: url }).get('/1.0'), { code: 'VMKIT_DAEMON_UNREACHABLE' });
  assert.throws(() => new VmkitClient({ remote: 'ftp://x' }), { code: 'VMKIT_INVALID_ARGUMENT' });
});

test('the socket console URL uses the ws+unix form', () => {
  const client = new VmkitClient({ dir: '/var/lib/vmkit' });
  assert.equal(client.websocketUrl('/1.0/instances/web1/console'), 'ws+unix:///var/lib/vmkit/vmkit.sock:/1.0/instances/web1/console');
});
