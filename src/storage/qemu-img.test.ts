import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createLinkedClone, fromQemuSnapshot, infoArgv, linkedCloneArgv, qcow2ImageOpts, snapshotArgv, snapshotListArgv, volumeInfo } from './qemu-img.js';

/** Golden argv of every qemu-img call: the format is always named, never probed. */
describe('qemu-img argv', () => {
  it('creates linked clones and inspects with the format named', () => {
    assert.deepEqual(linkedCloneArgv('/img/root.qcow2', 'qcow2', '/i/root.qcow2'), [
      'qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', '/img/root.qcow2', '/i/root.qcow2',
    ]);
    assert.deepEqual(infoArgv('/i/root.qcow2', 'qcow2'), ['qemu-img', 'info', '--output=json', '-f', 'qcow2', '/i/root.qcow2']);
  });

  it('creates, applies and deletes internal snapshots through --image-opts driver=qcow2', () => {
    const opts = 'driver=qcow2,file.driver=file,file.filename=/d/instances/ab/root.qcow2';
    assert.deepEqual(snapshotArgv('create', '/d/instances/ab/root.qcow2', 'before-upgrade'), [
      'qemu-img', 'snapshot', '-q', '-c', 'before-upgrade', '--image-opts', opts,
    ]);
    assert.deepEqual(snapshotArgv('apply', '/d/instances/ab/root.qcow2', 's1'), ['qemu-img', 'snapshot', '-q', '-a', 's1', '--image-opts', opts]);
    assert.deepEqual(snapshotArgv('delete', '/d/instances/ab/root.qcow2', 's1'), ['qemu-img', 'snapshot', '-q', '-d', 's1', '--image-opts', opts]);
  });

  it('doubles commas in paths so a path cannot add options', () => {
    assert.equal(qcow2ImageOpts('/d/a,driver=raw/root.qcow2'), 'driver=qcow2,file.driver=file,file.filename=/d/a,,driver=raw/root.qcow2');
  });

  it('lists snapshots as JSON through qemu-img info', () => {
    assert.deepEqual(snapshotListArgv('/i/root.qcow2'), ['qemu-img', 'info', '--output=json', '-f', 'qcow2', '/i/root.qcow2']);
    assert.deepEqual(fromQemuSnapshot({ name: 's1', 'vm-state-size': 1024, 'date-sec': 1764083666, 'date-nsec': 0 }), {
      name: 's1',
      vmStateSize: 1024,
      createdAt: '2025-11-25T15:14:26.000Z',
    });
  });
});

describe('qemu-img against the real program', () => {
  it('makes a linked clone in O(1): a small overlay naming its backing file and format', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-img-'));
    try {
      const base = join(dir, 'base.qcow2');
      assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '50G']).status, 0);
      const t0 = Date.now();
      await createLinkedClone(base, 'qcow2', join(dir, 'clone.qcow2'));
      const elapsed = Date.now() - t0;
      const info = await volumeInfo(join(dir, 'clone.qcow2'), 'qcow2');
      assert.equal(info.format, 'qcow2');
      assert.equal(info.virtualSize, 50 * 1024 ** 3);
      assert.equal(info.backingFile, base);
      assert.ok(statSync(join(dir, 'clone.qcow2')).size < 1024 * 1024, 'the overlay holds no data');
      assert.ok(elapsed < 5000, `clone took ${elapsed} ms`);
      await assert.rejects(volumeInfo(join(dir, 'missing.qcow2'), 'qcow2'), { code: 'VMKIT_STORAGE_FAILED' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
