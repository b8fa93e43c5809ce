import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Revert } from './revert.js';

describe('Revert', () => {
  it('undoes newest first, every step, and logs each failure with what it was undoing', async () => {
    const done: string[] = [];
    const logged: string[] = [];
    const r = new Revert((m) => logged.push(m));
    r.add('the folder', () => done.push('folder'));
    r.add('the row', async () => {
      done.push('row');
      throw new Error('store is read-only');
    });
    r.add('port 4444', async () => {
      await new Promise((res) => setTimeout(res, 5));
      done.push('port');
    });
    assert.equal(await r.fail(), false);
    assert.deepEqual(done, ['port', 'row', 'folder']);
    assert.deepEqual(logged, ['undoing the row failed: store is read-only']);
  });

  it('success() drops the steps; fail() runs them only once', async () => {
    let n = 0;
    const r = new Revert(() => assert.fail('nothing fails'));
    r.add('a', () => n++);
    r.success();
    assert.equal(await r.fail(), true);
    assert.equal(n, 0);
    r.add('b', () => n++);
    assert.equal(await r.fail(), true);
    assert.equal(await r.fail(), true);
    assert.equal(n, 1);
  });

  it('logs what was thrown even when it is not an Error', async () => {
    const logged: string[] = [];
    const r = new Revert((m) => logged.push(m));
    r.add('the lease', () => Promise.reject('etcd gone'));
    assert.equal(await r.fail(), false);
    assert.deepEqual(logged, ['undoing the lease failed: etcd gone']);
  });
});
