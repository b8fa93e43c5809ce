import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createClusterTopology, startEtcd, type ClusterTopology, type EtcdProcess } from './cluster-net.js';
import { qemuPidsUnder, sleep, startTestDaemon, type TestDaemon } from './helpers.js';

/**
 * A stack in a cluster of two hosts (network namespaces on one switch, each with its daemon,
 * etcd with TLS in the switch namespace, leases of 5 s): the stack applied on h1 spreads its
 * four replicas 2 + 2, h1's service port is answered by all four (h2's through their forwards
 * there), h2 dies (daemon and QEMUs SIGKILLed) — the service answers from h1 only, replacements
 * come up on h1 — and when h2's daemon returns its stale replicas are deleted.
 */

const TTL = 5;
const PORT = 8080;
let topo: ClusterTopology;
let etcd: EtcdProcess;
let etcdPki: string;
let work: string;
const hosts: TestDaemon[] = [];
let failed = false;

interface Member {
  instance: string;
  host?: string;
  endpoint?: string;
  serving: boolean;
  state: string;
}
interface StackView {
  ready: boolean;
  services: Array<{ message?: string; members: Member[] }>;
}
interface InstanceRow {
  name: string;
  host: string;
  state: string;
  cloudInit?: { meta?: Record<string, string> };
}
interface Sample {
  t: number;
  ok: boolean;
  host?: string;
  err?: string;
}

const STACK = `name: shop
networks:
  - name: shopnet
    mode: nat
    subnet: 10.91.0.0/24
services:
  - name: web
    image: appliance
    type: small
    replicas: 4
    networks: [shopnet]
    port: ${PORT}
    hostAddress: 0.0.0.0
    guestPort: 80
    health: { http: /status, intervalMs: 500, failures: 2, timeoutMs: 2000 }
`;

function ok(d: TestDaemon, args: string[]): string {
  const r = d.cli(args, { timeoutMs: 240_000 });
  assert.equal(r.code, 0, `vmkit ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const show = () => hosts[0]!.cliJson<StackView>(['stack', 'show', 'shop']);
const members = () => show().services[0]!.members;

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let v: T | undefined | false;
    try {
      v = await fn();
    } catch {
      v = undefined;
    }
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(show().services[0], null, 1)}`);
    await sleep(500);
  }
}

/** Runs a script in a namespace (the switch by default: a client of h1's service port) and parses its JSON output. */
function fromSwitch<T>(script: string, netns = topo.switchNetns, timeoutMs = 120_000): T {
  const r = topo.exec(netns, [process.execPath, '-e', script], { timeoutMs });
  assert.equal(r.code, 0, `client in namespace ${netns}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** `n` requests (each a new connection) to h1's service port (from the switch by default): the hostnames that answered. */
function hostnames(n: number, netns = topo.switchNetns, address = topo.hosts[0]!.address): string[] {
  const url = `http://${address}:${PORT}/status`;
  return fromSwitch<string[]>(
    `(async()=>{const out=[];for(let i=0;i<${n};i++){const r=await fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(10000),headers:{connection:'close'}});out.push((await r.json()).hostname)}console.log(JSON.stringify(out))})().catch(e=>{console.error(e);process.exit(1)})`,
    netns,
  );
}

/** A client in the switch namespace: one GET /status every 100 ms (each on a new connection) until stopped. */
function startPoller(): { stop(): Promise<Sample[]> } {
  const url = `http://${topo.hosts[0]!.address}:${PORT}/status`;
  const proc = topo.spawn(
    topo.switchNetns,
    [
      process.execPath,
      '-e',
      `const http=require('http');const one=()=>{const t=Date.now();const req=http.get(${JSON.stringify(url)},{agent:false,timeout:4000},(res)=>{let b='';res.on('data',(d)=>b+=d);res.on('end',()=>{let host;try{host=JSON.parse(b).hostname}catch{}console.log(JSON.stringify({t,ok:res.statusCode===200&&!!host,host}))})});req.on('timeout',()=>req.destroy(new Error('timeout')));req.on('error',(e)=>console.log(JSON.stringify({t,ok:false,err:e.code||e.message})))};const timer=setInterval(one,100);process.on('SIGTERM',()=>{clearInterval(timer);setTimeout(()=>process.exit(0),2500)});`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  return {
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      return out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Sample)
        .sort((a, b) => a.t - b.t);
    },
  };
}

/** The instances carrying this stack's marker, per host (the cluster-wide list as h1 sees it). */
function replicasByHost(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const i of hosts[0]!.cliJson<InstanceRow[]>(['list'])) {
    if (i.cloudInit?.meta?.['vmkit-stack'] !== 'shop/web') continue;
    (out[i.host] ??= []).push(i.name);
  }
  return out;
}

describe('stacks in a cluster: replicas over two hosts, a host dies and returns', { timeout: 600_000 }, () => {
  before(async () => {
    topo = await createClusterTopology(2);
    work = mkdtempSync('/tmp/vmkt-cstack-');
    for (const h of topo.hosts) hosts.push(await startTestDaemon({ netns: h.netns, env: { VMKIT_CLUSTER_TTL: String(TTL) } }));
    // etcd with TLS and client certificates, its certificate from the cluster CA h1 makes.
    etcdPki = mkdtempSync('/tmp/vmkt-cstack-pki-');
    ok(hosts[0]!, ['cluster', 'etcd-cert', '--names', `${topo.switchAddress},127.0.0.1`, '--out', etcdPki]);
    const tls = { ca: join(etcdPki, 'ca.pem'), cert: join(etcdPki, 'etcd.pem'), key: join(etcdPki, 'etcd-key.pem') };
    etcd = await startEtcd({ netns: topo.switchNetns, host: topo.switchAddress, clientPort: 23790, peerPort: 23800, tls });
    ok(hosts[0]!, ['cluster', 'init', '--etcd', etcd.endpoint, '--name', 'h1', '--address', `${topo.hosts[0]!.address}:8443`]);
    const token = (JSON.parse(ok(hosts[0]!, ['cluster', 'add', 'h2', '--format', 'json'])) as { token: string }).token;
    ok(hosts[1]!, ['cluster', 'join', token, '--address', `${topo.hosts[1]!.address}:8443`]);
    // The same nat network on both hosts (the stack uses h1's, replicas on h2 use h2's).
    for (const d of hosts) ok(d, ['network', 'create', 'shopnet', '--mode', 'nat', '--subnet', '10.91.0.0/24']);
    // Host records (networks, images) are republished every 3 s.
    await sleep(3500);
  });

  after(async () => {
    if (failed || process.env.VMKIT_TEST_LOGS) {
      for (const [i, d] of hosts.entries()) console.log(`# ---- daemon h${i + 1} log (tail) ----\n${d.log().slice(-6000)}`);
    }
    if (hosts[0] && hosts[0].proc.exitCode === null) hosts[0].cli(['stack', 'delete', 'shop'], { timeoutMs: 120_000 });
    for (const d of hosts) await d.stop().catch(() => undefined);
    await etcd?.destroy?.().catch(() => undefined);
    await topo?.destroy();
    for (const dir of [work, etcdPki]) if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("four replicas spread 2 + 2; h1's service port is answered by all four", async () => {
    try {
      const f = join(work, 'shop.yaml');
      writeFileSync(f, STACK);
      const t0 = Date.now();
      const r = hosts[0]!.cli(['apply', '-f', f, '--wait', '--timeout', '300'], { timeoutMs: 320_000 });
      assert.equal(r.code, 0, `${r.stderr}${r.stdout}`);
      console.log(`# apply of 4 replicas over 2 hosts → all healthy: ${Date.now() - t0} ms`);
      const m = members();
      const on = (h: string) => m.filter((x) => x.host === h);
      assert.equal(on('h1').length, 2, JSON.stringify(m));
      assert.equal(on('h2').length, 2, JSON.stringify(m));
      for (const x of on('h2')) assert.match(x.endpoint ?? '', new RegExp(`^${topo.hosts[1]!.address.replace(/\./g, '\\.')}:\\d+$`));
      assert.deepEqual(Object.keys(replicasByHost()).sort(), ['h1', 'h2']);
      const answers = hostnames(60);
      const counts = Object.fromEntries(m.map((x) => [x.instance, answers.filter((a) => a === x.instance).length]));
      console.log(`# 60 requests to h1:${PORT}: ${JSON.stringify(counts)}`);
      for (const x of m) assert.ok(counts[x.instance]! > 0, `${x.instance} (${x.host}) answered none: ${JSON.stringify(counts)}`);
      // From h1 itself: its own address reaches all four too; 127.0.0.1 (whose connections the
      // kernel does not route to another host) only h1's replicas.
      const own = hostnames(40, topo.hosts[0]!.netns);
      for (const x of m) assert.ok(own.includes(x.instance), `${x.instance} never answered h1's own connections: ${own.join(',')}`);
      const loop = hostnames(20, topo.hosts[0]!.netns, '127.0.0.1');
      assert.deepEqual(
        [...new Set(loop)].sort(),
        on('h1')
          .map((x) => x.instance)
          .sort(),
        `127.0.0.1 on h1: ${loop.join(',')}`,
      );
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  it('h2 dies: the service answers from h1 only, replacements come up on h1; h2 returns and its stale replicas go', async () => {
    try {
      const before = members();
      const onH2 = before.filter((x) => x.host === 'h2').map((x) => x.instance);
      const onH1 = before.filter((x) => x.host === 'h1').map((x) => x.instance);
      const poller = startPoller();
      await sleep(2000);
      // h2 dies: its daemon and its guests, SIGKILLed.
      const qemus = qemuPidsUnder(hosts[1]!.dir);
      assert.equal(qemus.length, 2, 'two replicas run on h2');
      const killedAt = Date.now();
      await hosts[1]!.kill9();
      for (const pid of qemus) process.kill(pid, 'SIGKILL');
      // Within the lease and a few seconds: no h2 replica serves any more, h1's do.
      await until(
        'the h2 replicas out of the service',
        () => members().every((x) => x.host !== 'h2' || !x.serving) && members().filter((x) => x.serving).length >= 2,
        (TTL + 5) * 1000,
      );
      // Replacements on h1, serving; four serving replicas in all.
      await until(
        'four serving replicas on h1',
        () => {
          const m = members();
          return m.length === 4 && m.every((x) => x.host === 'h1' && x.serving);
        },
        240_000,
      );
      const healedAt = Date.now();
      console.log(`# h2 killed → four replicas serving on h1: ${healedAt - killedAt} ms`);
      await sleep(2000);
      const samples = await poller.stop();
      const failedReqs = samples.filter((s) => !s.ok);
      const window = (TTL + 3) * 1000;
      const late = failedReqs.filter((s) => s.t > killedAt + window);
      console.log(
        `# requests every 100 ms: ${samples.length}, failed ${failedReqs.length} (all started within ${Math.max(0, ...failedReqs.map((s) => s.t - killedAt))} ms of the kill), after the ${window} ms window: ${late.length}`,
      );
      assert.deepEqual(late, [], 'no request fails after the detection window');
      assert.ok(
        samples.filter((s) => s.t > killedAt + window && s.ok).every((s) => !onH2.includes(s.host!)),
        'no answer from an h2 replica after the window',
      );
      assert.ok(
        samples.some((s) => s.ok && s.t > healedAt - 1000 && !onH1.includes(s.host!)),
        'a replacement answers',
      );
      const answers = hostnames(40);
      const rowNow = members().map((x) => x.instance);
      assert.ok(
        answers.every((a) => rowNow.includes(a)),
        `only the row's replicas answer: ${answers.join(',')}`,
      );
      // h2's daemon returns: its stale replicas (marker of this stack, home h1) are deleted by h1.
      const restartAt = Date.now();
      await hosts[1]!.restart();
      console.log(`# h2's daemon restarted in ${Date.now() - restartAt} ms`);
      const h2Local = async () => (await hosts[1]!.api<{ metadata: InstanceRow[] }>('GET', '/1.0/instances?local=true')).body.metadata;
      assert.deepEqual((await h2Local()).map((i) => i.name).sort(), [...onH2].sort(), 'h2 comes back with its two old replicas');
      await until('h2 without stale replicas', async () => (await h2Local()).length === 0, 90_000);
      console.log(`# h2 back → its stale replicas deleted by h1 ${Date.now() - restartAt} ms after the restart began`);
      const m = members();
      assert.equal(m.length, 4);
      assert.ok(
        m.every((x) => x.host === 'h1' && x.serving),
        JSON.stringify(m),
      );
      assert.deepEqual(replicasByHost().h1?.sort(), m.map((x) => x.instance).sort(), 'the row and the instances agree');
      assert.equal(show().services[0]!.message, undefined);
    } catch (err) {
      failed = true;
      throw err;
    }
  });
});
