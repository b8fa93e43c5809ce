import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { awaitIncomingComplete, buildIncomingArgs } from './migrate.js';
import type { QmpClient } from './qmp.js';

/** A target QEMU that walks through the given (runstate, incoming migration) pairs. */
function fakeTarget(steps: Array<[string, string]>): QmpClient {
  let i = 0;
  const at = () => steps[Math.min(i, steps.length - 1)]!;
  const fake = {
    async queryStatus() {
      return { status: at()[0], running: at()[0] === 'running' };
    },
    async execute(cmd: string) {
      assert.equal(cmd, 'query-migrate');
      const mig = at()[1];
      i++;
      return mig === 'none' ? {} : { status: mig };
    },
  };
  return fake as unknown as QmpClient;
}

describe('incoming migration on the target', () => {
  it('waits while the state is still loading, then accepts a loaded, paused guest', async () => {
    await awaitIncomingComplete(
      fakeTarget([
        ['inmigrate', 'active'],
        ['inmigrate', 'active'],
        ['paused', 'active'],
        ['paused', 'completed'],
      ]),
    );
  });

  it('refuses a QEMU that never received the state: cont would boot the guest afresh (a reboot)', async () => {
    await assert.rejects(awaitIncomingComplete(fakeTarget([['prelaunch', 'none']])), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'VMKIT_MIGRATION_FAILED');
      assert.match(err.message, /runstate "prelaunch", incoming migration "none"/);
      return true;
    });
  });

  it('refuses a failed incoming migration and one that is still loading at the deadline', async () => {
    await assert.rejects(awaitIncomingComplete(fakeTarget([['paused', 'failed']])), /incoming migration "failed"/);
    await assert.rejects(awaitIncomingComplete(fakeTarget([['inmigrate', 'active']]), 100), /runstate "inmigrate"/);
  });

  it('the target waits for the migration: -incoming defer', () => {
    assert.deepEqual(buildIncomingArgs(), ['-incoming', 'defer']);
  });
});
