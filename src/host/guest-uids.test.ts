import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { GUEST_UID_BASE, GUEST_UID_COUNT, allocateGuestUid, isGuestUid } from './guest-uids.js';

describe('allocateGuestUid', () => {
  it('gives the lowest free uid of the range', () => {
    assert.equal(allocateGuestUid([]), GUEST_UID_BASE);
    assert.equal(allocateGuestUid([GUEST_UID_BASE, GUEST_UID_BASE + 2]), GUEST_UID_BASE + 1);
    assert.ok(isGuestUid(allocateGuestUid([GUEST_UID_BASE])));
  });
  it('reuses a uid once its instance is gone', () => {
    const used = [GUEST_UID_BASE, GUEST_UID_BASE + 1, GUEST_UID_BASE + 2];
    used.splice(1, 1);
    assert.equal(allocateGuestUid(used), GUEST_UID_BASE + 1);
  });
  it('fails with a hint when the range is full', () => {
    const all = Array.from({ length: GUEST_UID_COUNT }, (_, i) => GUEST_UID_BASE + i);
    assert.throws(
      () => allocateGuestUid(all),
      (e: Error & { code?: string }) => e.code === 'VMKIT_RESOURCES_EXCEEDED',
    );
  });
});
