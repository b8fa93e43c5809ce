import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parse } from 'yaml';
import { configDriveFiles, configInstanceId, driveKiB, metaData, mkfsArgv, mcopyArgv, networkConfig, userData, vendorData, writeConfigDrive } from './config-drive.js';
import { nextGeneration } from '../instances/nics.js';

const input = {
  instanceId: 'abc',
  hostname: 'web1',
  nics: [
    { id: 'nic0', model: 'virtio-net' as const, mac: '52:54:00:00:00:01', network: 'user' },
    { id: 'nic1', model: 'e1000' as const, mac: '52:54:00:00:00:02', network: 'lan', ipv4: '10.0.0.5/24' },
  ],
};

describe('config drive (NoCloud)', () => {
  it('writes meta-data and network-config (golden)', () => {
    assert.equal(metaData(input), 'instance-id: abc\nlocal-hostname: web1\n');
    assert.equal(
      networkConfig(input),
      [
        'version: 2',
        'ethernets:',
        '  nic0:',
        '    match:',
        '      macaddress: "52:54:00:00:00:01"',
        '    dhcp4: true',
        '    dhcp-identifier: mac',
        '  nic1:',
        '    match:',
        '      macaddress: "52:54:00:00:00:02"',
        '    dhcp4: false',
        '    addresses: ["10.0.0.5/24"]',
      ].join('\n') + '\n',
    );
    assert.deepEqual(mkfsArgv('/x.img'), ['mkfs.vfat', '-n', 'CIDATA', '-C', '/x.img', '1024']);
    assert.deepEqual(mcopyArgv('/x.img', ['/a', '/b']), ['mcopy', '-o', '-i', '/x.img', '/a', '/b', '::']);
  });

  it('builds a real vfat image labelled CIDATA with the files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-cidata-test-'));
    try {
      const img = join(dir, 'cidata.img');
      await writeConfigDrive(img, input);
      assert.equal(statSync(img).size, 1024 * 1024);
      const ls = spawnSync('mdir', ['-b', '-i', img, '::'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
      assert.equal(ls.status, 0, ls.stderr);
      assert.match(ls.stdout, /meta-data/);
      assert.match(ls.stdout, /network-config/);
      const label = spawnSync('mlabel', ['-s', '-i', img, '::'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
      assert.match(label.stdout, /CIDATA/);
      const meta = spawnSync('mtype', ['-i', img, '::meta-data'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
      assert.equal(meta.stdout, metaData(input));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0vmkitkeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx me@laptop';
  const withCloudInit = {
    ...input,
    identity: 'abc',
    cloudInit: { userData: '#cloud-config\nwrite_files:\n  - path: /x\n    content: hi\n', sshKeys: [key], meta: { environment: 'staging', 'instance-id': 'evil' } },
  };

  it("meta-data carries the SSH keys as public-keys and extra keys, never overriding vmkit's", () => {
    const meta = parse(metaData(withCloudInit)) as Record<string, unknown>;
    assert.equal(meta['instance-id'], 'abc');
    assert.equal(meta['local-hostname'], 'web1');
    assert.deepEqual(meta['public-keys'], [key]);
    assert.equal(meta.environment, 'staging');
    // Without cloud-init settings the meta-data stays the two lines the appliance reads.
    assert.equal(metaData(input), 'instance-id: abc\nlocal-hostname: web1\n');
  });

  it("user-data is the user's text as given, else an empty cloud-config", () => {
    assert.equal(userData(withCloudInit), withCloudInit.cloudInit.userData);
    assert.equal(userData(input), '#cloud-config\n{}\n');
    const script = { ...input, cloudInit: { userData: '#!/bin/sh\necho hi > /x\n' } };
    assert.equal(configDriveFiles(script)['user-data'], '#!/bin/sh\necho hi > /x\n');
  });

  it('vendor-data renews machine-id and SSH host keys once per vmkit id, and keeps host keys otherwise', () => {
    const text = vendorData({ ...input, instanceId: 'abc-g2', identity: 'abc' });
    assert.ok(text.startsWith('#cloud-config\n'));
    const v = parse(text) as { ssh_deletekeys: boolean; bootcmd: string[][] };
    assert.equal(v.ssh_deletekeys, false);
    const cmd = v.bootcmd[0]!;
    // Keyed on the vmkit id, not the instance-id: a NIC change (abc-g2) does not renew the identity; a clone (new id) does.
    assert.deepEqual(cmd.slice(0, 3), ['cloud-init-per', 'once', 'vmkit-identity-abc']);
    assert.match(cmd.at(-1)!, /rm -f \/etc\/machine-id .*ssh_host_\*_key.*systemd-machine-id-setup/);
    const clone = parse(vendorData({ ...input, instanceId: 'def', identity: 'def' })) as { bootcmd: string[][] };
    assert.equal(clone.bootcmd[0]![2], 'vmkit-identity-def');
  });

  it('a NIC or user-data change gives a new instance-id; a first instance keeps its id', () => {
    assert.equal(configInstanceId('abc', undefined), 'abc');
    assert.equal(configInstanceId('abc', 0), 'abc');
    const g1 = nextGeneration(undefined);
    assert.equal(configInstanceId('abc', g1.generation), 'abc-g1');
    const g2 = nextGeneration({ ...g1, userData: '#cloud-config\n' });
    assert.equal(g2.generation, 2);
    assert.equal(g2.userData, '#cloud-config\n', 'the rest of the settings stay');
  });

  it('the drive grows with big user-data', async () => {
    assert.equal(driveKiB(10_000), 1024);
    assert.ok(driveKiB(600 * 1024) > 600);
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-cidata-test-'));
    try {
      const img = join(dir, 'cidata.img');
      const big = '#cloud-config\n# ' + 'x'.repeat(900 * 1024) + '\n';
      await writeConfigDrive(img, { ...withCloudInit, cloudInit: { ...withCloudInit.cloudInit, userData: big } });
      const ud = spawnSync('mtype', ['-i', img, '::user-data'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' }, maxBuffer: 4 << 20 });
      assert.equal(ud.stdout, big);
      const vd = spawnSync('mtype', ['-i', img, '::vendor-data'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
      assert.equal(vd.stdout, vendorData(withCloudInit));
      const meta = spawnSync('mtype', ['-i', img, '::meta-data'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
      assert.deepEqual((parse(meta.stdout) as { 'public-keys': string[] })['public-keys'], [key]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
