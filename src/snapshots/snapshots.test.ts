import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SUSPEND_TAG, validateSnapshotName } from './snapshots.js';

describe('snapshot names', () => {
  it('follow the common name grammar', () => {
    assert.equal(validateSnapshotName('before-upgrade'), 'before-upgrade');
    for (const bad of ['', 'Bad', 'a_b', '../x', 'a b', '-a', 'x'.repeat(64)]) {
      assert.throws(() => validateSnapshotName(bad), { code: 'VMKIT_NAME_INVALID' });
    }
  });

  it('reserve the suspend tag', () => {
    assert.throws(() => validateSnapshotName(SUSPEND_TAG), { code: 'VMKIT_NAME_INVALID', message: /reserved/ });
  });
});
