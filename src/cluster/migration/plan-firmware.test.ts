import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Instance } from '../../domain/types.js';
import type { MigrationContext } from './context.js';
import { checkIncoming } from './plan.js';
import { peerInstance } from './payload.test-support.js';

/** The target's pre-flight for a UEFI instance: OVMF must be there (a fake context with room for everything else). */
describe('migration pre-flight: firmware', () => {
  let dir: string;
  const saved = { code: process.env.VMKIT_OVMF_CODE, vars: process.env.VMKIT_OVMF_VARS };
  const ctx = {
    cluster: { name: 'b' },
    instances: { has: async () => false, list: async () => [] },
    self: async () => ({ memoryFreeMiB: 8192, memoryTotalMiB: 8192, memoryAssignedMiB: 0, cpus: 8 }),
    images: { get: async (name: string) => ({ name }), checksum: async () => 'sha256:x' },
  } as unknown as MigrationContext;
  const inst = (firmware?: 'uefi'): Instance => peerInstance(firmware ? { firmware } : {});
  const check = (i: Instance) => checkIncoming(ctx, { instance: i, mode: 'cold', sharedDisks: false, source: 'a' });

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-plan-fw-'));
  });
  after(() => {
    for (const [k, v] of [
      ['VMKIT_OVMF_CODE', saved.code],
      ['VMKIT_OVMF_VARS', saved.vars],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('blocks a UEFI instance on a host without OVMF, and only a UEFI one', async () => {
    process.env.VMKIT_OVMF_CODE = join(dir, 'missing-code.fd');
    process.env.VMKIT_OVMF_VARS = join(dir, 'missing-vars.fd');
    assert.deepEqual(await check(inst()), []);
    const blockers = await check(inst('uefi'));
    assert.deepEqual(
      blockers.map((b) => b.check),
      ['firmware'],
    );
    assert.match(blockers[0]!.message, /OVMF/);
    writeFileSync(process.env.VMKIT_OVMF_CODE, 'c');
    writeFileSync(process.env.VMKIT_OVMF_VARS, 'v');
    assert.deepEqual(await check(inst('uefi')), []);
  });
});
