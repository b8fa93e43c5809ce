import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
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

  it('moves rows it cannot use to the quarantine table, keeps the others, and remembers them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-store-'));
    try {
      const s = new SqliteStore(join(dir, 'db'));
      await s.put('instances', 'good', { name: 'good' });
      await s.put('instances', 'empty', { name: 'empty' });
      await s.close();
      // Damage one row behind the store's back, as a torn write or a bad hand edit would.
      const raw = new Database(join(dir, 'db'));
      raw.prepare("INSERT INTO objects (kind, key, value, revision) VALUES ('instances', 'torn', '{\"id\":\"ab\",\"na', 9)").run();
      raw.close();
      const again = new SqliteStore(join(dir, 'db'));
      const moved = again.quarantineBadRows((_kind, _key, value) => ((value as { name?: string }).name === 'empty' ? 'empty, for the test' : undefined));
      assert.deepEqual(
        moved.map((m) => [m.kind, m.key]),
        [
          ['instances', 'empty'],
          ['instances', 'torn'],
        ],
      );
      assert.match(moved.find((m) => m.key === 'torn')!.reason, /not valid JSON/);
      assert.equal(moved.find((m) => m.key === 'torn')!.value, '{"id":"ab","na', 'the text is kept as it was');
      assert.deepEqual(
        (await again.list('instances')).map((v) => v.key),
        ['good'],
      );
      assert.deepEqual(
        again.quarantineBadRows(() => undefined),
        [],
        'nothing left to move',
      );
      assert.equal(again.quarantined().length, 2, 'the quarantine outlives the start that made it');
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
