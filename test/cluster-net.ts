import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

/**
 * Test infrastructure for clusters: real etcd processes (Debian's etcd-server) and a small
 * switched network of host namespaces.
 *
 *   switch namespace  vmkc-<r>-sw : bridge br0, 10.X.Y.254/24 (etcd can run here)
 *     ├─ veth h1 ── eth0 in vmkc-<r>-h1 : 10.X.Y.1/24
 *     ├─ veth h2 ── eth0 in vmkc-<r>-h2 : 10.X.Y.2/24
 *     └─ veth h3 ── eth0 in vmkc-<r>-h3 : 10.X.Y.3/24
 *
 * Nothing here touches the machine's own network namespace: veth pairs are created directly
 * inside the namespaces, and destroy() removes the namespaces (and with them every veth).
 * Port 2379/2380 (a packaged etcd's) is refused everywhere, so a system etcd is never used.
 * Every etcd and namespace is also removed when the test process exits.
 */

// ---------------------------------------------------------------- etcd

export interface StartEtcdOptions {
  /** Run inside this network namespace (`nsenter --net`). */
  netns?: string;
  /** The address etcd listens on and advertises (client and peer). */
  host: string;
  clientPort: number;
  peerPort: number;
  /** Member name; default `etcd-<random>`. */
  name?: string;
  /** `name=peerURL,…` of every member; default: this member alone. */
  initialCluster?: string;
  /** Default `new`; `existing` when joining a running cluster. */
  initialClusterState?: 'new' | 'existing';
  /** Shared by the members of one cluster; default random per call. */
  initialClusterToken?: string;
  /** Kept as is; default a temporary folder that destroy() removes. */
  dataDir?: string;
  /** Wait until the member answers /health (default true). */
  waitHealthy?: boolean;
  /** How long to wait for health, default 20 s. */
  timeoutMs?: number;
  /** More etcd flags (e.g. --election-timeout=500). */
  extraArgs?: string[];
  /**
   * TLS as vmkit wants etcd run (doc/cluster.md): https client and peer URLs, client
   * certificates required (--client-cert-auth) and checked against `ca`. `cert`/`key` (PEM
   * files, serverAuth + clientAuth) are etcd's certificate, for clients and peers, and what
   * the harness's own etcdctl calls present.
   */
  tls?: EtcdTls;
}

export interface EtcdTls {
  ca: string;
  cert: string;
  key: string;
}

/** The etcd flags of a TLS member with client-certificate authentication (doc/cluster.md shows the same). */
export function etcdTlsFlags(tls: EtcdTls): string[] {
  return [
    '--client-cert-auth',
    `--trusted-ca-file=${tls.ca}`,
    `--cert-file=${tls.cert}`,
    `--key-file=${tls.key}`,
    '--peer-client-cert-auth',
    `--peer-trusted-ca-file=${tls.ca}`,
    `--peer-cert-file=${tls.cert}`,
    `--peer-key-file=${tls.key}`,
  ];
}

export interface EtcdProcess {
  readonly name: string;
  /** The client URL, `http://host:clientPort` (https with tls). */
  readonly endpoint: string;
  /** The TLS files it runs with (and its etcdctl calls present). */
  readonly tls: EtcdTls | undefined;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly netns: string | undefined;
  /** The pid of the etcd process now running, if any. */
  readonly pid: number | undefined;
  running(): boolean;
  /** What etcd printed (the last 64 KiB). */
  log(): string;
  /** Waits until the member answers /health with true. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** SIGKILL, then waits for the exit. Data is kept (restart() brings it back). */
  kill9(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s), then waits for the exit. Data is kept. */
  stop(): Promise<void>;
  /** Stops it if running, starts it again on the same data; waits for health unless told not to. */
  restart(options?: { waitHealthy?: boolean }): Promise<void>;
  /** Kills it and removes a temporary data folder. Idempotent. */
  destroy(): Promise<void>;
}

const FORBIDDEN_PORTS = new Set([2379, 2380]);
const liveEtcds = new Set<EtcdProcess>();
const liveTopologies = new Set<ClusterTopology>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const e of liveEtcds) (e as EtcdProcessImpl).destroySync();
    for (const t of liveTopologies) t.destroySync();
  });
}

/** Environment for etcd/etcdctl without any ETCD_* / ETCDCTL_* variable of the caller's. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCD')) env[k] = v;
  return env;
}

/**
 * nsenter, not `ip netns exec`: that one remounts /sys, and a daemon would no longer see the
 * cgroup hierarchies under /sys/fs/cgroup where it puts each QEMU.
 */
function inNetns(netns: string | undefined, argv: string[]): string[] {
  return netns ? ['nsenter', `--net=/run/netns/${netns}`, '--', ...argv] : argv;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function httpHealthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${url}/health`, { timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(res.statusCode === 200 && /"health"\s*:\s*"true"/.test(body)));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Runs etcdctl (v3 API), in a namespace if given, against the endpoints. */
export function etcdctl(
  netns: string | undefined,
  endpoints: string | string[],
  args: string[],
  options: { timeoutMs?: number; input?: string; tls?: EtcdTls } = {},
): { code: number; stdout: string; stderr: string } {
  const eps = Array.isArray(endpoints) ? endpoints.join(',') : endpoints;
  const tls = options.tls ? [`--cacert=${options.tls.ca}`, `--cert=${options.tls.cert}`, `--key=${options.tls.key}`] : [];
  const argv = inNetns(netns, ['etcdctl', `--endpoints=${eps}`, '--dial-timeout=1s', '--command-timeout=2s', ...tls, ...args]);
  const r = spawnSync(argv[0]!, argv.slice(1), {
    encoding: 'utf8',
    env: { ...cleanEnv(), ETCDCTL_API: '3' },
    input: options.input,
    timeout: options.timeoutMs ?? 10_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

class EtcdProcessImpl implements EtcdProcess {
  readonly name: string;
  readonly endpoint: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly netns: string | undefined;
  readonly tls: EtcdTls | undefined;
  private proc: ChildProcess | undefined;
  private alive = false;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private readonly tempData: boolean;
  private readonly argv: string[];
  private destroyed = false;

  constructor(private readonly opts: StartEtcdOptions) {
    for (const p of [opts.clientPort, opts.peerPort]) {
      if (FORBIDDEN_PORTS.has(p)) throw new Error(`port ${p} is a packaged etcd's: tests must use other ports`);
    }
    this.name = opts.name ?? `etcd-${randomBytes(3).toString('hex')}`;
    this.netns = opts.netns;
    this.tls = opts.tls;
    const scheme = opts.tls ? 'https' : 'http';
    this.endpoint = `${scheme}://${opts.host}:${opts.clientPort}`;
    this.peerUrl = `${scheme}://${opts.host}:${opts.peerPort}`;
    this.tempData = !opts.dataDir;
    this.dataDir = opts.dataDir ?? mkdtempSync('/tmp/vmkt-etcd-');
    this.argv = inNetns(opts.netns, [
      'etcd',
      `--name=${this.name}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${this.peerUrl}`,
      `--initial-advertise-peer-urls=${this.peerUrl}`,
      `--initial-cluster=${opts.initialCluster ?? `${this.name}=${this.peerUrl}`}`,
      `--initial-cluster-state=${opts.initialClusterState ?? 'new'}`,
      `--initial-cluster-token=${opts.initialClusterToken ?? `vmkt-${randomBytes(4).toString('hex')}`}`,
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
      ...(opts.tls ? etcdTlsFlags(opts.tls) : []),
      ...(opts.extraArgs ?? []),
    ]);
  }

  get pid(): number | undefined {
    return this.running() ? this.proc?.pid : undefined;
  }

  running(): boolean {
    return this.alive;
  }

  log(): string {
    return this.output;
  }

  start(): void {
    if (this.destroyed) throw new Error(`etcd ${this.name} was destroyed`);
    installExitHook();
    liveEtcds.add(this);
    const proc = spawn(this.argv[0]!, this.argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
    const append = (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-65536);
    };
    proc.stdout?.on('data', append);
    proc.stderr?.on('data', append);
    this.alive = true;
    this.exited = new Promise((resolve) => {
      proc.once('exit', () => {
        this.alive = false;
        resolve();
      });
      proc.once('error', (e) => {
        append(Buffer.from(`cannot run ${this.argv[0]}: ${e.message}\n`));
        this.alive = false;
        resolve();
      });
    });
    this.proc = proc;
  }

  async waitHealthy(timeoutMs = this.opts.timeoutMs ?? 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running()) throw new Error(`etcd ${this.name} exited (${this.proc?.exitCode ?? this.proc?.signalCode}):\n${this.output.slice(-4000)}`);
      const ok =
        this.netns || this.tls ? etcdctl(this.netns, this.endpoint, ['endpoint', 'health'], { timeoutMs: 5000, tls: this.tls }).code === 0 : await httpHealthy(this.endpoint);
      if (ok) return;
      await sleep(100);
    }
    throw new Error(`etcd ${this.name} at ${this.endpoint} was not healthy within ${timeoutMs} ms:\n${this.output.slice(-4000)}`);
  }

  async kill9(): Promise<void> {
    if (this.running()) this.proc!.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    if (this.running()) {
      this.proc!.kill('SIGTERM');
      const t = setTimeout(() => this.proc?.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(t);
    }
    await this.exited;
  }

  async restart(options: { waitHealthy?: boolean } = {}): Promise<void> {
    await this.stop();
    this.start();
    if (options.waitHealthy !== false) await this.waitHealthy();
  }

  async destroy(): Promise<void> {
    await this.kill9();
    this.destroySync();
  }

  destroySync(): void {
    if (this.running()) this.proc!.kill('SIGKILL');
    this.destroyed = true;
    liveEtcds.delete(this);
    if (this.tempData) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Starts one etcd member (a one-member cluster unless initialCluster says otherwise). */
export async function startEtcd(opts: StartEtcdOptions): Promise<EtcdProcess> {
  const e = new EtcdProcessImpl(opts);
  e.start();
  if (opts.waitHealthy !== false) {
    try {
      await e.waitHealthy();
    } catch (err) {
      await e.destroy();
      throw err;
    }
  }
  return e;
}

export interface EtcdMemberSpec {
  netns?: string;
  host: string;
  clientPort: number;
  peerPort: number;
}

export interface EtcdCluster {
  members: EtcdProcess[];
  /** Every member's client URL. */
  endpoints: string[];
  /** Destroys every member (and their data). Idempotent. */
  destroy(): Promise<void>;
}

/** A free TCP port on the machine's loopback (never 2379/2380). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((res, rej) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => res(p));
      });
      s.on('error', rej);
    });
    if (!FORBIDDEN_PORTS.has(port)) return port;
  }
}

/** Starts an etcd cluster of the given members together and waits until each is healthy. */
export async function startEtcdCluster(specs: EtcdMemberSpec[], options: { extraArgs?: string[]; timeoutMs?: number; tls?: EtcdTls } = {}): Promise<EtcdCluster> {
  const tag = randomBytes(3).toString('hex');
  const names = specs.map((_, i) => `m${i}-${tag}`);
  const scheme = options.tls ? 'https' : 'http';
  const initialCluster = specs.map((s, i) => `${names[i]}=${scheme}://${s.host}:${s.peerPort}`).join(',');
  const members: EtcdProcess[] = [];
  const cluster: EtcdCluster = {
    members,
    endpoints: [],
    destroy: async () => {
      await Promise.all(members.map((m) => m.destroy()));
    },
  };
  try {
    for (const [i, s] of specs.entries()) {
      members.push(
        await startEtcd({
          ...s,
          name: names[i],
          initialCluster,
          initialClusterToken: `vmkt-${tag}`,
          waitHealthy: false,
          extraArgs: options.extraArgs,
          timeoutMs: options.timeoutMs,
          tls: options.tls,
        }),
      );
    }
    await Promise.all(members.map((m) => m.waitHealthy(options.timeoutMs)));
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  cluster.endpoints = members.map((m) => m.endpoint);
  return cluster;
}

/**
 * A three-member etcd: by default on 127.0.0.1 with free ports; with `netns` all three in that
 * namespace on `host` (default 127.0.0.1 there) with ports basePort..basePort+5 (default 22379);
 * or exactly the `members` given.
 */
export async function startEtcdCluster3(
  opts: { netns?: string; host?: string; basePort?: number; members?: EtcdMemberSpec[]; extraArgs?: string[]; timeoutMs?: number; tls?: EtcdTls } = {},
): Promise<EtcdCluster> {
  let specs = opts.members;
  if (specs && specs.length !== 3) throw new Error('startEtcdCluster3 takes exactly three members');
  if (!specs) {
    const host = opts.host ?? '127.0.0.1';
    specs = [];
    for (let i = 0; i < 3; i++) {
      if (opts.netns) {
        const base = opts.basePort ?? 22379;
        specs.push({ netns: opts.netns, host, clientPort: base + 2 * i, peerPort: base + 2 * i + 1 });
      } else {
        specs.push({ host, clientPort: await freePort(), peerPort: await freePort() });
      }
    }
  }
  return startEtcdCluster(specs, { extraArgs: opts.extraArgs, timeoutMs: opts.timeoutMs, tls: opts.tls });
}

// ---------------------------------------------------------------- namespaces

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ClusterHost {
  /** 0-based position in `hosts`; the namespace and address use index + 1. */
  index: number;
  /** `vmkc-<r>-h<index+1>`. */
  netns: string;
  /** 10.X.Y.<index+1> (no prefix length; the subnet is /24). */
  address: string;
  /** The host's end of its cable, inside its namespace: `eth0`. */
  vethHost: string;
  /** The switch's end, in the switch namespace, a port of the bridge: `h<index+1>`. */
  vethSwitch: string;
}

export interface ClusterTopology {
  /** `vmkc-<r>`: every namespace of the topology starts with it. */
  prefix: string;
  hosts: ClusterHost[];
  switchNetns: string;
  /** 10.X.Y.254, on the bridge in the switch namespace. */
  switchAddress: string;
  /** 10.X.Y.0/24. */
  subnet: string;
  /** The bridge's name in the switch namespace. */
  bridge: string;
  /** Pulls host i's cable: its veth end on the switch goes down (i is 0-based). */
  cutLink(i: number): void;
  restoreLink(i: number): void;
  /** Runs argv inside a namespace and waits for it. */
  exec(netns: string, argv: string[], options?: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv }): ExecResult;
  /** Starts argv inside a namespace (killed by destroy() if still running there). */
  spawn(netns: string, argv: string[], options?: SpawnOptions): ChildProcess;
  /** Kills every process in the namespaces and deletes them (and so every veth). Idempotent. */
  destroy(): Promise<void>;
  /** @internal the same, synchronously (process exit). */
  destroySync(): void;
}

function run(argv: string[], timeoutMs = 30_000, input?: string, env?: NodeJS.ProcessEnv): ExecResult {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: timeoutMs, input, env });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

function must(argv: string[]): string {
  const r = run(argv);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** The namespaces that exist now (names only). */
export function listNetns(): string[] {
  return run(['ip', 'netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

function deleteNamespace(name: string): void {
  if (!name.startsWith('vmkc-')) throw new Error(`refusing to delete namespace ${name}`);
  if (!listNetns().includes(name)) return;
  for (let i = 0; i < 5; i++) {
    const pids = run(['ip', 'netns', 'pids', name]).stdout.split('\n').filter(Boolean).map(Number);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    spawnSync('sleep', ['0.1']);
  }
  run(['ip', 'netns', 'del', name]);
}

export async function createClusterTopology(n = 3, opts: { prefix?: string } = {}): Promise<ClusterTopology> {
  if (!Number.isInteger(n) || n < 1 || n > 250) throw new Error(`a topology has 1 to 250 hosts (got ${n})`);
  const prefix = opts.prefix ?? `vmkc-${randomBytes(2).toString('hex')}`;
  if (!/^vmkc-[a-z0-9]{1,8}$/.test(prefix)) throw new Error(`bad topology prefix ${prefix}`);
  // Each topology is its own L2 segment, so equal subnets could not collide anyway; a random
  // one makes addresses in logs tell topologies apart.
  const net24 = `10.${randomInt(200, 255)}.${randomInt(0, 256)}`;
  const switchNetns = `${prefix}-sw`;
  const bridge = 'br0';
  const hosts: ClusterHost[] = Array.from({ length: n }, (_, i) => ({
    index: i,
    netns: `${prefix}-h${i + 1}`,
    address: `${net24}.${i + 1}`,
    vethHost: 'eth0',
    vethSwitch: `h${i + 1}`,
  }));
  const namespaces = [switchNetns, ...hosts.map((h) => h.netns)];
  const taken = listNetns();
  if (namespaces.some((ns) => taken.includes(ns))) throw new Error(`namespaces with prefix ${prefix} already exist`);

  const hostAt = (i: number): ClusterHost => {
    const h = hosts[i];
    if (!h) throw new Error(`no host ${i} (0..${n - 1})`);
    return h;
  };
  const topo: ClusterTopology = {
    prefix,
    hosts,
    switchNetns,
    switchAddress: `${net24}.254`,
    subnet: `${net24}.0/24`,
    bridge,
    cutLink(i) {
      must(['ip', '-n', switchNetns, 'link', 'set', hostAt(i).vethSwitch, 'down']);
    },
    restoreLink(i) {
      must(['ip', '-n', switchNetns, 'link', 'set', hostAt(i).vethSwitch, 'up']);
    },
    exec(netns, argv, options = {}) {
      return run(inNetns(netns, argv), options.timeoutMs, options.input, options.env);
    },
    spawn(netns, argv, options = {}) {
      const [cmd, ...args] = inNetns(netns, argv);
      return spawn(cmd!, args, options);
    },
    async destroy() {
      topo.destroySync();
    },
    destroySync() {
      for (const ns of namespaces) deleteNamespace(ns);
      liveTopologies.delete(topo);
    },
  };

  installExitHook();
  liveTopologies.add(topo);
  try {
    for (const ns of namespaces) {
      must(['ip', 'netns', 'add', ns]);
      must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    }
    must(['ip', '-n', switchNetns, 'link', 'add', bridge, 'type', 'bridge']);
    must(['ip', '-n', switchNetns, 'addr', 'add', `${topo.switchAddress}/24`, 'dev', bridge]);
    must(['ip', '-n', switchNetns, 'link', 'set', bridge, 'up']);
    for (const h of hosts) {
      // Created inside the switch namespace with its peer straight in the host's: the
      // machine's own namespace never sees either end.
      must(['ip', '-n', switchNetns, 'link', 'add', 'name', h.vethSwitch, 'type', 'veth', 'peer', 'name', h.vethHost, 'netns', h.netns]);
      must(['ip', '-n', switchNetns, 'link', 'set', h.vethSwitch, 'master', bridge]);
      must(['ip', '-n', switchNetns, 'link', 'set', h.vethSwitch, 'up']);
      must(['ip', '-n', h.netns, 'addr', 'add', `${h.address}/24`, 'dev', h.vethHost]);
      must(['ip', '-n', h.netns, 'link', 'set', h.vethHost, 'up']);
    }
  } catch (err) {
    topo.destroySync();
    throw err;
  }
  return topo;
}

// ---------------------------------------------------------------- a partition on loopback

export interface TcpProxy {
  /** The port it listens on (127.0.0.1). */
  port: number;
  /** `http://127.0.0.1:<port>`, to give a client instead of the target's URL. */
  endpoint: string;
  /** Stops all traffic both ways, without closing connections (a pulled cable); new connections hang. */
  blackhole(): void;
  /** Lets traffic flow again (what was held is delivered). */
  restore(): void;
  /** Closes every connection and the listener. */
  close(): Promise<void>;
}

/** A TCP forwarder to target, for simulating a network partition between a client and etcd. */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const held = new Set<net.Socket>();
  let blocked = false;
  const connectUpstream = (client: net.Socket) => {
    const upstream = net.connect(target.port, target.host);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
    if (blocked) {
      client.pause();
      upstream.pause();
    }
  };
  const server = net.createServer((client) => {
    if (blocked) {
      client.pause();
      held.add(client);
      client.on('close', () => held.delete(client)).on('error', () => held.delete(client));
      return;
    }
    connectUpstream(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    blackhole() {
      blocked = true;
      for (const [a, b] of pairs) {
        // Stop reading and stop the pipes from writing what they already read.
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
      }
    },
    restore() {
      blocked = false;
      for (const [a, b] of pairs) {
        a.pipe(b);
        b.pipe(a);
        a.resume();
        b.resume();
      }
      for (const c of [...held]) {
        held.delete(c);
        connectUpstream(c);
        c.resume();
      }
    },
    async close() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      for (const c of held) c.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Whether a TCP connection to host:port opens from inside netns within timeoutMs. */
export function canConnect(netns: string | undefined, host: string, port: number, timeoutMs = 1000): boolean {
  const script = `const s = require('net').connect(Number(process.argv[2]), process.argv[1]);
    s.setTimeout(Number(process.argv[3]), () => process.exit(2));
    s.on('connect', () => process.exit(0)); s.on('error', () => process.exit(1));`;
  const argv = inNetns(netns, [process.execPath, '-e', script, host, String(port), String(timeoutMs)]);
  return spawnSync(argv[0]!, argv.slice(1), { timeout: timeoutMs + 5000 }).status === 0;
}
