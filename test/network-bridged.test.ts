import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sleep, startTestDaemon, type TestDaemon } from './helpers.js';
import { createNetns, deleteNetns, guestExec, links, ns, nsRun, veth } from './netns.js';

/**
 * Bridged mode, in namespaces: a "LAN" namespace with its own DHCP server (dnsmasq) is joined
 * by a veth pair to the daemon's namespace, whose end (no address) is the network's uplink.
 *   LAN 192.168.50.1 (dnsmasq) ──veth── lan0 (uplink) ── vmkbr-office ── guest
 */
describe('bridged network (namespaces)', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let host: string;
  let lan: string;
  let dhcp: ChildProcess | undefined;
  let id = '';
  let tmp = '';

  before(async () => {
    host = createNetns('bhost');
    lan = createNetns('blan');
    veth(host, 'lan0', undefined, lan, 'lanp', '192.168.50.1/24');
    tmp = mkdtempSync('/tmp/vmkt-lan-');
    dhcp = spawn(
      'ip',
      [
        'netns',
        'exec',
        lan,
        'dnsmasq',
        '--no-daemon',
        '--conf-file=/dev/null',
        '--interface=lanp',
        '--bind-interfaces',
        '--port=0',
        '--dhcp-range=192.168.50.100,192.168.50.150,12h',
        `--dhcp-leasefile=${join(tmp, 'leases')}`,
        `--pid-file=${join(tmp, 'pid')}`,
      ],
      { stdio: 'ignore' },
    );
    d = await startTestDaemon({ netns: host });
  });
  after(async () => {
    dhcp?.kill('SIGKILL');
    await d?.stop();
    if (host) deleteNetns(host);
    if (lan) deleteNetns(lan);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('refuses an uplink that is missing or carries an address', () => {
    let r = d.cli(['network', 'create', 'bad', '--mode', 'bridged', '--uplink', 'eth9']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not exist/);
    ns(host, ['ip', 'link', 'add', 'adr0', 'type', 'veth', 'peer', 'name', 'adr1']);
    ns(host, ['ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'adr0']);
    r = d.cli(['network', 'create', 'bad', '--mode', 'bridged', '--uplink', 'adr0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /VMKIT_UPLINK_HAS_ADDRESS/);
    assert.ok(!links(host).some((l) => l.startsWith('vmkbr-')));
  });

  it("puts the guest on the LAN: address from the LAN's DHCP server, reachable from the LAN", async () => {
    let r = d.cli(['network', 'create', 'office', '--mode', 'bridged', '--uplink', 'lan0']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(ns(host, ['ip', '-o', 'link', 'show', 'lan0']), /master vmkbr-office/);
    r = d.cli(['network', 'create', 'office2', '--mode', 'bridged', '--uplink', 'lan0']);
    assert.match(r.stderr, /already in a bridge/);
    r = d.cli(['launch', 'appliance', 'b1', '--memory', '160', '--nic', 'office'], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    id = d.cliJson<{ id: string }>(['info', 'b1']).id;
    let ip = '';
    for (let i = 0; i < 240 && !ip; i++) {
      ip = /vmkit-appliance: ready hostname=b1 ipv4=(\S+)/.exec(d.cli(['logs', 'b1']).stdout)?.[1] ?? '';
      if (!ip) await sleep(500);
    }
    assert.match(ip, /^192\.168\.50\.(1[0-4]\d|150)$/);
    assert.match(nsRun(lan, ['curl', '-s', '-m', '5', `http://${ip}/`]).stdout, /Hello from b1/);
    const g = await guestExec(join(d.dir, 'instances', id, 'run', 'serial.sock'), 'ping -c1 -W3 192.168.50.1');
    assert.equal(g.code, 0, g.out);
  });

  it('a bridged guest opens no connection to the host (its frames are marked), the LAN still does; --allow-host opens one', async () => {
    // The host takes an address on the bridge (as an operator might) and serves on 0.0.0.0.
    ns(host, ['ip', 'addr', 'add', '192.168.50.5/24', 'dev', 'vmkbr-office']);
    const svc = spawn('ip', ['netns', 'exec', host, process.execPath, '-e', "require('http').createServer((q, r) => r.end('host-svc\\n')).listen(18999, '0.0.0.0')"], {
      stdio: 'ignore',
    });
    try {
      let fromLan = '';
      for (let i = 0; i < 40 && !fromLan; i++) {
        fromLan = nsRun(lan, ['curl', '-s', '-m', '3', 'http://192.168.50.5:18999/']).stdout;
        if (!fromLan) await sleep(250);
      }
      assert.match(fromLan, /host-svc/, 'the LAN reaches the host (its frames carry no mark)');
      const fetch = async () => {
        const r = await guestExec(join(d.dir, 'instances', id, 'run', 'serial.sock'), 'timeout 4 wget -qO- http://192.168.50.5:18999/ 2>/dev/null');
        return r.code === 0 ? (r.out.trim().split('\n').pop() ?? '') : '';
      };
      assert.equal(await fetch(), '', 'the bridged guest reached a host service');
      assert.equal(d.cli(['network', 'set', 'office', '--allow-host', 'tcp/18999']).code, 0);
      assert.equal(await fetch(), 'host-svc');
      assert.equal(d.cli(['network', 'set', 'office', '--deny-host', 'tcp/18999']).code, 0);
      assert.equal(await fetch(), '');
    } finally {
      svc.kill('SIGKILL');
      ns(host, ['ip', 'addr', 'del', '192.168.50.5/24', 'dev', 'vmkbr-office']);
    }
  });

  it('gives the uplink back when the network is deleted', () => {
    assert.equal(d.cli(['delete', 'b1', '--force']).code, 0);
    assert.equal(d.cli(['network', 'delete', 'office']).code, 0);
    assert.doesNotMatch(ns(host, ['ip', '-o', 'link', 'show', 'lan0']), /master/);
    assert.ok(!links(host).some((l) => l.startsWith('vmk')));
  });
});
