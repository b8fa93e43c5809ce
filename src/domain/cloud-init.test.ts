import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VmkitError } from '../errors.js';
import { parseSize, validateCloudInit } from './cloud-init.js';

const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0 me@laptop';
const bad = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof VmkitError && e.code === 'VMKIT_INVALID_ARGUMENT' && re.test(e.message));

test('cloud-init settings are checked before anything is made', () => {
  assert.equal(validateCloudInit({}), undefined);
  assert.deepEqual(validateCloudInit({ sshKeys: [key, ` ${key}\n`], userData: '#cloud-config\n{}\n', meta: { env: 'x' } }), {
    sshKeys: [key],
    userData: '#cloud-config\n{}\n',
    meta: { env: 'x' },
  });
  assert.deepEqual(validateCloudInit({ userData: '#!/bin/sh\necho hi\n' }), { userData: '#!/bin/sh\necho hi\n' });
  bad(() => validateCloudInit({ sshKeys: ['-----BEGIN OPENSSH PRIVATE KEY-----'] }), /not an OpenSSH public key/);
  bad(() => validateCloudInit({ sshKeys: ['ssh-ed25519 AAAA\nssh-rsa BBBB'] }), /not an OpenSSH public key/);
  bad(() => validateCloudInit({ userData: 'hello: world\n' }), /cloud-init ignores/);
  bad(() => validateCloudInit({ userData: '#cloud-config\n' + 'x'.repeat(600 * 1024) }), /larger than/);
  bad(() => validateCloudInit({ meta: { 'instance-id': 'x' } }), /cannot be a meta-data key/);
  bad(() => validateCloudInit({ meta: { ok: 'two\nlines' } }), /one line/);
});

test('sizes: K/M/G/T are binary; nonsense is refused', () => {
  assert.equal(parseSize('20G', 'Disk size'), 20 * 1024 ** 3);
  assert.equal(parseSize('512MiB', 'Disk size'), 512 * 1024 ** 2);
  assert.equal(parseSize('1.5G', 'Disk size'), 1.5 * 1024 ** 3);
  assert.equal(parseSize(4096, 'Disk size'), 4096);
  bad(() => parseSize('-1G', 'Disk size'), /not a size/);
  bad(() => parseSize('big', 'Disk size'), /not a size/);
});
