import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, qemuPidsUnder, sleep, startTestDaemon, waitApplianceReady, type TestDaemon } from './helpers.js';
import { createNetns, deleteNetns, guestExec, ns, nsRun, veth } from './netns.js';

/**
 * Guests cannot reach the host (issue 12), with real QEMU guests, nftables and dnsmasq in
 * namespaces: "host" (the daemon, and host services on 0.0.0.0 and 127.0.0.1) and "outside"
 * (a web server upstream, joined by a veth pair).
 *   outside 10.99.0.2 ──veth── 10.99.0.1 host ── vmkbr-lan  (nat 10.80.0.0/24, pool .100-.103) ── ga, gb
 *                                           ├─ vmkbr-lab  (host-only 10.81.0.0/24) ── ga
 *                                           └─ vmkbr-back (internal 10.82.0.0/24) ── gb
 * Two guests serve every assertion but the create/delete rounds (which need new NICs).
 */
interface Inst {
  id: string;
  nics: Array<{ id: string; network: string; ipv4?: string; mac: string }>;
}

const SERVICES = `
const http = require('http');
for (const [host, port] of [['0.0.0.0', 18999], ['127.0.0.1', 18998], ['127.0.0.1', 18997]])
  http.createServer((q, r) => r.end('host-service-' + port + '\\n')).listen(port, host);
`;
const GUEST_UID = '940001';

describe('guests cannot reach the host (namespaces, real guests)', { timeout: 900_000 }, () => {
  let d: TestDaemon;
  let host = '';
  let outside = '';
  let www = '';
  const procs: ChildProcess[] = [];
  const ids: Record<string, Inst> = {};

  const serial = (name: string) => join(d.dir, 'instances', ids[name]!.id, 'run', 'serial.sock');
  const inGuest = (name: string, cmd: string, t?: number) => guestExec(serial(name), cmd, t);
  /** wget from a guest: the body, or '' when the connection failed. */
  const fetchFrom = async (g: string, url: string) => {
    // (No `wget -T`: the appliance's busybox wget crashes with it.)
    const r = await inGuest(g, `timeout 4 wget -qO- ${url} 2>/dev/null`);
    // The body is one line; the console may echo a wrapped command line before it.
    return r.code === 0 ? (r.out.trim().split('\n').pop() ?? '') : '';
  };
  const curl = (nsName: string, url: string) => nsRun(nsName, ['curl', '-s', '-m', '4', url]);
  const ifOf = async (g: string, mac: string) => {
    const out = (await inGuest(g, `grep -il '${mac}' /sys/class/net/*/address`)).out;
    const m = /\/sys\/class\/net\/([A-Za-z0-9_.-]+)\/address/.exec(out);
    assert.ok(m, `${g} has no interface with ${mac}: ${out}`);
    return m[1]!;
  };

  const waitReady = (name: string) => waitApplianceReady(d, name, 240_000);
  function launch(name: string, ...nics: string[]): Inst {
    const r = d.cli(['launch', 'appliance', name, '--memory', '128', ...nics.flatMap((n) => ['--nic', n])], { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.stderr);
    ids[name] = d.cliJson<Inst>(['info', name]);
    return ids[name]!;
  }

  before(async () => {
    host = createNetns('ih');
    outside = createNetns('io');
    veth(host, 'up-out', '10.99.0.1/24', outside, 'out-host', '10.99.0.2/24');
    www = mkdtempSync('/tmp/vmkt-www-');
    writeFileSync(join(www, 'index.html'), 'hello-from-outside\n');
    procs.push(spawn('ip', ['netns', 'exec', outside, 'python3', '-m', 'http.server', '--bind', '10.99.0.2', '8000', '--directory', www], { stdio: 'ignore' }));
    procs.push(spawn('ip', ['netns', 'exec', host, process.execPath, '-e', SERVICES], { stdio: 'ignore' }));
    d = await startTestDaemon({ netns: host });
    for (const args of [
      ['lan', '--mode', 'nat', '--subnet', '10.80.0.0/24', '--dhcp-range', '.100-.103'],
      ['lab', '--mode', 'host-only', '--subnet', '10.81.0.0/24'],
      ['back', '--mode', 'internal', '--subnet', '10.82.0.0/24', '--dhcp'],
    ]) {
      const r = d.cli(['network', 'create', ...args]);
      assert.equal(r.code, 0, r.stderr);
    }
    launch('ga', 'lan', 'lab');
    launch('gb', 'lan', 'back');
    await Promise.all(['ga', 'gb'].map((g) => waitReady(g)));
    // The host's services answer the host itself (so a refusal below is the guard's doing).
    for (const url of ['http://10.80.0.1:18999/', 'http://10.99.0.1:18999/', 'http://127.0.0.1:18998/']) {
      assert.match(curl(host, url).stdout, /host-service/, url);
    }
  });

  after(async () => {
    for (const p of procs) p.kill('SIGKILL');
    await d?.stop();
    if (host) deleteNetns(host);
    if (outside) deleteNetns(outside);
    if (www) rmSync(www, { recursive: true, force: true });
  });

  it('DHCP and DNS work; no other host service answers, on any network mode or host address', async () => {
    assert.equal(ids.ga!.nics[0]!.ipv4, '10.80.0.100');
    assert.match((await inGuest('ga', 'ip -4 -o addr')).out, /10\.80\.0\.100\/24[\s\S]*10\.81\.0\.\d+\/24|10\.81\.0\.\d+\/24[\s\S]*10\.80\.0\.100\/24/);
    assert.match((await inGuest('gb', 'nslookup ga 10.80.0.1')).out, /10\.80\.0\.100/);
    assert.match((await inGuest('gb', 'ip -4 -o addr')).out, /10\.82\.0\.\d+\/24/);
    // Control: the same command does fetch from the outside (a refusal below is the rules').
    assert.equal(await fetchFrom('gb', 'http://10.99.0.2:8000/'), 'hello-from-outside');
    // nat: the gateway, the host's other addresses (uplink, another network's gateway).
    for (const url of ['http://10.80.0.1:18999/', 'http://10.99.0.1:18999/', 'http://10.81.0.1:18999/', 'http://10.80.0.1:22/']) {
      assert.equal(await fetchFrom('gb', url), '', `nat guest reached ${url}`);
    }
    // host-only and internal gateways.
    assert.equal(await fetchFrom('ga', 'http://10.81.0.1:18999/'), '', 'host-only guest reached the host');
    assert.equal(await fetchFrom('gb', 'http://10.82.0.1:18999/'), '', 'internal guest reached the host');
    // The host still reaches its guests (replies are let in).
    assert.match(curl(host, `http://${ids.ga!.nics[1]!.ipv4}/`).stdout, /Hello from ga/);
  });

  it('network set --allow-host opens one service on that network’s gateway only; --deny-host closes it', async () => {
    const bad = d.cli(['network', 'set', 'lan', '--allow-host', 'tcp/99999']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /VMKIT_INVALID_ARGUMENT/);
    const r = d.cli(['network', 'set', 'lan', '--allow-host', 'tcp/18999']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(d.cli(['network', 'info', 'lan']).stdout, /Host access:\s+DHCP\/DNS, tcp\/18999/);
    assert.equal(await fetchFrom('ga', 'http://10.80.0.1:18999/'), 'host-service-18999');
    assert.equal(await fetchFrom('ga', 'http://10.99.0.1:18999/'), '', 'only the gateway address opens');
    assert.equal(await fetchFrom('ga', 'http://10.81.0.1:18999/'), '', 'only on that network');
    assert.equal(d.cli(['network', 'set', 'lan', '--deny-host', 'tcp/18999']).code, 0);
    assert.equal(await fetchFrom('ga', 'http://10.80.0.1:18999/'), '');
    assert.deepEqual(d.cliJson<{ allowHost?: string[] }>(['network', 'info', 'lan']).allowHost, undefined);
  });

  it('nat guests reach the outside, and forwards (from outside and from the host’s loopback) work', async () => {
    assert.equal(await fetchFrom('ga', 'http://10.99.0.2:8000/'), 'hello-from-outside');
    assert.equal(d.cli(['forward', 'add', 'ga', '0.0.0.0:8080:80', '--nic', 'nic0']).code, 0);
    assert.match(curl(outside, 'http://10.99.0.1:8080/').stdout, /Hello from ga/);
    assert.match(curl(host, 'http://127.0.0.1:8080/').stdout, /Hello from ga/);
    assert.equal(d.cli(['forward', 'remove', 'ga', '8080']).code, 0);
  });

  it('IPv6 is blocked on guest links: a forged IPv6 source does not reach a neighbour guest', async () => {
    const ia = await ifOf('ga', ids.ga!.nics[0]!.mac);
    const ib = await ifOf('gb', ids.gb!.nics[0]!.mac);
    const received = async () => Number(/Ip6InReceives\s+(\d+)/.exec((await inGuest('gb', `cat /proc/net/dev_snmp6/${ib}`)).out)?.[1] ?? NaN);
    const v6 = (ifc: string, addr: string) =>
      `echo 0 > /proc/sys/net/ipv6/conf/${ifc}/disable_ipv6; echo 0 > /proc/sys/net/ipv6/conf/${ifc}/accept_dad; ip -6 addr add ${addr}/64 dev ${ifc}`;
    let r = await inGuest('gb', v6(ib, 'fd00::2'));
    assert.equal(r.code, 0, r.out);
    const before = await received();
    assert.ok(Number.isFinite(before), 'gb counts its IPv6 packets');
    r = await inGuest(
      'ga',
      `echo 0 > /proc/sys/net/ipv6/conf/${ia}/disable_ipv6; ip -6 addr add fd00::99/64 dev ${ia} nodad; ping6 -c 2 -W 1 fd00::2; ping6 -c 2 -W 1 -I ${ia} ff02::1`,
      30_000,
    );
    assert.doesNotMatch(r.out, /bytes from fd00::2/);
    assert.equal(await received(), before, 'an IPv6 packet from ga reached gb');
    // Control: without vmkit's bridge table the same pings do reach gb (the test can fail).
    ns(host, ['nft', 'delete', 'table', 'bridge', 'vmkit']);
    try {
      await inGuest('ga', `ping6 -c 2 -W 1 fd00::2; ping6 -c 2 -W 1 -I ${ia} ff02::1`, 30_000);
      assert.ok((await received()) > before, 'without the rules gb receives IPv6');
    } finally {
      // Any change re-applies the whole ruleset.
      assert.equal(d.cli(['network', 'set', 'lan', '--deny-host', 'tcp/1']).code, 0);
    }
    assert.match(ns(host, ['nft', 'list', 'table', 'bridge', 'vmkit']), /ether type != \{ ip, arp \} drop/);
  });

  it('10 create/delete rounds on a 4-address pool: every guest gets its lease and answers', async () => {
    // ga and gb hold .100 and .101: every round's guest is given an address a deleted one had.
    const seen: string[] = [];
    for (let i = 0; i < 10; i++) {
      const name = `gr${i}`;
      const inst = launch(name, 'lan');
      const ip = inst.nics[0]!.ipv4!;
      assert.equal(await waitReady(name), ip, `round ${i}: the guest got its reserved address`);
      assert.match(curl(host, `http://${ip}/`).stdout, new RegExp(`Hello from ${name}`), `round ${i}: the guest answers`);
      seen.push(ip);
      assert.equal(d.cli(['delete', name, '--force']).code, 0);
    }
    assert.ok(new Set(seen).size <= 2, `addresses are reused: ${seen.join(' ')}`);
    const leases = d.cliJson<{ leases: Array<{ mac: string }> }>(['network', 'info', 'lan']).leases;
    assert.ok(leases.length <= 2, `only live NICs hold leases: ${JSON.stringify(leases)}`);
  });

  it('dnsmasq runs unprivileged', () => {
    const pid = Number(readFileSync(join(d.dir, 'networks', 'lan', 'dnsmasq.pid'), 'utf8').trim());
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^Uid:\s+65534\s/m);
  });

  it('guard: processes of guest uids open no connection to any host address but DNS and the allowed (setpriv)', () => {
    // Until every QEMU runs under its own uid (branch s-priv), a process run as a guest uid
    // shows what the guard does to a QEMU with a user-mode NIC: its connections are the guest's.
    const asGuest = (url: string) => nsRun(host, ['setpriv', `--reuid=${GUEST_UID}`, `--regid=${GUEST_UID}`, '--clear-groups', 'curl', '-s', '-m', '3', url]);
    assert.match(ns(host, ['nft', 'list', 'table', 'inet', 'vmkit-guard']), /meta skuid 940000-989999 oifname "lo" ct state new jump guest/);
    for (const url of ['http://127.0.0.1:18998/', 'http://10.99.0.1:18999/', 'http://10.80.0.1:18999/', 'http://10.81.0.1:18999/']) {
      const r = asGuest(url);
      assert.equal(r.code, 7, `a guest uid reached ${url} (curl ${r.code}: ${r.stdout})`);
      assert.match(curl(host, url).stdout, /host-service/, `root still reaches ${url}`);
    }
    // The world is not the host.
    assert.equal(asGuest('http://10.99.0.2:8000/').stdout.trim(), 'hello-from-outside');
    // An allowed service of the pseudo-network "user".
    assert.equal(asGuest('http://127.0.0.1:18997/').code, 7);
    assert.equal(d.cli(['network', 'set', 'user', '--allow-host', 'tcp/18997']).code, 0);
    assert.match(d.cli(['network', 'info', 'user']).stdout, /Host access:\s+DHCP\/DNS, tcp\/18997/);
    assert.equal(asGuest('http://127.0.0.1:18997/').stdout.trim(), 'host-service-18997');
    assert.equal(d.cli(['network', 'set', 'user', '--deny-host', 'tcp/18997']).code, 0);
    assert.equal(asGuest('http://127.0.0.1:18997/').code, 7);
  });

  it('guard: a guest uid still serves forwards (replies are established), and the table survives a restart', async () => {
    const dir = mkdtempSync('/tmp/vmkt-fwd-');
    writeFileSync(join(dir, 'index.html'), 'served-by-guest-uid\n');
    const { chmodSync } = await import('node:fs');
    chmodSync(dir, 0o755);
    const srv = spawn(
      'ip',
      ['netns', 'exec', host, 'setpriv', `--reuid=${GUEST_UID}`, `--regid=${GUEST_UID}`, '--clear-groups', 'busybox', 'httpd', '-f', '-p', '127.0.0.1:18996', '-h', dir],
      {
        stdio: 'ignore',
      },
    );
    procs.push(srv);
    try {
      let body = '';
      for (let i = 0; i < 20 && !body; i++) {
        body = curl(host, 'http://127.0.0.1:18996/').stdout;
        if (!body) await sleep(200);
      }
      assert.match(body, /served-by-guest-uid/);
    } finally {
      srv.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
    await d.kill9();
    assert.match(ns(host, ['nft', 'list', 'tables']), /inet vmkit-guard/, 'kept while the daemon is down');
    ns(host, ['nft', 'delete', 'table', 'inet', 'vmkit-guard']);
    await d.restart();
    assert.match(ns(host, ['nft', 'list', 'tables']), /inet vmkit-guard/, 're-applied at start');
    const doctor = d.cliJson<{ checks: Array<{ name: string; ok: boolean }> }>(['doctor']);
    assert.equal(doctor.checks.find((c) => c.name === 'guest guard')?.ok, true, JSON.stringify(doctor.checks));
  });

  it('a QEMU run as a guest uid with a user-mode NIC: its guest reaches neither 10.0.2.2 nor the host’s addresses; outside, allowed and hostfwd work', async () => {
    // What the daemon will do once each QEMU runs under its own uid (branch s-priv), done by
    // hand: the appliance on a slirp NIC (vmkit's netdev options), QEMU under uid 940001.
    const dir = mkdtempSync('/tmp/vmkt-slirp-');
    const { chmodSync, chownSync } = await import('node:fs');
    const appliance = join(ROOT, '.cache', 'appliance');
    ns(host, ['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', join(appliance, 'root.qcow2'), join(dir, 'disk.qcow2')]);
    chownSync(dir, Number(GUEST_UID), Number(GUEST_UID));
    chownSync(join(dir, 'disk.qcow2'), Number(GUEST_UID), Number(GUEST_UID));
    chmodSync(dir, 0o755);
    const sock = join(dir, 'serial.sock');
    const qemu = spawn(
      'ip',
      [
        ...['netns', 'exec', host, 'setpriv', `--reuid=${GUEST_UID}`, `--regid=${GUEST_UID}`, '--clear-groups'],
        ...['qemu-system-x86_64', '-nodefaults', '-no-user-config', '-machine', 'q35', '-accel', 'tcg', '-m', '128', '-display', 'none'],
        ...['-kernel', join(appliance, 'vmlinuz'), '-initrd', join(appliance, 'initrd.img'), '-append', 'console=ttyS0 quiet loglevel=3 panic=-1'],
        ...['-drive', `file=${join(dir, 'disk.qcow2')},format=qcow2,if=virtio`],
        ...['-netdev', 'user,id=nic0,ipv6=off,hostfwd=tcp:127.0.0.1:8086-:80', '-device', 'virtio-net-pci,netdev=nic0'],
        ...['-chardev', `socket,id=s0,path=${sock},server=on,wait=off,logfile=${join(dir, 'console.log')}`, '-serial', 'chardev:s0'],
      ],
      { stdio: 'ignore' },
    );
    procs.push(qemu);
    try {
      const deadline = Date.now() + 240_000;
      const log = () => (existsSync(join(dir, 'console.log')) ? readFileSync(join(dir, 'console.log'), 'utf8') : '');
      while (!/vmkit-appliance: ready/.test(log())) {
        assert.ok(Date.now() < deadline && qemu.exitCode === null, `the guest did not boot:\n${log().slice(-1500)}`);
        await sleep(500);
      }
      assert.match(readFileSync(`/proc/${qemu.pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${GUEST_UID}\\s`, 'm'), 'QEMU runs as the guest uid');
      const get = async (url: string) => {
        const r = await guestExec(sock, `timeout 5 wget -qO- ${url} 2>/dev/null`);
        return r.code === 0 ? (r.out.trim().split('\n').pop() ?? '') : '';
      };
      assert.equal(await get('http://10.99.0.2:8000/'), 'hello-from-outside', 'the outside world is reachable');
      for (const url of ['http://10.0.2.2:18998/', 'http://10.0.2.2:18999/', 'http://10.99.0.1:18999/', 'http://10.80.0.1:18999/']) {
        assert.equal(await get(url), '', `the user-mode guest reached ${url}`);
      }
      assert.equal(d.cli(['network', 'set', 'user', '--allow-host', 'tcp/18998']).code, 0);
      assert.equal(await get('http://10.0.2.2:18998/'), 'host-service-18998');
      assert.equal(d.cli(['network', 'set', 'user', '--deny-host', 'tcp/18998']).code, 0);
      assert.equal(await get('http://10.0.2.2:18998/'), '');
      assert.match(curl(host, 'http://127.0.0.1:8086/').stdout, /Hello from/, 'the forward (hostfwd) answers');
      // Control: without the guard table the guest does reach the host's loopback (the test can fail).
      ns(host, ['nft', 'delete', 'table', 'inet', 'vmkit-guard']);
      try {
        assert.equal(await get('http://10.0.2.2:18999/'), 'host-service-18999');
      } finally {
        // Any change of the "user" allow-list re-applies the table.
        assert.equal(d.cli(['network', 'set', 'user', '--deny-host', 'tcp/1']).code, 0);
      }
      assert.equal(await get('http://10.0.2.2:18999/'), '');
    } finally {
      qemu.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('default user-mode NIC: the guest reaches neither 10.0.2.2 (host loopback) nor the host’s addresses', async () => {
    launch('gu');
    await waitReady('gu');
    // The guard matches each QEMU's own guest uid: one running as root would make this test meaningless.
    const uids = qemuPidsUnder(d.dir).map((p) => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]));
    assert.ok(uids.length > 0 && uids.every((u) => u !== 0), `every QEMU runs under a guest uid (uids ${uids.join(',')})`);
    for (const url of ['http://10.0.2.2:18998/', 'http://10.0.2.2:18999/', 'http://10.99.0.1:18999/', 'http://10.80.0.1:18999/']) {
      assert.equal(await fetchFrom('gu', url), '', `user-mode guest reached ${url}`);
    }
    assert.equal(await fetchFrom('gu', 'http://10.99.0.2:8000/'), 'hello-from-outside');
    assert.equal(d.cli(['forward', 'add', 'gu', '8085:80']).code, 0);
    assert.match(curl(host, 'http://127.0.0.1:8085/').stdout, /Hello from gu/);
    assert.equal(d.cli(['network', 'set', 'user', '--allow-host', 'tcp/18998']).code, 0);
    assert.equal(await fetchFrom('gu', 'http://10.0.2.2:18998/'), 'host-service-18998');
    assert.equal(d.cli(['network', 'set', 'user', '--deny-host', 'tcp/18998']).code, 0);
    assert.ok(existsSync(serial('gu')));
  });
});
