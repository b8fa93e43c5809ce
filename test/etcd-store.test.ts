import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createCa, issueCertificate } from '../dist/host/pki.js';
import { EtcdStore, type EtcdLease, type EtcdWatchEvent } from '../dist/store/etcd.js';
import { storeContract } from '../dist-unit/store/store-contract.test-support.js';
import { etcdctl, freePort, startEtcd, startEtcdCluster3, startTcpProxy, type EtcdProcess, type TcpProxy } from './cluster-net.js';

/**
 * EtcdStore against a real etcd (Debian's etcd-server) on loopback with free ports — never the
 * packaged service's 2379. Partitions are simulated with a TCP proxy between store and etcd.
 */

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const uniquePrefix = () => `/vmkt-${randomBytes(4).toString('hex')}/`;

describe('EtcdStore (real etcd)', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  const stores: EtcdStore[] = [];
  const proxies: TcpProxy[] = [];
  const open = (o: { prefix?: string; endpoint?: string; dialTimeoutMs?: number } = {}) => {
    const s = new EtcdStore({ endpoints: [o.endpoint ?? etcd.endpoint], prefix: o.prefix ?? uniquePrefix(), dialTimeoutMs: o.dialTimeoutMs ?? 3000 });
    stores.push(s);
    return s;
  };

  before(async () => {
    etcd = await startEtcd({ host: '127.0.0.1', clientPort: await freePort(), peerPort: await freePort() });
  });
  after(async () => {
    for (const s of stores) await s.close();
    for (const p of proxies) await p.close();
    await etcd?.destroy();
  });

  describe('the Store contract', () => {
    storeContract(async () => ({ store: new EtcdStore({ endpoints: [etcd.endpoint], prefix: uniquePrefix() }) }));
  });

  it("keeps JSON at <prefix><kind>/<key> with etcd's mod_revision as the revision", async () => {
    const prefix = uniquePrefix();
    const s = open({ prefix });
    const rev = await s.put('instances', 'web1', { cpus: 2 });
    const r = etcdctl(undefined, etcd.endpoint, ['get', `${prefix}instances/web1`, '--write-out=json']);
    assert.equal(r.code, 0, r.stderr);
    const kv = JSON.parse(r.stdout).kvs[0];
    assert.equal(Buffer.from(kv.key, 'base64').toString(), `${prefix}instances/web1`);
    assert.deepEqual(JSON.parse(Buffer.from(kv.value, 'base64').toString()), { cpus: 2 });
    assert.equal(kv.mod_revision, rev);
    // A change made by another etcd client is seen with its revision.
    assert.equal(etcdctl(undefined, etcd.endpoint, ['put', `${prefix}instances/web2`, '{"cpus":4}']).code, 0);
    const got = await s.get<{ cpus: number }>('instances', 'web2');
    assert.deepEqual(got?.value, { cpus: 4 });
    assert.ok(got!.revision > rev);
    const { items, revision } = await s.listWithRevision('instances');
    assert.deepEqual(
      items.map((i) => i.key),
      ['web1', 'web2'],
    );
    assert.ok(revision >= got!.revision);
  });

  it('watches a kind: puts and deletes in order, with revisions; from a past revision; stops on close', async () => {
    const s = open();
    const other = open({ prefix: s.prefix });
    const events: Array<EtcdWatchEvent<{ n: number }>> = [];
    const w = await s.watch<{ n: number }>('instances', (ev) => events.push(ev));
    const r1 = await other.put('instances', 'a', { n: 1 });
    await other.put('images', 'ignored', { n: 0 });
    const r2 = await other.put('instances', 'b', { n: 2 });
    const r3 = await other.put('instances', 'a', { n: 3 }, { expectRevision: r1 });
    assert.equal(await other.delete('instances', 'b'), true);
    await until('4 events', () => events.length >= 4);
    await sleep(100);
    assert.equal(events.length, 4);
    assert.deepEqual(events.slice(0, 3), [
      { type: 'put', key: 'a', value: { n: 1 }, revision: r1 },
      { type: 'put', key: 'b', value: { n: 2 }, revision: r2 },
      { type: 'put', key: 'a', value: { n: 3 }, revision: r3 },
    ]);
    assert.equal(events[3]!.type, 'delete');
    assert.equal(events[3]!.key, 'b');
    assert.ok(events[3]!.revision > r3);
    assert.equal(events[3]!.value, undefined);

    // From a past revision: what changed after a list is not missed.
    const replay: string[] = [];
    const w2 = await s.watch('instances', (ev) => replay.push(`${ev.type}:${ev.key}`), { startRevision: r2 });
    await until('replayed events', () => replay.length >= 3);
    assert.deepEqual(replay, ['put:b', 'put:a', 'delete:b']);

    await w.close();
    await w2.close();
    await w.close(); // idempotent
    await other.put('instances', 'c', { n: 4 });
    await sleep(300);
    assert.equal(events.length, 4, 'no event after close');
    assert.equal(replay.length, 3);
  });

  it('txn moves ownership atomically: all applied when every compare holds, nothing otherwise', async () => {
    const s = open();
    const vm = await s.put('instances', 'vm1', { owner: 'h1' });
    await s.put('hosts', 'h1', { vms: ['vm1'] });
    const h1 = (await s.get('hosts', 'h1'))!.revision;

    // Stale revision of vm1: nothing happens, not even the put on an unrelated key.
    assert.equal(
      await s.txn(
        [{ kind: 'instances', key: 'vm1', expectRevision: vm + 1000 }],
        [
          { kind: 'instances', key: 'vm1', value: { owner: 'h2' } },
          { kind: 'hosts', key: 'h2', value: { vms: ['vm1'] } },
        ],
        [{ kind: 'hosts', key: 'h1' }],
      ),
      false,
    );
    assert.deepEqual((await s.get('instances', 'vm1'))?.value, { owner: 'h1' });
    assert.equal(await s.get('hosts', 'h2'), undefined);
    assert.equal((await s.get('hosts', 'h1'))?.revision, h1);

    // One compare of two fails (h2 must not exist, but it is created meanwhile): still nothing.
    await s.put('hosts', 'h2', { vms: [] });
    assert.equal(
      await s.txn(
        [
          { kind: 'instances', key: 'vm1', expectRevision: vm },
          { kind: 'hosts', key: 'h2', expectRevision: 0 },
        ],
        [{ kind: 'instances', key: 'vm1', value: { owner: 'h2' } }],
        [],
      ),
      false,
    );
    assert.deepEqual((await s.get('instances', 'vm1'))?.value, { owner: 'h1' });
    await s.delete('hosts', 'h2');

    // Every compare holds: everything is applied at one revision.
    assert.equal(
      await s.txn(
        [
          { kind: 'instances', key: 'vm1', expectRevision: vm },
          { kind: 'hosts', key: 'h1', expectRevision: h1 },
          { kind: 'hosts', key: 'h2', expectRevision: 0 },
        ],
        [
          { kind: 'instances', key: 'vm1', value: { owner: 'h2' } },
          { kind: 'hosts', key: 'h2', value: { vms: ['vm1'] } },
        ],
        [{ kind: 'hosts', key: 'h1' }],
      ),
      true,
    );
    const moved = await s.get('instances', 'vm1');
    assert.deepEqual(moved?.value, { owner: 'h2' });
    assert.equal((await s.get('hosts', 'h2'))?.revision, moved!.revision);
    assert.equal(await s.get('hosts', 'h1'), undefined);

    // Two hosts racing to take the same VM: exactly one wins.
    const rev = moved!.revision;
    const race = await Promise.all(
      ['h3', 'h4'].map((h) => s.txn([{ kind: 'instances', key: 'vm1', expectRevision: rev }], [{ kind: 'instances', key: 'vm1', value: { owner: h } }], [])),
    );
    assert.deepEqual(race.filter(Boolean).length, 1);
    assert.deepEqual((await s.get('instances', 'vm1'))?.value, { owner: race[0] ? 'h3' : 'h4' });

    await assert.rejects(s.txn([], [{ kind: 'instances', key: 'x', value: 1 }], [{ kind: 'instances', key: 'x' }]), { code: 'VMKIT_INVALID_ARGUMENT' });
  });

  it('lease: keys live while it is kept alive, vanish when it is revoked; onLost does not fire on revoke', async () => {
    const s = open();
    const lease = await s.grantLease(2);
    assert.match(lease.id, /^\d+$/);
    assert.equal(lease.ttlSeconds, 2);
    let lost = 0;
    lease.onLost(() => lost++);
    const rev = await lease.put('hosts', 'h1', { alive: true });
    // etcd knows the lease with our key attached.
    const ttl = etcdctl(undefined, etcd.endpoint, ['lease', 'timetolive', BigInt(lease.id).toString(16), '--keys']);
    assert.equal(ttl.code, 0, ttl.stderr);
    assert.match(ttl.stdout, new RegExp(`${s.prefix}hosts/h1`));
    // Past the TTL (2 s) the key is still there: keepalive runs by itself.
    await sleep(3500);
    assert.equal((await s.get('hosts', 'h1'))?.revision, rev);
    assert.equal(lease.lost, false);
    await lease.revoke();
    assert.equal(await s.get('hosts', 'h1'), undefined);
    await lease.revoke(); // idempotent
    await assert.rejects(lease.put('hosts', 'h1', {}), { code: 'VMKIT_INVALID_STATE' });
    await sleep(300);
    assert.equal(lost, 0);
  });

  it('lease: when its keepalives stop reaching etcd, onLost fires and etcd deletes its keys', async () => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: Number(new URL(etcd.endpoint).port) });
    proxies.push(proxy);
    const s = open({ endpoint: proxy.endpoint });
    const observer = open({ prefix: s.prefix });
    const lease = await s.grantLease(2);
    const lostErrors: Array<{ code: string }> = [];
    lease.onLost((e) => lostErrors.push(e));
    await lease.put('hosts', 'h1', { alive: true });
    await sleep(800); // a keepalive or two went through
    const cutAt = Date.now();
    proxy.blackhole();
    await until('onLost', () => lostErrors.length > 0, 6000);
    const lostAfter = Date.now() - cutAt;
    assert.ok(lostAfter <= 3000, `onLost came ${lostAfter} ms after the cut (TTL 2 s)`);
    assert.equal(lostErrors[0]!.code, 'VMKIT_CLUSTER_UNAVAILABLE');
    assert.equal(lease.lost, true);
    await until('the key to expire in etcd', async () => (await observer.get('hosts', 'h1')) === undefined, 8000);
    const goneAfter = Date.now() - cutAt;
    assert.ok(goneAfter >= lostAfter, `etcd dropped the key (${goneAfter} ms) before the holder heard (${lostAfter} ms)`);
    proxy.restore();
    await assert.rejects(lease.put('hosts', 'h1', {}), { code: 'VMKIT_CLUSTER_UNAVAILABLE' });
    await sleep(300);
    assert.equal(lostErrors.length, 1, 'onLost fires once');
    // A late subscriber hears it too.
    const late = await new Promise<string>((resolve) => lease.onLost((e) => resolve(e.code)));
    assert.equal(late, 'VMKIT_CLUSTER_UNAVAILABLE');
    // The store itself works again once the network is back, and a new lease can be granted.
    const again = await s.grantLease(2);
    await again.put('hosts', 'h1', { alive: 'again' });
    assert.deepEqual((await observer.get('hosts', 'h1'))?.value, { alive: 'again' });
    await again.revoke();
  });

  it('lease: revoked by someone else → onLost, keys gone', async () => {
    const s = open();
    const lease = await s.grantLease(2);
    const lost = new Promise<string>((resolve) => lease.onLost((e) => resolve(e.code)));
    await lease.put('hosts', 'h9', 1);
    const r = etcdctl(undefined, etcd.endpoint, ['lease', 'revoke', BigInt(lease.id).toString(16)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await s.get('hosts', 'h9'), undefined);
    assert.equal(await Promise.race([lost, sleep(4000).then(() => 'no onLost')]), 'VMKIT_CLUSTER_UNAVAILABLE');
    await assert.rejects(lease.put('hosts', 'h9', 2), { code: 'VMKIT_CLUSTER_UNAVAILABLE' });
  });

  it('an unreachable etcd is VMKIT_CLUSTER_UNAVAILABLE with a hint naming it, within the timeout', async () => {
    const port = await freePort(); // nothing listens there
    const s = open({ endpoint: `127.0.0.1:${port}`, dialTimeoutMs: 1000 });
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['get', () => s.get('instances', 'a')],
      ['list', () => s.list('instances')],
      ['put', () => s.put('instances', 'a', 1)],
      ['put create', () => s.put('instances', 'a', 1, { expectRevision: 0 })],
      ['delete', () => s.delete('instances', 'a')],
      ['txn', () => s.txn([], [{ kind: 'instances', key: 'a', value: 1 }], [])],
      ['grantLease', () => s.grantLease(2)],
      ['watch', () => s.watch('instances', () => undefined)],
    ];
    for (const [name, call] of calls) {
      const t0 = Date.now();
      await assert.rejects(call(), (e: Error & { code?: string; hint?: string; status?: number }) => {
        assert.equal(e.code, 'VMKIT_CLUSTER_UNAVAILABLE', `${name}: ${e.code} ${e.message}`);
        assert.equal(e.status, 503);
        assert.match(e.hint ?? '', new RegExp(`etcd at http://127\\.0\\.0\\.1:${port} is running and reachable`));
        return true;
      });
      assert.ok(Date.now() - t0 < 2500, `${name} took ${Date.now() - t0} ms`);
    }
  });

  it('an etcd that stops answering (blackholed) times out instead of hanging', async () => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: Number(new URL(etcd.endpoint).port) });
    proxies.push(proxy);
    const s = open({ endpoint: proxy.endpoint, dialTimeoutMs: 1500 });
    await s.put('instances', 'a', 1);
    proxy.blackhole();
    for (const call of [() => s.get('instances', 'a'), () => s.put('instances', 'a', 2, { expectRevision: 0 })]) {
      const t0 = Date.now();
      await assert.rejects(call(), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'VMKIT_CLUSTER_UNAVAILABLE', e.message);
        return true;
      });
      const took = Date.now() - t0;
      assert.ok(took >= 1000 && took < 4000, `took ${took} ms`);
    }
    proxy.restore();
    assert.equal((await until('etcd answering again', () => s.get('instances', 'a').catch(() => undefined)))?.value, 1);
  });

  it('after etcd is killed and restarted, calls and watches work again', async () => {
    const own = await startEtcd({ host: '127.0.0.1', clientPort: await freePort(), peerPort: await freePort() });
    try {
      const s = open({ endpoint: own.endpoint, dialTimeoutMs: 1500 });
      const seen: string[] = [];
      const w = await s.watch('instances', (ev) => seen.push(`${ev.type}:${ev.key}`));
      await s.put('instances', 'before', 1);
      await until('first event', () => seen.length === 1);
      await own.kill9();
      await assert.rejects(s.get('instances', 'before'), { code: 'VMKIT_CLUSTER_UNAVAILABLE' });
      await own.restart();
      // The circuit breaker lets calls through again within about a second.
      assert.equal((await until('a read after restart', () => s.get('instances', 'before').catch(() => undefined)))?.value, 1);
      await s.put('instances', 'after', 2);
      await until('the watch to resume', () => seen.includes('put:after'), 10_000);
      assert.deepEqual(seen, ['put:before', 'put:after']);
      await w.close();
    } finally {
      await own.destroy();
    }
  });

  it('on a 3-member etcd: survives losing the leader, fails fast without quorum, recovers', async () => {
    const cluster = await startEtcdCluster3();
    try {
      assert.equal(cluster.members.length, 3);
      assert.ok(cluster.endpoints.every((e) => !/:(2379|2380)$/.test(e)));
      const s = open({ endpoint: cluster.endpoints[0], dialTimeoutMs: 3000 });
      // All endpoints, like a host of a real cluster would have.
      const all = new EtcdStore({ endpoints: cluster.endpoints, prefix: s.prefix, dialTimeoutMs: 3000 });
      stores.push(all);
      const r1 = await all.put('instances', 'vm1', { owner: 'h1' }, { expectRevision: 0 });
      // `endpoint status`: endpoint, id, version, db size, is leader, …
      const status = etcdctl(undefined, cluster.endpoints, ['endpoint', 'status']);
      assert.equal(status.code, 0, status.stderr);
      const rows = status.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(',').map((f) => f.trim()));
      assert.equal(rows.length, 3);
      const leaders = rows.filter((r) => r[4] === 'true');
      assert.equal(leaders.length, 1, status.stdout);
      const leader = cluster.members.find((m) => m.endpoint === leaders[0]![0])!;
      assert.ok(leader, status.stdout);
      await leader.kill9();
      // Two of three left: a new leader is elected and writes go on, through the other endpoints.
      const r2 = await until('a write after the leader died', () => all.put('instances', 'vm1', { owner: 'h2' }, { expectRevision: r1 }).catch(() => undefined), 15_000);
      assert.ok(r2 > r1);
      const follower = cluster.members.find((m) => m !== leader)!;
      await follower.kill9();
      // One of three: no quorum. Calls fail with the cluster code in bounded time, not hang.
      const t0 = Date.now();
      await assert.rejects(all.put('instances', 'vm1', { owner: 'h3' }), { code: 'VMKIT_CLUSTER_UNAVAILABLE' });
      assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
      await Promise.all([leader.restart({ waitHealthy: false }), follower.restart({ waitHealthy: false })]);
      await Promise.all(cluster.members.map((m) => m.waitHealthy()));
      const got = await until('a read with quorum back', () => all.get<{ owner: string }>('instances', 'vm1').catch(() => undefined), 15_000);
      // The write refused without quorum may still be committed once quorum is back (etcd
      // queued the proposal): its outcome is unknown, as VMKIT_CLUSTER_UNAVAILABLE says.
      assert.ok(['h2', 'h3'].includes(got.value.owner), JSON.stringify(got.value));
      if (got.value.owner === 'h2') assert.equal(got.revision, r2);
      else assert.ok(got.revision > r2);
    } finally {
      await cluster.destroy();
    }
  });

  it('close() ends keepalives and watches so nothing keeps the process alive', async () => {
    const s = new EtcdStore({ endpoints: [etcd.endpoint], prefix: uniquePrefix() });
    const lease: EtcdLease = await s.grantLease(2);
    await lease.put('hosts', 'x', 1);
    await s.watch('hosts', () => undefined);
    await s.close();
    await s.close(); // idempotent
    await assert.rejects(s.get('hosts', 'x'), { code: 'VMKIT_INTERNAL' });
    // The lease was not revoked: its key expires with it, 2 s later.
    const observer = open({ prefix: s.prefix });
    assert.ok(await observer.get('hosts', 'x'));
    await until('the key to expire', async () => (await observer.get('hosts', 'x')) === undefined, 6000);
  });
});

describe('EtcdStore over TLS with client certificates (as a cluster runs etcd)', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  let dir: string;
  const certs: Record<string, { ca: Buffer; cert: Buffer; key: Buffer }> = {};

  before(async () => {
    dir = mkdtempSync('/tmp/vmkt-etcdtls-');
    const ca = await createCa({ cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') }, 'test cluster CA');
    const other = await createCa({ cert: join(dir, 'o.pem'), key: join(dir, 'o.key') }, 'another CA');
    const server = await issueCertificate(ca, { cert: join(dir, 'etcd.pem'), key: join(dir, 'etcd.key') }, { commonName: 'etcd', names: ['127.0.0.1'] });
    const host = await issueCertificate(ca, { cert: join(dir, 'h1.pem'), key: join(dir, 'h1.key') }, { commonName: 'h1', names: ['127.0.0.1'], usage: 'both' });
    const stranger = await issueCertificate(other, { cert: join(dir, 's.pem'), key: join(dir, 's.key') }, { commonName: 'h1', names: ['127.0.0.1'], usage: 'both' });
    const load = (p: { cert: string; key: string }) => ({ ca: readFileSync(ca.cert), cert: readFileSync(p.cert), key: readFileSync(p.key) });
    certs.host = load(host);
    certs.stranger = load(stranger);
    etcd = await startEtcd({ host: '127.0.0.1', clientPort: await freePort(), peerPort: await freePort(), tls: { ca: ca.cert, cert: server.cert, key: server.key } });
  });

  after(async () => {
    await etcd?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a host certificate of the CA reads and writes', async () => {
    assert.match(etcd.endpoint, /^https:/);
    const s = new EtcdStore({ endpoints: [etcd.endpoint], prefix: uniquePrefix(), tls: certs.host, dialTimeoutMs: 3000 });
    try {
      await s.put('hosts', 'h1', { ok: true });
      assert.deepEqual((await s.get('hosts', 'h1'))?.value, { ok: true });
    } finally {
      await s.close();
    }
  });

  it('no client certificate, a certificate of another CA, or plain http: refused', async () => {
    const tries: Array<[string, EtcdStore]> = [
      ['no client certificate', new EtcdStore({ endpoints: [etcd.endpoint], prefix: uniquePrefix(), tls: { ca: certs.host!.ca }, dialTimeoutMs: 1500 })],
      ['another CA', new EtcdStore({ endpoints: [etcd.endpoint], prefix: uniquePrefix(), tls: certs.stranger, dialTimeoutMs: 1500 })],
      ['plain http', new EtcdStore({ endpoints: [etcd.endpoint.replace('https:', 'http:')], prefix: uniquePrefix(), dialTimeoutMs: 1500 })],
    ];
    for (const [what, s] of tries) {
      try {
        await assert.rejects(s.get('hosts', 'h1'), { code: 'VMKIT_CLUSTER_UNAVAILABLE' }, what);
      } finally {
        await s.close();
      }
    }
    // etcdctl without --cert/--key: the handshake is refused too.
    assert.notEqual(etcdctl(undefined, etcd.endpoint, ['get', '/x'], { tls: { ...etcd.tls!, cert: '', key: '' } }).code, 0);
  });
});
