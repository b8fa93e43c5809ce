import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { metaData, mkfsArgv, mcopyArgv, networkConfig, writeConfigDrive } from './config-drive.js';

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
});
