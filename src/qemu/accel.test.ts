import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';

import { VmkitError } from '../errors.js';
import { findQemuBinary, probeAccelerator, resetAcceleratorProbeCache, type AcceleratorProbe } from './accel.js';

const dir = mkdtempSync(path.join(tmpdir(), 'vmkit-accel-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function assertConsistent(result: AcceleratorProbe): void {
  assert.ok(result.accel === 'kvm' || result.accel === 'tcg');
  assert.equal(result.kvm.devicePresent, existsSync('/dev/kvm'));
  if (result.accel === 'kvm') {
    assert.equal(result.kvm.usable, true);
    assert.equal(result.kvm.devicePresent, true);
    assert.equal(result.kvm.reason, undefined);
  } else {
    assert.equal(result.kvm.usable, false);
    assert.ok(result.kvm.reason && result.kvm.reason.length > 0, 'tcg must say why KVM is not used');
  }
}

/** True when the probe would get as far as starting QEMU (device present and openable). */
async function kvmDeviceUsable(): Promise<boolean> {
  const result = await probeAccelerator();
  return result.kvm.devicePresent && !/not usable by this user/.test(result.kvm.reason ?? '');
}

describe('probeAccelerator', () => {
  beforeEach(() => resetAcceleratorProbeCache());

  it('gives a definite, self-consistent answer on this host', async () => {
    const result = await probeAccelerator();
    assertConsistent(result);
    // Visible in the test log; useful when a host behaves unexpectedly.
    console.log(`accelerator probe: ${JSON.stringify(result)}`);
  });

  it('memoizes the answer until the cache is reset', async () => {
    const first = await probeAccelerator();
    const started = Date.now();
    assert.equal(await probeAccelerator(), first);
    assert.ok(Date.now() - started < 50);
    resetAcceleratorProbeCache();
    const again = await probeAccelerator();
    assert.notEqual(again, first);
    assert.deepEqual(again, first);
  });

  it('rejects with VMKIT_QEMU_MISSING for a binary that does not exist', async () => {
    await assert.rejects(probeAccelerator({ qemuBinary: path.join(dir, 'no-such-qemu') }), (err: unknown) => {
      assert.ok(err instanceof VmkitError);
      assert.equal(err.code, 'VMKIT_QEMU_MISSING');
      return true;
    });
  });

  it("falls back to TCG with QEMU's own error when the KVM guest cannot start", async () => {
    const fakeQemu = path.join(dir, 'qemu-kvm-broken');
    writeFileSync(fakeQemu, '#!/bin/sh\necho "qemu-system-x86_64: warning: harmless" >&2\necho "qemu-system-x86_64: failed to initialize kvm: Permission denied" >&2\nexit 1\n', {
      mode: 0o755,
    });
    const result = await probeAccelerator({ qemuBinary: fakeQemu });
    assert.equal(result.accel, 'tcg');
    assertConsistent(result);
    if (await kvmDeviceUsable()) {
      assert.match(result.kvm.reason ?? '', /failed to initialize kvm: Permission denied$/);
    }
  });

  it('gives up within timeoutMs when QEMU never opens its monitor', async () => {
    const hangingQemu = path.join(dir, 'qemu-hangs');
    writeFileSync(hangingQemu, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const started = Date.now();
    const result = await probeAccelerator({ qemuBinary: hangingQemu, timeoutMs: 300 });
    assert.equal(result.accel, 'tcg');
    assertConsistent(result);
    assert.ok(Date.now() - started < 3000);
  });
});

describe('findQemuBinary', () => {
  it('returns an absolute path to the named executable or null', () => {
    for (const name of ['qemu-system-x86_64', 'qemu-img'] as const) {
      const found = findQemuBinary(name);
      if (found !== null) {
        assert.ok(path.isAbsolute(found));
        assert.equal(path.basename(found), name);
      }
    }
  });

  it('returns null when PATH has no QEMU', () => {
    const savedPath = process.env.PATH;
    process.env.PATH = dir;
    try {
      assert.equal(findQemuBinary(), null);
      assert.equal(findQemuBinary('qemu-img'), null);
    } finally {
      process.env.PATH = savedPath;
    }
  });
});
