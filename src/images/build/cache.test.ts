import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildCache, cacheLimitsFromEnv, parseCacheSize, qcow2Backing } from './cache.js';

/**
 * The step cache with real qcow2 chains (qemu-img create -b): list reads each entry's parent
 * from its header; prune and the limits remove an entry with everything linked on it, least
 * recently used first, and never an entry a build pinned (nor anything above it).
 */
const K = (c: string) => c.repeat(64);

describe('build step cache', () => {
  const top = mkdtempSync(join(tmpdir(), 'vmkit-bcache-'));
  after(() => rmSync(top, { recursive: true, force: true }));
  let n = 0;

  /** A cache folder with a base disk and entries: key → parent key (or 'base'). */
  function make(chain: Array<[string, string]>, vmExists: (vm: string) => Promise<boolean> = async () => true, limits = { maxBytes: 0, maxEntries: 0 }) {
    const root = join(top, `c${n++}`);
    const dir = join(root, 'build-cache');
    const pins = join(root, 'builds');
    mkdirSync(dir, { recursive: true });
    mkdirSync(pins);
    const base = join(root, 'base.qcow2');
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']).status, 0);
    const cache = new BuildCache(dir, pins, limits, vmExists);
    for (const [key, parent] of chain) {
      const backing = parent === 'base' ? base : cache.file(parent);
      const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', cache.file(key)]);
      assert.equal(r.status, 0, r.stderr.toString());
    }
    return { cache, dir, pins, base };
  }
  const keysIn = (dir: string) =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.qcow2'))
      .map((f) => f.slice(0, 1))
      .sort()
      .join('');

  it('parses sizes and limits', () => {
    assert.equal(parseCacheSize('10G', 'x'), 10 * 2 ** 30);
    assert.equal(parseCacheSize('512MiB', 'x'), 512 * 2 ** 20);
    assert.equal(parseCacheSize('0', 'x'), 0);
    assert.throws(() => parseCacheSize('lots', 'VMKIT_BUILD_CACHE_MAX'), /VMKIT_BUILD_CACHE_MAX "lots" is not a size/);
    assert.deepEqual(cacheLimitsFromEnv({}), { maxBytes: 10 * 2 ** 30, maxEntries: 0 });
    assert.deepEqual(cacheLimitsFromEnv({ VMKIT_BUILD_CACHE_MAX: '2G', VMKIT_BUILD_CACHE_MAX_ENTRIES: '5' }), { maxBytes: 2 * 2 ** 30, maxEntries: 5 });
    assert.throws(
      () => cacheLimitsFromEnv({ VMKIT_BUILD_CACHE_MAX_ENTRIES: '-1' }),
      (e: Error & { code?: string }) => e.code === 'VMKIT_INVALID_ARGUMENT',
    );
  });

  it('lists entries with their parents, sizes and last use (least recently used first)', async () => {
    const { cache, base } = make([
      [K('a'), 'base'],
      [K('b'), K('a')],
    ]);
    assert.equal(await qcow2Backing(cache.file(K('b'))), cache.file(K('a')));
    assert.equal(await qcow2Backing(cache.file(K('a'))), base);
    await cache.touch(K('a'), { step: 'run: echo a', image: 'web' }, new Date('2026-01-02T00:00:00Z'));
    await cache.touch(K('b'), { step: 'run: echo b', image: 'web' }, new Date('2026-01-01T00:00:00Z'));
    const l = await cache.list();
    assert.deepEqual(
      l.map((e) => [e.key, e.parent, e.step, e.lastUsed, e.inUse]),
      [
        [K('b'), K('a'), 'run: echo b', '2026-01-01T00:00:00.000Z', false],
        [K('a'), undefined, 'run: echo a', '2026-01-02T00:00:00.000Z', false],
      ],
    );
    assert.ok(l.every((e) => e.bytes > 0));
  });

  it('prune --older-than removes old entries with everything linked on them; --all leaves pinned chains', async () => {
    // a ← b ← c, a ← d; e alone
    const { cache, dir } = make([
      [K('a'), 'base'],
      [K('b'), K('a')],
      [K('c'), K('b')],
      [K('d'), K('a')],
      [K('e'), 'base'],
    ]);
    const day = (d: number) => new Date(Date.UTC(2026, 0, d));
    await cache.touch(K('a'), {}, day(10));
    await cache.touch(K('b'), {}, day(1)); // old, and c below it is new: c goes with b
    await cache.touch(K('c'), {}, day(9));
    await cache.touch(K('d'), {}, day(9));
    await cache.touch(K('e'), {}, day(9));
    const r = await cache.prune({ olderThanSeconds: 5 * 86400 }, day(10).getTime());
    assert.deepEqual(r.removed.map((e) => e.key.slice(0, 1)).sort(), ['b', 'c']);
    assert.equal(keysIn(dir), 'ade');
    assert.equal(existsSync(join(dir, `${K('b')}.json`)), false, 'its index entry goes too');
    // A running build pinned d: --all keeps d and a (above it), removes e.
    const release = cache.pin([K('a'), K('d')]);
    const all = await cache.prune({ all: true });
    assert.deepEqual(
      all.removed.map((e) => e.key.slice(0, 1)),
      ['e'],
    );
    assert.deepEqual(
      (await cache.list()).map((e) => [e.key.slice(0, 1), e.inUse]),
      [
        ['d', true],
        ['a', true],
      ],
    );
    release();
    await cache.prune({ all: true });
    assert.equal(keysIn(dir), '');
    await assert.rejects(
      async () => cache.prune({}),
      (e: Error & { code?: string }) => e.code === 'VMKIT_INVALID_ARGUMENT',
    );
  });

  it('a kept build VM pins its chain while it exists', async () => {
    let exists = true;
    const { cache, dir, pins } = make(
      [
        [K('a'), 'base'],
        [K('b'), K('a')],
      ],
      async () => exists,
    );
    writeFileSync(join(pins, 'build-0000abcd.pin'), JSON.stringify([K('b')]));
    assert.equal((await cache.prune({ all: true })).removed.length, 0);
    exists = false;
    assert.equal((await cache.prune({ all: true })).removed.length, 2);
    assert.equal(keysIn(dir), '');
    assert.equal(existsSync(join(pins, 'build-0000abcd.pin')), false, 'the pin of a deleted VM goes');
  });

  it('limits: least recently used entries go after a build, never pinned ones', async () => {
    const { cache, dir } = make(
      [
        [K('a'), 'base'],
        [K('b'), 'base'],
        [K('c'), K('b')],
        [K('d'), 'base'],
      ],
      async () => true,
      { maxBytes: 0, maxEntries: 2 },
    );
    const day = (d: number) => new Date(Date.UTC(2026, 0, d));
    await cache.touch(K('a'), {}, day(1)); // the oldest, but pinned
    await cache.touch(K('b'), {}, day(3));
    await cache.touch(K('c'), {}, day(2));
    await cache.touch(K('d'), {}, day(4));
    const release = cache.pin([K('a')]);
    const r = await cache.enforceLimits();
    // Over by 2: a is pinned; c (least recent) goes, then b; d and a stay.
    assert.deepEqual(r.removed.map((e) => e.key.slice(0, 1)).sort(), ['b', 'c']);
    assert.equal(keysIn(dir), 'ad');
    release();
    // A chain used together: its leaf goes before the prefix it shares.
    const chain = make(
      [
        [K('a'), 'base'],
        [K('b'), K('a')],
        [K('c'), 'base'],
      ],
      async () => true,
      { maxBytes: 0, maxEntries: 2 },
    );
    await chain.cache.touch(K('a'), {}, day(5));
    await chain.cache.touch(K('b'), {}, day(6));
    await chain.cache.touch(K('c'), {}, day(7));
    assert.deepEqual(
      (await chain.cache.enforceLimits()).removed.map((e) => e.key.slice(0, 1)),
      ['b'],
    );
    assert.equal(keysIn(chain.dir), 'ac');
    // By size: a limit below one entry empties what is not pinned.
    const small = new BuildCache(dir, join(dir, '..', 'builds'), { maxBytes: 1, maxEntries: 0 });
    await small.enforceLimits();
    assert.equal(keysIn(dir), '');
  });

  it('a prune waits for a build that is looking the cache up (same lock)', async () => {
    const { cache, dir } = make([[K('a'), 'base']]);
    let release: () => void = () => undefined;
    const order: string[] = [];
    const lookup = cache.locked(async () => {
      await new Promise((r) => setTimeout(r, 50));
      release = cache.pin([K('a')]);
      order.push('pinned');
    });
    const prune = cache.prune({ all: true }).then((r) => {
      order.push(`pruned ${r.removed.length}`);
    });
    await Promise.all([lookup, prune]);
    assert.deepEqual(order, ['pinned', 'pruned 0']);
    assert.equal(keysIn(dir), 'a');
    release();
  });
});
