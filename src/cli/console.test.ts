import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { VmkitClient } from './client.js';
import { runConsole } from './console.js';
import { FakeDaemon } from './fake-daemon.test-support.js';

function collect(stream: PassThrough): () => string {
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString()));
  return () => text;
}

test('non-TTY console pipes stdin to the guest and ends after stdin ends', async () => {
  const d = new FakeDaemon();
  await d.listen();
  let url = '';
  d.onConsole = (ws, u) => {
    url = u;
    ws.send(Buffer.from('login: '));
    ws.on('message', (data: Buffer) => ws.send(Buffer.from(`echo:${data.toString()}`)));
  };
  try {
    const input = new PassThrough();
    const output = new PassThrough();
    const status = new PassThrough();
    const out = collect(output);
    const err = collect(status);
    const done = runConsole(new VmkitClient({ dir: d.dir }), 'web1', { input, output, status, drainMs: 200 });
    setTimeout(() => input.end('root\n'), 50);
    await done;
    assert.equal(url, '/1.0/instances/web1/console');
    assert.match(out(), /^login: echo:root\n$/);
    assert.match(err(), /Connected to web1's console/);
  } finally {
    await d.close();
  }
});

test('a refused console upgrade reports the daemon error', async () => {
  const d = new FakeDaemon();
  await d.listen();
  try {
    const input = new PassThrough();
    await assert.rejects(runConsole(new VmkitClient({ dir: d.dir }), 'web1', { input, output: new PassThrough(), status: new PassThrough() }), {
      code: 'VMKIT_INVALID_STATE',
      hint: 'start it',
    });
  } finally {
    await d.close();
  }
});

test('an error frame + close 1008 after the upgrade is reported as the error', async () => {
  const d = new FakeDaemon();
  await d.listen();
  d.onConsole = (ws) => {
    ws.send(JSON.stringify({ type: 'error', status_code: 409, error: { code: 'VMKIT_INVALID_STATE', message: 'web1 is stopped', hint: 'vmkit start web1' } }));
    ws.close(1008, 'VMKIT_INVALID_STATE');
  };
  try {
    const output = new PassThrough();
    const out = collect(output);
    await assert.rejects(runConsole(new VmkitClient({ dir: d.dir }), 'web1', { input: new PassThrough(), output, status: new PassThrough() }), {
      code: 'VMKIT_INVALID_STATE',
      message: 'web1 is stopped',
    });
    assert.equal(out(), '');
  } finally {
    await d.close();
  }
});

test('a missing daemon is reported as unreachable', async () => {
  await assert.rejects(
    runConsole(new VmkitClient({ dir: '/nonexistent/vmkit-test' }), 'web1', { input: new PassThrough(), output: new PassThrough(), status: new PassThrough() }),
    { code: 'VMKIT_DAEMON_UNREACHABLE' },
  );
});
