import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { vmkitError } from './errors.js';
import { DataPaths, resolveDataDir } from './paths.js';
import { SqliteStore } from './store/sqlite.js';
import { ImageStore } from './images/image-store.js';
import { InstanceManager } from './instances/manager.js';
import { SnapshotManager } from './snapshots/snapshots.js';
import { NetworkManager } from './network/manager.js';
import { EventBus } from './operations/events.js';
import { OperationManager } from './operations/operations.js';
import { createApiServices, type ApiContext } from './api/context.js';
import { buildApi } from './api/server.js';
import { findQemuBinary, probeAccelerator } from './qemu/accel.js';
import { isProcessAlive } from './qemu/process.js';
import { runDoctor } from './host/doctor.js';
import { ClusterManager } from './cluster/cluster.js';
import { MigrationService } from './cluster/migration.js';
import { hostFacts, sharedStorageId } from './cluster/host-facts.js';
import { EtcdStore } from './store/etcd.js';
import { ClusterPki } from './cluster/pki.js';
import { qemuCapabilities } from './qemu/capabilities.js';

export interface DaemonOptions {
  dir?: string;
  /** ADDR:PORT for the TCP listener (needs a token). */
  listen?: string;
  token?: string;
  /** Folder with the built appliance (guest/build.sh output). */
  applianceDir?: string;
  /** Storage all cluster hosts mount at the same path (a NAS): new disks go there. */
  sharedDir?: string;
  /** The most memory (MiB) this host gives guests (default: all of it). */
  guestMemoryMiB?: number;
  log?: (line: string) => void;
}

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const VERSION: string = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const DEFAULT_APPLIANCE_DIR = join(PACKAGE_ROOT, '.cache', 'appliance');

export interface RunningDaemon {
  context: ApiContext;
  close(): Promise<void>;
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port < 1 || port > 65535) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `--listen "${listen}" is not ADDR:PORT.`, { hint: 'Example: --listen 127.0.0.1:8443' });
  }
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/** Starts the daemon: store, recovery of running VMs, then the API on the unix socket (and TCP). */
export async function startDaemon(options: DaemonOptions = {}): Promise<RunningDaemon> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`));
  const paths = new DataPaths(resolveDataDir(options.dir));
  if (options.listen && !options.token) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A TCP listener needs a token.', { hint: 'Pass --token TOKEN (or VMKIT_TOKEN).' });
  }
  await mkdir(paths.root, { recursive: true, mode: 0o750 });
  const otherPid = Number((await readFile(paths.daemonPid, 'utf8').catch(() => '')).trim());
  if (otherPid && otherPid !== process.pid && isProcessAlive(otherPid)) {
    const cmd = await readFile(`/proc/${otherPid}/cmdline`, 'utf8').catch(() => '');
    if (/vmkit|daemon/.test(cmd)) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `A vmkit daemon (pid ${otherPid}) already serves ${paths.root}.`, {
        hint: 'Stop it first, or use another data folder (--dir / VMKIT_DIR).',
      });
    }
  }
  await writeFile(paths.daemonPid, `${process.pid}\n`);

  const store = new SqliteStore(paths.db);
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
  };
  const instances = new InstanceManager(store, paths, images, events, hostEnv);
  const networks = new NetworkManager(store, paths.root, events);
  instances.setNetworking(networks);

  await images.reconcile();
  const appliance = await images.ensureAppliance(options.applianceDir ?? process.env.VMKIT_APPLIANCE_DIR ?? DEFAULT_APPLIANCE_DIR, (n) => instances.usesImage(n));
  if (!appliance) log('warning: the built-in appliance is not built (run "npm run setup"); "appliance" is not available');
  const snapshots = new SnapshotManager(store, instances.access(), events);
  snapshots.installSuspendHandler((h) => instances.setSuspendHandler(h));
  await instances.recover();
  await snapshots.recover();
  // After the instances: taps of VMs that still run are kept, the rest is made to match.
  await networks.reconcile().catch((err: Error) => log(`warning: networks not reconciled: ${err.message}`));

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
      const app = await buildApi(context, { peer: { key: tls.key, cert: await pki.chain(), ca: tls.ca } });
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
  instances.setOwnership({
    claim: (name, summary) => (cluster.joined ? cluster.claim(name, summary) : Promise.resolve()),
    released: (name) => (cluster.joined ? cluster.released(name) : Promise.resolve()),
  });
  const migrations = new MigrationService(cluster, instances, instances.access(), snapshots, images, networks, store, events, facts);

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
    doctor: () => runDoctor(paths.root),
    networks,
    cluster,
    migrations,
    services: createApiServices({ dataDir: paths.root, instances, snapshots, images, operations, events, cluster, migrations }),
  };
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
  if (options.listen) {
    const { host, port } = parseListen(options.listen);
    const remote = await buildApi(context, { token: options.token });
    await remote.listen({ host, port });
    servers.push(remote);
    log(`vmkit listening on http://${options.listen} (token required); web console: http://${options.listen}/ui/`);
  }
  const local = await buildApi(context);
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
  const daemon = await startDaemon(options);
  await new Promise<void>((resolve) => {
    const stop = () => {
      void daemon.close().then(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
