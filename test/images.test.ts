import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startTestDaemon, type TestDaemon } from './helpers.js';

interface ImageJson {
  name: string;
  source: string;
  checksum?: string;
  boot?: unknown;
  defaults: { cpus: number; memoryMiB: number };
  nicModels: string[];
  disks: Array<{ format: string; virtualSize: number; actualSize: number; file: string }>;
  users: { instances: string[] };
  fidelity?: Array<{ item: string; status: string }>;
}

function qimg(...args: string[]): void {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** Import of foreign disk formats and the refusals of untrusted files, through the real CLI. */
describe('image import, info, delete', () => {
  let d: TestDaemon;
  let work: string;

  before(async () => {
    d = await startTestDaemon();
    work = mkdtempSync('/tmp/vmkit-imgt-');
  });
  after(async () => {
    await d.stop();
    rmSync(work, { recursive: true, force: true });
  });

  function expectError(args: string[], code: string): string {
    const r = d.cli(args);
    assert.equal(r.code, 1, `vmkit ${args.join(' ')}: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, new RegExp(code), r.stderr);
    assert.match(r.stderr, /Hint: /);
    return r.stderr;
  }

  function noLeftovers(): void {
    assert.deepEqual(
      readdirSync(join(d.dir, 'images')).filter((e) => e.startsWith('.tmp-')),
      [],
    );
  }

  it('imports vmdk, vdi, vhdx, qcow2 and raw disks as qcow2 images, with a fidelity report', () => {
    for (const fmt of ['vmdk', 'vdi', 'vhdx', 'qcow2', 'raw']) {
      const file = join(work, `disk-${fmt}.${fmt}`);
      qimg('create', '-q', '-f', fmt, file, '64M');
      const r = d.cli(['image', 'import', file, '--name', `imp-${fmt}`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`Image imp-${fmt} imported`));
      assert.match(r.stdout, /Fidelity report:/);
      assert.match(r.stdout, /mapped\s+disk root: .*→ qcow2/);
      assert.match(r.stdout, /defaulted\s+firmware/);
      const info = d.cliJson<ImageJson>(['image', 'info', `imp-${fmt}`]);
      assert.equal(info.source, 'import');
      assert.equal(info.disks[0]!.format, 'qcow2');
      assert.equal(info.disks[0]!.virtualSize, 64 * 1024 * 1024);
      assert.ok(info.disks[0]!.actualSize > 0);
      assert.match(info.checksum ?? '', /^sha256:[0-9a-f]{64}$/);
      assert.equal(info.boot, undefined, 'a bare disk boots with firmware');
      assert.deepEqual(info.users.instances, []);
    }
    const text = d.cli(['image', 'info', 'imp-vmdk']);
    assert.match(text.stdout, /Checksum:\s+sha256:/);
    assert.match(text.stdout, /virtual 64MiB/);
    noLeftovers();
  });

  it('refuses untrusted files with a clear code and leaves nothing behind', () => {
    const evilRaw = join(work, 'evil.raw');
    qimg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/shadow', evilRaw, '1M');
    expectError(['image', 'import', evilRaw, '--name', 'evil1'], 'VMKIT_IMAGE_FORMAT');
    const backed = join(work, 'backed.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/shadow', backed, '1M');
    expectError(['image', 'import', backed, '--name', 'evil2'], 'VMKIT_IMAGE_UNSAFE');
    const desc = join(work, 'flat.vmdk');
    writeFileSync(desc, '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n');
    expectError(['image', 'import', desc, '--name', 'evil3'], 'VMKIT_IMAGE_UNSAFE');
    const huge = join(work, 'huge.qcow2');
    qimg('create', '-q', '-f', 'qcow2', huge, '4T');
    expectError(['image', 'import', huge, '--name', 'evil4'], 'VMKIT_IMAGE_TOO_LARGE');
    expectError(['image', 'import', join(work, 'missing.qcow2')], 'VMKIT_FILE_NOT_FOUND');
    const names = d.cliJson<ImageJson[]>(['image', 'list']).map((i) => i.name);
    assert.ok(!names.some((n) => n.startsWith('evil')), names.join(','));
    noLeftovers();
    // The same .raw, declared raw on purpose: its bytes are imported, the header means nothing.
    const r = d.cli(['image', 'import', evilRaw, '--name', 'rawbytes', '--disk-format', 'raw']);
    assert.equal(r.code, 0, r.stderr);
    d.cli(['image', 'delete', 'rawbytes']);
  });

  it('cancels an import: the operation ends cancelled and nothing is left', async () => {
    const big = join(work, 'big.raw');
    const chunk = randomBytes(16 * 1024 * 1024);
    writeFileSync(big, Buffer.concat(Array.from({ length: 24 }, () => chunk)));
    const res = await d.api<{ metadata: { id: string } }>('POST', '/1.0/images', { source: big, name: 'cancelme' });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    // At once: on a fast disk the whole import takes a few hundred ms. (Killing qemu-img in
    // the middle of a conversion is covered by src/storage/qemu-img.test.ts.)
    const c = await d.api('DELETE', `/1.0/operations/${res.body.metadata.id}`);
    assert.equal(c.status, 200, JSON.stringify(c.body));
    const w = await d.api<{ metadata: { status: string } }>('GET', `/1.0/operations/${res.body.metadata.id}/wait?timeout=60`);
    assert.equal(w.body.metadata.status, 'cancelled');
    assert.ok(!existsSync(join(d.dir, 'images', 'cancelme')));
    assert.ok(!d.cliJson<ImageJson[]>(['image', 'list']).some((i) => i.name === 'cancelme'));
    noLeftovers();
  });

  it('refuses to delete an image an instance uses, then deletes it', () => {
    assert.equal(d.cli(['create', 'imp-qcow2', 'user1']).code, 0);
    assert.deepEqual(d.cliJson<ImageJson>(['image', 'info', 'imp-qcow2']).users.instances, ['user1']);
    expectError(['image', 'delete', 'imp-qcow2'], 'VMKIT_IMAGE_IN_USE');
    assert.equal(d.cli(['delete', 'user1']).code, 0);
    const r = d.cli(['image', 'delete', 'imp-qcow2']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!existsSync(join(d.dir, 'images', 'imp-qcow2')));
    expectError(['image', 'info', 'imp-qcow2'], 'VMKIT_IMAGE_NOT_FOUND');
  });
});
