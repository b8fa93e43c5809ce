import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmkitError } from '../errors.js';
import { buildQemuArgv } from './argv.js';
import { gzipSync } from 'node:zlib';
import {
  copyNvram,
  dropSnapshotNvram,
  ensureNvram,
  findOvmf,
  MAX_NVRAM_BYTES,
  NVRAM_FILE,
  packNvram,
  parseFirmware,
  pflashArgs,
  restoreSnapshotNvram,
  saveSnapshotNvram,
  snapshotNvramFile,
  unpackNvram,
} from './firmware.js';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'vmkit-fw-'));
}

describe('firmware', () => {
  it('parses bios/uefi (efi as OVF spells it) and refuses anything else', () => {
    assert.equal(parseFirmware('bios'), 'bios');
    assert.equal(parseFirmware('UEFI'), 'uefi');
    assert.equal(parseFirmware('efi'), 'uefi');
    assert.throws(
      () => parseFirmware('coreboot'),
      (e: VmkitError) => e.code === 'VMKIT_INVALID_ARGUMENT' && /bios.*uefi/.test(e.hint ?? ''),
    );
    assert.throws(
      () => parseFirmware(7),
      (e: VmkitError) => e.code === 'VMKIT_INVALID_ARGUMENT',
    );
  });

  it('finds the first installed OVMF pair, the env override first, or says what to install', async () => {
    const d = tmp();
    try {
      const code = join(d, 'CODE.fd');
      const vars = join(d, 'VARS.fd');
      writeFileSync(code, 'c');
      writeFileSync(vars, 'v');
      const missing = { code: join(d, 'nope-code'), varsTemplate: join(d, 'nope-vars') };
      assert.deepEqual(await findOvmf({}, [missing, { code, varsTemplate: vars }]), { code, varsTemplate: vars });
      assert.deepEqual(await findOvmf({ VMKIT_OVMF_CODE: code, VMKIT_OVMF_VARS: vars }, [missing]), { code, varsTemplate: vars });
      // A code file without its store is no pair.
      await assert.rejects(findOvmf({}, [{ code, varsTemplate: missing.varsTemplate }]), (e: VmkitError) => {
        assert.equal(e.code, 'VMKIT_FIRMWARE_MISSING');
        assert.match(e.hint ?? '', /apt-get install ovmf/);
        assert.match(e.hint ?? '', /--firmware bios/);
        return true;
      });
      await assert.rejects(findOvmf({ VMKIT_OVMF_CODE: missing.code, VMKIT_OVMF_VARS: vars }), (e: VmkitError) => e.code === 'VMKIT_FIRMWARE_MISSING');
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it("makes an instance's NVRAM from the template once, then keeps it; copies it to another folder", async () => {
    const d = tmp();
    try {
      const template = join(d, 'VARS.fd');
      writeFileSync(template, Buffer.alloc(4096, 1));
      const inst = join(d, 'inst');
      const other = join(d, 'other');
      mkdirSync(inst);
      mkdirSync(other);
      const ovmf = { code: join(d, 'CODE.fd'), varsTemplate: template };
      const file = await ensureNvram(inst, ovmf);
      assert.equal(file, join(inst, NVRAM_FILE));
      assert.ok(readFileSync(file).equals(readFileSync(template)));
      writeFileSync(file, Buffer.alloc(4096, 2)); // the guest changed a variable
      await ensureNvram(inst, ovmf);
      assert.equal(readFileSync(file)[0], 2, 'an existing store is never replaced');
      assert.equal(await copyNvram(inst, other), true);
      assert.ok(readFileSync(join(other, NVRAM_FILE)).equals(readFileSync(file)));
      assert.equal(await copyNvram(join(d, 'none'), other, NVRAM_FILE, 'x.fd'), false, 'nothing to copy from a BIOS instance');
      assert.equal(statSync(file).size, 4096);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('puts OVMF on two pflash block nodes: code read-only, the NVRAM writable, formats named', () => {
    const argv = buildQemuArgv({
      qemuBinary: 'qemu',
      name: 'u1',
      instanceId: '0123456789ab',
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 256,
      disks: [{ id: 'root', file: '/d/root.qcow2', format: 'qcow2' }],
      nics: [],
      forwards: [],
      runDir: '/d/run',
      consoleLog: '/d/console.log',
      startPaused: true,
      machine: 'pc-i440fx-7.2',
      uefi: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', nvram: '/d/nvram.fd' },
    });
    assert.equal(argv[argv.indexOf('-machine') + 1], 'pc-i440fx-7.2,pflash0=pflash0,pflash1=pflash1,accel=tcg,usb=off,dump-guest-core=off');
    const nodes = argv.flatMap((a, i) => (argv[i - 1] === '-blockdev' ? [JSON.parse(a) as Record<string, unknown>] : []));
    assert.deepEqual(
      nodes.filter((n) => String(n['node-name']).startsWith('pflash')),
      [
        { driver: 'file', filename: '/usr/share/OVMF/OVMF_CODE_4M.fd', 'node-name': 'pflash0-file', 'read-only': true },
        { driver: 'raw', file: 'pflash0-file', 'node-name': 'pflash0', 'read-only': true },
        { driver: 'file', filename: '/d/nvram.fd', 'node-name': 'pflash1-file', 'read-only': false },
        { driver: 'raw', file: 'pflash1-file', 'node-name': 'pflash1', 'read-only': false },
      ],
    );
    assert.ok(!argv.includes('-kernel'));
    // BIOS: nothing of it.
    const bios = buildQemuArgv({
      qemuBinary: 'qemu',
      name: 'b',
      instanceId: '0',
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 256,
      disks: [],
      nics: [],
      forwards: [],
      runDir: '/r',
      consoleLog: '/c',
      startPaused: false,
    });
    assert.ok(!bios.join(' ').includes('pflash'));
    assert.equal(pflashArgs('/c', '/n').machine, ',pflash0=pflash0,pflash1=pflash1');
  });

  it("keeps a checkpoint's NVRAM and puts it back; drops it with the checkpoint", async () => {
    const d = tmp();
    try {
      writeFileSync(join(d, NVRAM_FILE), 'A');
      await saveSnapshotNvram(d, 'before');
      assert.equal(statSync(join(d, snapshotNvramFile('before'))).mode & 0o777, 0o600);
      writeFileSync(join(d, NVRAM_FILE), 'B');
      assert.equal(await restoreSnapshotNvram(d, 'before'), true);
      assert.equal(readFileSync(join(d, NVRAM_FILE), 'utf8'), 'A');
      await dropSnapshotNvram(d, 'before');
      assert.equal(await restoreSnapshotNvram(d, 'before'), false, 'a checkpoint without one leaves the NVRAM as it is');
      assert.equal(readFileSync(join(d, NVRAM_FILE), 'utf8'), 'A');
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('packs an NVRAM for a migration and unpacks it on the target, bounded', async () => {
    const src = tmp();
    const dst = tmp();
    try {
      assert.equal(await packNvram(src), undefined, 'a BIOS instance sends none');
      const store = Buffer.alloc(540672, 0xff);
      store.write('vmkit-var', 1000);
      writeFileSync(join(src, NVRAM_FILE), store);
      const packed = (await packNvram(src))!;
      assert.ok(packed.length < 10_000, `mostly empty: ${packed.length} bytes packed`);
      await unpackNvram(dst, packed);
      assert.ok(readFileSync(join(dst, NVRAM_FILE)).equals(store));
      const bomb = gzipSync(Buffer.alloc(MAX_NVRAM_BYTES + 1)).toString('base64');
      await assert.rejects(unpackNvram(dst, bomb), (e: VmkitError) => e.code === 'VMKIT_BAD_REQUEST');
      await assert.rejects(unpackNvram(dst, 'not gzip'), (e: VmkitError) => e.code === 'VMKIT_BAD_REQUEST');
      assert.ok(readFileSync(join(dst, NVRAM_FILE)).equals(store), 'a refused store leaves the one there');
    } finally {
      rmSync(src, { recursive: true, force: true });
      rmSync(dst, { recursive: true, force: true });
    }
  });
});
