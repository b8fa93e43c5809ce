import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from './sqlite.js';
import { storeContract } from './store-contract.test-support.js';

describe('SqliteStore', () => {
  describe('the Store contract', () => {
    storeContract(async () => {
      const dir = mkdtempSync(join(tmpdir(), 'vmkit-store-'));
      return { store: new SqliteStore(join(dir, 'db')), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
    });
  });

  it('keeps data across reopening and does not re-run migrations', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-store-'));
    try {
      const s = new SqliteStore(join(dir, 'db'));
      const r = await s.put('instances', 'b', { n: 3 });
      await s.close();
      const again = new SqliteStore(join(dir, 'db'));
      assert.deepEqual(await again.get('instances', 'b'), { key: 'b', value: { n: 3 }, revision: r });
      assert.ok((await again.put('instances', 'c', 1)) > r, 'the revision counter survives too');
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
