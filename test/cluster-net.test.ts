import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers.js';
import { canConnect, createClusterTopology, etcdctl, listNetns, startEtcd, type ClusterTopology, type EtcdProcess } from './cluster-net.js';

/**
 * Smoke test of the cluster test network: three host namespaces on one bridge, etcd in the
 * switch namespace, each host reaching it — until its cable is pulled.
 */
describe('cluster test network (namespaces)', { timeout: 120_000 }, () => {
  let topo: ClusterTopology | undefined;
  let etcd: EtcdProcess | undefined;

  before(async () => {
    topo = await createClusterTopology(3);
    etcd = await startEtcd({ netns: topo.switchNetns, host: topo.switchAddress, clientPort: 12379, peerPort: 12380 });
  });
  after(async () => {
    await etcd?.destroy();
    await topo?.destroy();
  });

  it('builds three hosts on one /24 with the switch at .254, names within 15 characters', () => {
    const t = topo!;
    assert.match(t.switchNetns, /^vmkc-[0-9a-f]{4}-sw$/);
    assert.equal(t.hosts.length, 3);
    assert.match(t.switchAddress, /^10\.\d+\.\d+\.254$/);
    const net24 = t.switchAddress.replace(/\.254$/, '');
    assert.equal(t.subnet, `${net24}.0/24`);
    const present = listNetns();
    for (const [i, h] of t.hosts.entries()) {
      assert.equal(h.netns, `${t.prefix}-h${i + 1}`);
      assert.equal(h.address, `${net24}.${i + 1}`);
      assert.ok(present.includes(h.netns));
      assert.ok(h.vethHost.length <= 15 && h.vethSwitch.length <= 15);
      const addr = t.exec(h.netns, ['ip', '-o', '-4', 'addr', 'show', 'dev', h.vethHost]);
      assert.match(addr.stdout, new RegExp(`inet ${h.address.replace(/\./g, '\\.')}/24`));
      assert.match(t.exec(h.netns, ['ip', '-o', 'link', 'show', 'lo']).stdout, /UP/);
      assert.match(t.exec(t.switchNetns, ['ip', '-o', 'link', 'show', h.vethSwitch]).stdout, new RegExp(`master ${t.bridge}`));
    }
    // The machine's own namespace has none of it.
    const own = spawnSync('ip', ['-o', 'addr', 'show'], { encoding: 'utf8' }).stdout;
    assert.ok(!own.includes(`${net24}.`), "an address of the cluster network is in the machine's own namespace");
  });

  it('hosts reach each other through the switch', async () => {
    const t = topo!;
    const server = t.spawn(t.hosts[2]!.netns, [process.execPath, '-e', "require('net').createServer((c) => c.end()).listen(7000)"], { stdio: 'ignore' });
    try {
      let ok = false;
      for (let i = 0; i < 40 && !ok; i++) {
        ok = canConnect(t.hosts[0]!.netns, t.hosts[2]!.address, 7000);
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(ok, 'host 1 cannot reach host 3');
      assert.ok(!canConnect(t.hosts[0]!.netns, t.hosts[2]!.address, 7001), 'a closed port must be refused');
    } finally {
      server.kill('SIGKILL');
    }
  });

  it('every host reaches etcd in the switch namespace, and sees what the others wrote', () => {
    const t = topo!;
    for (const h of t.hosts) {
      const r = etcdctl(h.netns, etcd!.endpoint, ['put', `/smoke/${h.netns}`, h.address]);
      assert.equal(r.code, 0, r.stderr);
    }
    for (const h of t.hosts) {
      const r = etcdctl(h.netns, etcd!.endpoint, ['get', '--prefix', '/smoke/', '--print-value-only']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n').sort(), t.hosts.map((x) => x.address).sort());
    }
  });

  it("runs vmkit's EtcdStore inside a host namespace", () => {
    const t = topo!;
    const script = `
      const { EtcdStore } = await import(${JSON.stringify(join(ROOT, 'dist', 'store', 'etcd.js'))});
      const s = new EtcdStore({ endpoints: [process.argv[1]], prefix: '/smoke-store/' });
      const rev = await s.put('hosts', process.argv[2], { ok: true }, { expectRevision: 0 });
      const got = await s.get('hosts', process.argv[2]);
      await s.close();
      console.log(JSON.stringify({ rev, got }));`;
    const h = t.hosts[1]!;
    const r = t.exec(h.netns, [process.execPath, '--input-type=module', '-e', script, etcd!.endpoint, h.netns], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { rev: number; got: { key: string; value: unknown; revision: number } };
    assert.deepEqual(out.got, { key: h.netns, value: { ok: true }, revision: out.rev });
  });

  it('a cut link isolates exactly that host until it is restored', async () => {
    const t = topo!;
    t.cutLink(1);
    try {
      const cut = etcdctl(t.hosts[1]!.netns, etcd!.endpoint, ['get', '/smoke/x']);
      assert.notEqual(cut.code, 0, 'host 2 still reaches etcd with its link cut');
      assert.match(cut.stderr, /deadline|timeout|timed out|unavailable|context/i);
      assert.ok(!canConnect(t.hosts[1]!.netns, t.switchAddress, 12379, 500), 'host 2 still opens TCP connections to the switch');
      for (const i of [0, 2]) assert.equal(etcdctl(t.hosts[i]!.netns, etcd!.endpoint, ['get', '/smoke/x']).code, 0, `host ${i + 1}`);
    } finally {
      t.restoreLink(1);
    }
    let back = etcdctl(t.hosts[1]!.netns, etcd!.endpoint, ['put', '/smoke/back', 'yes']);
    for (let i = 0; i < 20 && back.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 250));
      back = etcdctl(t.hosts[1]!.netns, etcd!.endpoint, ['put', '/smoke/back', 'yes']);
    }
    assert.equal(back.code, 0, back.stderr);
  });

  it('destroy() kills what runs inside, removes every namespace, and can be called again', async () => {
    const t = topo!;
    const sleeper = t.spawn(t.hosts[0]!.netns, ['sleep', '300'], { stdio: 'ignore' });
    const exited = new Promise<void>((r) => sleeper.once('exit', () => r()));
    await t.destroy();
    await exited;
    assert.ok(!etcd!.running(), 'etcd in the switch namespace is gone');
    assert.deepEqual(
      listNetns().filter((n) => n.startsWith(t.prefix)),
      [],
    );
    await t.destroy();
    await etcd!.destroy();
  });
});
