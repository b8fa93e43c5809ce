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
import { StackController, type StackInstances, type StackNetworks } from './controller.js';
import { StackService } from './service.js';
import { parseStack } from './spec.js';

/**
 * The controller's steps with fake instances (start = running at once) and no service port or
 * health check (so no nft and no HTTP): scaling, the roll's bounds, and a restart from the row.
 * Every create and delete records how many replicas exist and how many serve.
 */
class FakeInstances implements StackInstances {
  readonly all = new Map<string, InstanceView>();
  readonly history: Array<{ op: string; name: string; total: number }> = [];
  async list(): Promise<InstanceView[]> {
    return [...this.all.values()];
  }
  async create(req: CreateInstanceRequest): Promise<InstanceView> {
    const v = { name: req.name, image: req.image, state: 'stopped', nics: [], forwards: [], cloudInit: { meta: req.meta } } as unknown as InstanceView;
    this.all.set(req.name, v);
    this.history.push({ op: 'create', name: req.name, total: this.all.size });
    return v;
  }
  async start(name: string): Promise<InstanceView> {
    const v = { ...this.all.get(name)!, state: 'running' } as InstanceView;
    this.all.set(name, v);
    return v;
  }
  async delete(name: string): Promise<void> {
    this.all.delete(name);
    this.history.push({ op: 'delete', name, total: this.all.size });
  }
}

const networks: StackNetworks = {
  exists: async () => false,
  load: async (name) => ({ name, mode: 'nat', bridge: 'x', dhcp: true, dns: true, createdAt: '' }) as Network,
  create: async (req) => ({ ...req, bridge: 'x', dhcp: true, dns: true, createdAt: '' }) as Network,
  delete: async () => undefined,
};

const file = (image: string, replicas: number, update = '{ maxUnavailable: 0, maxSurge: 1 }') => `name: s
services:
  - name: web
    image: ${image}
    replicas: ${replicas}
    update: ${update}
`;

describe('stack controller (fake instances)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-stack-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function setup(db: string, fake = new FakeInstances()) {
    const store = new SqliteStore(join(dir, db));
    const controller = new StackController({ store, instances: fake, networks, images: { get: async () => ({}) }, events: new EventBus(), log: () => undefined });
    const service = new StackService(controller);
    // Loads the rows (its own 1 s loop runs too; passes are serialized by the stack's lock).
    await controller.start();
    // One pass of the loop, by hand (the timer is not started).
    const pass = () => controller.withLock('s', () => (controller as unknown as { tick(n: string): Promise<void> }).tick('s'));
    const settle = async (max = 20) => {
      for (let i = 0; i < max; i++) {
        await pass();
        if ((await service.get('s')).ready) return;
      }
      assert.fail(`not ready: ${JSON.stringify(await service.get('s'))}`);
    };
    return { store, controller, service, fake, pass, settle };
  }

  it('scales up, then down newest first; apply of the same file changes nothing', async () => {
    const { service, fake, settle, store, controller } = await setup('a.db');
    assert.equal((await service.apply(file('img1', 3))).changed, true);
    await settle();
    assert.deepEqual([...fake.all.keys()], ['s-web-1', 's-web-2', 's-web-3']);
    assert.deepEqual(await service.apply(file('img1', 3)), { stack: 's', changed: false, changes: [] });
    await service.apply(file('img1', 1));
    await settle();
    assert.deepEqual([...fake.all.keys()], ['s-web-1']);
    controller.close();
    await store.close();
  });

  for (const [update, min, max] of [
    ['{ maxUnavailable: 0, maxSurge: 1 }', 3, 4],
    ['{ maxUnavailable: 1, maxSurge: 0 }', 2, 3],
    ['{ maxUnavailable: 1, maxSurge: 2 }', 2, 5],
  ] as const) {
    it(`rolls within its bounds: ${update} keeps ${min}..${max} replicas`, async () => {
      const { service, fake, settle, pass, store, controller } = await setup(`roll-${min}-${max}.db`);
      await service.apply(file('img1', 3, update));
      await settle();
      fake.history.length = 0;
      await service.apply(file('img2', 3, update));
      const serving: number[] = [];
      for (let i = 0; i < 30; i++) {
        await pass();
        const v = await service.get('s');
        serving.push(v.services[0]!.members.filter((m) => m.serving).length);
        if (v.ready) break;
      }
      const view = await service.get('s');
      assert.ok(view.ready);
      assert.deepEqual(
        view.services[0]!.members.map((m) => m.image),
        ['img2', 'img2', 'img2'],
      );
      assert.ok(Math.max(...fake.history.map((h) => h.total)) <= max, `never more than ${max}: ${JSON.stringify(fake.history)}`);
      assert.ok(Math.min(...serving) >= min, `never fewer than ${min} serving: ${serving.join(',')}`);
      assert.equal(controller.record('s')!.services.web!.stable!.image, 'img2', 'the finished roll is the good template now');
      controller.close();
      await store.close();
    });
  }

  it('a restarted controller carries on a roll from the stored row', async () => {
    const fake = new FakeInstances();
    const first = await setup('restart.db', fake);
    await first.service.apply(file('img1', 2));
    await first.settle();
    await first.service.apply(file('img2', 2));
    await first.pass(); // one step: a surge replica of img2
    assert.ok([...fake.all.values()].some((i) => i.image === 'img2'));
    first.controller.close();
    await first.store.close();
    const second = await setup('restart.db', fake);
    await second.settle();
    assert.deepEqual(
      [...fake.all.values()].map((i) => i.image),
      ['img2', 'img2'],
    );
    // And a rollback goes back to img1 the same way.
    await second.service.rollback('s');
    await second.settle();
    assert.deepEqual(
      [...fake.all.values()].map((i) => i.image),
      ['img1', 'img1'],
    );
    second.controller.close();
    await second.store.close();
  });

  it('a service address is reserved on its network while a stack names it; no other service may take it', async () => {
    let reserved: ((network: string) => ReadonlyMap<string, string>) | undefined;
    const nat: StackNetworks = {
      ...networks,
      exists: async (name) => name === 'lan',
      load: async (name) => ({ name, mode: 'nat', subnet: '10.90.0.0/24', bridge: 'x', dhcp: true, dns: true, createdAt: '' }) as Network,
      setAddressReservations: (fn) => (reserved = fn),
    };
    const store = new SqliteStore(join(dir, 'addr.db'));
    // Not started: no loop, no rules (nft) — only the rows, the reservations and the checks.
    const controller = new StackController({
      store,
      instances: new FakeInstances(),
      networks: nat,
      images: { get: async () => ({}) },
      events: new EventBus(),
      log: () => undefined,
    });
    const service = new StackService(controller);
    const withAddress = (stack: string, address: string, svc = 'web') => `name: ${stack}
services:
  - name: ${svc}
    image: img
    replicas: 0
    networks: [lan]
    address: ${address}
`;
    assert.ok(reserved, 'the controller registers its reservations with the networks');
    assert.deepEqual([...reserved('lan')], []);
    await controller.save({ name: 'a', spec: parseStack(withAddress('a', '10.90.0.100:80')), generation: 1, ownedNetworks: [], services: {}, updatedAt: '' });
    assert.deepEqual([...reserved('lan')], [['10.90.0.100', 'stack service a/web']]);
    assert.deepEqual([...reserved('other')], [], 'only on the service’s network');
    await assert.rejects(
      service.diff(withAddress('b', '10.90.0.100:8080')),
      (e: Error & { code?: string }) => e.code === 'VMKIT_STACK_INVALID' && /stack service a\/web/.test(e.message),
    );
    const twice = `${withAddress('c', '10.90.0.50:80')}  - name: api\n    image: img\n    replicas: 0\n    networks: [lan]\n    address: 10.90.0.50:81\n`;
    await assert.rejects(service.diff(twice), (e: Error & { code?: string }) => e.code === 'VMKIT_STACK_INVALID' && /services\[1\]\.address.*c\/web/.test(e.message));
    // The same stack may keep its own address (apply of a changed file).
    assert.equal((await service.diff(withAddress('a', '10.90.0.100:8080'))).changed, true);
    await controller.forget('a');
    assert.deepEqual([...reserved('lan')], [], 'released with the stack');
    await store.close();
  });
});
