import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { freePort, guestStatus, startTestDaemon, type TestDaemon } from './helpers.js';

interface InstanceJson {
  id: string;
  name: string;
  state: string;
  cpus: number;
  memoryMiB: number;
  image: string;
  linkedFrom?: string;
  nics: Array<{ mac: string; model: string }>;
  forwards: unknown[];
}

function backingOf(file: string): string | undefined {
  const r = spawnSync('qemu-img', ['info', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { 'backing-filename'?: string })['backing-filename'];
}

/** Replicas, linked and full clones, publish: few boots (TCG on 2 cores), disk state checked by the guest's boot count. */
describe('clones, replicas and publish', () => {
  let d: TestDaemon;

  before(async () => {
    d = await startTestDaemon();
  });
  after(async () => {
    await d.stop();
  });

  it('creates replicas NAME-1..N from one image with --count (linked clones of the image)', () => {
    const r = d.cli(['create', 'appliance', 'rep', '--count', '3']);
    assert.equal(r.code, 0, r.stderr);
    const list = d.cliJson<InstanceJson[]>(['list']);
    const reps = list
      .filter((i) => i.name.startsWith('rep-'))
      .map((i) => i.name)
      .sort();
    assert.deepEqual(reps, ['rep-1', 'rep-2', 'rep-3']);
    const macs = new Set(list.map((i) => i.nics[0]!.mac));
    assert.equal(macs.size, list.length, 'each replica has its own MAC');
    for (const i of list) {
      assert.equal(backingOf(join(d.dir, 'instances', i.id, 'root.qcow2')), join(d.dir, 'images', 'appliance', 'root.qcow2'));
    }
    // A linked clone would freeze the source's internal snapshots: refused, --full works.
    const snap = d.cli(['snapshot', 'create', 'rep-1', 's1']);
    assert.equal(snap.code, 0, snap.stderr);
    const refused = d.cli(['clone', 'rep-1', 'rep-1-copy']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /VMKIT_INVALID_STATE/);
    assert.match(refused.stderr, /--full/);
    const full = d.cli(['clone', 'rep-1', 'rep-1-full', '--full']);
    assert.equal(full.code, 0, full.stderr);
    for (const name of ['rep-1', 'rep-2', 'rep-3', 'rep-1-full']) assert.equal(d.cli(['delete', name]).code, 0, name);
  });

  it('linked and full clones and publish carry the disk state of a stopped source', async () => {
    const port = await freePort();
    assert.equal(d.cli(['launch', 'appliance', 'src1', '--cpus', '1', '--memory', '320', '--forward', `${port}:80`]).code, 0);
    assert.equal((await guestStatus(port)).bootCount, 1);
    const running = d.cli(['clone', 'src1', 'nope']);
    assert.equal(running.code, 1);
    assert.match(running.stderr, /VMKIT_INVALID_STATE/);
    assert.equal(d.cli(['stop', 'src1', '--timeout', '60'], { timeoutMs: 120_000 }).code, 0);

    const linked = d.cli(['clone', 'src1', 'lnk1']);
    assert.equal(linked.code, 0, linked.stderr);
    assert.match(linked.stdout, /linked clone/);
    const full = d.cli(['clone', 'src1', 'full1', '--full']);
    assert.equal(full.code, 0, full.stderr);
    const pub = d.cli(['publish', 'src1', '--name', 'app-v2', '--description', 'published in a test']);
    assert.equal(pub.code, 0, pub.stderr);

    const src = d.cliJson<InstanceJson>(['info', 'src1']);
    const lnk = d.cliJson<InstanceJson>(['info', 'lnk1']);
    const ful = d.cliJson<InstanceJson>(['info', 'full1']);
    assert.equal(lnk.linkedFrom, 'src1');
    assert.equal(ful.linkedFrom, undefined);
    assert.equal(lnk.memoryMiB, 320);
    assert.deepEqual(lnk.forwards, [], 'host ports are not shared');
    assert.notEqual(lnk.nics[0]!.mac, src.nics[0]!.mac);
    // Linked: source and clone are overlays on one frozen layer; full: no backing file at all.
    const layer = backingOf(join(d.dir, 'instances', src.id, 'root.qcow2'));
    assert.match(layer ?? '', /layer-[0-9a-f]+\.qcow2$/);
    assert.equal(backingOf(join(d.dir, 'instances', lnk.id, 'root.qcow2')), layer);
    assert.equal(backingOf(join(d.dir, 'instances', ful.id, 'root.qcow2')), undefined);
    const cmp = spawnSync('qemu-img', [
      'compare',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'qcow2',
      join(d.dir, 'instances', src.id, 'root.qcow2'),
      join(d.dir, 'instances', ful.id, 'root.qcow2'),
    ]);
    assert.equal(cmp.status, 0, 'the full clone has the same bytes');
    const image = d.cliJson<{ source: string; defaults: { cpus: number; memoryMiB: number }; boot?: unknown; disks: Array<{ file: string }> }>(['image', 'info', 'app-v2']);
    assert.equal(image.source, 'publish');
    assert.equal(image.defaults.memoryMiB, 320);
    assert.ok(image.boot, 'boot files travel with the published image');
    assert.equal(backingOf(join(d.dir, 'images', 'app-v2', 'root.qcow2')), undefined, 'published images are flattened');

    // The source cannot go while a linked clone needs its layer.
    const del = d.cli(['delete', 'src1']);
    assert.equal(del.code, 1);
    assert.match(del.stderr, /VMKIT_INSTANCE_IN_USE/);

    // Boot the linked clone: it sees the source's disk (boot count 1 → 2), with its own name.
    const p2 = await freePort();
    assert.equal(d.cli(['forward', 'add', 'lnk1', `${p2}:80`]).code, 0);
    assert.equal(d.cli(['start', 'lnk1']).code, 0);
    const st = await guestStatus(p2);
    assert.equal(st.hostname, 'lnk1');
    assert.equal(st.bootCount, 2);
    assert.equal(d.cli(['delete', 'lnk1', '--force']).code, 0);

    // An instance of the published image starts from the same disk state.
    const p3 = await freePort();
    assert.equal(d.cli(['launch', 'app-v2', 'v2a', '--forward', `${p3}:80`]).code, 0);
    const st3 = await guestStatus(p3);
    assert.equal(st3.bootCount, 2);
    assert.equal(d.cliJson<InstanceJson>(['info', 'v2a']).memoryMiB, 320);
    assert.equal(d.cli(['delete', 'v2a', '--force']).code, 0);

    // Without its clone, the source can be deleted; the full clone does not care.
    assert.equal(d.cli(['delete', 'src1']).code, 0);
    assert.equal(backingOf(join(d.dir, 'instances', ful.id, 'root.qcow2')), undefined);
  });
});
