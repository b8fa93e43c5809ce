import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Instance, VmkitEvent } from '../domain/types.js';
import { EventBus } from '../operations/events.js';
import { DataPaths } from '../paths.js';
import type { QmpClient } from '../qemu/qmp.js';
import { SqliteStore } from '../store/sqlite.js';
import type { PutOptions, Store, StoreKind } from '../store/store.js';
import { InstanceRegistry, type Runtime } from './registry.js';

/** A real SQLite store whose writes fail like a full disk's while `full` is set. */
class FillableStore implements Store {
  full = false;
  constructor(readonly inner: SqliteStore) {}
  get<T>(kind: StoreKind, key: string) {
    return this.inner.get<T>(kind, key);
  }
  list<T>(kind: StoreKind) {
    return this.inner.list<T>(kind);
  }
  async put<T>(kind: StoreKind, key: string, value: T, options?: PutOptions): Promise<number> {
    if (this.full) throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    return this.inner.put(kind, key, value, options);
  }
  delete(kind: StoreKind, key: string, options?: PutOptions) {
    return this.inner.delete(kind, key, options);
  }
  close() {
    return this.inner.close();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 30));

describe('QEMU events on a host whose disk is full', () => {
  it('an I/O error pauses the instance (io-error) with an event, kept in memory until the store takes it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-reg-'));
    const store = new FillableStore(new SqliteStore(join(dir, 'db')));
    const events = new EventBus();
    const seen: VmkitEvent[] = [];
    events.subscribe((e) => seen.push(e));
    const registry = new InstanceRegistry(store, new DataPaths(dir), events, {});
    const inst = { id: 'ab12', name: 'vm1', state: 'running', nics: [], forwards: [], disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }] } as unknown as Instance;
    await store.put('instances', 'vm1', inst);
    const qmp = Object.assign(new EventEmitter(), { close: () => undefined }) as unknown as QmpClient & EventEmitter;
    const rt: Runtime = { pid: 1, qmp, startedAtMs: Date.now(), expectExit: false, guestShutdown: false, accel: 'tcg' };
    registry.attach('vm1', rt);
    const errors: string[] = [];
    const consoleError = console.error;
    console.error = (msg: string) => errors.push(msg);
    try {
      store.full = true;
      const ioError = { device: '', 'node-name': 'root', operation: 'write', action: 'stop', nospace: true, reason: 'No space left on device' };
      qmp.emit('event', { event: 'BLOCK_IO_ERROR', data: ioError });
      qmp.emit('event', { event: 'BLOCK_IO_ERROR', data: ioError }); // every in-flight request fails
      qmp.emit('event', { event: 'STOP', data: {} });
      await tick();

      const held = await registry.load('vm1');
      assert.equal(held.state, 'paused');
      assert.equal(held.stateReason, 'io-error');
      assert.equal((await registry.list())[0]!.stateReason, 'io-error', 'list serves it too');
      assert.equal(registry.view(held).runtime.qemuStatus, 'io-error');
      assert.equal((await store.inner.get<Instance>('instances', 'vm1'))!.value.state, 'running', 'the store refused the write');
      assert.deepEqual(
        seen.map((e) => e.action),
        ['instance-io-error', 'instance-paused'],
      );
      assert.equal((seen[1]!.metadata as { reason: string }).reason, 'io-error');
      assert.equal(errors.filter((m) => /disk I\/O error on root \(write, no space left/.test(m)).length, 1, 'one line per pause');
      assert.equal(errors.filter((m) => /store refused its new state paused \(database or disk is full\)/.test(m)).length, 1);

      // Still full: retried, still held, nothing thrown.
      await registry.retryUnsaved();
      assert.equal((await registry.load('vm1')).stateReason, 'io-error');

      // Space is back: the next retry stores it.
      store.full = false;
      await registry.retryUnsaved();
      const row = (await store.inner.get<Instance>('instances', 'vm1'))!.value;
      assert.equal(row.state, 'paused');
      assert.equal(row.stateReason, 'io-error');

      // `cont` (resume): QEMU says RESUME, the reason goes with the pause.
      qmp.emit('event', { event: 'RESUME', data: {} });
      await tick();
      const resumed = (await store.inner.get<Instance>('instances', 'vm1'))!.value;
      assert.equal(resumed.state, 'running');
      assert.equal(resumed.stateReason, undefined);

      // A plain pause (no I/O error before it) has no reason.
      qmp.emit('event', { event: 'STOP', data: {} });
      await tick();
      assert.equal((await registry.load('vm1')).stateReason, undefined);
    } finally {
      console.error = consoleError;
      registry.detachAll();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a held change is dropped when the row was deleted meanwhile (never resurrected)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-reg-'));
    const store = new FillableStore(new SqliteStore(join(dir, 'db')));
    const registry = new InstanceRegistry(store, new DataPaths(dir), new EventBus(), {});
    const consoleError = console.error;
    console.error = () => undefined;
    try {
      const inst = { id: 'cd34', name: 'vm2', state: 'running', nics: [], forwards: [], disks: [] } as unknown as Instance;
      await store.put('instances', 'vm2', inst);
      store.full = true;
      await registry.setStateFromEvent(await registry.load('vm2'), 'error', 'QEMU ended');
      assert.equal((await registry.load('vm2')).state, 'error');
      store.full = false;
      await store.delete('instances', 'vm2');
      await assert.rejects(registry.load('vm2'), /no instance "vm2"/, 'a deleted row is not served from memory');
      await registry.retryUnsaved();
      assert.equal(await store.inner.get('instances', 'vm2'), undefined);
    } finally {
      console.error = consoleError;
      registry.detachAll();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
