import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  compareArgv,
  compareVolumes,
  convertArgv,
  convertVolume,
  createLinkedClone,
  flattenArgv,
  fromQemuSnapshot,
  infoArgv,
  linkedCloneArgv,
  qcow2ImageOpts,
  rebaseArgv,
  snapshotArgv,
  sharedInfoArgv,
  snapshotExportArgv,
  snapshotListArgv,
  untrustedInfoArgv,
  volumeInfo,
} from './qemu-img.js';

/** Golden argv of every qemu-img call: the format is always named, never probed. */
describe('qemu-img argv', () => {
  it('creates linked clones and inspects with the format named', () => {
    assert.deepEqual(linkedCloneArgv('/img/root.qcow2', 'qcow2', '/i/root.qcow2'), [
      'qemu-img',
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'qcow2',
      '-b',
      '/img/root.qcow2',
      '/i/root.qcow2',
    ]);
    assert.deepEqual(infoArgv('/x.raw', 'raw'), ['qemu-img', 'info', '--output=json', '-f', 'raw', '/x.raw']);
    assert.deepEqual(untrustedInfoArgv('/u.vmdk', 'vmdk'), ['prlimit', '--cpu=30', `--as=${1024 ** 3}`, '--', 'qemu-img', 'info', '--output=json', '-f', 'vmdk', '/u.vmdk']);
    assert.deepEqual(convertArgv('/u.vdi', 'vdi', '/i/root.qcow2', 'qcow2', { untrusted: true }), [
      'prlimit',
      '--cpu=3600',
      `--as=${2 * 1024 ** 3}`,
      '--',
      'qemu-img',
      'convert',
      '-p',
      '-f',
      'vdi',
      '-O',
      'qcow2',
      '/u.vdi',
      '/i/root.qcow2',
    ]);
    assert.deepEqual(convertArgv('/i/root.qcow2', 'qcow2', '/o/d.vmdk', 'vmdk', { options: ['subformat=streamOptimized'] }), [
      'qemu-img',
      'convert',
      '-p',
      '-f',
      'qcow2',
      '-O',
      'vmdk',
      '-o',
      'subformat=streamOptimized',
      '/i/root.qcow2',
      '/o/d.vmdk',
    ]);
    assert.deepEqual(flattenArgv('/a/root.qcow2', '/b/root.qcow2'), ['qemu-img', 'convert', '-p', '-f', 'qcow2', '-O', 'qcow2', '/a/root.qcow2', '/b/root.qcow2']);
    assert.deepEqual(rebaseArgv('/a/root.qcow2', '/a/layer.qcow2', 'qcow2'), ['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', '/a/layer.qcow2', '/a/root.qcow2']);
    assert.deepEqual(compareArgv('/a', 'qcow2', '/b', 'vmdk'), ['qemu-img', 'compare', '-q', '-f', 'qcow2', '-F', 'vmdk', '/a', '/b']);
    assert.deepEqual(infoArgv('/i/root.qcow2', 'qcow2'), ['qemu-img', 'info', '--output=json', '-f', 'qcow2', '/i/root.qcow2']);
  });

  it('creates, applies and deletes internal snapshots through --image-opts driver=qcow2', () => {
    const opts = 'driver=qcow2,file.driver=file,file.filename=/d/instances/ab/root.qcow2';
    assert.deepEqual(snapshotArgv('create', '/d/instances/ab/root.qcow2', 'before-upgrade'), ['qemu-img', 'snapshot', '-q', '-c', 'before-upgrade', '--image-opts', opts]);
    assert.deepEqual(snapshotArgv('apply', '/d/instances/ab/root.qcow2', 's1'), ['qemu-img', 'snapshot', '-q', '-a', 's1', '--image-opts', opts]);
    assert.deepEqual(snapshotArgv('delete', '/d/instances/ab/root.qcow2', 's1'), ['qemu-img', 'snapshot', '-q', '-d', 's1', '--image-opts', opts]);
  });

  it('exports a snapshot state with the format named, sharing the lock of a running VM', () => {
    assert.deepEqual(snapshotExportArgv('/i/root.qcow2', 'snap1', '/j/root.qcow2', { file: '/img/root.qcow2', format: 'qcow2' }), [
      'qemu-img',
      'convert',
      '-p',
      '-U',
      '-f',
      'qcow2',
      '-l',
      'snapshot.name=snap1',
      '-O',
      'qcow2',
      '-B',
      '/img/root.qcow2',
      '-F',
      'qcow2',
      '/i/root.qcow2',
      '/j/root.qcow2',
    ]);
    assert.deepEqual(snapshotExportArgv('/i/root.qcow2', 'snap1', '/j/root.qcow2'), [
      'qemu-img',
      'convert',
      '-p',
      '-U',
      '-f',
      'qcow2',
      '-l',
      'snapshot.name=snap1',
      '-O',
      'qcow2',
      '/i/root.qcow2',
      '/j/root.qcow2',
    ]);
    assert.deepEqual(sharedInfoArgv('/i/root.qcow2'), ['qemu-img', 'info', '-U', '--output=json', '-f', 'qcow2', '/i/root.qcow2']);
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

  it('converts with progress, and a cancel kills qemu-img at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-conv-'));
    try {
      const src = join(dir, 'src.raw');
      writeFileSync(src, Buffer.concat(Array.from({ length: 16 }, () => randomBytes(8 * 1024 * 1024))));
      const seen: number[] = [];
      await convertVolume(src, 'raw', join(dir, 'out.vmdk'), 'vmdk', { options: ['subformat=streamOptimized'], onProgress: (f) => seen.push(f) });
      assert.ok(seen.length > 0 && seen.at(-1)! <= 1, 'progress reported');
      assert.ok(await compareVolumes(src, 'raw', join(dir, 'out.vmdk'), 'vmdk'));
      const ctrl = new AbortController();
      const t0 = Date.now();
      setTimeout(() => ctrl.abort(), 100);
      await assert.rejects(convertVolume(src, 'raw', join(dir, 'c.vmdk'), 'vmdk', { options: ['subformat=streamOptimized'], signal: ctrl.signal }), {
        code: 'VMKIT_OPERATION_CANCELLED',
      });
      assert.ok(Date.now() - t0 < 3000, 'stopped promptly');
      ctrl.abort();
      await assert.rejects(convertVolume(src, 'raw', join(dir, 'd.qcow2'), 'qcow2', { signal: ctrl.signal }), { code: 'VMKIT_OPERATION_CANCELLED' });
      assert.ok(!existsSync(join(dir, 'd.qcow2')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
