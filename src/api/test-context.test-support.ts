import { join } from 'node:path';
import { SqliteStore } from '../store/sqlite.js';
import { DataPaths } from '../paths.js';
import { ImageStore } from '../images/image-store.js';
import { InstanceManager } from '../instances/manager.js';
import { SnapshotManager } from '../snapshots/snapshots.js';
import { EventBus } from '../operations/events.js';
import { OperationManager } from '../operations/operations.js';
import { createApiServices, type ApiContext } from './context.js';

/**
 * The real managers on a temporary data folder, for API tests through inject(): no daemon,
 * no sockets, no VM started. One place, so a new manager is wired into every API test.
 */
export function makeTestContext(dataDir: string, dbFile = join(dataDir, 'db')): { ctx: ApiContext; store: SqliteStore } {
  const paths = new DataPaths(dataDir);
  const store = new SqliteStore(dbFile);
  const events = new EventBus();
  const images = new ImageStore(store, paths);
  const instances = new InstanceManager(store, paths, images, events, {
    hostName: 'test',
    qemuBinary: () => 'qemu-system-x86_64',
    accel: async () => 'tcg',
  });
  const snapshots = new SnapshotManager(store, instances.registry, instances.lifecycle, events, instances.agent);
  const operations = new OperationManager(events);
  const ctx: ApiContext = {
    version: '0.0.0',
    hostName: 'test',
    dataDir,
    accel: async () => 'tcg',
    instances,
    snapshots,
    images,
    operations,
    events,
    doctor: async () => ({ ok: true, checks: [] }),
    services: createApiServices({ dataDir, instances, snapshots, images, operations, events }),
  };
  return { ctx, store };
}
