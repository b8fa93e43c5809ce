import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuArgv, tapNetdev } from '../qemu/argv.js';
import { networkConfig } from '../storage/config-drive.js';
import { parseNicSpec } from '../cli/nic.js';
import type { Nic } from '../domain/types.js';

const nics: Nic[] = [
  { id: 'nic0', model: 'virtio-net', mac: '52:54:00:00:00:01', network: 'lan', ipv4: '10.80.0.100', dhcp: true },
  { id: 'nic1', model: 'e1000', mac: '52:54:00:00:00:02', network: 'backend', ipv4: '10.82.0.10' },
  { id: 'nic2', model: 'rtl8139', mac: '52:54:00:00:00:03', network: 'user' },
];

describe('NICs on vmkit networks', () => {
  it('attaches taps made by vmkit (no helper scripts) with the model the guest sees', () => {
    const argv = buildQemuArgv({
      qemuBinary: 'qemu',
      name: 'w',
      instanceId: '0123456789ab',
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 128,
      disks: [],
      nics,
      forwards: [],
      taps: { nic0: 'vmkt-0123456-0', nic1: 'vmkt-0123456-1' },
      runDir: '/r',
      consoleLog: '/c',
      startPaused: true,
    }).join(' ');
    assert.match(argv, /-netdev tap,id=nic0,ifname=vmkt-0123456-0,script=no,downscript=no -device virtio-net-pci,netdev=nic0,mac=52:54:00:00:00:01,id=nic0-dev/);
    assert.match(argv, /-netdev tap,id=nic1,ifname=vmkt-0123456-1,script=no,downscript=no -device e1000,netdev=nic1,mac=52:54:00:00:00:02/);
    assert.match(argv, /-netdev user,id=nic2,ipv6=off -device rtl8139,netdev=nic2/);
    assert.equal(tapNetdev('nic3', 't'), 'tap,id=nic3,ifname=t,script=no,downscript=no');
  });
  it('writes static addresses (with prefix, gateway, DNS) to the config drive; reservations stay DHCP', () => {
    const text = networkConfig({ instanceId: 'i', hostname: 'h', nics, addressing: { nic1: { prefix: 24, dns: ['10.82.0.1'] } } });
    assert.match(text, /nic0:\n {4}match:\n {6}macaddress: "52:54:00:00:00:01"\n {4}dhcp4: true/);
    assert.match(
      text,
      /nic1:\n {4}match:\n {6}macaddress: "52:54:00:00:00:02"\n {4}dhcp4: false\n {4}addresses: \["10\.82\.0\.10\/24"\]\n {4}nameservers: \{addresses: \[10\.82\.0\.1\]\}/,
    );
  });
  it('parses --nic specs', () => {
    assert.deepEqual(parseNicSpec('lan'), { network: 'lan' });
    assert.deepEqual(parseNicSpec('backend:e1000'), { network: 'backend', model: 'e1000' });
    assert.deepEqual(parseNicSpec('backend,ip=10.82.0.10'), { network: 'backend', ipv4: '10.82.0.10' });
    assert.deepEqual(parseNicSpec('lab:rtl8139,ip=10.81.0.5'), { network: 'lab', model: 'rtl8139', ipv4: '10.81.0.5' });
    assert.throws(() => parseNicSpec('lan:e1001'), /unknown model/);
    assert.throws(() => parseNicSpec('lan,foo=1'), /unknown option/);
    assert.throws(() => parseNicSpec(''), /expected NETWORK/);
  });
});
