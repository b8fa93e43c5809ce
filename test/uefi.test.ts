import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, sleep, startTestDaemon, waitForHttp, type GuestStatus, type TestDaemon, serialSend } from './helpers.js';

const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
// A vendor GUID of vmkit's own for the test variable (efivarfs names a variable NAME-GUID).
const VAR = 'VmkitTest-6d6b7669-7400-4e56-8000-766d6b697401';
const VARFILE = `/sys/firmware/efi/efivars/${VAR}`;
const VARFILE2 = `/sys/firmware/efi/efivars/VmkitTest2-6d6b7669-7400-4e56-8000-766d6b697401`;

async function waitForLog(file: string, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    const m = pattern.exec(text);
    if (m) return m[0];
    if (Date.now() > deadline) {
      writeFileSync('/tmp/vmkit-uefi-console.log', text);
      throw new Error(`console never matched ${pattern}; its end:\n${text.slice(-1500)}`);
    }
    await sleep(300);
  }
}

/**
 * UEFI: the appliance's own disk (no kernel beside it) booted by OVMF through the boot
 * loader's removable-media path (\EFI\BOOT\BOOTX64.EFI), with an NVRAM of the instance's own
 * that keeps a variable the guest set across a stop and a start, and goes with a clone.
 */
describe('UEFI firmware (OVMF)', () => {
  let d: TestDaemon;
  let work: string;

  before(async () => {
    // scripts/setup.sh installs ovmf: without it this test fails, it is not skipped.
    assert.ok(existsSync(OVMF_VARS), `${OVMF_VARS} is missing: run scripts/setup.sh (it installs the ovmf package)`);
    d = await startTestDaemon();
    work = mkdtempSync('/tmp/vmkit-uefi-');
    const vmdk = join(work, 'appliance.vmdk');
    assert.equal(d.cli(['image', 'export', 'appliance', vmdk]).code, 0);
    const imp = d.cli(['image', 'import', vmdk, '--name', 'disk']);
    assert.equal(imp.code, 0, imp.stderr);
  });
  after(async () => {
    await d.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('boots the disk with --firmware uefi; a variable set in the guest survives stop/start; a clone gets the NVRAM', async () => {
    const port = await freePort();
    const l = d.cli(['launch', 'disk', 'u1', '--firmware', 'uefi', '--forward', `127.0.0.1:${port}:80`], { timeoutMs: 180_000 });
    assert.equal(l.code, 0, l.stderr);
    const st = JSON.parse(await waitForHttp(`http://127.0.0.1:${port}/status`, 240_000)) as GuestStatus;
    assert.equal(st.hostname, 'u1');
    const info = d.cliJson<{ id: string; firmware?: string; uid?: number; runtime?: { pid?: number } }>(['info', 'u1']);
    assert.equal(info.firmware, 'uefi');
    const dir = join(d.dir, 'instances', info.id);
    const nvram = join(dir, 'nvram.fd');
    const argv = readFileSync(`/proc/${info.runtime!.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(
      argv.some((a) => a.includes('pflash0=pflash0,pflash1=pflash1')),
      'OVMF on pflash',
    );
    assert.ok(!argv.includes('-kernel'), 'the firmware booted the disk');
    assert.equal(statSync(nvram).size, statSync(OVMF_VARS).size);
    if (info.uid !== undefined && process.getuid?.() === 0) {
      assert.equal(statSync(nvram).uid, info.uid, "the NVRAM belongs to the instance's uid (QEMU writes it)");
      assert.equal(statSync(nvram).mode & 0o777, 0o600);
    }

    // The guest is a UEFI guest: set a non-volatile variable through efivarfs.
    const log = join(dir, 'console.log');
    const serial = join(dir, 'run', 'serial.sock');
    // attributes 0x7 = non-volatile | boot-service | runtime access, then the value
    await serialSend(serial, `printf '\\007\\000\\000\\000vmkit-nvram-42' > ${VARFILE}; echo "set-$(tail -c +5 ${VARFILE})"`);
    await waitForLog(log, /set-vmkit-nvram-42/, 60_000);

    const stop = d.cli(['stop', 'u1'], { timeoutMs: 180_000 });
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(readFileSync(nvram).includes(Buffer.from('vmkit-nvram-42')), 'QEMU wrote the variable into the instance NVRAM file');
    const start = d.cli(['start', 'u1'], { timeoutMs: 180_000 });
    assert.equal(start.code, 0, start.stderr);
    const st2 = JSON.parse(await waitForHttp(`http://127.0.0.1:${port}/status`, 240_000)) as GuestStatus;
    assert.equal(st2.bootCount, 2);
    await serialSend(serial, `echo "after-restart-$(tail -c +5 ${VARFILE})"`);
    await waitForLog(log, /after-restart-vmkit-nvram-42/, 60_000);

    // A checkpoint (with memory) brings the variables back: in the guest at once (the
    // firmware's state is in the saved machine state) and in the NVRAM file for the next boot.
    // A variable made after the checkpoint must be gone after the restore, in both places.
    const snap = d.cli(['snapshot', 'create', 'u1', 'cp1'], { timeoutMs: 180_000 });
    assert.equal(snap.code, 0, snap.stderr);
    await serialSend(serial, `printf '\\007\\000\\000\\000after-cp' > ${VARFILE2}; echo "made-$(tail -c +5 ${VARFILE2})"`);
    await waitForLog(log, /made-after-cp/, 60_000);
    const restore = d.cli(['snapshot', 'restore', 'u1', 'cp1'], { timeoutMs: 180_000 });
    assert.equal(restore.code, 0, restore.stderr);
    const both = (tag: string) => `echo "${tag}-[$(tail -c +5 ${VARFILE2} 2>/dev/null)]-$(tail -c +5 ${VARFILE})"`;
    await serialSend(serial, both('restored'));
    assert.equal(await waitForLog(log, /restored-\[[^\]$]*\]-vmkit\S*/, 60_000), 'restored-[]-vmkit-nvram-42');
    assert.equal(d.cli(['stop', 'u1'], { timeoutMs: 180_000 }).code, 0);
    assert.ok(!readFileSync(nvram).includes(Buffer.from('after-cp')), "the NVRAM file is the checkpoint's");
    assert.equal(d.cli(['start', 'u1'], { timeoutMs: 180_000 }).code, 0);
    await waitForHttp(`http://127.0.0.1:${port}/status`, 240_000);
    await serialSend(serial, both('third-boot'));
    assert.equal(await waitForLog(log, /third-boot-\[[^\]$]*\]-vmkit\S*/, 60_000), 'third-boot-[]-vmkit-nvram-42');

    // Clones get the NVRAM: a full clone the current one, a clone from a checkpoint the checkpoint's.
    assert.equal(d.cli(['stop', 'u1', '--force']).code, 0);
    const c = d.cli(['clone', 'u1', 'u2', '--full'], { timeoutMs: 180_000 });
    assert.equal(c.code, 0, c.stderr);
    const u2 = d.cliJson<{ id: string; firmware?: string }>(['info', 'u2']);
    assert.equal(u2.firmware, 'uefi');
    assert.ok(readFileSync(join(d.dir, 'instances', u2.id, 'nvram.fd')).equals(readFileSync(nvram)), 'the clone has the same NVRAM');
    const fromCp = d.cli(['clone', 'u1', 'u3', '--from-snapshot', 'cp1'], { timeoutMs: 180_000 });
    assert.equal(fromCp.code, 0, fromCp.stderr);
    const u3 = d.cliJson<{ id: string }>(['info', 'u3']);
    assert.ok(readFileSync(join(d.dir, 'instances', u3.id, 'nvram.fd')).equals(readFileSync(join(dir, 'nvram-snapshot-cp1.fd'))));
  });

  it('image set --firmware uefi makes new instances UEFI; bad firmware names are refused', () => {
    assert.equal(d.cli(['image', 'set', 'disk', '--firmware', 'uefi']).code, 0);
    assert.equal(d.cliJson<{ firmware?: string }>(['image', 'info', 'disk']).firmware, 'uefi');
    assert.equal(d.cli(['create', 'disk', 'u5']).code, 0);
    assert.equal(d.cliJson<{ firmware?: string }>(['info', 'u5']).firmware, 'uefi');
    const bad = d.cli(['create', 'disk', 'u4', '--firmware', 'coreboot']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /VMKIT_INVALID_ARGUMENT/);
    const badApi = d.cli(['image', 'set', 'disk', '--firmware', 'lilo']);
    assert.equal(badApi.code, 1);
  });

  it('--firmware uefi without OVMF on the host: VMKIT_FIRMWARE_MISSING with a hint, nothing made', async () => {
    const e = await startTestDaemon({ env: { VMKIT_OVMF_CODE: '/nonexistent/OVMF_CODE.fd', VMKIT_OVMF_VARS: '/nonexistent/OVMF_VARS.fd' } });
    try {
      const r = e.cli(['create', 'appliance', 'nouefi', '--firmware', 'uefi']);
      assert.equal(r.code, 3, 'a host problem (exit 3), refused before any operation starts');
      assert.match(r.stderr, /VMKIT_FIRMWARE_MISSING/);
      assert.match(r.stderr, /apt-get install ovmf/);
      assert.deepEqual(e.cliJson<unknown[]>(['list']), []);
      assert.deepEqual(existsSync(join(e.dir, 'instances')) ? readdirSync(join(e.dir, 'instances')) : [], [], 'no instance folder left behind');
    } finally {
      await e.stop();
    }
  });
});
