import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from './sqlite.js';

describe('SqliteStore', () => {
  it('stores documents with revisions and compare-and-swap', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-store-'));
    try {
      const s = new SqliteStore(join(dir, 'db'));
      const r1 = await s.put('instances', 'a', { n: 1 }, { expectRevision: 0 });
      await assert.rejects(s.put('instances', 'a', { n: 2 }, { expectRevision: 0 }), { code: 'VMKIT_ALREADY_EXISTS' });
      await assert.rejects(s.put('instances', 'a', { n: 2 }, { expectRevision: r1 + 100 }), { code: 'VMKIT_INVALID_STATE' });
      const r2 = await s.put('instances', 'a', { n: 2 }, { expectRevision: r1 });
      assert.ok(r2 > r1);
      assert.deepEqual(await s.get('instances', 'a'), { key: 'a', value: { n: 2 }, revision: r2 });
      await s.put('instances', 'b', { n: 3 });
      await s.put('images', 'b', { other: true });
      assert.deepEqual((await s.list('instances')).map((v) => v.key), ['a', 'b']);
      assert.equal(await s.delete('instances', 'a'), true);
      assert.equal(await s.get('instances', 'a'), undefined);
      await s.close();
      // Reopening keeps data and does not re-run migrations.
      const again = new SqliteStore(join(dir, 'db'));
      assert.deepEqual((await again.get('instances', 'b'))?.value, { n: 3 });
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
