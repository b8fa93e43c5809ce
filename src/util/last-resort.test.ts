import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isStorageError, lastResort } from './last-resort.js';

describe('the last resort for unhandled rejections', () => {
  it('lets the daemon go on after a storage failure and says so', () => {
    const lines: string[] = [];
    const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    assert.equal(
      lastResort(full, (l) => lines.push(l)),
      'continue',
    );
    assert.match(lines[0]!, /SQLITE_FULL.*database or disk is full.*keeps running/);
    assert.equal(isStorageError(Object.assign(new Error('no space'), { code: 'ENOSPC' })), true);
    assert.equal(isStorageError(Object.assign(new Error('etcd'), { code: 'VMKIT_CLUSTER_UNAVAILABLE' })), true);
  });

  it('keeps bugs visible: anything else is printed with its stack and ends the daemon', () => {
    const lines: string[] = [];
    const bug = new TypeError("Cannot read properties of undefined (reading 'state')");
    assert.equal(
      lastResort(bug, (l) => lines.push(l)),
      'exit',
    );
    assert.match(lines[0]!, /^BUG: .*TypeError: Cannot read properties of undefined/s);
    assert.match(lines[0]!, /last-resort\.test/, 'with the stack');
    assert.equal(
      lastResort('a string', () => undefined),
      'exit',
    );
    assert.equal(isStorageError(Object.assign(new Error('x'), { code: 'VMKIT_INVALID_STATE' })), false);
  });
});
