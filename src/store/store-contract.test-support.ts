import { it } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from './store.js';

/**
 * What every Store must do, as node:test tests: registered inside a `describe` by each store's
 * own test file (SqliteStore in its unit test, EtcdStore against a real etcd). `open` returns
 * a fresh, empty store for each test; the contract closes it and then calls `cleanup`.
 */
export type OpenStore = () => Promise<{ store: Store; cleanup?: () => Promise<void> | void }>;

export function storeContract(open: OpenStore): void {
  const withStore = (fn: (s: Store) => Promise<void>) => async () => {
    const { store, cleanup } = await open();
    try {
      await fn(store);
    } finally {
      await store.close();
      await cleanup?.();
    }
  };

  it(
    'puts and gets documents with their revision',
    withStore(async (s) => {
      assert.equal(await s.get('instances', 'nope'), undefined);
      const value = { name: 'web1', cpus: 2, tags: ['a', 'b'], nested: { ok: true, none: null }, text: 'héllo ✓' };
      const r1 = await s.put('instances', 'web1', value);
      assert.ok(Number.isInteger(r1) && r1 > 0, `revision ${r1}`);
      assert.deepEqual(await s.get('instances', 'web1'), { key: 'web1', value, revision: r1 });
      const r2 = await s.put('instances', 'web1', { ...value, cpus: 4 });
      assert.ok(r2 > r1);
      assert.deepEqual(await s.get('instances', 'web1'), { key: 'web1', value: { ...value, cpus: 4 }, revision: r2 });
    }),
  );

  it(
    'revisions grow across keys; an untouched key keeps its revision',
    withStore(async (s) => {
      const ra = await s.put('instances', 'a', 1);
      const rb = await s.put('images', 'b', 2);
      const rc = await s.put('instances', 'c', 3);
      assert.ok(ra < rb && rb < rc, `${ra} < ${rb} < ${rc}`);
      assert.equal((await s.get('instances', 'a'))?.revision, ra);
      assert.equal((await s.get('images', 'b'))?.value, 2);
    }),
  );

  it(
    'expectRevision 0 creates only if absent (VMKIT_ALREADY_EXISTS otherwise)',
    withStore(async (s) => {
      const r1 = await s.put('instances', 'a', { n: 1 }, { expectRevision: 0 });
      await assert.rejects(s.put('instances', 'a', { n: 2 }, { expectRevision: 0 }), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'VMKIT_ALREADY_EXISTS');
        assert.match(e.message, /instance "a" already exists/);
        return true;
      });
      assert.deepEqual(await s.get('instances', 'a'), { key: 'a', value: { n: 1 }, revision: r1 });
    }),
  );

  it(
    'expectRevision n is a compare-and-swap (VMKIT_INVALID_STATE when it does not hold)',
    withStore(async (s) => {
      const r1 = await s.put('instances', 'a', { n: 1 });
      await assert.rejects(s.put('instances', 'a', { n: 2 }, { expectRevision: r1 + 100 }), { code: 'VMKIT_INVALID_STATE' });
      await assert.rejects(s.put('instances', 'missing', { n: 2 }, { expectRevision: r1 }), { code: 'VMKIT_INVALID_STATE' });
      assert.equal(await s.get('instances', 'missing'), undefined);
      const r2 = await s.put('instances', 'a', { n: 2 }, { expectRevision: r1 });
      assert.ok(r2 > r1);
      // The old revision no longer matches.
      await assert.rejects(s.put('instances', 'a', { n: 3 }, { expectRevision: r1 }), { code: 'VMKIT_INVALID_STATE' });
      assert.deepEqual(await s.get('instances', 'a'), { key: 'a', value: { n: 2 }, revision: r2 });
    }),
  );

  it(
    'of two concurrent swaps from the same revision exactly one wins',
    withStore(async (s) => {
      const r1 = await s.put('instances', 'a', { owner: 'none' });
      const results = await Promise.allSettled([
        s.put('instances', 'a', { owner: 'h1' }, { expectRevision: r1 }),
        s.put('instances', 'a', { owner: 'h2' }, { expectRevision: r1 }),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1);
      assert.equal(lost.length, 1);
      assert.equal((lost[0]!.reason as { code?: string }).code, 'VMKIT_INVALID_STATE');
      const winner = results[0]!.status === 'fulfilled' ? 'h1' : 'h2';
      assert.deepEqual((await s.get('instances', 'a'))?.value, { owner: winner });
    }),
  );

  it(
    'deletes, with and without expectRevision',
    withStore(async (s) => {
      const r1 = await s.put('instances', 'a', 1);
      await s.put('instances', 'b', 2);
      assert.equal(await s.delete('instances', 'nope'), false);
      await assert.rejects(s.delete('instances', 'a', { expectRevision: r1 + 100 }), { code: 'VMKIT_INVALID_STATE' });
      await assert.rejects(s.delete('instances', 'a', { expectRevision: 0 }), { code: 'VMKIT_ALREADY_EXISTS' });
      assert.equal((await s.get('instances', 'a'))?.value, 1);
      assert.equal(await s.delete('instances', 'a', { expectRevision: r1 }), true);
      assert.equal(await s.get('instances', 'a'), undefined);
      assert.equal(await s.delete('instances', 'a', { expectRevision: 0 }), false);
      await assert.rejects(s.delete('instances', 'a', { expectRevision: r1 }), { code: 'VMKIT_INVALID_STATE' });
      assert.equal(await s.delete('instances', 'b'), true);
      assert.equal(await s.delete('instances', 'b'), false);
      // A deleted key can be created again.
      assert.ok((await s.put('instances', 'a', 3, { expectRevision: 0 })) > r1);
    }),
  );

  it(
    'lists one kind, sorted by key',
    withStore(async (s) => {
      assert.deepEqual(await s.list('instances'), []);
      for (const k of ['web10', 'db', 'web2', 'a-1', 'web1']) await s.put('instances', k, { k });
      await s.put('images', 'zzz', { other: true });
      await s.put('instancesx' as 'instances', 'x', 1); // a kind name that extends another must not leak in
      const listed = await s.list<{ k: string }>('instances');
      assert.deepEqual(
        listed.map((v) => v.key),
        ['a-1', 'db', 'web1', 'web10', 'web2'],
      );
      for (const v of listed) {
        assert.equal(v.value.k, v.key);
        assert.deepEqual(await s.get('instances', v.key), v);
      }
      assert.deepEqual(
        (await s.list('images')).map((v) => v.key),
        ['zzz'],
      );
      assert.deepEqual(await s.list('networks'), []);
    }),
  );
}
