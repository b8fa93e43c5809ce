import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startTestDaemon, waitForHttp, type GuestStatus, type TestDaemon } from './helpers.js';

/**
 * The built-in appliance is portable: its disk carries its own boot loader (guest/build.sh:
 * MBR + FAT boot partition with syslinux), so the disk alone — exported as VMDK, no OVF, no
 * kernel beside it — boots in another vmkit and in QEMU run by hand.
 */
describe('portable appliance', () => {
  let d: TestDaemon;
  let fresh: TestDaemon | undefined;
  let work: string;
  let vmdk: string;

  before(async () => {
    d = await startTestDaemon();
    work = mkdtempSync('/tmp/vmkit-port-');
    vmdk = join(work, 'appliance.vmdk');
    const r = d.cli(['image', 'export', 'appliance', vmdk]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await d.stop();
    await fresh?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('the disk has a boot loader: an MBR with boot code and an active FAT partition', () => {
    const raw = join(work, 'disk.raw');
    const c = spawn('qemu-img', ['dd', '-f', 'vmdk', '-O', 'raw', `if=${vmdk}`, `of=${raw}`, 'bs=512', 'count=1']);
    return new Promise<void>((resolve, reject) => {
      c.on('exit', (code) => {
        try {
          assert.equal(code, 0);
          const mbr = readFileSync(raw);
          assert.equal(mbr.readUInt16LE(510), 0xaa55, 'MBR signature');
          assert.notEqual(
            mbr.subarray(0, 440).reduce((s, b) => s + b, 0),
            0,
            'boot code in the MBR',
          );
          assert.equal(mbr[446], 0x80, 'partition 1 is active');
          assert.equal(mbr[446 + 4], 0xef, 'partition 1 is the EFI system partition (FAT)');
          assert.equal(mbr[462 + 4], 0x83, 'partition 2 is the Linux root');
          resolve();
        } catch (e) {
          reject(e as Error);
        }
      });
    });
  });

  it('imported as a bare disk into a fresh data folder, it boots to HTTP', async () => {
    fresh = await startTestDaemon();
    const imp = fresh.cli(['image', 'import', vmdk, '--name', 'portable']);
    assert.equal(imp.code, 0, imp.stderr);
    assert.match(imp.stdout, /firmware: BIOS \(SeaBIOS\), boots the disk/);
    const img = fresh.cliJson<{ boot?: unknown }>(['image', 'info', 'portable']);
    assert.equal(img.boot, undefined, 'no kernel beside the disk: the firmware boots it');
    const port = await freePort();
    const l = fresh.cli(['launch', 'portable', 'p1', '--forward', `127.0.0.1:${port}:80`], { timeoutMs: 180_000 });
    assert.equal(l.code, 0, l.stderr);
    const st = JSON.parse(await waitForHttp(`http://127.0.0.1:${port}/status`, 180_000)) as GuestStatus;
    assert.equal(st.hostname, 'p1');
    assert.equal(st.bootCount, 1);
    const info = fresh.cliJson<{ runtime?: { pid?: number }; pid?: number }>(['info', 'p1']);
    const pid = info.runtime?.pid ?? info.pid;
    assert.ok(pid, JSON.stringify(info));
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.ok(!argv.includes('-kernel'), 'no direct kernel boot: the firmware ran the boot loader on the disk');
    assert.equal(fresh.cli(['delete', 'p1', '--force']).code, 0);
  });

  it('raw qemu-system-x86_64 -drive file=x.vmdk boots it too (IDE disk, user-mode NIC)', async () => {
    const port = await freePort();
    const serial = join(work, 'raw-serial.log');
    const qemu: ChildProcess = spawn(
      'qemu-system-x86_64',
      [
        '-nodefaults',
        '-machine',
        `pc,accel=${process.env.VMKIT_TEST_ACCEL ?? 'tcg'}`,
        '-m',
        '256',
        '-display',
        'none',
        '-serial',
        `file:${serial}`,
        // The plain form a user would type (IDE, the default interface); snapshot=on keeps the file as exported.
        '-drive',
        `file=${vmdk},format=vmdk,snapshot=on`,
        '-nic',
        `user,model=virtio-net-pci,ipv6=off,hostfwd=tcp:127.0.0.1:${port}-:80`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    qemu.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    try {
      const body = await waitForHttp(`http://127.0.0.1:${port}/status`, 180_000).catch((err: Error) => {
        throw new Error(`${err.message}\nqemu: ${stderr}\nserial: ${readFileSync(serial, 'utf8').slice(-2000)}`);
      });
      const st = JSON.parse(body) as { hostname: string; nics: Array<{ driver: string }> };
      assert.equal(st.hostname, 'appliance');
      assert.equal(st.nics[0]!.driver, 'virtio_net');
      assert.match(readFileSync(serial, 'utf8'), /vmkit-appliance: ready/);
    } finally {
      qemu.kill('SIGKILL');
    }
  });
});
