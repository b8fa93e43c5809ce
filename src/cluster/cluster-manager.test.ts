import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterManager, type ClusterDeps } from './cluster.js';
import type { ClusterBackend, ClusterConfig, LeaseHandle, WatchEvent } from './types.js';
import type { ClusterPki } from './pki.js';
import type { PutOptions, StoreKind, Versioned } from '../store/store.js';
import { EventBus } from '../operations/events.js';
import { vmkitError } from '../errors.js';

/** A key-value table shared by the fake connections (what etcd holds). */
class FakeEtcd {
  rows = new Map<string, { value: unknown; revision: number; lease?: FakeLease }>();
  rev = 1;
  connections: FakeBackend[] = [];
  leases: FakeLease[] = [];
  /** Grants fail while true (the store "unreachable" for new leases). */
  refuseLeases = false;
}

class FakeLease implements LeaseHandle {
  revoked = false;
  private lost?: (err: Error) => void;
  constructor(private readonly etcd: FakeEtcd) {}
  async put(kind: StoreKind, key: string, value: unknown): Promise<unknown> {
    this.etcd.rows.set(`${kind}/${key}`, { value, revision: ++this.etcd.rev, lease: this });
    return this.etcd.rev;
  }
  async revoke(): Promise<void> {
    this.revoked = true;
    for (const [k, r] of this.etcd.rows) if (r.lease === this) this.etcd.rows.delete(k);
  }
  onLost(cb: (err: Error) => void): void {
    this.lost = cb;
  }
  /** etcd expired it (the host renewed too late): its keys go, the holder hears of it. */
  expire(): void {
    for (const [k, r] of this.etcd.rows) if (r.lease === this) this.etcd.rows.delete(k);
    this.lost?.(vmkitError('VMKIT_CLUSTER_UNAVAILABLE', 'lease lost'));
  }
}

class FakeBackend implements ClusterBackend {
  closed = false;
  constructor(private readonly etcd: FakeEtcd) {
    etcd.connections.push(this);
  }
  private check(): void {
    if (this.closed) throw vmkitError('VMKIT_CLUSTER_UNAVAILABLE', 'connection closed');
  }
  async get<T>(kind: StoreKind, key: string): Promise<Versioned<T> | undefined> {
    this.check();
    const r = this.etcd.rows.get(`${kind}/${key}`);
    return r ? { key, value: r.value as T, revision: r.revision } : undefined;
  }
  async list<T>(kind: StoreKind): Promise<Array<Versioned<T>>> {
    this.check();
    return [...this.etcd.rows].filter(([k]) => k.startsWith(`${kind}/`)).map(([k, r]) => ({ key: k.slice(kind.length + 1), value: r.value as T, revision: r.revision }));
  }
  async put<T>(kind: StoreKind, key: string, value: T, _o?: PutOptions): Promise<number> {
    this.check();
    this.etcd.rows.set(`${kind}/${key}`, { value, revision: ++this.etcd.rev });
    return this.etcd.rev;
  }
  async delete(kind: StoreKind, key: string): Promise<boolean> {
    this.check();
    return this.etcd.rows.delete(`${kind}/${key}`);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  async grantLease(): Promise<LeaseHandle> {
    this.check();
    if (this.etcd.refuseLeases) throw vmkitError('VMKIT_CLUSTER_UNAVAILABLE', 'no leases now');
    const l = new FakeLease(this.etcd);
    this.etcd.leases.push(l);
    return l;
  }
  async watch(_k: StoreKind, _cb: (ev: WatchEvent) => void): Promise<{ close(): Promise<void> }> {
    this.check();
    return { close: async () => undefined };
  }
  async txn(): Promise<boolean> {
    return false;
  }
}

const config: ClusterConfig = { etcd: ['http://127.0.0.1:1'], name: 'h1', address: '127.0.0.1:8443', clusterId: 'c', insecureEtcd: true, joinedAt: 'x' };

function manager(etcd: FakeEtcd, logs: string[]): ClusterManager {
  const local = new Map<string, unknown>([['meta/cluster', config]]);
  const deps: ClusterDeps = {
    local: {
      get: async <T>(kind: StoreKind, key: string) => {
        const v = local.get(`${kind}/${key}`);
        return v === undefined ? undefined : ({ key, value: v as T, revision: 1 } as Versioned<T>);
      },
      list: async () => [],
      put: async (kind: StoreKind, key: string, value: unknown) => (local.set(`${kind}/${key}`, value), 1),
      delete: async (kind: StoreKind, key: string) => local.delete(`${kind}/${key}`),
      close: async () => undefined,
    },
    events: new EventBus(),
    connect: async () => new FakeBackend(etcd),
    pki: { hasHost: () => true } as unknown as ClusterPki,
    hostFacts: async () => ({}) as never,
    localInstances: async () => [],
    listenPeer: async () => undefined,
    stopPeer: async () => undefined,
    log: (l) => logs.push(l),
  };
  return new ClusterManager(deps);
}

async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ClusterManager: a lost lease', () => {
  it('re-registers at once on the same connection, which keeps serving meanwhile', async (t) => {
    const etcd = new FakeEtcd();
    const logs: string[] = [];
    const m = manager(etcd, logs);
    await m.start();
    t.after(() => m.close());
    assert.equal(etcd.connections.length, 1);
    assert.ok(etcd.rows.has('alive/h1'));
    etcd.leases[0]!.expire();
    assert.ok(!etcd.rows.has('alive/h1'), 'the expired lease took the liveness key');
    // No gap: the cluster answers right after the loss (it used to throw VMKIT_CLUSTER_UNAVAILABLE for 2 s).
    const hosts = await m.listHosts();
    assert.deepEqual(
      hosts.map((h) => h.name),
      ['h1'],
    );
    await until('the liveness key back', () => etcd.rows.has('alive/h1'));
    assert.equal(etcd.leases.length, 2, 'one new lease');
    assert.equal(etcd.connections.length, 1, 'the same connection');
    assert.equal(etcd.connections[0]!.closed, false);
    assert.equal((await m.host('h1')).state, 'alive');
  });

  it('keeps retrying while leases are refused, then uses a fresh connection and closes the old one', async (t) => {
    const etcd = new FakeEtcd();
    const logs: string[] = [];
    const m = manager(etcd, logs);
    await m.start();
    t.after(() => m.close());
    etcd.refuseLeases = true;
    etcd.leases[0]!.expire();
    await until('a fresh connection tried and closed', () => etcd.connections.length >= 2 && etcd.connections[1]!.closed);
    assert.ok(!etcd.rows.has('alive/h1'));
    // Still serving reads on the connection in hand while it retries.
    assert.equal((await m.host('h1')).state, 'dead');
    assert.ok(
      etcd.connections.slice(1).every((c) => c.closed),
      'failed fresh connections are closed',
    );
    assert.equal(etcd.connections[0]!.closed, false, 'the working one is kept until a fresh one registered');
    etcd.refuseLeases = false;
    await until('re-registered', () => etcd.rows.has('alive/h1'), 5000);
    const live = etcd.connections.filter((c) => !c.closed);
    assert.equal(live.length, 1, 'exactly one connection left open');
    assert.notEqual(live[0], etcd.connections[0], 'the fresh connection replaced the old one');
    assert.ok(logs.some((l) => l.includes('re-registered')));
  });
});

describe('ClusterManager: revoked certificates', () => {
  it('revokes the certificates of a name issued until now, not later ones, and never a live host', async (t) => {
    const etcd = new FakeEtcd();
    const m = manager(etcd, []);
    await m.start();
    t.after(() => m.close());
    await assert.rejects(m.revoke('h1'), { code: 'VMKIT_INVALID_STATE' });
    await assert.rejects(m.revoke('../x'), { code: 'VMKIT_NAME_INVALID' });
    const before = new Date(Date.now() - 60_000);
    assert.equal(m.certificateRevoked('h4', before), false);
    const rec = await m.revoke('h4');
    assert.ok(etcd.rows.has('revoked/h4'));
    assert.equal(rec.by, 'h1');
    assert.equal(m.certificateRevoked('h4', before), true, 'a certificate issued before');
    assert.equal(m.certificateRevoked('h4', new Date(Date.now() + 2_000)), false, 'a new certificate (joined again)');
    assert.equal(m.certificateRevoked('h2', before), false, 'another host');
  });

  it('forget revokes the dead host it removes; a restarted manager reads the revocations back', async (t) => {
    const etcd = new FakeEtcd();
    etcd.rows.set('hosts/h9', { value: { name: 'h9' }, revision: 1 });
    const m = manager(etcd, []);
    await m.start();
    await m.forget('h9');
    assert.ok(!etcd.rows.has('hosts/h9'));
    await m.close();
    const again = manager(etcd, []);
    await again.start();
    t.after(() => again.close());
    assert.equal(again.certificateRevoked('h9', new Date(Date.now() - 1_000)), true);
  });
});
