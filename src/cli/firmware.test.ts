import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { VmkitError } from '../errors.js';
import { createBody, parseFirmwareFlag } from './launch.js';
import { buildProgram } from './program.js';

describe('--firmware on launch/create and image set', () => {
  it('parses bios/uefi with their other spellings and refuses the rest', () => {
    assert.equal(parseFirmwareFlag('bios'), 'bios');
    assert.equal(parseFirmwareFlag('SeaBIOS'), 'bios');
    assert.equal(parseFirmwareFlag('uefi'), 'uefi');
    assert.equal(parseFirmwareFlag('EFI'), 'uefi');
    assert.equal(parseFirmwareFlag('ovmf'), 'uefi');
    assert.throws(
      () => parseFirmwareFlag('coreboot'),
      (e: VmkitError) => e.code === 'VMKIT_INVALID_ARGUMENT' && /--firmware uefi/.test(e.hint ?? ''),
    );
  });

  it('sends firmware in the create body only when given', () => {
    const base = { forward: [], wait: true, sshKey: [] };
    assert.equal(createBody('img', 'vm', base, true).firmware, undefined);
    assert.equal(createBody('img', 'vm', { ...base, firmware: 'uefi' }, false).firmware, 'uefi');
  });

  it('has --firmware on launch, create and image set', () => {
    const program = buildProgram();
    const find = (path: string[]) => path.reduce((c, name) => c.commands.find((x) => x.name() === name)!, program);
    for (const path of [['launch'], ['create'], ['image', 'set']]) {
      assert.ok(
        find(path).options.some((o) => o.long === '--firmware'),
        `${path.join(' ')} has --firmware`,
      );
    }
  });
});
