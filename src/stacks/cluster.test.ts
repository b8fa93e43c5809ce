import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InstanceView } from '../domain/types.js';
import type { CreateInstanceRequest } from '../instances/types.js';
import { EventBus } from '../operations/events.js';
import { SqliteStore } from '../store/sqlite.js';
import type { Network } from '../wire/network.js';
import type { CreateInstanceRequestBody } from '../wire/requests.js';
import { StackController, type StackInstances, type StackNetworks } from './controller.js';
import type { StackCluster, StackHost, StackSurvey } from './hosts.js';
import { StackService } from './service.js';
import { REPLICA_HOME_META_KEY, REPLICA_META_KEY } from './types.js';

/**
 * The controller in a cluster of two fake hosts: h1 (this one, the stack's home) and h2.
 * Instances start running at once; no service port or health check (no nft, no HTTP).
 */
const view = (req: { name: string; image: string; meta?: Record<string, string> }, host: string): InstanceView =>
  ({ name: req.name, image: req.image, state: 'running', nics: [], forwards: [], cloudInit: { meta: req.meta }, host }) as unknown as InstanceView;

class LocalInstances implements StackInstances {
  readonly all = new Map<string, InstanceView>();
  readonly deleted: string[] = [];
  async list(): Promise<InstanceView[]> {
    return [...this.all.values()];
  }
  async create(req: CreateInstanceRequest): Promise<InstanceView> {
    const v = { ...view(req, 'h1'), state: 'stopped' } as InstanceView;
    this.all.set(req.name, v);
    return v;
  }
  async start(name: string): Promise<InstanceView> {
    const v = { ...this.all.get(name)!, state: 'running' } as InstanceView;
    this.all.set(name, v);
    return v;
  }
  async delete(name: string): Promise<void> {
    this.all.delete(name);
    this.deleted.push(name);
  }
}

class FakeCluster implements StackCluster {
  readonly h2 = new Map<string, InstanceView>();
  readonly launches: Array<{ host: string; req: CreateInstanceRequestBody }> = [];
  readonly deletes: string[] = [];
  state: 'alive' | 'dead' = 'alive';
  silent = false;
  /** h2 has the network; h1's room is larger (so without spreading everything would go to h1). */
  h2Networks = [{ name: 'net', mode: 'nat' }];
  full = false;
  /** The next launch finds its forward's port taken (once). */
  portTaken = false;
  refusedPorts: number[] = [];
  constructor(private readonly local: LocalInstances) {}
  self(): string {
    return 'h1';
  }
  async survey(): Promise<StackSurvey> {
    const theirs =
      this.state === 'dead' || this.silent
        ? [...this.h2.values()].map((v) => ({ ...v, state: 'unknown', cloudInit: undefined }) as unknown as InstanceView)
        : [...this.h2.values()];
    return {
      instances: [...(await this.local.list()).map((v) => ({ ...v, host: 'h1' })), ...theirs],
      hosts: new Map([
        ['h1', 'alive'],
        ['h2', this.state],
      ]),
      silent: new Set(this.silent && this.state === 'alive' ? ['h2'] : []),
    };
  }
  async candidates(): Promise<StackHost[]> {
    if (this.full) return [];
    const h1: StackHost = { name: 'h1', ip: '192.168.9.1', networks: [{ name: 'net', mode: 'nat' }], self: true };
    const h2: StackHost = { name: 'h2', ip: '192.168.9.2', networks: this.h2Networks, self: false };
    return this.state === 'alive' ? [h1, h2] : [h1];
  }
  async launch(host: string, req: CreateInstanceRequestBody): Promise<InstanceView> {
    assert.equal(host, 'h2');
    if (this.state !== 'alive' || this.silent) throw new Error('unreachable');
    const port = req.forwards![0]!.hostPort;
    if (this.portTaken) {
      this.portTaken = false;
      this.refusedPorts.push(port);
      throw Object.assign(new Error('in use'), { code: 'VMKIT_PORT_IN_USE' });
    }
    this.launches.push({ host, req });
    const v = view(req, 'h2');
    this.h2.set(req.name, v);
    return v;
  }
  async delete(host: string, name: string): Promise<void> {
    if (this.state !== 'alive' || this.silent) throw new Error('unreachable');
    this.h2.delete(name);
    this.deletes.push(name);
  }
}

const networks: StackNetworks = {
  exists: async () => false,
  load: async (name) => ({ name, mode: 'nat', bridge: 'x', dhcp: true, dns: true, createdAt: '' }) as Network,
  create: async (req) => ({ ...req, bridge: 'x', dhcp: true, dns: true, createdAt: '' }) as Network,
  delete: async () => undefined,
};

const file = (replicas: number) => `name: s
networks:
  - name: net
    mode: nat
    subnet: 10.91.0.0/24
services:
  - name: web
    image: img
    replicas: ${replicas}
    networks: [net]
`;

describe('stack controller in a cluster (fake hosts)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-cstack-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function setup(db: string) {
    const store = new SqliteStore(join(dir, db));
    const local = new LocalInstances();
    const cluster = new FakeCluster(local);
    const events = new EventBus();
    const logs: string[] = [];
    const controller = new StackController({ store, instances: local, networks, images: { get: async () => ({}) }, events, log: (l) => logs.push(l), cluster });
    const service = new StackService(controller);
    await controller.start();
    const pass = () => controller.withLock('s', () => (controller as unknown as { tick(n: string): Promise<void> }).tick('s'));
    const sweep = () => (controller as unknown as { sweep(): Promise<void> }).sweep();
    const members = async () => (await service.get('s')).services[0]!.members;
    const done = async () => {
      controller.close();
      await store.close();
    };
    return { controller, service, local, cluster, events, pass, sweep, members, logs, done };
  }

  it('spreads replicas over the hosts; remote ones get a forward on their host', async () => {
    const t = await setup('spread.db');
    t.cluster.portTaken = true;
    await t.service.apply(file(4));
    await t.pass();
    const m = await t.members();
    assert.deepEqual(m.map((x) => x.host).sort(), ['h1', 'h1', 'h2', 'h2']);
    assert.equal(t.local.all.size, 2);
    assert.equal(t.cluster.h2.size, 2);
    for (const x of m.filter((y) => y.host === 'h2')) assert.match(x.endpoint ?? '', /^192\.168\.9\.2:2\d{4}$/);
    for (const x of m.filter((y) => y.host === 'h1')) assert.equal(x.endpoint, undefined);
    // The port taken there was retried with another, and the row holds the one that worked.
    assert.equal(t.cluster.refusedPorts.length, 1);
    assert.equal(t.cluster.launches.length, 2);
    const rowPorts = m.filter((y) => y.host === 'h2').map((y) => Number(y.endpoint!.split(':')[1]));
    assert.deepEqual(rowPorts.sort(), t.cluster.launches.map((l) => l.req.forwards![0]!.hostPort).sort());
    for (const { req } of t.cluster.launches) {
      assert.equal(req.forwards?.length, 1);
      assert.equal(req.forwards![0]!.hostAddress, '192.168.9.2');
      assert.equal(req.forwards![0]!.guestPort, 80);
      assert.equal(req.meta?.[REPLICA_META_KEY], 's/web');
      assert.equal(req.meta?.[REPLICA_HOME_META_KEY], 'h1');
    }
    await t.done();
  });

  it('a service port on a loopback address keeps its replicas on the home host', async () => {
    const t = await setup('loopback.db');
    await t.service.apply(file(3).replace('networks: [net]', 'networks: [net]\n    port: 18080'));
    await t.pass();
    assert.deepEqual(
      (await t.members()).map((x) => x.host),
      ['h1', 'h1', 'h1'],
    );
    assert.equal(t.cluster.launches.length, 0);
    await t.done();
  });

  it('a stack of the same name applied on another host is refused', async () => {
    const t = await setup('otherhome.db');
    t.cluster.h2.set('s-web-1', view({ name: 's-web-1', image: 'img', meta: { [REPLICA_META_KEY]: 's/web', [REPLICA_HOME_META_KEY]: 'h2' } }, 'h2'));
    await assert.rejects(t.service.apply(file(2)), /runs replicas for cluster host h2/);
    assert.deepEqual(await t.service.list(), []);
    await t.done();
  });

  it('a host without the network gets nothing; no host at all: the reason is the message, nothing is made', async () => {
    const t = await setup('nonet.db');
    t.cluster.h2Networks = [{ name: 'other', mode: 'nat' }];
    await t.service.apply(file(2));
    await t.pass();
    assert.deepEqual(
      (await t.members()).map((x) => x.host),
      ['h1', 'h1'],
    );
    t.cluster.full = true;
    await t.service.apply(file(3));
    await t.pass();
    const svc = (await t.service.get('s')).services[0]!;
    assert.equal(svc.members.length, 2, 'no half-made replica in the row');
    assert.match(svc.message ?? '', /No live cluster host can take a replica of s\/web/);
    t.cluster.full = false;
    await t.pass();
    assert.equal((await t.members()).length, 3);
    await t.done();
  });

  it('a silent host changes nothing; a dead host: replaced on a live one, its stale replicas deleted when it returns', async () => {
    const t = await setup('dead.db');
    await t.service.apply(file(4));
    await t.pass();
    const before = (await t.members()).map((x) => `${x.instance}@${x.host}`);
    // Alive in etcd but not answering: nothing is replaced or deleted.
    t.cluster.silent = true;
    for (let i = 0; i < 3; i++) await t.pass();
    await t.sweep();
    assert.deepEqual(
      (await t.members()).map((x) => `${x.instance}@${x.host}`),
      before,
    );
    assert.deepEqual(t.cluster.deletes, []);
    t.cluster.silent = false;
    // Another home's replica of a stack with the same name, on h2: never touched.
    t.cluster.h2.set('s-web-99', view({ name: 's-web-99', image: 'img', meta: { [REPLICA_META_KEY]: 's/web', [REPLICA_HOME_META_KEY]: 'h3' } }, 'h2'));
    // A clone of a replica (it may carry the meta-data) has another name: never touched either.
    t.cluster.h2.set('my-clone', view({ name: 'my-clone', image: 'img', meta: { [REPLICA_META_KEY]: 's/web', [REPLICA_HOME_META_KEY]: 'h1' } }, 'h2'));
    // h2's lease expires.
    t.cluster.state = 'dead';
    t.events.emit({ type: 'cluster', action: 'host-dead', target: 'h2' });
    await t.pass();
    const m = await t.members();
    assert.deepEqual(
      m.map((x) => x.host),
      ['h1', 'h1', 'h1', 'h1'],
    );
    assert.equal(t.cluster.h2.size, 4, 'the dead host is not asked to delete anything');
    assert.ok(
      t.logs.some((l) => /its host h2 is dead/.test(l)),
      t.logs.join('\n'),
    );
    // h2 returns with its stale replicas: only this stack's, made from here, are deleted.
    t.cluster.state = 'alive';
    await t.pass();
    await t.sweep();
    assert.deepEqual([...t.cluster.h2.keys()], ['s-web-99', 'my-clone']);
    assert.equal(t.cluster.deletes.length, 2);
    assert.equal((await t.members()).length, 4);
    assert.deepEqual(t.local.deleted, [], 'no replica in the row was deleted');
    await t.done();
  });
});
