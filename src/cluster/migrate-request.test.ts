import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { vmkitError } from '../errors.js';
import { EventBus } from '../operations/events.js';
import { OperationManager } from '../operations/operations.js';
import { MigrateRequests, type MigrationVerbs } from './migrate-request.js';
import type { MigrateResult } from './migration/protocol.js';
import type { MigrationPlan } from './types.js';

function setup(joined: boolean) {
  const calls: string[] = [];
  const operations = new OperationManager(new EventBus());
  const cluster = {
    requireJoined: () => {
      if (!joined) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'not in a cluster');
    },
  };
  const migrations: MigrationVerbs = {
    plan: async (name, opts) => {
      calls.push(`plan ${name} ${JSON.stringify(opts)}`);
      return { ok: true, blockers: [] } as unknown as MigrationPlan;
    },
    migrate: async (name, opts) => {
      calls.push(`migrate ${name} ${JSON.stringify(opts)}`);
      return { instance: name, to: opts.to } as MigrateResult;
    },
    cancel: (name) => ({ id: `m-${name}` }),
  };
  const instances = {
    get: async (name: string) => (name === 'vm' ? {} : Promise.reject(vmkitError('VMKIT_INSTANCE_NOT_FOUND', `no ${name}`))),
  };
  return { svc: new MigrateRequests({ cluster, migrations, instances, operations }), calls, operations };
}

describe('MigrateRequests', () => {
  it('check=true plans and starts nothing; otherwise the move runs as a cancellable operation', async () => {
    const { svc, calls, operations } = setup(true);
    const checked = await svc.start('vm', { to: 'h2', mode: 'live', check: true });
    assert.ok('plan' in checked);
    assert.equal(operations.list().length, 0);
    const started = await svc.start('vm', { to: 'h2', mode: 'cold' });
    assert.ok('operation' in started);
    assert.equal(started.operation.kind, 'instance.migrate');
    assert.equal(started.operation.mayCancel, true);
    assert.equal((await operations.wait(started.operation.id, 5_000)).status, 'success');
    assert.deepEqual(calls, ['plan vm {"to":"h2","mode":"live"}', 'migrate vm {"to":"h2","mode":"cold"}']);
  });

  it('refuses at once outside a cluster, or for an instance this host does not have', async () => {
    await assert.rejects(setup(false).svc.start('vm', { to: 'h2' }), { code: 'VMKIT_CLUSTER_NOT_JOINED' });
    const { svc, operations } = setup(true);
    await assert.rejects(svc.start('nope', { to: 'h2' }), { code: 'VMKIT_INSTANCE_NOT_FOUND' });
    assert.equal(operations.list().length, 0);
  });
});
