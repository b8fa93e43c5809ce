import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startTestDaemon, type TestDaemon } from './helpers.js';
import { createNetns, deleteNetns, dnsmasqPids, links, ns, nsRun } from './netns.js';

/**
 * Networks without VMs: create/list/info/delete, bad input, start-up reconciliation and a
 * create/delete loop. The daemon runs in a network namespace of its own.
 */
interface ApiError {
  error: { code: string; message: string };
}
interface NetworkView {
  name: string;
  mode: string;
  bridge: string;
  subnet?: string;
  hostAddress?: string;
  nics: Array<{ instance: string; ipv4?: string }>;
}

function errCode(r: { status: number; body: unknown }): string {
  return (r.body as ApiError).error?.code ?? `status ${r.status}`;
}

describe('networks (no VM)', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let nsName: string;

  before(async () => {
    nsName = createNetns('net');
    // A host interface with an address, and one without (uplink candidates).
    ns(nsName, ['ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p']);
    ns(nsName, ['ip', 'link', 'add', 'addr0', 'type', 'veth', 'peer', 'name', 'addr0p']);
    ns(nsName, ['ip', 'addr', 'add', '10.90.0.1/24', 'dev', 'addr0']);
    d = await startTestDaemon({ netns: nsName });
  });
  after(async () => {
    await d?.stop();
    if (nsName) deleteNetns(nsName);
  });

  it('creates nat, host-only and internal networks with bridge, dnsmasq and rules', () => {
    let r = d.cli(['network', 'create', 'lan', '--mode', 'nat', '--subnet', '10.80.0.0/24', '--dhcp-range', '.100-.200']);
    assert.equal(r.code, 0, r.stderr);
    r = d.cli(['network', 'create', 'lab', '--mode', 'host-only', '--subnet', '10.81.0.0/24']);
    assert.equal(r.code, 0, r.stderr);
    r = d.cli(['network', 'create', 'backend', '--mode', 'internal']);
    assert.equal(r.code, 0, r.stderr);
    const list = d.cliJson<NetworkView[]>(['network', 'list']);
    assert.deepEqual(list.map((n) => [n.name, n.mode]).sort(), [
      ['backend', 'internal'],
      ['lab', 'host-only'],
      ['lan', 'nat'],
    ]);
    const lan = d.cliJson<NetworkView>(['network', 'info', 'lan']);
    assert.equal(lan.bridge, 'vmkbr-lan');
    assert.equal(lan.hostAddress, '10.80.0.1');
    assert.match(ns(nsName, ['ip', '-4', 'addr', 'show', 'dev', 'vmkbr-lan']), /10\.80\.0\.1\/24/);
    // internal without a subnet: the host has no address there
    assert.doesNotMatch(ns(nsName, ['ip', '-4', 'addr', 'show', 'dev', 'vmkbr-backend']), /inet /);
    assert.equal(dnsmasqPids(nsName).length, 2);
    const rules = ns(nsName, ['nft', 'list', 'table', 'inet', 'vmkit']);
    assert.match(rules, /ip saddr 10\.80\.0\.0\/24 .*masquerade/);
    assert.match(rules, /iifname "vmkbr-lab" drop/);
    assert.equal(ns(nsName, ['cat', '/proc/sys/net/ipv4/ip_forward']).trim(), '1');
  });

  it('refuses bad input with clear errors and makes nothing', async () => {
    const before = links(nsName).sort();
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ name: 'o1', mode: 'nat', subnet: '10.80.0.128/25' }, 'VMKIT_SUBNET_OVERLAP', /overlaps network "lan"/],
      [{ name: 'o2', mode: 'host-only', subnet: '10.90.0.0/16' }, 'VMKIT_SUBNET_OVERLAP', /host's address 10\.90\.0\.1\/24 on addr0/],
      [{ name: 'b1', mode: 'nat', subnet: '10.85.0.5/24' }, 'VMKIT_INVALID_ARGUMENT', /host bits/],
      [{ name: 'b2', mode: 'nat', subnet: '10.85.0.0/31' }, 'VMKIT_INVALID_ARGUMENT', /too small/],
      [{ name: 'b3', mode: 'nat', subnet: 'banana' }, 'VMKIT_INVALID_ARGUMENT', /not NETWORK\/PREFIX/],
      [{ name: 'b4', mode: 'nat' }, 'VMKIT_INVALID_ARGUMENT', /needs a subnet/],
      [{ name: 'b5', mode: 'nat', subnet: '10.85.0.0/24', dhcpRange: '.200-.100' }, 'VMKIT_INVALID_ARGUMENT', /comes after/],
      [{ name: 'b6', mode: 'nat', subnet: '10.85.0.0/24', dhcpRange: '10.86.0.2-10.86.0.9' }, 'VMKIT_INVALID_ARGUMENT', /must lie within/],
      [{ name: 'u1', mode: 'bridged', uplink: 'nosuch0' }, 'VMKIT_INVALID_ARGUMENT', /does not exist/],
      [{ name: 'u2', mode: 'bridged', uplink: 'addr0' }, 'VMKIT_UPLINK_HAS_ADDRESS', /carries the address 10\.90\.0\.1/],
      [{ name: 'lan', mode: 'nat', subnet: '10.87.0.0/24' }, 'VMKIT_ALREADY_EXISTS', /already exists/],
      [{ name: 'user', mode: 'nat', subnet: '10.87.0.0/24' }, 'VMKIT_NAME_INVALID', /reserved/],
      [{ name: 'Bad_Name', mode: 'nat', subnet: '10.87.0.0/24' }, 'VMKIT_NAME_INVALID', /not valid/],
    ];
    for (const [body, code, msg] of cases) {
      const r = await d.api('POST', '/1.0/networks', body);
      assert.equal(errCode(r), code, JSON.stringify(body));
      assert.match((r.body as ApiError).error.message, msg);
    }
    assert.deepEqual(links(nsName).sort(), before);
    assert.equal(dnsmasqPids(nsName).length, 2);
    const gone = await d.api('DELETE', '/1.0/networks/nosuch');
    assert.equal(errCode(gone), 'VMKIT_NETWORK_NOT_FOUND');
    // The CLI says why too.
    const r = d.cli(['network', 'create', 'x1', '--mode', 'nat', '--subnet', '10.80.0.0/24']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /VMKIT_SUBNET_OVERLAP/);
  });

  it('checks static addresses and the DHCP pool, and refuses to delete a network in use', async () => {
    assert.equal(d.cli(['network', 'create', 'tiny', '--mode', 'host-only', '--subnet', '10.84.0.0/24', '--dhcp-range', '.100-.101']).code, 0);
    const create = async (name: string, nics: unknown[]) => {
      const r = await d.api<{ metadata: { id: string } }>('POST', '/1.0/instances', { name, image: 'appliance', nics });
      if (r.status !== 202) return r;
      return d.api('GET', `/1.0/operations/${r.body.metadata.id}/wait?timeout=60`);
    };
    const opErr = (r: { body: unknown }) => (r.body as { metadata?: { error?: { code: string; message: string } } }).metadata?.error;
    let r = await create('t1', [{ network: 'tiny' }]);
    assert.equal(opErr(r), undefined);
    r = await create('t2', [{ network: 'tiny' }, { network: 'lab', ipv4: '10.81.0.10', model: 'e1000' }]);
    assert.equal(opErr(r), undefined);
    r = await create('t3', [{ network: 'tiny' }]);
    assert.equal(opErr(r)?.code, 'VMKIT_POOL_EXHAUSTED');
    assert.match(opErr(r)!.message, /pool of network "tiny" .* is exhausted/);
    r = await create('t4', [{ network: 'lab', ipv4: '10.81.0.10' }]);
    assert.equal(opErr(r)?.code, 'VMKIT_ADDRESS_IN_USE');
    r = await create('t5', [{ network: 'lab', ipv4: '10.99.0.10' }]);
    assert.equal(opErr(r)?.code, 'VMKIT_INVALID_ARGUMENT');
    assert.match(opErr(r)!.message, /outside network "lab"/);
    r = await create('t6', [{ network: 'lab', ipv4: '10.81.0.1' }]);
    assert.equal(opErr(r)?.code, 'VMKIT_ADDRESS_IN_USE');
    r = await create('t7', [{ network: 'nosuch' }]);
    assert.equal(opErr(r)?.code, 'VMKIT_NETWORK_NOT_FOUND');
    r = await create('t8', [{ network: 'lab' }]);
    assert.equal(opErr(r), undefined);
    const fw = await d.api('POST', '/1.0/instances/t8/forwards', { hostPort: 18080, guestPort: 80 });
    assert.equal(errCode(fw), 'VMKIT_INVALID_ARGUMENT');
    assert.match((fw.body as ApiError).error.message, /nat networks; "lab" is host-only/);
    assert.equal(d.cli(['delete', 't8']).code, 0);
    const t2 = d.cliJson<{ nics: Array<{ network: string; ipv4?: string; model: string; dhcp?: boolean }> }>(['info', 't2']);
    assert.deepEqual(
      t2.nics.map((n) => [n.network, n.ipv4, n.model, !!n.dhcp]),
      [
        ['tiny', '10.84.0.101', 'virtio-net', true],
        ['lab', '10.81.0.10', 'e1000', false],
      ],
    );
    // Reservations reach dnsmasq.
    const hosts = ns(nsName, ['cat', `${d.dir}/networks/lab/dnsmasq.conf`]);
    assert.match(hosts, /^dhcp-host=.*,10\.81\.0\.10,t2$/m);
    const del = await d.api('DELETE', '/1.0/networks/lab');
    assert.equal(errCode(del), 'VMKIT_NETWORK_IN_USE');
    assert.match((del.body as ApiError).error.message, /t2/);
    const info = d.cliJson<NetworkView>(['network', 'info', 'tiny']);
    assert.deepEqual(info.nics.map((n) => n.instance).sort(), ['t1', 't2']);
    assert.equal(d.cli(['delete', 't1']).code, 0);
    assert.equal(d.cli(['delete', 't2']).code, 0);
    assert.equal(d.cli(['network', 'delete', 'tiny']).code, 0);
    // The freed addresses are reservable again.
    assert.doesNotMatch(ns(nsName, ['cat', `${d.dir}/networks/lab/dnsmasq.conf`]), /10\.81\.0\.10/);
    // Creates at the same moment never get the same address (each is claimed from its pick
    // until the row holds it), and a create that fails after its pick leaves nothing claimed.
    const together = await Promise.all(['p1', 'p2', 'p3', 'p4'].map((n) => create(n, [{ network: 'lan' }])));
    for (const x of together) assert.equal(opErr(x), undefined);
    const got = ['p1', 'p2', 'p3', 'p4'].map((n) => d.cliJson<{ nics: Array<{ ipv4?: string }> }>(['info', n]).nics[0]!.ipv4);
    assert.equal(new Set(got).size, 4, `addresses of creates at the same moment: ${got.join(', ')}`);
    r = await create('q1', [{ network: 'lan', ipv4: '10.80.0.150' }, { network: 'nosuch' }]);
    assert.equal(opErr(r)?.code, 'VMKIT_NETWORK_NOT_FOUND');
    r = await create('q2', [{ network: 'lan', ipv4: '10.80.0.150' }]);
    assert.equal(opErr(r), undefined, 'the failed create left its address free');
    for (const n of ['p1', 'p2', 'p3', 'p4', 'q2']) assert.equal(d.cli(['delete', n]).code, 0);
  });

  it('reconciles at start-up: missing pieces re-made, strays removed', async () => {
    await d.kill9();
    ns(nsName, ['ip', 'link', 'del', 'vmkbr-lan']);
    for (const pid of dnsmasqPids(nsName)) process.kill(pid, 'SIGKILL');
    ns(nsName, ['ip', 'link', 'add', 'vmkbr-stray', 'type', 'bridge']);
    ns(nsName, ['ip', 'tuntap', 'add', 'dev', 'vmkt-dead-0', 'mode', 'tap']);
    ns(nsName, ['nft', 'delete', 'table', 'inet', 'vmkit']);
    await d.restart();
    const l = links(nsName);
    assert.ok(l.includes('vmkbr-lan'));
    assert.ok(!l.includes('vmkbr-stray'));
    assert.ok(!l.includes('vmkt-dead-0'));
    assert.match(ns(nsName, ['ip', '-4', 'addr', 'show', 'dev', 'vmkbr-lan']), /10\.80\.0\.1\/24/);
    assert.equal(dnsmasqPids(nsName).length, 2);
    assert.match(ns(nsName, ['nft', 'list', 'table', 'inet', 'vmkit']), /masquerade/);
  });

  it('200 networks created and deleted leave no bridge, tap, rule or dnsmasq behind', async () => {
    for (const n of ['lan', 'lab', 'backend']) assert.equal((await d.api('DELETE', `/1.0/networks/${n}`)).status, 200);
    const start = Date.now();
    for (let i = 0; i < 200; i++) {
      const mode = (['nat', 'host-only', 'internal'] as const)[i % 3];
      const c = await d.api('POST', '/1.0/networks', { name: `loop${i}`, mode, subnet: `10.${200 + (i % 50)}.${i}.0/24`, dhcp: true });
      assert.equal(c.status, 201, JSON.stringify(c.body));
      const del = await d.api('DELETE', `/1.0/networks/loop${i}`);
      assert.equal(del.status, 200, JSON.stringify(del.body));
    }
    const elapsed = Date.now() - start;
    assert.deepEqual(
      links(nsName).filter((l) => l.startsWith('vmk')),
      [],
    );
    assert.deepEqual(dnsmasqPids(nsName), []);
    const tables = nsRun(nsName, ['nft', 'list', 'tables']).stdout;
    // Only the guard on guest QEMU sockets stays: it is applied at start, networks or not.
    assert.doesNotMatch(tables, /^table (inet|bridge) vmkit$/m);
    assert.match(tables, /^table inet vmkit-guard$/m);
    assert.deepEqual(d.cliJson<unknown[]>(['network', 'list']), []);
    console.log(`# 200 create+delete cycles in ${elapsed} ms`);
  });
});
