import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { mkdtempSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { ROOT, sleep, startTestDaemon, waitApplianceReady, type TestDaemon } from './helpers.js';
import { createNetns, deleteNetns, guestExec, ns, nsRun, veth } from './netns.js';

/**
 * Guests on vmkit networks, all inside namespaces: "host" (the daemon) and "outside" (an
 * upstream machine with a web server, joined to the host by a veth pair).
 *   outside 10.99.0.2 ──veth── 10.99.0.1 host ── vmkbr-lan (nat 10.80.0.0/24) ── g1
 *                                           ├─ vmkbr-lab (host-only 10.81.0.0/24) ── g1, g2
 *                                           └─ vmkbr-backend (internal 10.82.0.0/24) ── g2, g3
 */
interface Inst {
  id: string;
  nics: Array<{ id: string; network: string; ipv4?: string; mac: string; model: string }>;
}

/**
 * The guests boot the generic-kernel appliance (.cache/appliance-net, built by
 * scripts/setup.sh): it has the e1000 and rtl8139 drivers, so the test reads the NIC model
 * from inside the guest.
 */
const APPLIANCE_NET = join(ROOT, '.cache', 'appliance-net');

describe('guests on networks (namespaces)', { timeout: 900_000 }, () => {
  let d: TestDaemon;
  let host: string;
  let outside: string;
  let web: ChildProcess | undefined;
  let www = '';
  const ids: Record<string, Inst> = {};

  const serial = (name: string) => join(d.dir, 'instances', ids[name]!.id, 'run', 'serial.sock');
  const inGuest = (name: string, cmd: string, t?: number) => guestExec(serial(name), cmd, t);
  const curl = (nsName: string, url: string) => nsRun(nsName, ['curl', '-s', '-m', '4', url]);

  const waitReady = (name: string) => waitApplianceReady(d, name, 180_000);

  before(async () => {
    host = createNetns('host');
    outside = createNetns('out');
    veth(host, 'up-out', '10.99.0.1/24', outside, 'out-host', '10.99.0.2/24');
    www = mkdtempSync('/tmp/vmkt-www-');
    writeFileSync(join(www, 'index.html'), 'hello-from-outside\n');
    web = spawn('ip', ['netns', 'exec', outside, 'python3', '-m', 'http.server', '--bind', '10.99.0.2', '8000', '--directory', www], { stdio: 'ignore' });
    assert.ok(existsSync(join(APPLIANCE_NET, 'image.json')), 'the generic-kernel appliance is built (npm run setup)');
    d = await startTestDaemon({ netns: host, env: { VMKIT_APPLIANCE_DIR: APPLIANCE_NET } });
    for (const args of [
      ['lan', '--mode', 'nat', '--subnet', '10.80.0.0/24', '--dhcp-range', '.100-.200'],
      ['lab', '--mode', 'host-only', '--subnet', '10.81.0.0/24'],
      ['backend', '--mode', 'internal', '--subnet', '10.82.0.0/24', '--dhcp'],
    ]) {
      const r = d.cli(['network', 'create', ...args]);
      assert.equal(r.code, 0, r.stderr);
    }
    const launch = (name: string, ...nics: string[]) => {
      const r = d.cli(['launch', 'appliance', name, '--memory', '160', ...nics.flatMap((n) => ['--nic', n])], { timeoutMs: 180_000 });
      assert.equal(r.code, 0, r.stderr);
      ids[name] = d.cliJson<Inst>(['info', name]);
    };
    launch('g1', 'lan', 'lab:e1000');
    launch('g2', 'lab:rtl8139', 'backend,ip=10.82.0.10');
    launch('g3', 'backend');
    await Promise.all(['g1', 'g2', 'g3'].map((g) => waitReady(g)));
  });

  after(async () => {
    web?.kill('SIGKILL');
    await d?.stop();
    if (host) deleteNetns(host);
    if (outside) deleteNetns(outside);
    if (www) rmSync(www, { recursive: true, force: true });
  });

  it('gives every NIC its address: DHCP reservations and a static one, several NICs and models', async () => {
    const g1 = ids.g1!;
    assert.equal(g1.nics[0]!.ipv4, '10.80.0.100');
    const st = JSON.parse((await inGuest('g1', 'wget -qO- http://127.0.0.1/status')).out.trim().split('\n').pop()!) as {
      nics: Array<{ mac: string; driver: string; ipv4: string[] }>;
    };
    const byMac = new Map(st.nics.map((n) => [n.mac, n]));
    assert.deepEqual(byMac.get(g1.nics[0]!.mac)?.ipv4, ['10.80.0.100']);
    assert.deepEqual(byMac.get(g1.nics[1]!.mac)?.ipv4, [g1.nics[1]!.ipv4]);
    const g2 = await inGuest('g2', 'ip -4 -o addr');
    assert.match(g2.out, /10\.82\.0\.10\/24/);
    // The models are what the guest's kernel sees.
    assert.equal(byMac.get(g1.nics[0]!.mac)?.driver, 'virtio_net');
    assert.equal(byMac.get(g1.nics[1]!.mac)?.driver, 'e1000');
    const s2 = await inGuest('g2', 'wget -qO- http://127.0.0.1/status');
    assert.match(s2.out, /"driver":"8139(cp|too)"/);
    const info = d.cliJson<{ leases: Array<{ ipv4: string }> }>(['network', 'info', 'lan']);
    assert.ok(
      info.leases.some((l) => l.ipv4 === '10.80.0.100'),
      JSON.stringify(info.leases),
    );
  });

  it('nat: the guest reaches the outside; the outside reaches it only through a forward', async () => {
    const r = await inGuest('g1', 'timeout 5 wget -qO- http://10.99.0.2:8000/');
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /hello-from-outside/);
    // Even with a route to the guests, the outside is not let in.
    ns(outside, ['ip', 'route', 'add', '10.80.0.0/24', 'via', '10.99.0.1']);
    assert.notEqual(curl(outside, 'http://10.80.0.100/').code, 0);
    // A forward on every address, applied live: from the outside, and from the host's loopback.
    assert.equal(d.cli(['forward', 'add', 'g1', '0.0.0.0:8080:80']).code, 0);
    assert.match(curl(outside, 'http://10.99.0.1:8080/').stdout, /Hello from g1/);
    assert.match(curl(host, 'http://127.0.0.1:8080/').stdout, /Hello from g1/);
    // Hairpin: the guest itself through the host's forward.
    assert.match((await inGuest('g1', 'timeout 5 wget -qO- http://10.99.0.1:8080/')).out, /Hello from g1/);
    const chk = d.cli(['forward', 'check', 'g1', '8080']);
    assert.equal(chk.code, 0, chk.stderr + chk.stdout);
    // Loopback only (the default address).
    assert.equal(d.cli(['forward', 'add', 'g1', '8081:80']).code, 0);
    assert.match(curl(host, 'http://127.0.0.1:8081/').stdout, /Hello from g1/);
    assert.notEqual(curl(outside, 'http://10.99.0.1:8081/').code, 0);
    // Collisions.
    const dup = d.cli(['forward', 'add', 'g1', '8080:80']);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /VMKIT_FORWARD_CONFLICT/);
    assert.equal(d.cli(['forward', 'remove', 'g1', '8080']).code, 0);
    assert.notEqual(curl(outside, 'http://10.99.0.1:8080/').code, 0);
    assert.equal(d.cli(['forward', 'remove', 'g1', '8081']).code, 0);
    assert.notEqual(curl(host, 'http://127.0.0.1:8081/').code, 0);
  });

  it('host-only: host and guest talk; the guest does not reach the outside', async () => {
    const ip = ids.g2!.nics[0]!.ipv4!;
    assert.match(curl(host, `http://${ip}/`).stdout, /Hello from g2/);
    const r = await inGuest('g2', 'timeout 3 wget -qO- http://10.99.0.2:8000/');
    assert.notEqual(r.code, 0);
  });

  it('internal: guests reach each other by address and by name; not the host, not the outside', async () => {
    const r = await inGuest('g3', 'timeout 5 wget -qO- http://10.82.0.10/');
    assert.match(r.out, /Hello from g2/);
    const n = await inGuest('g3', 'nslookup g2 10.82.0.1');
    assert.match(n.out, /10\.82\.0\.10/);
    assert.notEqual(curl(host, 'http://10.82.0.10/').code, 0);
    assert.notEqual((await inGuest('g3', 'timeout 3 wget -qO- http://10.99.0.2:8000/')).code, 0);
  });

  it('isolation: a guest cannot reach another network; forged addresses are dropped', async () => {
    // g1 (lan) → g2's lab and backend addresses, routed through the host: dropped.
    assert.notEqual((await inGuest('g1', `timeout 3 wget -qO- http://10.82.0.10/`)).code, 0);
    assert.notEqual((await inGuest('g1', `timeout 3 wget -qO- http://10.81.0.1/`)).code, 0);
    // g3 forges another IPv4 address on its backend NIC: its packets do not get through.
    const ifc = (await inGuest('g3', "ip -o -4 addr | awk '/10\\.82\\./ {print $2}'")).out.trim();
    assert.ok(ifc, 'g3 has a backend interface');
    const own = ids.g3!.nics[0]!.ipv4!;
    let r = await inGuest('g3', `ip addr flush dev ${ifc} && ip addr add 10.82.0.77/24 dev ${ifc} && timeout 3 wget -qO- http://10.82.0.10/`);
    assert.notEqual(r.code, 0, 'forged IPv4 got through');
    r = await inGuest('g3', `ip addr flush dev ${ifc} && ip addr add ${own}/24 dev ${ifc} && timeout 5 wget -qO- http://10.82.0.10/`);
    assert.match(r.out, /Hello from g2/);
    // Forged MAC.
    r = await inGuest('g3', `ip link set ${ifc} address 52:54:00:de:ad:01 && timeout 3 wget -qO- http://10.82.0.10/`);
    assert.notEqual(r.code, 0, 'forged MAC got through');
    r = await inGuest('g3', `ip link set ${ifc} address ${ids.g3!.nics[0]!.mac} && timeout 5 wget -qO- http://10.82.0.10/`);
    assert.match(r.out, /Hello from g2/);
    // Rogue DHCP answers (source port 67) from guests are dropped at their tap.
    assert.match(ns(host, ['nft', 'list', 'table', 'bridge', 'vmkit']), /udp sport 67 drop/);
  });

  it('a guest running its own DHCP server answers nobody', async () => {
    // A network where vmkit serves no DHCP at all: any lease g3 gets would be the rogue's.
    assert.equal(d.cli(['network', 'create', 'quiet', '--mode', 'internal', '--subnet', '10.86.0.0/24', '--no-dhcp', '--no-dns']).code, 0);
    const rogue = JSON.parse(d.cli(['nic', 'add', 'g2', '--network', 'quiet', '--ip', '10.86.0.10', '--format', 'json']).stdout) as { mac: string };
    const victim = JSON.parse(d.cli(['nic', 'add', 'g3', '--network', 'quiet', '--format', 'json']).stdout) as { mac: string };
    const ifOf = async (g: string, mac: string) => {
      for (let i = 0; i < 40; i++) {
        const out = (await inGuest(g, `grep -il '${mac}' /sys/class/net/*/address`)).out.trim();
        const m = /\/sys\/class\/net\/([A-Za-z0-9_.-]+)\/address/.exec(out);
        if (m) return m[1]!;
        await sleep(500);
      }
      throw new Error(`${g} does not see ${mac}`);
    };
    const rIf = await ifOf('g2', rogue.mac);
    const vIf = await ifOf('g3', victim.mac);
    await sleep(2000);
    const conf = `start 10.86.0.100\\nend 10.86.0.110\\ninterface ${rIf}\\nlease_file /tmp/rogue.leases\\noption router 10.86.0.66\\n`;
    // (The appliance's own DHCP clients for the new NICs would reset them: stopped first.)
    let r = await inGuest(
      'g2',
      `kill $(pidof udhcpc); sleep 0.5; ip addr replace 10.86.0.10/24 dev ${rIf}; touch /tmp/rogue.leases; printf '${conf}' > /tmp/rogue.conf && udhcpd /tmp/rogue.conf && sleep 1 && pidof udhcpd`,
    );
    assert.equal(r.code, 0, `the rogue server runs: ${r.out}`);
    r = await inGuest('g3', `kill $(pidof udhcpc); udhcpc -n -q -f -t 4 -T 1 -i ${vIf} -s /bin/true 2>&1`, 60_000);
    assert.notEqual(r.code, 0, `g3 got a lease from the rogue: ${r.out}`);
    assert.doesNotMatch(r.out, /obtained/);
    assert.equal(d.cli(['nic', 'remove', 'g2', 'nic2']).code, 0);
    assert.equal(d.cli(['nic', 'remove', 'g3', 'nic1']).code, 0);
  });

  it('hot-plugs and hot-unplugs a NIC on a running guest', async () => {
    const status = async () =>
      JSON.parse((await inGuest('g1', 'wget -qO- http://127.0.0.1/status')).out.trim().split('\n').pop()!) as { nics: Array<{ mac: string; ipv4: string[] }> };
    assert.equal(d.cli(['network', 'create', 'lab2', '--mode', 'host-only', '--subnet', '10.83.0.0/24']).code, 0);
    const r = d.cli(['nic', 'add', 'g1', '--network', 'lab2', '--format', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const nic = JSON.parse(r.stdout) as { id: string; mac: string; ipv4: string };
    assert.equal(nic.id, 'nic2');
    let seen: { mac: string; ipv4: string[] } | undefined;
    for (let i = 0; i < 60 && !seen?.ipv4.length; i++) {
      seen = (await status()).nics.find((n) => n.mac === nic.mac);
      if (!seen?.ipv4.length) await sleep(500);
    }
    assert.deepEqual(seen?.ipv4, [nic.ipv4], 'the guest sees the new NIC and gets its reserved address');
    assert.match(curl(host, `http://${nic.ipv4}/`).stdout, /Hello from g1/);
    const bad = d.cli(['nic', 'remove', 'g1', 'nic9']);
    assert.match(bad.stderr, /VMKIT_NIC_NOT_FOUND/);
    const rm = d.cli(['nic', 'remove', 'g1', 'nic2']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.ok(!(await status()).nics.some((n) => n.mac === nic.mac), 'the NIC is gone from the guest');
    assert.doesNotMatch(ns(host, ['ip', '-o', 'link']), new RegExp(`vmkt-${ids.g1!.id.slice(0, 7)}-2`));
    assert.deepEqual(
      d.cliJson<Inst>(['info', 'g1']).nics.map((n) => n.id),
      ['nic0', 'nic1'],
    );
  });

  it('a daemon restart keeps running guests connected and re-applies what went missing', async () => {
    assert.equal(d.cli(['forward', 'add', 'g1', '0.0.0.0:8090:80', '--nic', 'nic0']).code, 0);
    await d.kill9();
    ns(host, ['nft', 'delete', 'table', 'inet', 'vmkit']);
    await d.restart();
    assert.match(curl(outside, 'http://10.99.0.1:8090/').stdout, /Hello from g1/);
    const r = await inGuest('g1', 'timeout 5 wget -qO- http://10.99.0.2:8000/');
    assert.match(r.out, /hello-from-outside/);
    assert.match(ns(host, ['ip', '-o', 'link']), new RegExp(`vmkt-${ids.g1!.id.slice(0, 7)}-0`));
  });

  it('stopping a guest removes its taps and rules; a network in use is not deleted', async () => {
    const del = d.cli(['network', 'delete', 'backend']);
    assert.equal(del.code, 1);
    assert.match(del.stderr, /VMKIT_NETWORK_IN_USE/);
    assert.equal(d.cli(['stop', 'g3', '--force']).code, 0);
    const tap = `vmkt-${ids.g3!.id.slice(0, 7)}-0`;
    assert.doesNotMatch(ns(host, ['ip', '-o', 'link']), new RegExp(tap));
    assert.doesNotMatch(ns(host, ['nft', 'list', 'table', 'bridge', 'vmkit']), new RegExp(tap));
  });
});
