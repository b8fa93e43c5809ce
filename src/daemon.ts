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
import { EventBus } from './operations/events.js';
import { OperationManager } from './operations/operations.js';
import { buildApi, type ApiContext } from './api/server.js';
import { findQemuBinary, probeAccelerator } from './qemu/accel.js';
import { isProcessAlive } from './qemu/process.js';
import { runDoctor } from './host/doctor.js';

export interface DaemonOptions {
  dir?: string;
  /** ADDR:PORT for the TCP listener (needs a token). */
  listen?: string;
  token?: string;
  /** Folder with the built appliance (guest/build.sh output). */
  applianceDir?: string;
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
  const hostName = os.hostname();
  const instances = new InstanceManager(store, paths, images, events, { hostName, qemuBinary, accel });

  await images.reconcile();
  const appliance = await images.ensureAppliance(options.applianceDir ?? process.env.VMKIT_APPLIANCE_DIR ?? DEFAULT_APPLIANCE_DIR, (n) => instances.usesImage(n));
  if (!appliance) log('warning: the built-in appliance is not built (run "npm run setup"); "appliance" is not available');
  const snapshots = new SnapshotManager(store, instances.access(), events);
  snapshots.installSuspendHandler((h) => instances.setSuspendHandler(h));
  await instances.recover();
  await snapshots.recover();

  const context: ApiContext = {
    version: VERSION,
    hostName,
    dataDir: paths.root,
    accel,
    instances,
    snapshots,
    images,
    operations,
    events,
    doctor: () => runDoctor(paths.root),
  };
  const servers: FastifyInstance[] = [];
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
