import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QgaClient, QgaError } from './qga.js';
import { execStatus, fileRead, hostName, networkInterfaces, osInfo } from './guest-agent.js';

/** A fake agent on a unix socket: `onLine` gets each request and the socket to answer on. */
async function fakeAgent(onLine: (req: Record<string, unknown>, s: net.Socket) => void, onConnect?: (s: net.Socket) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'qga-'));
  const path = join(dir, 'qga.sock');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    onConnect?.(s);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          onLine(JSON.parse(line) as Record<string, unknown>, s);
        } catch {
          /* not json */
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A well-behaved agent: answers the handshake with 0xFF + the id, then `answers[command]`. */
function honest(answers: Record<string, unknown>) {
  return (req: Record<string, unknown>, s: net.Socket) => {
    if (req.execute === 'guest-sync-delimited') {
      s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: (req.arguments as { id: number }).id }) + '\n')]));
      return;
    }
    const a = answers[req.execute as string];
    if (a === undefined) s.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: `no ${String(req.execute)}` } }) + '\n');
    else s.write(JSON.stringify({ return: a }) + '\n');
  };
}

test('handshake skips stale replies before the 0xFF delimiter, then commands answer in order', async () => {
  const a = await fakeAgent(honest({ 'guest-ping': {}, 'guest-info': { version: '7.2' } }), (s) => s.write('{"return": {"stale": true}}\n{"return": 5}\n'));
  try {
    const c = await QgaClient.connect(a.path);
    const [x, y] = await Promise.all([c.execute('guest-info'), c.execute('guest-ping')]);
    assert.deepEqual(x, { version: '7.2' });
    assert.deepEqual(y, {});
    await assert.rejects(c.execute('guest-nope'), (e: QgaError) => e.code === 'VMKIT_AGENT_ERROR' && /no guest-nope/.test(e.message));
    c.close();
  } finally {
    a.close();
  }
});

test('an agent that never answers is AGENT_UNAVAILABLE within the sync timeout', async () => {
  const a = await fakeAgent(() => undefined);
  try {
    const t0 = Date.now();
    await assert.rejects(QgaClient.connect(a.path, { syncTimeoutMs: 300 }), (e: QgaError) => e.code === 'VMKIT_AGENT_UNAVAILABLE' && !!e.hint);
    assert.ok(Date.now() - t0 < 2000);
  } finally {
    a.close();
  }
});

test('no socket is AGENT_UNAVAILABLE with a hint to restart', async () => {
  await assert.rejects(QgaClient.connect('/nonexistent/qga.sock'), (e: QgaError) => e.code === 'VMKIT_AGENT_UNAVAILABLE' && /restart/.test(e.hint ?? ''));
});

test('garbage without a delimiter never completes the handshake and is not buffered', async () => {
  const a = await fakeAgent(
    () => undefined,
    (s) => {
      const junk = Buffer.alloc(1024 * 1024, 0x41);
      for (let i = 0; i < 8; i++) s.write(junk);
    },
  );
  try {
    await assert.rejects(QgaClient.connect(a.path, { syncTimeoutMs: 500, maxReplyBytes: 64 * 1024 }), (e: QgaError) => e.code === 'VMKIT_AGENT_UNAVAILABLE');
  } finally {
    a.close();
  }
});

test('an oversized reply is refused and the connection dropped', async () => {
  const a = await fakeAgent((req, s) => {
    if (req.execute === 'guest-sync-delimited') s.write('\xff' + JSON.stringify({ return: (req.arguments as { id: number }).id }) + '\n', 'latin1');
    else s.write('{"return": "' + 'x'.repeat(200_000) + '"}\n');
  });
  try {
    const c = await QgaClient.connect(a.path, { maxReplyBytes: 64 * 1024 });
    await assert.rejects(c.execute('guest-info'), (e: QgaError) => e.code === 'VMKIT_AGENT_ERROR' && /over 65536 bytes/.test(e.message));
    assert.equal(c.isClosed, true);
  } finally {
    a.close();
  }
});

test('invalid JSON after the handshake is an AGENT_ERROR, a silent command an AGENT_TIMEOUT that closes', async () => {
  let mode = 'garbage';
  const a = await fakeAgent((req, s) => {
    if (req.execute === 'guest-sync-delimited') s.write('\xff' + JSON.stringify({ return: (req.arguments as { id: number }).id }) + '\n', 'latin1');
    else if (mode === 'garbage') s.write('this is not json\n');
  });
  try {
    const c = await QgaClient.connect(a.path);
    await assert.rejects(c.execute('guest-info'), (e: QgaError) => e.code === 'VMKIT_AGENT_ERROR' && /invalid JSON/.test(e.message));
    mode = 'silent';
    const t0 = Date.now();
    await assert.rejects(c.execute('guest-info', undefined, { timeoutMs: 200 }), (e: QgaError) => e.code === 'VMKIT_AGENT_TIMEOUT');
    assert.ok(Date.now() - t0 < 1500);
    assert.equal(c.isClosed, true);
    await assert.rejects(c.execute('guest-ping'), (e: QgaError) => e.code === 'VMKIT_AGENT_TIMEOUT');
  } finally {
    a.close();
  }
});

test('replies are validated: wrong shapes refused, addresses and interfaces capped and checked', async () => {
  const many = Array.from({ length: 100 }, (_, i) => ({
    name: `eth${i}\u0007`,
    'hardware-address': i === 0 ? '52:54:00:AA:BB:CC' : 'not-a-mac',
    'ip-addresses': [
      { 'ip-address-type': 'ipv4', 'ip-address': '10.0.0.5', prefix: 24 },
      { 'ip-address-type': 'ipv4', 'ip-address': '999.1.1.1', prefix: 24 },
      { 'ip-address-type': 'ipv4', 'ip-address': '<script>', prefix: 24 },
      { 'ip-address-type': 'ipv6', 'ip-address': 'fe80::1', prefix: 64 },
      ...Array.from({ length: 50 }, () => ({ 'ip-address-type': 'ipv4', 'ip-address': '10.9.9.9' })),
    ],
  }));
  const a = await fakeAgent(
    honest({
      'guest-network-get-interfaces': many,
      'guest-exec-status': { exited: true, exitcode: 'zero', 'out-data': 'aGk=' },
      'guest-file-read': { count: 10, 'buf-b64': 'aGk=', eof: true },
    }),
  );
  try {
    const c = await QgaClient.connect(a.path);
    const ifs = await networkInterfaces(c);
    assert.equal(ifs.length, 32);
    assert.equal(ifs[0]!.name, 'eth0?');
    assert.equal(ifs[0]!.mac, '52:54:00:aa:bb:cc');
    assert.equal(ifs[1]!.mac, undefined);
    assert.deepEqual(ifs[0]!.ipv6, ['fe80::1']);
    assert.ok(ifs[0]!.ipv4.every((ip) => ip === '10.0.0.5' || ip === '10.9.9.9'));
    assert.ok(ifs[0]!.ipv4.length + ifs[0]!.ipv6.length <= 16);
    await assert.rejects(execStatus(c, 5, 1024), (e: QgaError) => e.code === 'VMKIT_AGENT_ERROR' && /exitcode/.test(e.message));
    await assert.rejects(fileRead(c, 1, 64), (e: QgaError) => e.code === 'VMKIT_AGENT_ERROR' && /count 10 but 2 bytes/.test(e.message));
    c.close();
  } finally {
    a.close();
  }
});

test("the guest's host name and OS: printable, capped, kernel alone without os-release; a wrong shape refused", async () => {
  const a = await fakeAgent(
    honest({
      'guest-get-host-name': { 'host-name': `web1\u001b[31m${'x'.repeat(100)}` },
      'guest-get-osinfo': { 'kernel-release': '6.1.0-28-cloud-amd64', name: 'Debian GNU/Linux', version: '12 (bookworm)' },
    }),
  );
  const b = await fakeAgent(honest({ 'guest-get-host-name': 'not-an-object', 'guest-get-osinfo': { 'kernel-release': '6.1.0', 'pretty-name': 'Debian GNU/Linux 12 (bookworm)' } }));
  try {
    const c = await QgaClient.connect(a.path);
    const host = await hostName(c);
    assert.equal(host?.length, 64);
    assert.ok(host!.startsWith('web1?[31mxxx'), host);
    assert.deepEqual(await osInfo(c), { os: 'Debian GNU/Linux 12 (bookworm)', kernel: '6.1.0-28-cloud-amd64' });
    c.close();
    const d = await QgaClient.connect(b.path);
    await assert.rejects(hostName(d), (e: QgaError) => e.code === 'VMKIT_AGENT_ERROR');
    assert.deepEqual(await osInfo(d), { os: 'Debian GNU/Linux 12 (bookworm)', kernel: '6.1.0' });
    d.close();
  } finally {
    a.close();
    b.close();
  }
});
