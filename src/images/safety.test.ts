import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, readSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkInfo, decideFormat, detectMagic, inspectUntrusted, parseVmdkDescriptor } from './safety.js';

function qimg(...args: string[]): void {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** Overwrites bytes of a file in place. */
function patch(file: string, offset: number, data: Buffer): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

describe('untrusted image files (crafted)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-safety-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts self-contained qcow2, raw, vmdk (sparse + streamOptimized), vdi and vhdx', async () => {
    const cases: Array<[string, string, string[]]> = [
      ['ok.qcow2', 'qcow2', []],
      ['ok.raw', 'raw', []],
      ['ok.vmdk', 'vmdk', []],
      ['stream.vmdk', 'vmdk', ['-o', 'subformat=streamOptimized']],
      ['ok.vdi', 'vdi', []],
      ['ok.vhdx', 'vhdx', []],
    ];
    for (const [name, fmt, extra] of cases) {
      qimg('create', '-q', '-f', fmt, ...extra, join(dir, name), '16M');
      const r = await inspectUntrusted(join(dir, name));
      assert.equal(r.format, fmt, name);
      assert.equal(r.info.virtualSize, 16 * 1024 * 1024, name);
    }
  });

  it('never probes a .raw whose first bytes are a qcow2 header pointing at a host file', async () => {
    const f = join(dir, 'evil.raw');
    qimg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/passwd', f, '1M');
    await assert.rejects(inspectUntrusted(f), { code: 'VMKIT_IMAGE_FORMAT' });
    // Declared raw explicitly: read as bytes, so the backing file is never looked at.
    const r = await inspectUntrusted(f, 'raw');
    assert.equal(r.format, 'raw');
    assert.equal(r.info.backingFile, undefined);
    assert.equal(r.info.virtualSize, Math.ceil(readFileSync(f).length / 512) * 512);
  });

  it('refuses a file whose magic disagrees with its extension', async () => {
    const f = join(dir, 'notvdi.vdi');
    qimg('create', '-q', '-f', 'qcow2', f, '1M');
    await assert.rejects(inspectUntrusted(f), { code: 'VMKIT_IMAGE_FORMAT' });
    writeFileSync(join(dir, 'x.bin'), 'data');
    await assert.rejects(inspectUntrusted(join(dir, 'x.bin')), { code: 'VMKIT_IMAGE_FORMAT' });
  });

  it('refuses qcow2 with a backing file or an external data file', async () => {
    const b = join(dir, 'backed.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/passwd', b, '1M');
    await assert.rejects(inspectUntrusted(b), { code: 'VMKIT_IMAGE_UNSAFE', message: /backing file/ });
    const d = join(dir, 'datafile.qcow2');
    writeFileSync(join(dir, 'host-secret.raw'), Buffer.alloc(1024 * 1024));
    qimg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'host-secret.raw')}`, d, '1M');
    await assert.rejects(inspectUntrusted(d), { code: 'VMKIT_IMAGE_UNSAFE', message: /data file/ });
  });

  it('refuses VMDK descriptors with extents naming other files and other VMDK subtypes', async () => {
    const desc = join(dir, 'desc.vmdk');
    writeFileSync(desc, '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "/etc/passwd" 0\n');
    await assert.rejects(inspectUntrusted(desc), { code: 'VMKIT_IMAGE_UNSAFE', message: /descriptor/ });
    for (const sub of ['monolithicFlat', 'twoGbMaxExtentSparse']) {
      const f = join(dir, `${sub}.vmdk`);
      qimg('create', '-q', '-f', 'vmdk', '-o', `subformat=${sub}`, f, '1M');
      await assert.rejects(inspectUntrusted(f), { code: 'VMKIT_IMAGE_UNSAFE' }, sub);
    }
    // A monolithicSparse whose embedded descriptor was edited to add a FLAT extent on a host file.
    const s = join(dir, 'sparse-evil.vmdk');
    qimg('create', '-q', '-f', 'vmdk', s, '1M');
    const head = Buffer.alloc(64);
    const fd = openSync(s, 'r');
    readSync(fd, head, 0, 64, 0);
    const off = Number(head.readBigUInt64LE(28)) * 512;
    const len = Number(head.readBigUInt64LE(36)) * 512;
    const text = Buffer.alloc(len);
    readSync(fd, text, 0, len, off);
    closeSync(fd);
    const edited = text
      .toString('latin1')
      .replace(/\0+$/, '')
      .replace(/(RW \d+ SPARSE "[^"]*")/, '$1\nRW 2048 FLAT "/etc/passwd" 0');
    patch(s, off, Buffer.from(edited.padEnd(len, '\0'), 'latin1'));
    await assert.rejects(inspectUntrusted(s), { code: 'VMKIT_IMAGE_UNSAFE', message: /extent/ });
    const t = join(dir, 'sub-evil.vmdk');
    qimg('create', '-q', '-f', 'vmdk', t, '1M');
    const fd2 = openSync(t, 'r');
    readSync(fd2, text, 0, len, off);
    closeSync(fd2);
    patch(t, off, Buffer.from(text.toString('latin1').replace('createType="monolithicSparse"', 'createType="vmfsSparse"     '), 'latin1'));
    await assert.rejects(inspectUntrusted(t), { code: 'VMKIT_IMAGE_UNSAFE', message: /subtype/ });
  });

  it('refuses a VDI differencing image', async () => {
    const f = join(dir, 'diff.vdi');
    qimg('create', '-q', '-f', 'vdi', f, '1M');
    const b = Buffer.alloc(4);
    b.writeUInt32LE(4);
    patch(f, 0x4c, b);
    await assert.rejects(inspectUntrusted(f), { code: 'VMKIT_IMAGE_UNSAFE' });
  });

  it('refuses an absurd virtual size against the quota', async () => {
    const f = join(dir, 'huge.qcow2');
    qimg('create', '-q', '-f', 'qcow2', f, '2000G');
    await assert.rejects(inspectUntrusted(f), { code: 'VMKIT_IMAGE_TOO_LARGE' });
    assert.throws(() => checkInfo(f, 'qcow2', { format: 'qcow2', virtualSize: 2 * 1024 ** 3, actualSize: 0, extents: [] }, 1024 ** 3), { code: 'VMKIT_IMAGE_TOO_LARGE' });
  });

  it('detects magic bytes and parses VMDK descriptors', () => {
    assert.equal(detectMagic(Buffer.from('QFI\xfb\0\0\0\x03', 'latin1')), 'qcow2');
    assert.equal(detectMagic(Buffer.from('vhdxfile')), 'vhdx');
    assert.equal(detectMagic(Buffer.from('hello')), 'unknown');
    assert.equal(decideFormat('/x/a.img', Buffer.from('hello')), 'raw');
    const d = parseVmdkDescriptor('createType="streamOptimized"\nparentCID=ffffffff\nRW 10 SPARSE "a.vmdk"\n');
    assert.deepEqual(d, { createType: 'streamOptimized', parentCID: 'ffffffff', extents: [{ kind: 'SPARSE', file: 'a.vmdk' }] });
  });
});
