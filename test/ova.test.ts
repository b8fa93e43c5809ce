import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, guestStatus, startTestDaemon, type TestDaemon } from './helpers.js';

interface ImageJson {
  name: string;
  boot?: { kernel: string; initrd?: string; cmdline: string };
  defaults: { cpus: number; memoryMiB: number };
  nicModels: string[];
  disks: Array<{ file: string }>;
  fidelity?: Array<{ item: string; status: string; value?: string }>;
}

function same(a: string, aFmt: string, b: string, bFmt: string): boolean {
  return spawnSync('qemu-img', ['compare', '-q', '-f', aFmt, '-F', bFmt, a, b]).status === 0;
}

/** Export to OVA and disk formats, import back, boot: same disk bytes, vCPUs, memory, NIC model. */
describe('export and OVA round trip', () => {
  let d: TestDaemon;
  let work: string;

  before(async () => {
    d = await startTestDaemon();
    work = mkdtempSync('/tmp/vmkit-ovat-');
  });
  after(async () => {
    await d.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('exports the image as qcow2, vmdk, vdi, vhdx and raw with the same guest-visible bytes', () => {
    const src = join(d.dir, 'images', 'appliance', 'root.qcow2');
    for (const fmt of ['qcow2', 'vmdk', 'vdi', 'vhdx', 'raw']) {
      const out = join(work, `app.${fmt}`);
      const r = d.cli(['image', 'export', 'appliance', out]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /exported/);
      assert.match(r.stdout, /DROPPED\s+vCPUs, memory, NICs, boot/);
      assert.ok(same(src, 'qcow2', out, fmt), `${fmt} has the same content`);
    }
    const again = d.cli(['image', 'export', 'appliance', join(work, 'app.qcow2')]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /VMKIT_ALREADY_EXISTS/);
    const explicit = d.cli(['image', 'export', 'appliance', join(work, 'disk.bin'), '--disk-format', 'raw']);
    assert.equal(explicit.code, 0, explicit.stderr);
    assert.deepEqual(
      readdirSync(work).filter((f) => f.startsWith('.')),
      [],
      'no partial files',
    );
  });

  it('round-trips an appliance-derived image through an OVA and boots it', async () => {
    // An image derived from the appliance with non-default settings: 2 vCPUs, 320 MiB (the
    // appliance only has the virtio-net driver; the e1000 mapping is covered by the unit tests).
    const c = await d.api<{ metadata: { id: string } }>('POST', '/1.0/instances', { name: 'base', image: 'appliance', cpus: 2, memoryMiB: 320, nics: [{ model: 'virtio-net' }] });
    assert.equal(c.status, 202, JSON.stringify(c.body));
    await d.api('GET', `/1.0/operations/${c.body.metadata.id}/wait?timeout=60`);
    assert.equal(d.cli(['publish', 'base', '--name', 'derived']).code, 0);

    const ova = join(work, 'derived.ova');
    const exp = d.cli(['image', 'export', 'derived', ova]);
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stdout, /Fidelity report:/);
    assert.match(exp.stdout, /mapped\s+nic0: virtio-net → ResourceSubType virtio-net/);
    assert.match(exp.stdout, /mapped\s+firmware: direct kernel boot/);
    const list = spawnSync('tar', ['-tf', ova], { encoding: 'utf8' });
    assert.equal(list.status, 0, list.stderr);
    assert.deepEqual(list.stdout.trim().split('\n'), ['derived.ovf', 'derived.mf', 'derived-disk1.vmdk', 'derived-vmlinuz', 'derived-initrd.img']);
    const x = join(work, 'x');
    spawnSync('mkdir', [x]);
    assert.equal(spawnSync('tar', ['-xf', ova, '-C', x]).status, 0);
    const info = spawnSync('qemu-img', ['info', '--output=json', '-f', 'vmdk', join(x, 'derived-disk1.vmdk')], { encoding: 'utf8' });
    assert.match(info.stdout, /"create-type": "streamOptimized"/);
    const sums = spawnSync('sha256sum', ['derived.ovf', 'derived-disk1.vmdk'], { cwd: x, encoding: 'utf8' }).stdout;
    const mf = spawnSync('cat', [join(x, 'derived.mf')], { encoding: 'utf8' }).stdout;
    for (const line of sums.trim().split('\n')) {
      const [hex, file] = line.split(/\s+/);
      assert.ok(mf.includes(`SHA256(${file})= ${hex}`), `manifest lists ${file}`);
    }

    const imp = d.cli(['image', 'import', ova, '--name', 'roundtrip']);
    assert.equal(imp.code, 0, imp.stderr);
    assert.match(imp.stdout, /mapped\s+manifest/);
    assert.match(imp.stdout, /mapped\s+nic0: virtio-net → virtio-net/);
    assert.match(imp.stdout, /mapped\s+vCPUs: 2/);
    assert.match(imp.stdout, /mapped\s+memory: 320 MiB/);
    assert.match(imp.stdout, /mapped\s+firmware: direct kernel boot/);
    const a = d.cliJson<ImageJson>(['image', 'info', 'derived']);
    const b = d.cliJson<ImageJson>(['image', 'info', 'roundtrip']);
    assert.deepEqual(b.defaults, a.defaults);
    assert.deepEqual(b.nicModels, a.nicModels);
    assert.equal(b.boot?.cmdline, a.boot?.cmdline);
    assert.ok(same(join(d.dir, 'images', 'derived', 'root.qcow2'), 'qcow2', join(d.dir, 'images', 'roundtrip', 'root.qcow2'), 'qcow2'), 'same disk bytes');
    assert.ok(same(join(d.dir, 'images', 'appliance', 'root.qcow2'), 'qcow2', join(d.dir, 'images', 'roundtrip', 'root.qcow2'), 'qcow2'), 'same bytes as the appliance');

    const port = await freePort();
    const l = d.cli(['launch', 'roundtrip', 'rt1', '--forward', `${port}:80`]);
    assert.equal(l.code, 0, l.stderr);
    const st = await guestStatus(port);
    assert.equal(st.hostname, 'rt1');
    assert.equal(st.nics[0]!.driver, 'virtio_net');
    const inst = d.cliJson<{ cpus: number; memoryMiB: number }>(['info', 'rt1']);
    assert.equal(inst.cpus, 2);
    assert.equal(inst.memoryMiB, 320);
    assert.equal(d.cli(['delete', 'rt1', '--force']).code, 0);
    assert.ok(!existsSync(join(d.dir, 'images', '.tmp')));
  });
});
