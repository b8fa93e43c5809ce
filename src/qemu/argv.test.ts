import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuArgv, hostfwdRule, instanceUuid } from './argv.js';

describe('buildQemuArgv (golden)', () => {
  it('produces the tuned argv', () => {
    const argv = buildQemuArgv({
      qemuBinary: '/usr/bin/qemu-system-x86_64',
      name: 'web1',
      instanceId: '0123456789ab',
      accel: 'tcg',
      cpus: 2,
      memoryMiB: 512,
      kernel: '/img/vmlinuz',
      initrd: '/img/initrd.img',
      cmdline: 'console=ttyS0',
      disks: [
        { id: 'root', file: '/d/root.qcow2', format: 'qcow2' },
        { id: 'cidata', file: '/d/cidata.img', format: 'raw', readOnly: true },
      ],
      nics: [{ id: 'nic0', model: 'virtio-net', mac: '52:54:00:00:00:01', network: 'user' }],
      forwards: [{ proto: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80, nic: 'nic0' }],
      runDir: '/d/run',
      consoleLog: '/d/console.log',
      startPaused: true,
    });
    assert.deepEqual(argv, [
      '/usr/bin/qemu-system-x86_64',
      '-name',
      'guest=web1,debug-threads=on',
      '-nodefaults',
      '-no-user-config',
      '-machine',
      'pc,accel=tcg,usb=off,dump-guest-core=off',
      '-cpu',
      'qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16',
      '-smp',
      '2',
      '-m',
      '512M',
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
      '-display',
      'none',
      '-vga',
      'none',
      '-device',
      'VGA,id=video0',
      '-vnc',
      'unix:/d/run/vnc.sock',
      '-chardev',
      'socket,id=qmp,path=/d/run/qmp.sock,server=on,wait=off',
      '-mon',
      'chardev=qmp,mode=control',
      '-chardev',
      'socket,id=serial0,path=/d/run/serial.sock,server=on,wait=off,logfile=/d/console.log,logappend=on',
      '-serial',
      'chardev:serial0',
      '-chardev',
      'socket,id=qga0,path=/d/run/qga.sock,server=on,wait=off',
      '-device',
      'virtio-serial-pci,id=vser0',
      '-device',
      'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
      '-pidfile',
      '/d/run/qemu.pid',
      '-msg',
      'timestamp=on',
      '-uuid',
      '01234567-89ab-4000-8000-000000000000',
      '-kernel',
      '/img/vmlinuz',
      '-initrd',
      '/img/initrd.img',
      '-append',
      'console=ttyS0',
      '-blockdev',
      '{"driver":"file","filename":"/d/root.qcow2","node-name":"root-file","read-only":false,"discard":"unmap"}',
      '-blockdev',
      '{"driver":"qcow2","file":"root-file","node-name":"root","read-only":false,"discard":"unmap"}',
      '-device',
      'virtio-blk-pci,drive=root,id=root-dev,bootindex=1,werror=stop,rerror=stop',
      '-blockdev',
      '{"driver":"file","filename":"/d/cidata.img","node-name":"cidata-file","read-only":true,"discard":"unmap"}',
      '-blockdev',
      '{"driver":"raw","file":"cidata-file","node-name":"cidata","read-only":true,"discard":"unmap"}',
      '-device',
      'virtio-blk-pci,drive=cidata,id=cidata-dev,werror=stop,rerror=stop',
      '-netdev',
      'user,id=nic0,ipv6=off,hostfwd=tcp:127.0.0.1:8080-:80',
      '-device',
      'virtio-net-pci,netdev=nic0,mac=52:54:00:00:00:01,id=nic0-dev',
      '-S',
    ]);
  });

  it('uses the host CPU under KVM and names every NIC model', () => {
    const argv = buildQemuArgv({
      qemuBinary: 'q',
      name: 'n',
      instanceId: 'ab',
      accel: 'kvm',
      cpus: 1,
      memoryMiB: 64,
      disks: [],
      nics: [
        { id: 'nic0', model: 'e1000', mac: '52:54:00:00:00:02', network: 'user' },
        { id: 'nic1', model: 'rtl8139', mac: '52:54:00:00:00:03', network: 'user' },
      ],
      forwards: [],
      runDir: '/r',
      consoleLog: '/c',
      startPaused: false,
    });
    assert.equal(argv[argv.indexOf('-cpu') + 1], 'host');
    assert.ok(argv.includes('e1000,netdev=nic0,mac=52:54:00:00:00:02,id=nic0-dev'));
    assert.ok(argv.includes('rtl8139,netdev=nic1,mac=52:54:00:00:00:03,id=nic1-dev'));
    assert.ok(!argv.includes('-S'));
    assert.ok(argv.includes('VGA,id=video0'), 'a display by default');
    const headless = buildQemuArgv({
      qemuBinary: 'q',
      name: 'n',
      instanceId: 'ab',
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 64,
      disks: [],
      nics: [],
      forwards: [],
      runDir: '/r',
      consoleLog: '/c',
      startPaused: false,
      display: false,
    });
    assert.ok(!headless.includes('VGA,id=video0'));
    assert.ok(headless.includes('-vnc'), 'VNC still answers');
    assert.ok(!argv.includes('-kernel'));
  });

  it('formats hostfwd rules and UUIDs', () => {
    assert.equal(hostfwdRule({ proto: 'udp', hostAddress: '0.0.0.0', hostPort: 5353, guestPort: 53, nic: 'nic0' }), 'udp:0.0.0.0:5353-:53');
    assert.match(instanceUuid('deadbeef0000'), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe('buildQemuArgv: a bounded TCG translation cache', () => {
  const base = {
    qemuBinary: 'qemu',
    name: 'g',
    instanceId: '0123456789ab',
    cpus: 1,
    memoryMiB: 256,
    disks: [],
    nics: [],
    forwards: [],
    runDir: '/d/run',
    consoleLog: '/d/console.log',
    startPaused: true,
  };
  it('moves the accelerator to -accel tcg,tb-size=N (the two forms cannot be mixed)', () => {
    const argv = buildQemuArgv({ ...base, accel: 'tcg', tbSizeMiB: 64 });
    const i = argv.indexOf('-machine');
    assert.deepEqual(argv.slice(i, i + 4), ['-machine', 'pc,usb=off,dump-guest-core=off', '-accel', 'tcg,tb-size=64']);
    assert.ok(!argv.some((a) => a.includes('accel=')));
  });
  it('leaves KVM (no translation cache) as it was', () => {
    const argv = buildQemuArgv({ ...base, accel: 'kvm', tbSizeMiB: 64 });
    assert.ok(argv.includes('pc,accel=kvm,usb=off,dump-guest-core=off'));
    assert.ok(!argv.includes('-accel'));
  });
});
