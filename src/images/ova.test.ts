import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { listTar, tarHeader, writeTar } from './tar.js';
import { parseXml } from './xml.js';
import { buildOvf, parseOvf } from './ovf.js';
import { importOva, parseManifest } from './ova.js';
import { ImageStore } from './image-store.js';
import { SqliteStore } from '../store/sqlite.js';
import { DataPaths } from '../paths.js';

/** A raw ustar header with any name/type (for crafted archives), checksum fixed up. */
function header(name: string, type: string, size: number, linkname = ''): Buffer {
  const h = tarHeader('placeholder', size);
  h.fill(0, 0, 100);
  h.write(name, 0, 100, 'utf8');
  h[156] = type.charCodeAt(0);
  h.write(linkname, 157, 100, 'utf8');
  h.write('        ', 148, 'latin1');
  let sum = 0;
  for (const x of h) sum += x;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

function tarOf(entries: Array<{ name: string; type?: string; data?: Buffer; link?: string }>): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    parts.push(header(e.name, e.type ?? '0', data.length, e.link));
    parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

describe('OVA: tar, OVF, manifest (crafted files)', () => {
  let dir: string;
  let store: SqliteStore;
  let images: ImageStore;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-ova-'));
    store = new SqliteStore(join(dir, 'vmkit.db'));
    images = new ImageStore(store, new DataPaths(dir));
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes ustar archives GNU tar reads, and reads them back', async () => {
    writeFileSync(join(dir, 'a.txt'), 'hello');
    writeFileSync(join(dir, 'b.bin'), Buffer.alloc(1000, 7));
    const out = join(dir, 'x.tar');
    await writeTar(out, [
      { name: 'a.txt', path: join(dir, 'a.txt'), size: 5 },
      { name: 'b.bin', path: join(dir, 'b.bin'), size: 1000 },
    ]);
    const t = spawnSync('tar', ['-tvf', out], { encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /a\.txt/);
    const members = await listTar(out);
    assert.deepEqual(
      members.map((m) => [m.name, m.size]),
      [
        ['a.txt', 5],
        ['b.bin', 1000],
      ],
    );
  });

  it('refuses members with ../, absolute paths, folders, symlinks, hardlinks and devices', async () => {
    const cases: Array<[string, Parameters<typeof tarOf>[0], RegExp]> = [
      ['dotdot', [{ name: '../evil', data: Buffer.from('x') }], /outside/],
      ['abs', [{ name: '/etc/cron.d/evil', data: Buffer.from('x') }], /absolute/],
      ['dir', [{ name: 'sub/file', data: Buffer.from('x') }], /folder/],
      ['symlink', [{ name: 'disk.vmdk', type: '2', link: '/etc/shadow' }], /symbolic link/],
      ['hardlink', [{ name: 'disk.vmdk', type: '1', link: '/etc/shadow' }], /hard link/],
      ['chardev', [{ name: 'disk.vmdk', type: '3' }], /device/],
      ['blockdev', [{ name: 'disk.vmdk', type: '4' }], /device/],
      [
        'dup',
        [
          { name: 'a', data: Buffer.from('1') },
          { name: 'a', data: Buffer.from('2') },
        ],
        /twice/,
      ],
    ];
    for (const [label, entries, msg] of cases) {
      const f = join(dir, `${label}.ova`);
      writeFileSync(f, tarOf(entries));
      await assert.rejects(listTar(f), { code: 'VMKIT_IMAGE_UNSAFE', message: msg }, label);
      await assert.rejects(importOva(images, { source: f, name: `t-${label}` }), { code: 'VMKIT_IMAGE_UNSAFE' }, label);
    }
  });

  it('refuses DOCTYPE and entity declarations (XXE, billion laughs) before parsing', () => {
    const xxe = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Envelope>&e;</Envelope>';
    assert.throws(() => parseXml(xxe), { code: 'VMKIT_IMAGE_UNSAFE' });
    const laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>';
    assert.throws(() => parseXml(laughs), { code: 'VMKIT_IMAGE_UNSAFE' });
    assert.throws(() => parseXml('<a><b></a>'), { code: 'VMKIT_OVF_INVALID' });
    const el = parseXml('<?xml version="1.0"?><!-- c --><a x="1 &amp; 2"><b>t&lt;</b><![CDATA[<raw>]]></a>');
    assert.equal(el.attrs.x, '1 & 2');
    assert.equal(el.children[0]!.text, 't<');
  });

  it('builds OVF 1.0 and parses it back (vCPUs, memory, disks, NIC models, boot files)', () => {
    const xml = buildOvf({
      name: 'app',
      description: 'd <&>',
      cpus: 2,
      memoryMiB: 384,
      disks: [{ href: 'app-disk1.vmdk', size: 1234, capacity: 1 << 30 }],
      nics: ['virtio-net', 'e1000'],
      boot: { kernel: { href: 'app-vmlinuz', size: 10 }, initrd: { href: 'app-initrd.img', size: 20 }, cmdline: 'console=ttyS0' },
    });
    const o = parseOvf(xml);
    assert.equal(o.name, 'app');
    assert.equal(o.description, 'd <&>');
    assert.equal(o.cpus, 2);
    assert.equal(o.memoryMiB, 384);
    assert.deepEqual(
      o.disks.map((d) => [d.fileRef, d.capacity]),
      [['file1', 1 << 30]],
    );
    assert.deepEqual(
      o.nics.map((n) => n.subtype),
      ['virtio-net', 'E1000'],
    );
    assert.deepEqual(o.boot, { kernelRef: 'kernel', initrdRef: 'initrd', cmdline: 'console=ttyS0' });
    assert.equal(o.firmware, 'bios');
    // UEFI: written as VMware's firmware key, read back as efi; the XML stays well-formed.
    const efi = buildOvf({ name: 'app', description: 'd', cpus: 1, memoryMiB: 256, disks: [{ href: 'a.vmdk', size: 1, capacity: 1 }], nics: [], firmware: 'efi' });
    assert.match(efi, /<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"\/>/);
    assert.equal(parseOvf(efi).firmware, 'efi');
    assert.equal(parseOvf(efi).boot, undefined);
    // Other tools' units: GigaBytes memory, MegaBytes capacity.
    const vbox = xml.replace('byte * 2^20', 'GigaBytes').replace('<rasd:VirtualQuantity>384<', '<rasd:VirtualQuantity>1<');
    assert.equal(parseOvf(vbox).memoryMiB, 1024);
  });

  it('parses manifests in SHA1 and SHA256', () => {
    assert.deepEqual(parseManifest('SHA1(a.ovf)= AB12\nSHA256(disk 1.vmdk) = cd34\n'), [
      { algo: 'sha1', file: 'a.ovf', digest: 'ab12' },
      { algo: 'sha256', file: 'disk 1.vmdk', digest: 'cd34' },
    ]);
  });

  it('refuses an OVF referencing a disk not in the archive, and a manifest that does not match', async () => {
    const disk = join(dir, 'd.vmdk');
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', disk, '8M']).status, 0);
    const ovf = Buffer.from(
      buildOvf({ name: 'x', description: '', cpus: 1, memoryMiB: 128, disks: [{ href: 'x-disk1.vmdk', size: statSync(disk).size, capacity: 8 << 20 }], nics: ['e1000'] }),
    );
    const missing = join(dir, 'missing.ova');
    writeFileSync(missing, tarOf([{ name: 'x.ovf', data: ovf }]));
    await assert.rejects(importOva(images, { source: missing, name: 'missing' }), { code: 'VMKIT_OVF_INVALID', message: /not in the archive/ });
    const diskBytes = (await import('node:fs')).readFileSync(disk);
    const wrong = `SHA256(x.ovf)= ${createHash('sha256').update(ovf).digest('hex')}\nSHA1(x-disk1.vmdk)= ${'0'.repeat(40)}\n`;
    const bad = join(dir, 'badsum.ova');
    writeFileSync(
      bad,
      tarOf([
        { name: 'x.ovf', data: ovf },
        { name: 'x.mf', data: Buffer.from(wrong) },
        { name: 'x-disk1.vmdk', data: diskBytes },
      ]),
    );
    await assert.rejects(importOva(images, { source: bad, name: 'badsum' }), { code: 'VMKIT_CHECKSUM_MISMATCH' });
    const doctype = join(dir, 'doctype.ova');
    writeFileSync(doctype, tarOf([{ name: 'x.ovf', data: Buffer.from('<?xml version="1.0"?><!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope/>') }]));
    await assert.rejects(importOva(images, { source: doctype, name: 'doctype' }), { code: 'VMKIT_IMAGE_UNSAFE' });
    // A good one imports: NIC model, vCPUs and memory mapped.
    const good = join(dir, 'good.ova');
    const right = `SHA1(x-disk1.vmdk)= ${createHash('sha1').update(diskBytes).digest('hex')}\n`;
    writeFileSync(
      good,
      tarOf([
        { name: 'x.ovf', data: ovf },
        { name: 'x.mf', data: Buffer.from(right) },
        { name: 'x-disk1.vmdk', data: diskBytes },
      ]),
    );
    const r = await importOva(images, { source: good, name: 'good' });
    assert.equal(r.image.defaults.memoryMiB, 128);
    assert.deepEqual(r.image.nicModels, ['e1000']);
    assert.equal(r.image.disks[0]!.virtualSize, 8 << 20);
    assert.ok(r.fidelity.some((f) => f.item === 'manifest' && f.status === 'mapped'));
    assert.deepEqual(readdirSync(join(dir, 'images')).sort(), ['good'], 'no temporary folders are left');
  });
});
