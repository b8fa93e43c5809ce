import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../store/sqlite.js';
import { AuthThrottle } from './throttle.js';
import { hashToken, parseDuration, TokenManager } from './tokens.js';

describe('tokens', () => {
  it('stores only a hash, expires, revokes and survives a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-tokens-'));
    let now = Date.parse('2026-01-01T00:00:00Z');
    try {
      const store = new SqliteStore(join(dir, 'db'));
      const tokens = new TokenManager(store, () => now);
      const made = await tokens.create({ name: 'ci', role: 'operator', expires: '30d' });
      assert.match(made.token, /^vmkit_[A-Za-z0-9_-]{43}$/);
      assert.equal(made.expiresAt, '2026-01-31T00:00:00.000Z');
      const raw = JSON.stringify(await store.list('tokens'));
      assert.ok(!raw.includes(made.token), 'the secret is not stored');
      assert.ok(raw.includes(hashToken(made.token)));
      await assert.rejects(tokens.create({ name: 'ci', role: 'viewer' }), { code: 'VMKIT_ALREADY_EXISTS' });
      await assert.rejects(tokens.create({ name: '../x', role: 'viewer' }), { code: 'VMKIT_NAME_INVALID' });

      const id = await tokens.authenticate(made.token);
      assert.ok(id && id !== 'expired');
      assert.equal(id.role, 'operator');
      assert.equal(await tokens.authenticate(made.token + 'x'), undefined);
      assert.ok((await tokens.list())[0]!.lastUsedAt, 'last use recorded');

      // A new manager on the same store (a daemon restart) knows it.
      const again = new TokenManager(store, () => now);
      assert.equal(((await again.authenticate(made.token)) as { name: string }).name, 'ci');

      now += parseDuration('30d');
      assert.equal(await tokens.authenticate(made.token), 'expired');
      assert.equal(await tokens.stillValid(hashToken(made.token)), false);

      const admin = await tokens.create({ name: 'ops', role: 'admin' });
      await tokens.revoke('ops');
      assert.equal(await tokens.authenticate(admin.token), undefined);
      await assert.rejects(tokens.revoke('ops'), { code: 'VMKIT_NOT_FOUND' });
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses durations', () => {
    assert.equal(parseDuration('90m'), 90 * 60_000);
    assert.equal(parseDuration('2w'), 14 * 86_400_000);
    assert.throws(() => parseDuration('0d'), { code: 'VMKIT_INVALID_ARGUMENT' });
    assert.throws(() => parseDuration('30'), { code: 'VMKIT_INVALID_ARGUMENT' });
  });
});

describe('failed-authentication throttle', () => {
  it('locks an address out after 10 failures a minute, doubling, per address', () => {
    let now = 0;
    const t = new AuthThrottle({ now: () => now });
    for (let i = 0; i < 9; i++) assert.equal(t.fail('10.0.0.1'), 0);
    assert.equal(t.retryAfter('10.0.0.1'), 0);
    assert.equal(t.fail('10.0.0.1'), 60, 'the 10th failure locks for a minute');
    assert.equal(t.retryAfter('10.0.0.1'), 60);
    assert.equal(t.retryAfter('10.0.0.2'), 0, 'other addresses are not affected');
    now += 61_000;
    assert.equal(t.retryAfter('10.0.0.1'), 0);
    for (let i = 0; i < 9; i++) t.fail('10.0.0.1');
    assert.equal(t.fail('10.0.0.1'), 120, 'the next lockout is twice as long');
    // Failures spread out (fewer than 10 in any minute) never lock.
    for (let i = 0; i < 30; i++) {
      now += 7_000;
      assert.equal(t.fail('10.0.0.3'), 0);
    }
  });

  it('remembers a bounded number of addresses', () => {
    const t = new AuthThrottle({ maxClients: 100 });
    for (let i = 0; i < 1000; i++) t.fail(`10.0.${i >> 8}.${i & 255}`);
    assert.ok((t as unknown as { clients: Map<string, unknown> }).clients.size <= 100);
  });
});
