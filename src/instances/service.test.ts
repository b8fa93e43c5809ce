import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { InstanceView } from '../domain/types.js';
import { vmkitError } from '../errors.js';
import { EventBus } from '../operations/events.js';
import { OperationManager } from '../operations/operations.js';
import { InstanceService, type InstanceServiceDeps } from './service.js';

/** An instance manager that records its calls; `start` fails when told to. */
function fakeInstances(failStart: boolean): { instances: InstanceServiceDeps['instances']; calls: string[] } {
  const calls: string[] = [];
  const view = (name: string): InstanceView => ({ name }) as InstanceView;
  const instances: InstanceServiceDeps['instances'] = {
    get: async (name) => {
      calls.push(`get ${name}`);
      return view(name);
    },
    create: async (req) => {
      calls.push(`create ${req.name}`);
      return view(req.name);
    },
    start: async (name) => {
      calls.push(`start ${name}`);
      if (failStart) throw vmkitError('VMKIT_QEMU_FAILED', 'QEMU exited at start');
      return view(name);
    },
    stop: async (name, opts) => {
      calls.push(`stop ${name} ${JSON.stringify(opts)}`);
      return view(name);
    },
    restart: async (name) => view(name),
    pause: async (name) => {
      calls.push(`pause ${name}`);
      return view(name);
    },
    resume: async (name) => view(name),
    delete: async (name, opts) => {
      calls.push(`delete ${name} ${JSON.stringify(opts)}`);
    },
    clone: async (_source, name) => view(name),
  };
  return { instances, calls };
}

function service(failStart: boolean): { svc: InstanceService; calls: string[]; operations: OperationManager } {
  const { instances, calls } = fakeInstances(failStart);
  const operations = new OperationManager(new EventBus());
  const svc = new InstanceService({
    instances,
    images: { get: async (name) => (name === 'appliance' ? {} : Promise.reject(vmkitError('VMKIT_IMAGE_NOT_FOUND', `no image ${name}`))) },
    snapshots: { suspend: async (name) => ({ name }) as InstanceView },
    operations,
  });
  return { svc, calls, operations };
}

describe('InstanceService', () => {
  it('launch: a failed start deletes the fresh instance and the operation fails with the start error', async () => {
    const { svc, calls, operations } = service(true);
    const op = await svc.launch({ name: 'vm', image: 'appliance', start: true });
    assert.equal(op.kind, 'instance.launch');
    const done = await operations.wait(op.id, 5_000);
    assert.equal(done.status, 'failure');
    assert.equal(done.error?.code, 'VMKIT_QEMU_FAILED');
    assert.deepEqual(calls, ['create vm', 'start vm', 'delete vm {"force":true}']);
  });

  it('launch refuses a bad name or an unknown image before any operation starts', async () => {
    const { svc, operations } = service(false);
    await assert.rejects(svc.launch({ name: '../x', image: 'appliance' }), { code: 'VMKIT_NAME_INVALID' });
    await assert.rejects(svc.launch({ name: 'vm', image: 'nope' }), { code: 'VMKIT_IMAGE_NOT_FOUND' });
    assert.equal(operations.list().length, 0);
  });

  it('changeState runs the matching verb; only a stop may be cancelled', async () => {
    const { svc, calls, operations } = service(false);
    const stop = await svc.changeState('vm', { action: 'stop', force: true, timeout: 3 });
    assert.equal(stop.mayCancel, true);
    assert.equal((await operations.wait(stop.id, 5_000)).status, 'success');
    const pause = await svc.changeState('vm', { action: 'pause' });
    assert.equal(pause.mayCancel, false);
    assert.equal(pause.description, 'Pausing vm');
    await operations.wait(pause.id, 5_000);
    assert.deepEqual(calls, ['get vm', 'stop vm {"force":true,"timeout":3}', 'get vm', 'pause vm']);
  });
});
