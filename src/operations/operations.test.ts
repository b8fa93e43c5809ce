import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus } from './events.js';
import { OperationManager } from './operations.js';
import { vmkitError } from '../errors.js';
import type { VmkitEvent } from '../domain/types.js';

describe('OperationManager', () => {
  it('runs work, reports progress as events and resolves waiters', async () => {
    const bus = new EventBus();
    const seen: VmkitEvent[] = [];
    bus.subscribe((e) => seen.push(e));
    const ops = new OperationManager(bus);
    const op = ops.start({
      kind: 'test.work',
      description: 'Working',
      target: 'x',
      run: async (ctx) => {
        ctx.progress({ phase: 'half', percent: 50 });
        return { answer: 42 };
      },
    });
    assert.equal(op.status, 'pending');
    const done = await ops.wait(op.id, 5000);
    assert.equal(done.status, 'success');
    assert.deepEqual(done.result, { answer: 42 });
    assert.ok(seen.some((e) => e.action === 'operation-updated' && (e.metadata as { progress: { phase: string } }).progress.phase === 'half'));
    assert.equal(ops.list()[0]!.id, op.id);
  });

  it('records failures with the error code and hint', async () => {
    const ops = new OperationManager(new EventBus());
    const op = ops.start({
      kind: 'k',
      description: 'd',
      run: async () => {
        throw vmkitError('VMKIT_PORT_IN_USE', 'busy', { hint: 'h' });
      },
    });
    const done = await ops.wait(op.id, 5000);
    assert.equal(done.status, 'failure');
    assert.deepEqual(done.error, { code: 'VMKIT_PORT_IN_USE', message: 'busy', hint: 'h' });
  });

  it('cancels cancellable work and refuses the rest', async () => {
    const ops = new OperationManager(new EventBus());
    const op = ops.start({
      kind: 'k',
      description: 'Long',
      mayCancel: true,
      run: async (ctx) => {
        for (;;) {
          await new Promise((r) => setTimeout(r, 10));
          ctx.checkCancelled();
        }
      },
    });
    await new Promise((r) => setTimeout(r, 30));
    ops.cancel(op.id);
    const done = await ops.wait(op.id, 5000);
    assert.equal(done.status, 'cancelled');
    assert.throws(() => ops.cancel(op.id), { code: 'VMKIT_INVALID_STATE' });
    const fixed = ops.start({ kind: 'k', description: 'Fixed', run: () => new Promise((r) => setTimeout(r, 50)) });
    await new Promise((r) => setImmediate(r));
    assert.throws(() => ops.cancel(fixed.id), { code: 'VMKIT_INVALID_STATE' });
    assert.throws(() => ops.get('nope'), { code: 'VMKIT_OPERATION_NOT_FOUND' });
    const timedOut = await ops.wait(fixed.id, 1);
    assert.equal(timedOut.status, 'running');
  });
});
