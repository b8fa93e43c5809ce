import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { VmkitError } from '../errors.js';
import { findQemuBinary } from './accel.js';
import { QmpClient, QmpClosedError, QmpCommandError, QmpConnectError, QmpTimeoutError, connectWithRetry, type QmpCloseInfo, type QmpEvent } from './qmp.js';

type Request = { execute: string; arguments?: Record<string, unknown>; id?: unknown };

interface FakeConnection {
  socket: net.Socket;
  reply(id: unknown, value: unknown): void;
  fail(id: unknown, errorClass: string, desc: string): void;
  event(name: string, data?: Record<string, unknown>): void;
}

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: ['oob'] } };

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'vmkit-qmp-'));
  tempDirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A QMP server that greets, accepts qmp_capabilities and hands every other command to `onCommand`. */
async function fakeQmp(
  onCommand: (request: Request, conn: FakeConnection) => void,
  options: { greet?: boolean; socketPath?: string } = {},
): Promise<{ socketPath: string; server: net.Server; close(): Promise<void> }> {
  const socketPath = options.socketPath ?? path.join(tempDir(), 'qmp.sock');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const send = (message: unknown): void => {
      if (!socket.destroyed) socket.write(JSON.stringify(message) + '\r\n');
    };
    const conn: FakeConnection = {
      socket,
      reply: (id, value) => send({ return: value, id }),
      fail: (id, errorClass, desc) => send({ id, error: { class: errorClass, desc } }),
      event: (name, data) => send({ timestamp: { seconds: 1, microseconds: 2 }, event: name, ...(data ? { data } : {}) }),
    };
    if (options.greet !== false) send(GREETING);
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) !== -1) {
        const request = JSON.parse(buffer.slice(0, newline)) as Request;
        buffer = buffer.slice(newline + 1);
        if (request.execute === 'qmp_capabilities') conn.reply(request.id, {});
        else onCommand(request, conn);
      }
    });
  });
  server.listen(socketPath);
  await once(server, 'listening');
  return {
    socketPath,
    server,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

describe('QmpClient against a fake server', () => {
  it('negotiates capabilities and exposes the greeting', async () => {
    const fake = await fakeQmp(() => {});
    const client = await QmpClient.connect(fake.socketPath);
    assert.equal(client.greeting.version.qemu.major, 7);
    client.close();
    await fake.close();
  });

  it('matches replies to requests by id even when answered out of order', async () => {
    const held: Array<{ request: Request; conn: FakeConnection }> = [];
    const fake = await fakeQmp((request, conn) => {
      held.push({ request, conn });
      if (held.length === 3) {
        for (const { request: r, conn: c } of held.reverse()) c.reply(r.id, { echo: r.arguments?.n });
      }
    });
    const client = await QmpClient.connect(fake.socketPath);
    const results = await Promise.all([1, 2, 3].map((n) => client.execute<{ echo: number }>('echo', { n })));
    assert.deepEqual(
      results.map((r) => r.echo),
      [1, 2, 3],
    );
    client.close();
    await fake.close();
  });

  it('reassembles replies split across writes and several per write', async () => {
    const fake = await fakeQmp((request, conn) => {
      const line = JSON.stringify({ return: 'split', id: request.id }) + '\r\n';
      conn.socket.write(line.slice(0, 5));
      setTimeout(() => conn.socket.write(line.slice(5) + JSON.stringify({ event: 'X', timestamp: {} }) + '\r\n'), 20);
    });
    const client = await QmpClient.connect(fake.socketPath);
    const event = client.waitForEvent('X', { timeoutMs: 1000 });
    assert.equal(await client.execute('anything'), 'split');
    assert.equal((await event).event, 'X');
    client.close();
    await fake.close();
  });

  it('turns error replies into QmpCommandError carrying desc and class', async () => {
    const fake = await fakeQmp((request, conn) => conn.fail(request.id, 'CommandNotFound', 'The command bogus has not been found'));
    const client = await QmpClient.connect(fake.socketPath);
    await assert.rejects(client.execute('bogus'), (err: unknown) => {
      assert.ok(err instanceof QmpCommandError);
      assert.ok(err instanceof VmkitError);
      assert.equal(err.code, 'VMKIT_QMP_ERROR');
      assert.equal(err.desc, 'The command bogus has not been found');
      assert.equal(err.errorClass, 'CommandNotFound');
      assert.equal(err.command, 'bogus');
      return true;
    });
    client.close();
    await fake.close();
  });

  it('emits events and lets callers wait for a matching one', async () => {
    const fake = await fakeQmp((request, conn) => {
      conn.reply(request.id, {});
      conn.event('STOP');
      conn.event('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
      conn.event('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
    });
    const client = await QmpClient.connect(fake.socketPath);
    const seen: QmpEvent[] = [];
    client.on('event', (e) => seen.push(e));
    const guestShutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 1000, predicate: (e) => e.data.guest === true });
    await client.execute('stop');
    const event = await guestShutdown;
    assert.equal(event.data.reason, 'guest-shutdown');
    assert.deepEqual(event.timestamp, { seconds: 1, microseconds: 2 });
    assert.deepEqual(
      seen.map((e) => e.event),
      ['STOP', 'SHUTDOWN', 'SHUTDOWN'],
    );
    assert.deepEqual(seen[0]?.data, {});
    await assert.rejects(client.waitForEvent('NEVER', { timeoutMs: 30 }), QmpTimeoutError);
    client.close();
    await fake.close();
  });

  it('times out a command without breaking later ones', async () => {
    let calls = 0;
    const fake = await fakeQmp((request, conn) => {
      calls += 1;
      // First command is answered only after the client gave up on it.
      if (calls === 1) setTimeout(() => conn.reply(request.id, 'late'), 100);
      else conn.reply(request.id, 'ok');
    });
    const client = await QmpClient.connect(fake.socketPath);
    await assert.rejects(client.execute('slow', undefined, { timeoutMs: 30 }), (err: unknown) => {
      assert.ok(err instanceof QmpTimeoutError);
      assert.equal(err.code, 'VMKIT_QMP_TIMEOUT');
      return true;
    });
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.equal(await client.execute('fast'), 'ok');
    client.close();
    await fake.close();
  });

  it('rejects pending commands when QEMU drops the connection', async () => {
    const fake = await fakeQmp((_request, conn) => conn.socket.destroy());
    const client = await QmpClient.connect(fake.socketPath);
    const closed = once(client, 'close') as Promise<[QmpCloseInfo]>;
    const waiting = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
    await assert.rejects(client.execute('query-status'), (err: unknown) => {
      assert.ok(err instanceof QmpClosedError);
      assert.equal(err.code, 'VMKIT_QMP_CLOSED');
      return true;
    });
    await assert.rejects(waiting, QmpClosedError);
    const [info] = await closed;
    assert.equal(info.byUs, false);
    assert.equal(client.isClosed, true);
    await assert.rejects(client.execute('query-status'), QmpClosedError);
    await fake.close();
  });

  it('reports a close we asked for as byUs', async () => {
    const fake = await fakeQmp(() => {});
    const client = await QmpClient.connect(fake.socketPath);
    const pending = client.execute('never-answered');
    const closed = once(client, 'close') as Promise<[QmpCloseInfo]>;
    client.close();
    await assert.rejects(pending, QmpClosedError);
    assert.equal((await closed)[0].byUs, true);
    await fake.close();
  });

  it('treats HMP output as an error unless the command is known to print on success', async () => {
    const outputs: Record<string, string> = {
      'hostfwd_add net0 tcp::2222-:22': '',
      'hostfwd_add net0 tcp::2223-:22': "Could not set up host forwarding rule 'tcp::2223-:22'\r\n",
      'hostfwd_remove net0 tcp::2222': 'host forwarding rule for tcp::2222 removed\r\n',
      'hostfwd_remove net0 tcp::2224': 'host forwarding rule for tcp::2224 not found\r\n',
    };
    const fake = await fakeQmp((request, conn) => {
      assert.equal(request.execute, 'human-monitor-command');
      conn.reply(request.id, outputs[String(request.arguments?.['command-line'])]);
    });
    const client = await QmpClient.connect(fake.socketPath);
    assert.equal(await client.hmpOrThrow('hostfwd_add net0 tcp::2222-:22'), '');
    await assert.rejects(client.hmpOrThrow('hostfwd_add net0 tcp::2223-:22'), (err: unknown) => {
      assert.ok(err instanceof QmpCommandError);
      assert.equal(err.desc, "Could not set up host forwarding rule 'tcp::2223-:22'");
      return true;
    });
    const removed = / removed$/;
    assert.match(await client.hmpOrThrow('hostfwd_remove net0 tcp::2222', { success: removed }), removed);
    await assert.rejects(client.hmpOrThrow('hostfwd_remove net0 tcp::2224', { success: removed }), /not found/);
    client.close();
    await fake.close();
  });
});

describe('connecting', () => {
  it('fails fast with QmpConnectError when the socket does not exist', async () => {
    const started = Date.now();
    await assert.rejects(QmpClient.connect(path.join(tempDir(), 'missing.sock')), (err: unknown) => {
      assert.ok(err instanceof QmpConnectError);
      assert.equal(err.errno, 'ENOENT');
      assert.equal(err.code, 'VMKIT_QMP_ERROR');
      return true;
    });
    assert.ok(Date.now() - started < 1000);
  });

  it('times out when the server never greets', async () => {
    const fake = await fakeQmp(() => {}, { greet: false });
    await assert.rejects(QmpClient.connect(fake.socketPath, { timeoutMs: 50 }), QmpTimeoutError);
    await fake.close();
  });

  it('rejects a peer that is not speaking QMP', async () => {
    const socketPath = path.join(tempDir(), 'http.sock');
    const server = net.createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    server.listen(socketPath);
    await once(server, 'listening');
    await assert.rejects(QmpClient.connect(socketPath), /invalid JSON from QMP/);
    server.close();
  });

  it('connectWithRetry waits for a socket that appears later', async () => {
    const socketPath = path.join(tempDir(), 'late.sock');
    let fake: Awaited<ReturnType<typeof fakeQmp>> | undefined;
    const timer = setTimeout(async () => {
      fake = await fakeQmp((request, conn) => conn.reply(request.id, 'hi'), { socketPath });
    }, 150);
    const client = await connectWithRetry(socketPath, { totalMs: 3000, intervalMs: 20 });
    assert.equal(await client.execute('hello'), 'hi');
    client.close();
    clearTimeout(timer);
    await fake?.close();
  });

  it('connectWithRetry gives up after totalMs with the last error', async () => {
    const started = Date.now();
    await assert.rejects(connectWithRetry(path.join(tempDir(), 'never.sock'), { totalMs: 200, intervalMs: 20 }), QmpConnectError);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 150 && elapsed < 1500, `elapsed ${elapsed}`);
  });
});

describe('QmpClient against real QEMU', () => {
  let qemu: ChildProcess;
  let stderr = '';
  let client: QmpClient;

  before(async () => {
    assert.ok(findQemuBinary(), 'qemu-system-x86_64 must be installed (scripts/setup.sh installs it)');
    const socketPath = path.join(tempDir(), 'qmp.sock');
    qemu = spawn(
      'qemu-system-x86_64',
      [
        '-nodefaults',
        '-no-user-config',
        '-machine',
        'pc,accel=tcg',
        '-m',
        '32',
        '-display',
        'none',
        '-S',
        '-netdev',
        'user,id=net0',
        '-qmp',
        `unix:${socketPath},server=on,wait=off`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    qemu.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    client = await connectWithRetry(socketPath, { totalMs: 15_000 });
  });

  after(() => {
    client?.close();
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
  });

  it('reports prelaunch, then running after cont, paused after stop', async () => {
    assert.equal(client.greeting.version.qemu.major, 7);
    assert.deepEqual(await client.queryStatus(), { status: 'prelaunch', running: false });
    const resumed = client.waitForEvent('RESUME', { timeoutMs: 5000 });
    await client.cont();
    await resumed;
    assert.deepEqual(await client.queryStatus(), { status: 'running', running: true });
    await client.stop();
    assert.deepEqual(await client.queryStatus(), { status: 'paused', running: false });
  });

  it('reports KVM state and surfaces real QEMU errors', async () => {
    const kvm = await client.queryKvm();
    assert.equal(kvm.enabled, false); // we asked for TCG
    assert.equal(typeof kvm.present, 'boolean');
    await assert.rejects(client.execute('no-such-command'), (err: unknown) => {
      assert.ok(err instanceof QmpCommandError);
      assert.equal(err.errorClass, 'CommandNotFound');
      return true;
    });
  });

  it('runs HMP commands, including hostfwd with its text-only error reporting', async () => {
    assert.match(await client.humanMonitorCommand('info version'), /^7\.2/);
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    await client.hmpOrThrow(`hostfwd_add net0 tcp:127.0.0.1:${port}-:22`);
    await assert.rejects(client.hmpOrThrow(`hostfwd_add net0 tcp:127.0.0.1:${port}-:22`), /Could not set up host forwarding rule/);
    await client.hmpOrThrow(`hostfwd_remove net0 tcp:127.0.0.1:${port}`, { success: / removed$/ });
    await assert.rejects(client.hmpOrThrow(`hostfwd_remove net0 tcp:127.0.0.1:${port}`, { success: / removed$/ }), /not found/);
  });

  it('quit makes QEMU exit and the client report the close', async () => {
    const exited = once(qemu, 'exit');
    const closed = once(client, 'close') as Promise<[QmpCloseInfo]>;
    await client.quit();
    const [info] = await closed;
    assert.equal(info.byUs, true);
    const [code] = await exited;
    assert.equal(code, 0, stderr);
  });
});
