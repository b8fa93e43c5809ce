import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lastLines } from './console.js';

test('logs --tail N keeps the last N lines, not characters', () => {
  assert.equal(lastLines('a\nbb\nccc\n', 2), 'bb\nccc\n');
  assert.equal(lastLines('a\nbb\nccc', 2), 'bb\nccc');
  assert.equal(lastLines('a\nbb\nccc\n', 1), 'ccc\n');
  assert.equal(lastLines('a\nbb\n', 5), 'a\nbb\n');
  assert.equal(lastLines('', 3), '');
  assert.equal(lastLines('only line', 1), 'only line');
  assert.equal(lastLines('x\n\n\ny\n', 2), '\ny\n');
});
