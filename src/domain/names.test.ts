import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { validateName } from './names.js';
import { VmkitError } from '../errors.js';

describe('validateName', () => {
  it('accepts DNS-label names', () => {
    for (const n of ['a', 'web1', 'my-vm-2', 'x'.repeat(63)]) assert.equal(validateName(n), n);
  });
  it('rejects everything else with VMKIT_NAME_INVALID and a hint', () => {
    for (const n of ['', '../x', 'a;b', '$(x)', 'a\nb', 'x'.repeat(64), 'wеb1', 'Web', '-a', 'a-', 'a.b', 'a/b', 'a b', 'ａ', 42, undefined]) {
      assert.throws(
        () => validateName(n),
        (e: unknown) => e instanceof VmkitError && e.code === 'VMKIT_NAME_INVALID' && !!e.hint && e.status === 400,
        String(n),
      );
    }
  });
});
