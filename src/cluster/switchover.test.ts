import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { settleOwnership, stepLogger, takeOwnership, type OwnershipStore } from './switchover.js';
import type { OwnerRecord } from './types.js';
import { vmkitError } from '../errors.js';

/** An owner table with etcd's compare-and-swap semantics, and switchable outages. */
class FakeOwners implements OwnershipStore {
  rows = new Map<string, { record: OwnerRecord; revision: number }>();
  private rev = 10;
  down = false;
  /** The next transfer commits but its answer is lost (etcd timed out after the write). */
  loseNextAnswer = false;
  constructor(readonly name: string) {}
  put(instance: string, host: string): number {
    this.rev++;
    this.rows.set(instance, { record: { host, since: 'x' }, revision: this.rev });
    return this.rev;
  }
  private check(): void {
    if (this.down) throw vmkitError('VMKIT_CLUSTER_UNAVAILABLE', 'etcd is not answering', { hint: 'x' });
  }
  async owner(instance: string) {
    this.check();
    return this.rows.get(instance);
  }
  async transfer(instance: string, from: string, to: string, revision: number): Promise<boolean> {
    this.check();
    const cur = this.rows.get(instance);
    if (!cur || cur.revision !== revision || cur.record.host !== from) return false;
    this.put(instance, to);
    if (this.loseNextAnswer) {
      this.loseNextAnswer = false;
      throw vmkitError('VMKIT_CLUSTER_UNAVAILABLE', 'request timed out', { hint: 'x' });
    }
    return true;
  }
  /** The same table seen by another host. */
  as(host: string): OwnershipStore {
    return { name: host, owner: (i) => this.owner(i), transfer: (i, f, t, r) => this.transfer(i, f, t, r) };
  }
}

const quiet = () => undefined;
const fast = { retryMs: 1 };

describe('switch-over ownership: a guest never runs on two hosts', () => {
  it('the source sees the target took over', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h1');
    assert.equal(await takeOwnership(etcd.as('h2'), 'web1', 'h1', rev, {}, quiet), true);
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, quiet, fast), 'target');
  });

  it('the source fences the target out before it resumes; the late target swap then fails', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h1');
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, quiet, fast), 'source');
    assert.notEqual(etcd.rows.get('web1')!.revision, rev, 'the fence moved the revision');
    // The target's "take over" arrives late (a slow network): it must not win.
    assert.equal(await takeOwnership(etcd.as('h2'), 'web1', 'h1', rev, {}, quiet), false);
    assert.equal(etcd.rows.get('web1')!.record.host, 'h1');
  });

  it('an etcd outage leaves the owner unknown: nobody resumes', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h1');
    etcd.down = true;
    const lines: string[] = [];
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, (l) => lines.push(l), { attempts: 3, retryMs: 1 }), 'unknown');
    assert.equal(lines.length, 3, 'each failed read is logged');
    etcd.down = false;
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, quiet, fast), 'source', 'decided once etcd answers');
  });

  it('a fence already up (newer revision, this host) counts as fenced', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h1');
    etcd.put('web1', 'h1');
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, quiet, fast), 'source');
  });

  it('a third owner is not a decision', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h3');
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, quiet, fast), 'unknown');
  });

  it('the target whose swap committed but whose answer was lost knows it owns the guest', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h1');
    etcd.loseNextAnswer = true;
    assert.equal(await takeOwnership(etcd.as('h2'), 'web1', 'h1', rev, {}, quiet, fast), true);
    assert.equal(await settleOwnership(etcd, 'web1', 'h2', rev, quiet, fast), 'target');
  });

  it('the target that cannot read the owner back does not run the guest (it throws)', async () => {
    const etcd = new FakeOwners('h1');
    const rev = etcd.put('web1', 'h1');
    etcd.down = true;
    await assert.rejects(takeOwnership(etcd.as('h2'), 'web1', 'h1', rev, {}, quiet, { attempts: 2, retryMs: 1 }), /etcd is not answering/);
  });

  it('step lines carry the time, the migration, the role and the elapsed time', () => {
    const lines: string[] = [];
    const log = stepLogger('3f2a9c1e-aaaa-bbbb', 'source', 'web1', (l) => lines.push(l));
    log('memory sent');
    assert.match(lines[0]!, /^vmkitd: \d{4}-\d\d-\d\dT[\d:.]+Z migration 3f2a9c1e source web1 \+\d+ms: memory sent$/);
  });
});
