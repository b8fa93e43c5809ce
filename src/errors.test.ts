import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, VmkitError, asVmkitError, vmkitError } from './errors.js';

describe('errors', () => {
  it('every code is documented in doc/errors.md', () => {
    const doc = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'doc', 'errors.md'), 'utf8');
    for (const code of Object.keys(ERROR_CODES)) assert.ok(doc.includes(`\`${code}\``), `${code} is missing from doc/errors.md`);
  });
  it('carries code, status, hint and cause', () => {
    const cause = new Error('low level');
    const e = vmkitError('VMKIT_PORT_IN_USE', 'busy', { hint: 'pick another', cause });
    assert.equal(e.status, 409);
    assert.equal(e.cause, cause);
    assert.deepEqual(e.toJSON(), { code: 'VMKIT_PORT_IN_USE', message: 'busy', hint: 'pick another', details: undefined });
  });
  it('wraps foreign errors as VMKIT_INTERNAL with a hint', () => {
    const e = asVmkitError(new TypeError('boom'));
    assert.ok(e instanceof VmkitError);
    assert.equal(e.code, 'VMKIT_INTERNAL');
    assert.ok(e.hint);
  });
});
