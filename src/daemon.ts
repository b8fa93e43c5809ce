import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { vmkitError } from './errors.js';
import { DataPaths, resolveDataDir } from './paths.js';
import { SqliteStore } from './store/sqlite.js';
import { ImageStore } from './images/image-store.js';
import { InstanceManager, type InstanceOwnership, type SuspendHandler } from './instances/manager.js';
import { SnapshotManager } from './snapshots/snapshots.js';
import { NetworkManager } from './network/manager.js';
import { EventBus } from './operations/events.js';
import { OperationManager } from './operations/operations.js';
import { createApiServices, type ApiContext } from './api/context.js';
import { buildApi } from './api/server.js';
import { findQemuBinary, probeAccelerator } from './qemu/accel.js';
import { isProcessAlive } from './qemu/process.js';
import { quarantineCheck, runDoctor } from './host/doctor.js';
import { idInRawRow, storedRowProblem } from './domain/rows.js';
import { consoleLogLimits, MIN_CONSOLE_LOG_MAX_BYTES } from './instances/console-log.js';
import type { KeptFolders } from './instances/manager.js';
import { ClusterManager } from './cluster/cluster.js';
import { MigrationService } from './cluster/migration.js';
import { hostFacts, sharedStorageId } from './cluster/host-facts.js';
import { EtcdStore } from './store/etcd.js';
import { ClusterPki } from './cluster/pki.js';
import { qemuCapabilities } from './qemu/capabilities.js';
import { installLastResort } from './util/last-resort.js';
import { MIN_TOKEN_LENGTH, TokenManager } from './auth/tokens.js';
import { createSelfSigned, fingerprint, pairExists, readPair, type CertPair } from './host/pki.js';
import { isIP } from 'node:net';
import { StackController } from './stacks/controller.js';
import { StackService } from './stacks/service.js';
import { ClusterStackHosts } from './stacks/hosts.js';

export interface DaemonOptions {
  dir?: string;
  /** ADDR:PORT for the TCP listener: HTTPS (or plain HTTP on loopback with insecureHttp). */
  listen?: string;
  /** The bootstrap admin token itself (at least 32 characters); the CLI passes tokenFile. */
  token?: string;
  /** A file holding the bootstrap admin token (--token-file / VMKIT_TOKEN_FILE). */
  tokenFile?: string;
  /** The listener's certificate and key (PEM); default: one generated in <dir>/tls/ on first start. */
  tlsCert?: string;
  tlsKey?: string;
  /** Serve plain HTTP on --listen: refused unless the address is a loopback one. */
  insecureHttp?: boolean;
  /** Folder with the built appliance (guest/build.sh output). */
  applianceDir?: string;
  /** Storage all cluster hosts mount at the same path (a NAS): new disks go there. */
  sharedDir?: string;
  /** The most memory (MiB) this host gives guests (default: all of it). */
  guestMemoryMiB?: number;
  /** The most bytes of serial console output kept per instance (default 8 MiB, env VMKIT_CONSOLE_LOG_MAX_BYTES). */
  consoleLogMaxBytes?: number;
  log?: (line: string) => void;
}

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const VERSION: string = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const DEFAULT_APPLIANCE_DIR = join(PACKAGE_ROOT, '.cache', 'appliance');

export interface RunningDaemon {
  context: ApiContext;
  close(): Promise<void>;
}

/** The console log cap: a number of bytes (from an option or VMKIT_CONSOLE_LOG_MAX_BYTES). */
function parseConsoleLogMax(value: number | string | undefined): number {
  if (value === undefined || value === '') return consoleLogLimits().maxBytes;
  const n = Number(value);
  if (!Number.isInteger(n) || n < MIN_CONSOLE_LOG_MAX_BYTES) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `The console log cap ${JSON.stringify(String(value))} is not a whole number of bytes of at least ${MIN_CONSOLE_LOG_MAX_BYTES}.`, {
      hint: 'Set VMKIT_CONSOLE_LOG_MAX_BYTES to a number of bytes, e.g. 8388608 (8 MiB, the default).',
    });
  }
  return n;
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port < 1 || port > 65535) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `--listen "${listen}" is not ADDR:PORT.`, { hint: 'Example: --listen 127.0.0.1:8443' });
  }
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/** 127.0.0.0/8, ::1, localhost: the only addresses plain HTTP may listen on. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || /^::ffff:127\./i.test(host);
}

/** The bootstrap token from its file: at least MIN_TOKEN_LENGTH characters, or a clear error. */
export async function readTokenFile(file: string, log: (line: string) => void): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Cannot read the token file ${file}: ${(err as Error).message}`, {
      hint: 'Write a token to it first, e.g.: (umask 077; openssl rand -hex 32 > FILE)',
      cause: err,
    });
  }
  const mode = (await stat(file)).mode;
  if (mode & 0o077) log(`warning: the token file ${file} can be read by other users (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  return checkToken(text.trim(), `The token in ${file}`);
}

function checkToken(token: string, what: string): string {
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `${what} is ${token.length} characters long; at least ${MIN_TOKEN_LENGTH} (no spaces) are required.`, {
      hint: 'Make a long random one: (umask 077; openssl rand -hex 32 > FILE), then --token-file FILE.',
    });
  }
  return token;
}

/**
 * The TCP listener's TLS pair: the one given (--tls-cert/--tls-key), else the one in the
 * data folder, made on first start (self-signed; clients pin its fingerprint).
 */
async function listenerCertificate(paths: DataPaths, options: DaemonOptions, host: string, log: (line: string) => void): Promise<{ cert: Buffer; key: Buffer }> {
  if (!!options.tlsCert !== !!options.tlsKey) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', 'Give both --tls-cert and --tls-key, or neither.', {
      hint: 'Without them the daemon makes its own certificate in its data folder.',
    });
  }
  if (options.tlsCert && options.tlsKey) return readPair({ cert: options.tlsCert, key: options.tlsKey });
  const pair: CertPair = { cert: join(paths.root, 'tls', 'server.crt'), key: join(paths.root, 'tls', 'server.key') };
  if (!pairExists(pair)) {
    const names = [...new Set([os.hostname(), 'localhost', '127.0.0.1', '::1', ...(isIP(host) && host !== '0.0.0.0' && host !== '::' ? [host] : [])])];
    await createSelfSigned(pair, { commonName: os.hostname(), names, usage: 'server' });
    log(`made a TLS certificate for the API in ${pair.cert}`);
  }
  return readPair(pair);
}

/** Starts the daemon: store, recovery of running VMs, then the API on the unix socket (and TCP). */
export async function startDaemon(options: DaemonOptions = {}): Promise<RunningDaemon> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`));
  const paths = new DataPaths(resolveDataDir(options.dir));
  // Checked before anything starts: a bad listener setting must not leave half a daemon.
  const listen = options.listen ? parseListen(options.listen) : undefined;
  if (listen && options.insecureHttp && !isLoopback(listen.host)) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Plain HTTP (--insecure-http) is only allowed on a loopback address, not ${listen.host}.`, {
      hint: 'Drop --insecure-http (the listener serves HTTPS with its own certificate), or listen on 127.0.0.1.',
    });
  }
  const bootstrapToken = options.tokenFile ? await readTokenFile(options.tokenFile, log) : options.token ? checkToken(options.token, 'The token') : undefined;
  // 0711: guests' QEMUs (own uids) reach their instance's files by name, and list nothing.
  await mkdir(paths.root, { recursive: true, mode: 0o711 });
  await chmod(paths.root, 0o711);
  const otherPid = Number((await readFile(paths.daemonPid, 'utf8').catch(() => '')).trim());
  if (otherPid && otherPid !== process.pid && isProcessAlive(otherPid)) {
    const cmd = await readFile(`/proc/${otherPid}/cmdline`, 'utf8').catch(() => '');
    if (/vmkit|daemon/.test(cmd)) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `A vmkit daemon (pid ${otherPid}) already serves ${paths.root}.`, {
        hint: 'Stop it first, or use another data folder (--dir / VMKIT_DIR).',
      });
    }
  }
  await writeFile(paths.daemonPid, `${process.pid}\n`).catch((err: NodeJS.ErrnoException) => {
    // A full disk (guests paused on io-error wait for this daemon) must not keep it from starting.
    if (err.code !== 'ENOSPC' && err.code !== 'EDQUOT') throw err;
    log(`warning: no room to write ${paths.daemonPid} (${err.code}): a second daemon on this folder would not be refused`);
  });

  const consoleLogMaxBytes = parseConsoleLogMax(options.consoleLogMaxBytes ?? process.env.VMKIT_CONSOLE_LOG_MAX_BYTES);
  const store = new SqliteStore(paths.db);
  // One damaged row must not keep the daemon from starting: it is moved aside, logged, and
  // reported by `vmkit doctor`; the files it names are kept (not taken for leftovers).
  for (const q of store.quarantineBadRows(storedRowProblem)) {
    log(`warning: store row ${q.kind}/${q.key} quarantined (#${q.id}): ${q.reason}; "vmkit doctor" lists it`);
  }
  const quarantined = store.quarantined();
  const keptInstanceFolders: KeptFolders = { ids: new Set(), unknown: false };
  for (const q of quarantined.filter((r) => r.kind === 'instances')) {
    let id: unknown;
    try {
      id = (JSON.parse(q.value) as { id?: unknown } | null)?.id;
    } catch {
      id = idInRawRow(q.value);
    }
    if (typeof id === 'string' && id) (keptInstanceFolders.ids as Set<string>).add(id);
    else keptInstanceFolders.unknown = true;
  }
  // The database is the daemon's alone (SQLite makes it 0644 under the usual umask).
  for (const f of [paths.db, `${paths.db}-wal`, `${paths.db}-shm`]) await chmod(f, 0o600).catch(() => undefined); // -wal/-shm exist only once written
  const tokens = new TokenManager(store);
  const events = new EventBus();
  const operations = new OperationManager(events);
  const images = new ImageStore(store, paths);
  const forced = process.env.VMKIT_ACCEL;
  const accel = async (): Promise<'kvm' | 'tcg'> => {
    if (forced === 'kvm' || forced === 'tcg') return forced;
    const qemu = findQemuBinary();
    if (!qemu) return 'tcg';
    return (await probeAccelerator({ qemuBinary: qemu })).accel;
  };
  const qemuBinary = (): string => {
    const found = findQemuBinary();
    if (!found) {
      throw vmkitError('VMKIT_QEMU_MISSING', 'qemu-system-x86_64 is not installed or not on PATH.', {
        hint: 'Install it with "apt-get install qemu-system-x86"; "vmkit doctor" checks the host.',
      });
    }
    return found;
  };
  // In a cluster the host goes by its cluster name (also after a join at run time).
  const hostName = (): string => cluster.name ?? os.hostname();
  const sharedDir = options.sharedDir ?? (process.env.VMKIT_SHARED_DIR || undefined);
  if (sharedDir) await sharedStorageId(sharedDir);
  const machineType = async () => (await qemuCapabilities(qemuBinary())).pc;
  const hostEnv = {
    get hostName() {
      return hostName();
    },
    qemuBinary,
    accel,
    sharedDir,
    machineType,
    consoleLogMaxBytes,
  };
  const networks = new NetworkManager(store, paths.root, events);
  // The cluster and the snapshot module are built around the instance manager (they use it),
  // so it gets objects that reach them once they exist. The snapshot module exists before any
  // instance is touched; the cluster only after recovery, so until then no cluster-wide name
  // is claimed or released (recovery never did: it ran before the cluster was wired).
  let clusterOwner: ClusterManager | undefined;
  const ownership: InstanceOwnership = {
    claim: (name, summary) => (clusterOwner?.joined ? clusterOwner.claim(name, summary) : Promise.resolve()),
    released: (name) => (clusterOwner?.joined ? clusterOwner.released(name) : Promise.resolve()),
  };
  const suspend: SuspendHandler = { resumeHooks: () => snapshots.resumeHooks(), discard: (inst) => snapshots.discard(inst) };
  const instances = new InstanceManager(store, paths, images, events, hostEnv, { networking: networks, ownership, suspend });

  await images.reconcile(new Set(quarantined.filter((r) => r.kind === 'images').map((r) => r.key)));
  const appliance = await images.ensureAppliance(options.applianceDir ?? process.env.VMKIT_APPLIANCE_DIR ?? DEFAULT_APPLIANCE_DIR, (n) => instances.usesImage(n));
  if (!appliance) log('warning: the built-in appliance is not built (run "npm run setup"); "appliance" is not available');
  const snapshots = new SnapshotManager(store, instances.registry, instances.lifecycle, events, instances.agent);
  await instances.recover(keptInstanceFolders);
  await snapshots.recover(new Set(quarantined.filter((r) => r.kind === 'instances').map((r) => r.key)));
  // Guest QEMU processes (user-mode NICs) reach no host service: applied at every start, with
  // or without networks, and kept when the daemon stops (doc/network.md, "Guests and the host").
  await networks.applyGuard().catch((err: Error) => log(`warning: the guest guard (nft table inet vmkit-guard) is not applied: ${err.message}`));
  // After the instances: taps of VMs that still run are kept, the rest is made to match.
  await networks.reconcile().catch((err: Error) => log(`warning: networks not reconciled: ${err.message}`));

  // Stacks: the controller carries on from the stored rows (rules first, then its loop).
  // In a cluster it places replicas on other hosts too (the cluster is reached once it exists).
  const stackController = new StackController({ store, instances, networks, images, events, log, cluster: new ClusterStackHosts(() => clusterOwner, instances) });
  await stackController.start();

  // ---- cluster (etcd) and migration
  const servers: FastifyInstance[] = [];
  let peerServer: { address: string; app: FastifyInstance } | undefined;
  let context!: ApiContext;
  const guestMemoryMiB = options.guestMemoryMiB ?? (Number(process.env.VMKIT_GUEST_MEMORY_MIB) || undefined);
  const facts = () => hostFacts({ version: VERSION, qemuBinary, accel, instances, networks, images, sharedDir, guestMemoryMiB });
  const pki = new ClusterPki(join(paths.root, 'cluster'));
  const cluster = new ClusterManager({
    local: store,
    events,
    pki,
    connect: async (endpoints, tls) => {
      const etcd = new EtcdStore({ endpoints, tls });
      try {
        await etcd.list('cluster'); // reachable now, or a clear VMKIT_CLUSTER_UNAVAILABLE
      } catch (err) {
        // The unreachable cluster store is the error to report; closing is tidying only.
        await etcd.close().catch(() => undefined);
        throw err;
      }
      return etcd;
    },
    hostFacts: facts,
    localInstances: async () => (await instances.list()).map((i) => ({ name: i.name, image: i.image, cpus: i.cpus, memoryMiB: i.memoryMiB })),
    listenPeer: async (address) => {
      if (options.listen === address) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `The cluster address ${address} is the API's --listen address.`, {
          hint: 'Give the cluster its own port (peers use mutual TLS there), e.g. --address HOST:8444.',
        });
      }
      if (peerServer?.address === address) return;
      if (peerServer) await peerServer.app.close();
      const { host, port } = parseListen(address);
      const tls = await pki.tls();
      const app = await buildApi(context, {
        peer: { key: tls.key, cert: await pki.chain(), ca: tls.ca, revoked: (cn, notBefore) => clusterOwner?.certificateRevoked(cn, notBefore) ?? false },
        origin: 'remote',
      });
      await app.listen({ host, port });
      peerServer = { address, app };
      log(`cluster peers reach this host at https://${address} (mutual TLS, cluster CA)`);
    },
    stopPeer: async () => {
      await peerServer?.app.close();
      peerServer = undefined;
    },
    log,
  });
  clusterOwner = cluster;
  const migrations = new MigrationService(cluster, instances, snapshots, images, networks, store, events, facts);

  context = {
    version: VERSION,
    get hostName() {
      return hostName();
    },
    dataDir: paths.root,
    accel,
    instances,
    snapshots,
    images,
    operations,
    events,
    doctor: async () => {
      const report = await runDoctor(paths.root);
      const rows = store.quarantined().map(({ id, kind, key, reason, quarantinedAt }) => ({ id, kind, key, reason, quarantinedAt }));
      return { ...report, checks: [...report.checks, quarantineCheck(rows, paths.db)], quarantined: rows };
    },
    networks,
    cluster,
    migrations,
    tokens,
    stacks: new StackService(stackController),
    services: createApiServices({ dataDir: paths.root, instances, snapshots, images, operations, events, cluster, migrations }),
  };
  // Image builds a crash interrupted: their build VMs and half-written cache files go.
  await context.services.builds.recover(log).catch((err: Error) => log(`warning: interrupted image builds not cleaned up: ${err.message}`));
  await cluster.start();
  // Migrations interrupted by a daemon death are finished or undone (etcd says which).
  const recoverMigrations = async (): Promise<void> => {
    for (let i = 0; ; i++) {
      try {
        await migrations.recover();
        return;
      } catch (err) {
        if (i === 0) log(`warning: migrations not recovered yet: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 3_000));
      }
    }
  };
  if (cluster.joined) void recoverMigrations();
  // TCP first: once the unix socket exists, clients may assume every listener is up.
  if (listen) {
    const { host, port } = listen;
    const tls = options.insecureHttp ? undefined : await listenerCertificate(paths, options, host, log);
    const remote = await buildApi(context, {
      token: bootstrapToken,
      authenticate: true,
      https: tls,
      secure: tls !== undefined,
      log,
      origin: 'remote',
    });
    await remote.listen({ host, port });
    servers.push(remote);
    const url = `${tls ? 'https' : 'http'}://${options.listen}`;
    log(`vmkit listening on ${url} (token required); web console: ${url}/ui/`);
    if (tls) log(`API certificate SHA-256 fingerprint: ${fingerprint(tls.cert)}`);
    else log('warning: plain HTTP (--insecure-http): tokens cross the wire unencrypted; loopback only');
    if (!bootstrapToken) log('no bootstrap token (--token-file): make tokens with "vmkit token create NAME --role ROLE" on this host');
  }
  const local = await buildApi(context, { origin: 'local' });
  await rm(paths.socket, { force: true });
  await local.listen({ path: paths.socket });
  await chmod(paths.socket, 0o660);
  servers.push(local);
  log(`vmkit ${VERSION} listening on ${paths.socket}`);
  void accel().then((a) => log(`accelerator: ${a}`));

  let closed = false;
  return {
    context,
    async close() {
      if (closed) return;
      closed = true;
      stackController.close();
      for (const s of servers) await s.close();
      await peerServer?.app.close();
      await cluster.close();
      // VMs keep running: the daemon only lets go of them.
      instances.detachAll();
      await store.close();
      await rm(paths.socket, { force: true });
      await rm(paths.daemonPid, { force: true });
    },
  };
}

/** `vmkit daemon`: runs in the foreground until SIGINT/SIGTERM. */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  // Store failures that escape an event handler are logged, not fatal; bugs still end the process.
  installLastResort(options.log ?? ((line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`)));
  const daemon = await startDaemon(options);
  await new Promise<void>((resolve) => {
    const stop = () => {
      void daemon.close().then(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
