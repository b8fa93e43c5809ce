import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertTransition, canTransition, isActive } from './state.js';

describe('instance state machine', () => {
  it('allows the lifecycle paths', () => {
    assert.ok(canTransition('stopped', 'starting'));
    assert.ok(canTransition('starting', 'running'));
    assert.ok(canTransition('running', 'paused'));
    assert.ok(canTransition('paused', 'running'));
    assert.ok(canTransition('running', 'stopping'));
    assert.ok(canTransition('stopping', 'stopped'));
    assert.ok(canTransition('error', 'starting'));
  });
  it('allows the paths of migration, suspend and recovery', () => {
    assert.ok(canTransition('starting', 'migrating'), 'a migration target waits for the incoming state');
    assert.ok(canTransition('migrating', 'suspended'), 'a suspend-mode migration target');
    assert.ok(canTransition('stopping', 'paused'), 'a failed stop of a paused instance');
    assert.ok(canTransition('suspended', 'paused'), 'a suspend interrupted before QEMU quit');
    assert.ok(canTransition('suspended', 'error'), 'that QEMU cannot be re-attached');
    assert.ok(canTransition('error', 'running') && canTransition('error', 'paused'), 'a later re-attach succeeds');
  });
  it('refuses impossible transitions with VMKIT_INVALID_STATE', () => {
    assert.equal(canTransition('stopped', 'paused'), false);
    assert.equal(canTransition('deleting', 'starting'), false);
    assert.equal(canTransition('stopped', 'running'), false);
    assert.equal(canTransition('deleting', 'stopped'), false);
    assert.throws(() => assertTransition('vm', 'stopped', 'paused', 'pause'), { code: 'VMKIT_INVALID_STATE' });
  });
  it('knows which states have a QEMU process', () => {
    assert.ok(isActive('running') && isActive('paused') && isActive('starting'));
    assert.ok(!isActive('stopped') && !isActive('error') && !isActive('suspended'));
  });
});
