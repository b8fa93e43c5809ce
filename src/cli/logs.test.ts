import { it } from 'node:test';
import assert from 'node:assert/strict';
import { lastLines } from './logs.js';

it('vmkit logs --tail N prints the last N lines, not N bytes', () => {
  assert.equal(lastLines('a\nb\nc\n', 2), 'b\nc\n');
  assert.equal(lastLines('a\nb\nc', 2), 'b\nc');
  assert.equal(lastLines('a\n', 5), 'a\n');
  assert.equal(lastLines('', 3), '');
});
