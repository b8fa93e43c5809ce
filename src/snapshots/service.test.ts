import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Snapshot } from '../domain/types.js';
import { vmkitError } from '../errors.js';
import { EventBus } from '../operations/events.js';
import { OperationManager } from '../operations/operations.js';
import { SnapshotService, type SnapshotServiceDeps } from './service.js';

/** A snapshot manager that knows instance "vm" with snapshot "s1", and records its calls. */
function setup() {
  const calls: string[] = [];
  const operations = new OperationManager(new EventBus());
  const snapshots: SnapshotServiceDeps['snapshots'] = {
    precheck: async (instance, snapshot, exists) => {
      calls.push(`precheck ${instance} ${snapshot} ${exists}`);
      if (instance !== 'vm') throw vmkitError('VMKIT_INSTANCE_NOT_FOUND', `no ${instance}`);
      if (exists === true && snapshot !== 's1') throw vmkitError('VMKIT_SNAPSHOT_NOT_FOUND', `no ${snapshot}`);
      if (exists === false && snapshot === 's1') throw vmkitError('VMKIT_ALREADY_EXISTS', `${snapshot} exists`);
    },
    get: async (instance, name) => ({ instance, name }) as Snapshot,
    create: async (instance, req) => {
      calls.push(`create ${instance} ${req.name}`);
      return { snapshot: { instance, name: req.name } as Snapshot, durationMs: 1 };
    },
    delete: async (instance, name) => {
      calls.push(`delete ${instance} ${name}`);
      return { deleted: name };
    },
    restore: async (instance, name) => {
      calls.push(`restore ${instance} ${name}`);
      return { instance: {} as never, snapshot: { name } as Snapshot, durationMs: 1 };
    },
  };
  return { svc: new SnapshotService({ snapshots, operations }), calls, operations };
}

describe('SnapshotService', () => {
  it('checks first, then runs create, restore and delete as operations', async () => {
    const { svc, calls, operations } = setup();
    const steps = [() => svc.create('vm', { name: 's2' }), () => svc.restore('vm', 's1'), () => svc.delete('vm', 's1')];
    for (const step of steps) {
      const op = await step();
      assert.equal((await operations.wait(op.id, 5_000)).status, 'success');
    }
    assert.deepEqual(calls, ['precheck vm s2 false', 'create vm s2', 'precheck vm s1 true', 'restore vm s1', 'precheck vm s1 true', 'delete vm s1']);
  });

  it('answers bad requests at once, before any operation', async () => {
    const { svc, operations } = setup();
    await assert.rejects(svc.create('vm', { name: 's1' }), { code: 'VMKIT_ALREADY_EXISTS' });
    await assert.rejects(svc.restore('vm', 'nope'), { code: 'VMKIT_SNAPSHOT_NOT_FOUND' });
    await assert.rejects(svc.delete('other', 's1'), { code: 'VMKIT_INSTANCE_NOT_FOUND' });
    await assert.rejects(svc.get('other', 's1'), { code: 'VMKIT_INSTANCE_NOT_FOUND' });
    assert.equal(operations.list().length, 0);
  });
});
