import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, chmodSync, linkSync, readFileSync, rmSync, statSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import WebSocket from 'ws';
import { createClusterTopology, etcdctl, startEtcd, type ClusterTopology, type EtcdProcess } from './cluster-net.js';
import { qemuPidsUnder, processAlive, sleep, startTestDaemon, type TestDaemon } from './helpers.js';

/**
 * Three hosts = three network namespaces on one bridge, each with its own vmkit daemon, one
 * etcd in the "switch" namespace, and a shared folder as the NAS (hosts 1 and 2 mount it).
 * Host 3 has no shared storage, little guest memory and no "lan" network.
 */
interface HostView {
  name: string;
  state: string;
}
interface InstanceRow {
  name: string;
  host: string;
  state: string;
  runtime: { pid?: number };
  nics: Array<{ ipv4?: string }>;
  disks: Array<{ file: string }>;
  id: string;
}
interface Plan {
  ok: boolean;
  mode: string;
  blockers: Array<{ check: string; message: string }>;
}

const TTL = 5;
let topo: ClusterTopology;
let etcd: EtcdProcess;
let etcdPki: string;
let nas: string;
const hosts: TestDaemon[] = [];
const names = ['h1', 'h2', 'h3'];
let vip: string;
let oldQemuPath: string;

function ok(d: TestDaemon, args: string[]): string {
  const r = d.cli(args, { timeoutMs: 240_000 });
  assert.equal(r.code, 0, `vmkit ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** `vmkit cluster add NAME` on a member: the one-time token. */
function joinToken(member: TestDaemon, name: string, extra: string[] = []): string {
  return (JSON.parse(ok(member, ['cluster', 'add', name, '--format', 'json', ...extra])) as { token: string }).token;
}

function instances(d: TestDaemon): InstanceRow[] {
  return d.cliJson<InstanceRow[]>(['list']);
}

function find(d: TestDaemon, name: string): InstanceRow | undefined {
  return instances(d).find((i) => i.name === name);
}

/** GET /status of the appliance through a host-side address, from the switch namespace. */
function guestStatus(url: string): { uptime: number; hostname: string } {
  const r = topo.exec(topo.switchNetns, ['curl', '-sS', '-m', '5', url]);
  assert.equal(r.code, 0, `curl ${url}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { uptime: number; hostname: string };
}

async function waitFor(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 60_000, explain?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await sleep(250);
  }
  assert.fail(`timed out waiting for ${what}${explain ? `\n${explain()}` : ''}`);
}

/** The first frame a WebSocket receives (as text), or why there was none. */
function firstFrame(url: string): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      resolve('no frame in 15 s');
    }, 15_000);
    ws.on('message', (d: Buffer) => {
      clearTimeout(timer);
      resolve(d.toString('latin1'));
      ws.terminate();
    });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      resolve(`HTTP ${res.statusCode}`);
      ws.terminate();
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      resolve(`error: ${err.message}`);
    });
  });
}

/** The daemons' log lines that mention `word` (a failed wait explains itself with them). */
function logsAbout(word: string): string {
  return hosts
    .map(
      (d, i) =>
        `--- ${names[i]}:\n${d
          .log()
          .split('\n')
          .filter((l) => l.includes(word))
          .slice(-60)
          .join('\n')}`,
    )
    .join('\n');
}

function hostsSeenBy(d: TestDaemon): HostView[] {
  return d.cliJson<HostView[]>(['cluster', 'list']);
}

/** No instance row, no QEMU and no migration record for `name` on a host. */
function assertNoLeftovers(d: TestDaemon, name: string): void {
  const rows = d.cliJson<InstanceRow[]>(['list']).filter((i) => i.name === name && i.host === names[hosts.indexOf(d)]);
  assert.equal(rows.length, 0, `host still lists ${name}`);
  const qemus = qemuPidsUnder(d.dir).filter((p) => {
    const cmd = spawnSync('cat', [`/proc/${p}/cmdline`], { encoding: 'utf8' }).stdout;
    return cmd.includes(`guest=${name},`);
  });
  assert.deepEqual(qemus, [], `QEMU of ${name} still runs on the target`);
}

async function startMigration(from: TestDaemon, name: string, to: string, extra: string[] = []): Promise<string> {
  const r = from.cli(['migrate', name, '--to', to, '--no-wait', '--format', 'json', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { id: string }).id;
}

async function opStatus(d: TestDaemon, id: string): Promise<{ status: string; progress: { phase: string }; error?: { code: string } }> {
  return (await d.api<{ metadata: { status: string; progress: { phase: string }; error?: { code: string } } }>('GET', `/1.0/operations/${id}`)).body.metadata;
}

/** `ip -ts monitor address` in a namespace: when `address` came and went (µs since epoch). */
function watchAddress(netns: string, address: string): { stop(): Promise<Array<{ added: boolean; atUs: number }>> } {
  const proc = topo.spawn(netns, ['env', 'TZ=UTC', 'ip', '-ts', 'monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  return {
    async stop() {
      await sleep(200);
      proc.kill('SIGTERM');
      const events: Array<{ added: boolean; atUs: number }> = [];
      for (const line of text.split('\n')) {
        const m = /^\[([^\]]+)\]\s*(Deleted\s+)?\d+:.*\binet ([\d.]+)\//.exec(line);
        if (!m || m[3] !== address) continue;
        const [date, frac = '0'] = m[1]!.split('.');
        events.push({ added: !m[2], atUs: Date.parse(`${date}Z`) * 1000 + Number(frac.padEnd(6, '0').slice(0, 6)) });
      }
      return events;
    },
  };
}

/** A TCP connection from the switch, opened now; request() sends GET /status on it later. */
function holdConnection(host: string, port: number): { connected: Promise<void>; request(): Promise<string> } {
  const proc = topo.spawn(
    topo.switchNetns,
    [
      process.execPath,
      '-e',
      // The request line at once, then a header line every second: the guest's handler reads
      // each line with a 5 s timeout, so on a loaded machine a slow switch-over would otherwise
      // end an idle connection; this one also carries bytes across the switch-over.
      `const s=require('net').connect(${port},${JSON.stringify(host)},()=>{console.log('connected');s.write('GET /status HTTP/1.0\\r\\n')});let b='';s.on('data',d=>b+=d);
     const keep=setInterval(()=>s.write('X-Keep: 1\\r\\n'),1000);
     s.on('end',()=>{process.stdout.write('ANSWER '+JSON.stringify(b)+'\\n');process.exit(0)});s.on('error',e=>{console.log('ANSWER '+JSON.stringify('error '+e.message));process.exit(0)});
     process.stdin.once('data',()=>{clearInterval(keep);s.write('\\r\\n');setTimeout(()=>{console.log('ANSWER '+JSON.stringify('timeout: '+b));process.exit(0)},8000)});`,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  let out = '';
  const lines = new Promise<void>((resolve) =>
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('connected')) resolve();
    }),
  );
  return {
    connected: Promise.race([lines, sleep(10_000).then(() => assert.fail(`no connection to ${host}:${port}: ${out}`))]),
    async request() {
      // It may have ended already (the connection failed): then its answer says why.
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((res) => proc.once('exit', res));
        proc.stdin!.write('go\n');
        await exited;
      }
      const m = /ANSWER (.*)/.exec(out);
      return m ? (JSON.parse(m[1]!) as string) : `no answer: ${out}`;
    },
  };
}

describe('cluster: three hosts on etcd, migration', { timeout: 1_500_000 }, () => {
  before(async () => {
    topo = await createClusterTopology(3);
    nas = mkdtempSync('/tmp/vmkc-nas-');
    vip = `${topo.subnet.split('.').slice(0, 3).join('.')}.100`;
    // Host 3's QEMU claims an older machine type list: the wrapper hides pc-i440fx-7.2.
    const wrapDir = mkdtempSync('/tmp/vmkc-oldqemu-');
    mkdirSync(join(wrapDir, 'bin'));
    const real = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).stdout.trim();
    writeFileSync(
      join(wrapDir, 'bin', 'qemu-system-x86_64'),
      `#!/bin/sh\nif [ "$1" = "-machine" ] && [ "$2" = "help" ]; then ${real} -machine help | grep -v '^pc-i440fx-7.2' | sed 's/alias of pc-i440fx-7.2/alias of pc-i440fx-7.1/'; exit 0; fi\nexec ${real} "$@"\n`,
    );
    chmodSync(join(wrapDir, 'bin', 'qemu-system-x86_64'), 0o755);
    oldQemuPath = `${join(wrapDir, 'bin')}:${process.env.PATH}`;
    for (const [i, h] of topo.hosts.entries()) {
      const env: NodeJS.ProcessEnv = { VMKIT_CLUSTER_TTL: String(TTL), VMKIT_MIGRATION_PEER_TIMEOUT_MS: '3000' };
      if (i < 2) env.VMKIT_SHARED_DIR = nas;
      if (i === 2) env.VMKIT_GUEST_MEMORY_MIB = '600';
      hosts.push(await startTestDaemon({ netns: h.netns, env }));
    }
    // etcd runs with TLS and client certificates: its certificate comes from the cluster CA,
    // which h1 makes first (as doc/cluster.md tells users to).
    etcdPki = mkdtempSync('/tmp/vmkc-etcdpki-');
    ok(hosts[0]!, ['cluster', 'etcd-cert', '--names', `${topo.switchAddress},127.0.0.1`, '--out', etcdPki]);
    const tls = { ca: join(etcdPki, 'ca.pem'), cert: join(etcdPki, 'etcd.pem'), key: join(etcdPki, 'etcd-key.pem') };
    etcd = await startEtcd({ netns: topo.switchNetns, host: topo.switchAddress, clientPort: 23790, peerPort: 23800, tls });
    ok(hosts[0]!, ['cluster', 'init', '--etcd', etcd.endpoint, '--name', 'h1', '--address', `${topo.hosts[0]!.address}:8443`]);
    for (const i of [1, 2]) ok(hosts[i]!, ['cluster', 'join', joinToken(hosts[0]!, names[i]!), '--address', `${topo.hosts[i]!.address}:8443`]);
    for (const i of [0, 1]) ok(hosts[i]!, ['network', 'create', 'lan', '--mode', 'nat', '--subnet', '10.70.0.0/24']);
  });

  after(async () => {
    for (const d of hosts) await d.stop().catch(() => undefined);
    await etcd?.destroy?.().catch(() => undefined);
    await topo?.destroy();
    if (nas) await rm(nas, { recursive: true, force: true });
    if (etcdPki) await rm(etcdPki, { recursive: true, force: true });
  });

  test('hosts register with leases; every host lists every host', () => {
    for (const d of hosts) {
      const seen = hostsSeenBy(d);
      assert.deepEqual(seen.map((h) => `${h.name}:${h.state}`).sort(), ['h1:alive', 'h2:alive', 'h3:alive']);
    }
    const dup = hosts[2]!.cli(['cluster', 'init', '--etcd', etcd.endpoint, '--name', 'h1', '--address', `${topo.hosts[2]!.address}:8443`]);
    assert.notEqual(dup.code, 0, 'a second membership is refused');
  });

  test('PKI: etcd wants a client certificate, keeps no secret; peer routes want a CA-signed certificate', () => {
    const sw = topo.switchNetns;
    // etcd: without a client certificate the TLS handshake is refused; plain http gets nothing.
    const noCert = topo.exec(sw, [
      'etcdctl',
      `--endpoints=${etcd.endpoint}`,
      `--cacert=${etcd.tls!.ca}`,
      '--dial-timeout=2s',
      '--command-timeout=3s',
      'get',
      '/vmkit/',
      '--prefix',
    ]);
    assert.notEqual(noCert.code, 0, `etcd answered a client without a certificate: ${noCert.stdout}`);
    const plain = topo.exec(sw, ['etcdctl', `--endpoints=${etcd.endpoint.replace('https:', 'http:')}`, '--dial-timeout=2s', '--command-timeout=3s', 'get', '/vmkit/', '--prefix']);
    assert.notEqual(plain.code, 0, 'etcd answered plain http');
    // What etcd holds: no token, no key, no join secret (only hashes of pending joins).
    const all = etcdctl(sw, etcd.endpoint, ['get', '/vmkit/', '--prefix'], { tls: etcd.tls });
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /\/vmkit\/cluster\/config/);
    assert.doesNotMatch(all.stdout, /"token"|PRIVATE KEY|BEGIN CERTIFICATE/);
    // vmkit refuses a plaintext etcd unless told.
    const insecure = hosts[2]!.cli(['cluster', 'init', '--etcd', 'http://127.0.0.1:1', '--name', 'x1', '--address', '127.0.0.1:9']);
    assert.notEqual(insecure.code, 0);
    assert.match(insecure.stderr, /plain http.*--insecure-etcd/s);
    // The keys are the hosts' own, 0600; the peer listener is h1's address.
    for (const d of hosts) assert.equal(statSync(join(d.dir, 'cluster', 'host.key')).mode & 0o777, 0o600);
    const peerUrl = `https://${topo.hosts[0]!.address}:8443`;
    const curl = (args: string[]) => {
      const r = topo.exec(sw, ['curl', '-sS', '-k', '-m', '10', '-w', '\n%{http_code}', ...args]);
      const lines = r.stdout.trimEnd().split('\n');
      return { status: Number(lines.at(-1)), body: lines.slice(0, -1).join('\n'), err: r.stderr };
    };
    // No certificate (a bearer token does not help): 403 on internal and public routes alike.
    for (const path of ['/1.0/internal/migrations/x', '/1.0/internal/forward/1.0/instances?local=true', '/1.0/instances', '/1.0']) {
      const r = curl(['-H', 'Authorization: Bearer anything', `${peerUrl}${path}`]);
      assert.equal(r.status, 403, `${path} without a certificate: ${r.status} ${r.body} ${r.err}`);
      assert.match(r.body, /VMKIT_FORBIDDEN/);
    }
    // A certificate of another CA: 403 too (the handshake completes, the CA did not sign it).
    const other = mkdtempSync('/tmp/vmkc-otherca-');
    try {
      const o = (args: string[]) => assert.equal(spawnSync('openssl', args, { encoding: 'utf8' }).status, 0, `openssl ${args.join(' ')}`);
      o([
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(other, 'k.pem'),
        '-out',
        join(other, 'c.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=h2',
      ]);
      const r = curl(['--cert', join(other, 'c.pem'), '--key', join(other, 'k.pem'), `${peerUrl}/1.0/internal/forward/1.0/instances?local=true`]);
      assert.equal(r.status, 403, `a foreign certificate: ${r.status} ${r.body}`);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
    // A member's certificate reaches the internal routes only.
    const h2 = ['--cacert', join(hosts[0]!.dir, 'cluster', 'ca.pem'), '--cert', join(hosts[1]!.dir, 'cluster', 'host.pem'), '--key', join(hosts[1]!.dir, 'cluster', 'host.key')];
    assert.equal(curl([...h2, `${peerUrl}/1.0/internal/forward/1.0/instances?local=true`]).status, 200);
    assert.equal(curl([...h2, `${peerUrl}/1.0/instances`]).status, 404);
    // The API's unix socket no longer serves the internal routes.
    return hosts[0]!.api('GET', '/1.0/internal/migrations/x').then((r) => assert.equal(r.status, 404));
  });

  test('PKI: a join token is single use, expires, and a wrong secret gets nothing', async () => {
    const sw = topo.switchNetns;
    const joinUrl = `https://${topo.hosts[0]!.address}:8443/1.0/internal/join`;
    const work = mkdtempSync('/tmp/vmkc-join-');
    try {
      assert.equal(
        spawnSync(
          'openssl',
          ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'k.pem'), '-out', join(work, 'r.csr'), '-subj', '/CN=whatever'],
          { encoding: 'utf8' },
        ).status,
        0,
      );
      const csr = readFileSync(join(work, 'r.csr'), 'utf8');
      const secretOf = (token: string) => (JSON.parse(Buffer.from(token.slice('vmkit-join:'.length), 'base64url').toString()) as { s: string }).s;
      const post = (body: unknown) => {
        const r = topo.exec(sw, ['curl', '-sS', '-k', '-m', '20', '-w', '\n%{http_code}', '-H', 'content-type: application/json', '--data-binary', '@-', joinUrl], {
          input: JSON.stringify(body),
        });
        const lines = r.stdout.trimEnd().split('\n');
        return { status: Number(lines.at(-1)), body: lines.slice(0, -1).join('\n') };
      };
      const token = joinToken(hosts[0]!, 'h4');
      const address = `${topo.switchAddress}:9444`;
      // A wrong secret: refused, and the token stays usable.
      const wrong = post({ name: 'h4', secret: 'x'.repeat(43), csr, address });
      assert.equal(wrong.status, 403, wrong.body);
      assert.match(wrong.body, /VMKIT_FORBIDDEN/);
      // The right one: a certificate signed by the cluster CA, for the token's name.
      const good = post({ name: 'h4', secret: secretOf(token), csr, address });
      assert.equal(good.status, 201, good.body);
      const answer = (JSON.parse(good.body) as { metadata: { hostCert: string; caCert: string } }).metadata;
      const cert = new X509Certificate(answer.hostCert);
      assert.ok(cert.verify(new X509Certificate(readFileSync(join(hosts[0]!.dir, 'cluster', 'ca.pem'))).publicKey));
      assert.match(cert.subject, /CN=h4/);
      // That certificate reaches h1's peer routes and an etcd that reads the cluster's CRL like a
      // member's, until it is revoked — on another host: h1 learns it through its watch of etcd;
      // that etcd once the CRL file is made again (no restart). A member's stays valid.
      writeFileSync(join(work, 'h4.pem'), answer.hostCert);
      const peerGet = (certDir: string, cert: string, key: string) => {
        const r = topo.exec(sw, [
          'curl',
          '-sS',
          '-m',
          '10',
          '-w',
          '\n%{http_code}',
          '--cacert',
          join(hosts[0]!.dir, 'cluster', 'ca.pem'),
          '--cert',
          join(certDir, cert),
          '--key',
          join(certDir, key),
          `https://${topo.hosts[0]!.address}:8443/1.0/internal/forward/1.0/instances?local=true`,
        ]);
        const lines = r.stdout.trimEnd().split('\n');
        return { status: Number(lines.at(-1)), body: lines.slice(0, -1).join('\n') };
      };
      const crlFile = join(work, 'crl.pem');
      ok(hosts[0]!, ['cluster', 'crl', '--out', crlFile]);
      const strict = await startEtcd({ netns: sw, host: topo.switchAddress, clientPort: 23791, peerPort: 23801, tls: etcd.tls, extraArgs: [`--client-crl-file=${crlFile}`] });
      try {
        const etcdAs = (dir: string, cert: string, key: string) =>
          etcdctl(sw, strict.endpoint, ['put', 'probe', 'x'], { tls: { ca: etcd.tls!.ca, cert: join(dir, cert), key: join(dir, key) } });
        const asH4 = () => etcdAs(work, 'h4.pem', 'k.pem');
        const asH2 = () => etcdAs(join(hosts[1]!.dir, 'cluster'), 'host.pem', 'host.key');
        assert.equal(peerGet(work, 'h4.pem', 'k.pem').status, 200);
        assert.equal(asH4().code, 0, `before the revocation: ${asH4().stderr}`);
        const live = hosts[1]!.cli(['cluster', 'revoke', 'h3']);
        assert.notEqual(live.code, 0, 'a live host cannot be revoked');
        assert.match(live.stderr, /is alive/);
        ok(hosts[1]!, ['cluster', 'revoke', 'h4']);
        await waitFor('h1 to refuse the revoked certificate', () => peerGet(work, 'h4.pem', 'k.pem').status === 403, 10_000);
        assert.match(peerGet(work, 'h4.pem', 'k.pem').body, /VMKIT_FORBIDDEN.*revoked/s);
        assert.equal(peerGet(join(hosts[1]!.dir, 'cluster'), 'host.pem', 'host.key').status, 200, "a member's certificate still works");
        const made = ok(hosts[0]!, ['cluster', 'crl', '--out', crlFile]);
        assert.match(made, /1 revoked certificate\(s\) \(h4 /);
        const refused = asH4();
        assert.notEqual(refused.code, 0, `etcd took a revoked certificate: ${refused.stdout}`);
        const member = asH2();
        assert.equal(member.code, 0, `a member's certificate: ${member.stderr}`);
      } finally {
        await strict.destroy();
      }
      // Used: refused the second time.
      const again = post({ name: 'h4', secret: secretOf(token), csr, address });
      assert.equal(again.status, 403, again.body);
      assert.match(again.body, /used/);
      // Expired: refused (and the joiner's CLI says so before asking anyone).
      const short = joinToken(hosts[0]!, 'h5', ['--expires', '1s']);
      await sleep(1_500);
      const late = post({ name: 'h5', secret: secretOf(short), csr, address });
      assert.equal(late.status, 403, late.body);
      assert.match(late.body, /expired/);
      const cli = hosts[2]!.cli(['cluster', 'join', 'vmkit-join:garbage', '--address', '127.0.0.1:9']);
      assert.notEqual(cli.code, 0);
      assert.match(cli.stderr, /not a vmkit join token/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test('launch on a named host from another; any host lists and acts on it, guest agent included', async () => {
    ok(hosts[0]!, ['launch', 'appliance', 'remote1', '--target', 'h2']);
    const seen = find(hosts[2]!, 'remote1');
    assert.equal(seen?.host, 'h2');
    assert.equal(seen?.state, 'running');
    assert.ok(qemuPidsUnder(hosts[1]!.dir).length >= 1, 'its QEMU runs on h2');
    // The guest agent through hosts that do not own it: exec (JSON), and files both ways as raw
    // bytes (forwarding used to decode answers as UTF-8 text and could not stream an upload).
    await waitFor('the guest agent of remote1', () => hosts[2]!.cli(['exec', 'remote1', '--', 'true']).code === 0, 60_000);
    const host = hosts[2]!.cli(['exec', 'remote1', '--', 'hostname']);
    assert.equal(host.code, 0, host.stderr);
    assert.equal(host.stdout.trim(), 'remote1');
    const blob = join(hosts[2]!.dir, 'blob.bin');
    writeFileSync(blob, Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 131 + (i >> 8)) & 0xff)));
    const push = hosts[2]!.cli(['file', 'push', blob, 'remote1:/tmp/blob.bin']);
    assert.equal(push.code, 0, push.stderr);
    const back = join(hosts[0]!.dir, 'blob-back.bin');
    const pull = hosts[0]!.cli(['file', 'pull', 'remote1:/tmp/blob.bin', back]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.ok(readFileSync(back).equals(readFileSync(blob)), 'the file came back byte for byte through two forwarding hosts');
    // The serial console and the VNC display through hosts that do not own it (bridged WebSockets).
    const c = hosts[2]!.cli(['console', 'remote1'], { input: 'echo console-$((6*7))\n', timeoutMs: 30_000 });
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /console-42/);
    assert.match(await firstFrame(`ws+unix://${join(hosts[0]!.dir, 'vmkit.sock')}:/1.0/instances/remote1/vnc`), /^RFB 003\.00\d/);
    const missing = await firstFrame(`ws+unix://${join(hosts[0]!.dir, 'vmkit.sock')}:/1.0/instances/nosuch/console`);
    assert.match(missing, /VMKIT_INSTANCE_NOT_FOUND/);
    // A name is unique in the whole cluster.
    const clash = hosts[2]!.cli(['create', 'appliance', 'remote1', '--target', 'h3']);
    assert.notEqual(clash.code, 0);
    assert.match(clash.stderr, /already exists/);
    ok(hosts[2]!, ['delete', 'remote1', '--force']);
    assert.equal(find(hosts[0]!, 'remote1'), undefined);
  });

  test('pre-flight check names blockers and moves nothing', () => {
    ok(hosts[0]!, ['create', 'appliance', 'big1', '--memory', '560', '--nic', 'lan', '--target', 'h1']);
    const r = hosts[0]!.cli(['migrate', 'big1', '--to', 'h3', '--check', '--format', 'json']);
    assert.equal(r.code, 1, 'blocked check exits 1');
    const plan = JSON.parse(r.stdout) as Plan;
    const checks = plan.blockers.map((b) => b.check);
    assert.ok(checks.includes('network'), `network blocker: ${r.stdout}`);
    assert.ok(checks.includes('memory'), `memory blocker: ${r.stdout}`);
    const refused = hosts[0]!.cli(['migrate', 'big1', '--to', 'h3']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /VMKIT_MIGRATION_BLOCKED/);
    assert.equal(find(hosts[0]!, 'big1')?.host, 'h1', 'nothing moved');
    const fine = JSON.parse(hosts[0]!.cli(['migrate', 'big1', '--to', 'h2', '--check', '--format', 'json']).stdout) as Plan;
    assert.equal(fine.ok, true, JSON.stringify(fine.blockers));
    assert.equal(fine.mode, 'cold');
    ok(hosts[0]!, ['delete', 'big1']);
  });

  test('live migration on shared storage: zero failed requests through a floating forward, uptime continues', async () => {
    ok(hosts[0]!, ['launch', 'appliance', 'web1', '--target', 'h1', '--nic', 'lan,ip=10.70.0.50', '--forward', `${vip}:8080:80`, '--floating']);
    const url = `http://${vip}:8080/status`;
    await waitFor('the guest HTTP server through the floating address', () => topo.exec(topo.switchNetns, ['curl', '-sf', '-m', '2', url]).code === 0, 90_000);
    const before = guestStatus(url);
    // A client polls every 20 ms during the whole migration.
    const poller: ChildProcess = topo.spawn(
      topo.switchNetns,
      [
        process.execPath,
        '-e',
        `let okN=0,fail=0,slowest=0,firstOk=0,lastOk=0,stop=false;process.on('SIGTERM',()=>{stop=true});
       (async()=>{while(!stop){const t=Date.now();try{const r=await fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(15000)});await r.text();if(r.ok){okN++;firstOk=firstOk||t;lastOk=Date.now()}else fail++;}catch(e){fail++;console.error(new Date().toISOString()+' '+String(e)+' ('+String(e.cause?.code??e.cause?.message)+', after '+(Date.now()-t)+' ms)')}slowest=Math.max(slowest,Date.now()-t);await new Promise(r=>setTimeout(r,20));}
       console.log(JSON.stringify({ok:okN,fail,slowestMs:slowest,firstOk,lastOk}));process.exit(0)})();`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let errs = '';
    poller.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    poller.stderr!.on('data', (d: Buffer) => (errs += d.toString()));
    // VMKIT_TEST_CAPTURE=FILE: a packet capture of the switch (ARP, TCP, ICMP) and both daemons' logs, to read a failure.
    const capture = process.env.VMKIT_TEST_CAPTURE;
    const cap = capture ? topo.spawn(topo.switchNetns, ['tcpdump', '-i', topo.bridge, '-nn', '-w', capture, 'arp or tcp or icmp'], { stdio: 'ignore' }) : undefined;
    // Who holds the floating address, as the kernels of both hosts report it.
    const monitors = [0, 1].map((i) => watchAddress(topo.hosts[i]!.netns, vip));
    // A connection a client opened before the switch-over and uses after it.
    const held = holdConnection(vip, 8080);
    await held.connected;
    await sleep(1_500);
    const migrateStart = Date.now();
    const r = hosts[0]!.cli(['migrate', 'web1', '--to', 'h2', '--format', 'json'], { timeoutMs: 240_000 });
    const migrateEnd = Date.now();
    assert.equal(r.code, 0, r.stderr);
    const result = (JSON.parse(r.stdout) as { result: { mode: string; downtimeMs?: number; totalTimeMs: number } }).result;
    assert.equal(result.mode, 'live');
    assert.equal(typeof result.downtimeMs, 'number', 'downtime reported');
    await sleep(1_500);

    poller.kill('SIGTERM');
    await new Promise((res) => poller.once('exit', res));
    cap?.kill('SIGTERM');
    if (capture) {
      const id = find(hosts[1]!, 'web1')?.id;
      const guestConsole = id ? spawnSync('tail', ['-c', '4000', join(hosts[1]!.dir, 'instances', id, 'console.log')], { encoding: 'utf8' }).stdout : '';
      writeFileSync(`${capture}.log`, `${[0, 1].map((i) => hosts[i]!.log()).join('\n=====\n')}\npoller: ${out}\n${errs}\n===== guest console on h2:\n${guestConsole}`);
    }
    const counts = JSON.parse(out) as { ok: number; fail: number; slowestMs: number; firstOk: number; lastOk: number };
    console.log(`# polling through the floating forward during the migration: ${out.trim()}, downtime ${result.downtimeMs} ms, end to end ${result.totalTimeMs} ms`);
    // Both QEMUs used tls-creds-x509 with the hosts' certificates (read once the logs are in).
    assert.match(hosts[0]!.log(), /source web1 \+\d+ms: sending over TLS/);
    assert.match(hosts[1]!.log(), /target web1 \+\d+ms: listening for the migration stream over TLS/);
    // The client was answered before the migration began and after it ended (how many
    // requests fit in between depends on the machine's load, not on vmkit).
    assert.ok(counts.firstOk > 0 && counts.firstOk < migrateStart, `answered before the migration: ${out}`);
    assert.ok(counts.lastOk > migrateEnd, `answered after the migration: ${out}`);
    // A failure names its cause (refused, reset, unreachable) and comes with both hosts' steps.
    const steps = () =>
      [0, 1]
        .flatMap((i) =>
          hosts[i]!.log()
            .split('\n')
            .filter((l) => /migration|floating/.test(l))
            .map((l) => `h${i + 1} ${l}`),
        )
        .join('\n');
    assert.equal(counts.fail, 0, `no failed request: ${out} ${errs}\n${counts.fail > 0 ? steps() : ''}`);
    // Never two holders: the source let the address go before the target took it.
    const [srcEvents, dstEvents] = await Promise.all(monitors.map((m) => m.stop()));
    const released = srcEvents.find((e) => !e.added);
    const claimed = dstEvents.find((e) => e.added);
    assert.ok(released && claimed, `the address moved: source ${JSON.stringify(srcEvents)}, target ${JSON.stringify(dstEvents)}`);
    assert.ok(released.atUs <= claimed.atUs, `the source released ${vip} ${(released.atUs - claimed.atUs) / 1000} ms after the target claimed it`);
    console.log(`# floating address: released on the source ${(claimed.atUs - released.atUs) / 1000} ms before the target claimed it`);
    // A client whose ARP entry still names the source (it missed the announcements, as
    // routers that ignore gratuitous ARP do) keeps its open connection and makes new ones:
    // the source no longer DNATs the address into its stopped copy, it routes it on.
    // From netlink (the namespace's own link), not /sys: nsenter keeps the caller's /sys mount.
    const sourceMac = /link\/ether ([0-9a-f:]{17})/.exec(topo.exec(topo.hosts[0]!.netns, ['ip', '-o', 'link', 'show', 'dev', 'eth0']).stdout)?.[1] ?? '';
    assert.match(sourceMac, /^[0-9a-f:]{17}$/, "the source host's MAC");
    assert.equal(topo.exec(topo.switchNetns, ['ip', 'neigh', 'replace', vip, 'lladdr', sourceMac, 'dev', topo.bridge, 'nud', 'reachable']).code, 0);
    try {
      const answer = await held.request();
      assert.match(answer, /^HTTP\/1\.[01] 200/, `the connection opened before the migration still answers: ${answer.slice(0, 200)}`);
      const viaSource = guestStatus(url);
      assert.ok(viaSource.uptime >= before.uptime, 'a new connection through the old host reaches the migrated guest');
    } finally {
      topo.exec(topo.switchNetns, ['ip', 'neigh', 'del', vip, 'dev', topo.bridge]);
    }
    const after = guestStatus(url);
    assert.ok(after.uptime >= before.uptime, `uptime continues (${before.uptime} -> ${after.uptime})`);
    const row = find(hosts[2]!, 'web1');
    assert.equal(row?.host, 'h2');
    assert.equal(row?.state, 'running');
    assert.equal(qemuPidsUnder(hosts[0]!.dir).length, 0, 'the source QEMU is gone');
  });

  test('live migration with storage copy keeps the disk contents; suspend and cold modes', async () => {
    ok(hosts[0]!, ['launch', 'appliance', 'web2', '--target', 'h1', '--storage', 'local']);
    const src = hosts[0]!.cliJson<InstanceRow>(['info', 'web2']);
    const srcDisk = join(hosts[0]!.dir, 'instances', src.id, 'root.qcow2');
    // A second name for the source disk: it keeps the final state after vmkit removes the file.
    const keep = join(hosts[0]!.dir, 'web2-source.qcow2');
    linkSync(srcDisk, keep);
    // Paused, so neither side writes after the switch-over: the copies must then be equal bit for bit.
    ok(hosts[0]!, ['pause', 'web2']);
    const r = hosts[0]!.cli(['migrate', 'web2', '--to', 'h3', '--format', 'json'], { timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { result: { mode: string } }).result.mode, 'live-copy');
    assert.equal(find(hosts[2]!, 'web2')?.state, 'paused', 'a paused guest arrives paused');
    const dst = hosts[2]!.cliJson<InstanceRow>(['info', 'web2']);
    const dstDisk = join(hosts[2]!.dir, 'instances', dst.id, 'root.qcow2');
    const cmp = spawnSync('qemu-img', ['compare', '-U', keep, dstDisk], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, `disk contents identical: ${cmp.stdout}${cmp.stderr}`);
    ok(hosts[2]!, ['resume', 'web2']);
    // Suspend mode: memory saved into the disk, files copied, resumed on h1.
    const s = hosts[2]!.cli(['migrate', 'web2', '--to', 'h1', '--mode', 'suspend', '--format', 'json'], { timeoutMs: 300_000 });
    assert.equal(s.code, 0, s.stderr);
    await waitFor('web2 running on h1 after suspend', () => find(hosts[0]!, 'web2')?.state === 'running' && find(hosts[0]!, 'web2')?.host === 'h1');
    // Cold mode: shut down, copied, started on h2.
    const c = hosts[0]!.cli(['migrate', 'web2', '--to', 'h2', '--mode', 'cold', '--format', 'json'], { timeoutMs: 300_000 });
    assert.equal(c.code, 0, c.stderr);
    await waitFor('web2 running on h2 after cold', () => find(hosts[1]!, 'web2')?.state === 'running');
    assertNoLeftovers(hosts[0]!, 'web2');
    ok(hosts[1]!, ['delete', 'web2', '--force']);
  });

  test('cancel, a killed target daemon, a cut link: the source keeps running, the target is clean, a retry works', async () => {
    ok(hosts[0]!, ['launch', 'appliance', 'web3', '--target', 'h1', '--storage', 'local']);
    const pid = find(hosts[0]!, 'web3')!.runtime.pid!;
    // 1. cancel mid-way (bandwidth capped so the copy takes a while)
    const op1 = await startMigration(hosts[0]!, 'web3', 'h3', ['--bandwidth', '1']);
    await waitFor('the copy to start', async () => /copying|migrating/.test((await opStatus(hosts[0]!, op1)).progress.phase ?? ''));
    ok(hosts[0]!, ['migrate', 'web3', '--cancel']);
    await waitFor('the operation to end', async () => !['running', 'pending'].includes((await opStatus(hosts[0]!, op1)).status));
    assert.equal((await opStatus(hosts[0]!, op1)).status, 'cancelled');
    assert.equal(find(hosts[0]!, 'web3')?.state, 'running');
    assert.ok(processAlive(pid));
    await waitFor('h3 clean after cancel', () => {
      try {
        assertNoLeftovers(hosts[2]!, 'web3');
        return true;
      } catch {
        return false;
      }
    });
    // 2. the target's daemon dies mid-way
    const op2 = await startMigration(hosts[0]!, 'web3', 'h3', ['--bandwidth', '1']);
    await waitFor('the copy to start', async () => /copying|migrating/.test((await opStatus(hosts[0]!, op2)).progress.phase ?? ''));
    await hosts[2]!.kill9();
    await waitFor('the source to give up', async () => !['running', 'pending'].includes((await opStatus(hosts[0]!, op2)).status), 60_000);
    assert.equal((await opStatus(hosts[0]!, op2)).status, 'failure');
    assert.equal(find(hosts[0]!, 'web3')?.state, 'running');
    assert.ok(processAlive(pid));
    await hosts[2]!.restart();
    await waitFor('h3 clean after its restart', () => {
      try {
        assertNoLeftovers(hosts[2]!, 'web3');
        return true;
      } catch {
        return false;
      }
    });
    // 3. the link to the target is cut mid-way (a guest on the shared storage: memory only moves)
    ok(hosts[0]!, ['launch', 'appliance', 'web4', '--target', 'h1']);
    const pid4 = find(hosts[0]!, 'web4')!.runtime.pid!;
    const op3 = await startMigration(hosts[0]!, 'web4', 'h2', ['--bandwidth', '1']);
    await waitFor('the copy to start', async () => /migrating/.test((await opStatus(hosts[0]!, op3)).progress.phase ?? ''));
    topo.cutLink(1);
    await waitFor('the source to give up', async () => !['running', 'pending'].includes((await opStatus(hosts[0]!, op3)).status), 60_000);
    topo.restoreLink(1);
    assert.equal((await opStatus(hosts[0]!, op3)).status, 'failure');
    assert.equal(find(hosts[0]!, 'web4')?.state, 'running');
    assert.ok(processAlive(pid4));
    await waitFor(
      'h2 clean after the link is back',
      () => {
        try {
          assertNoLeftovers(hosts[1]!, 'web4');
          return true;
        } catch {
          return false;
        }
      },
      90_000,
      () => `${JSON.stringify(instances(hosts[0]!).filter((i) => i.name === 'web4'))}\n${logsAbout('web4')}`,
    );
    const ok3 = hosts[0]!.cli(['migrate', 'web4', '--to', 'h2', '--format', 'json'], { timeoutMs: 300_000 });
    assert.equal(ok3.code, 0, ok3.stderr);
    ok(hosts[1]!, ['delete', 'web4', '--force']);
    // 4. a retry succeeds
    const ok4 = hosts[0]!.cli(['migrate', 'web3', '--to', 'h3', '--format', 'json'], { timeoutMs: 300_000 });
    assert.equal(ok4.code, 0, ok4.stderr);
    assert.equal(find(hosts[0]!, 'web3')?.host, 'h3');
    ok(hosts[0]!, ['delete', 'web3', '--force']);
  });

  test('a dead host: lease expires, its VMs keep running, it re-registers and re-attaches', async () => {
    const web1 = find(hosts[1]!, 'web1')!;
    assert.equal(web1.host, 'h2');
    await hosts[1]!.kill9();
    await waitFor('h2 seen dead', () => hostsSeenBy(hosts[0]!).find((h) => h.name === 'h2')?.state === 'dead', (TTL + 10) * 1000);
    assert.ok(processAlive(web1.runtime.pid!), 'its VM keeps running');
    assert.equal(find(hosts[0]!, 'web1')?.host, 'h2', 'still listed on its host');
    await hosts[1]!.restart();
    await waitFor('h2 alive again', () => hostsSeenBy(hosts[0]!).find((h) => h.name === 'h2')?.state === 'alive');
    const back = find(hosts[0]!, 'web1');
    assert.equal(back?.state, 'running');
    assert.equal(back?.runtime.pid, web1.runtime.pid);
    // Maintenance: evacuate h2 (web1 goes back to h1, live over the shared storage).
    ok(hosts[0]!, ['cluster', 'evacuate', 'h2']);
    assert.equal(find(hosts[2]!, 'web1')?.host, 'h1');
  });

  test('a target whose QEMU lacks the machine type is named as a blocker', async () => {
    // Host 3 comes back with a QEMU that only knows older machine types.
    await hosts[2]!.kill9();
    hosts[2]!.env.PATH = oldQemuPath;
    await hosts[2]!.restart();
    await waitFor('h3 alive with its new QEMU', () => hostsSeenBy(hosts[0]!).find((h) => h.name === 'h3')?.state === 'alive');
    await sleep(4_000); // its record is refreshed every 3 s
    const r = hosts[0]!.cli(['migrate', 'web1', '--to', 'h3', '--check', '--format', 'json']);
    assert.equal(r.code, 1);
    const plan = JSON.parse(r.stdout) as Plan;
    assert.ok(
      plan.blockers.some((b) => b.check === 'machine-type' && /pc-i440fx-7\.2/.test(b.message)),
      r.stdout,
    );
    assert.equal(find(hosts[0]!, 'web1')?.host, 'h1', 'nothing moved');
  });
});
