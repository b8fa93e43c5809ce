import type { Operation, Snapshot } from '../domain/types.js';
import type { OperationManager } from '../operations/operations.js';
import type { CreateSnapshotRequest, SnapshotManager } from './snapshots.js';

export interface SnapshotServiceDeps {
  snapshots: Pick<SnapshotManager, 'precheck' | 'get' | 'create' | 'delete' | 'restore'>;
  operations: OperationManager;
}

/**
 * The snapshot verbs of the API: each checks what it can at once (names, the instance, whether
 * the snapshot exists), so bad input answers 4xx instead of a failed operation, then runs the
 * work as an operation.
 */
export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  async get(instance: string, snapshot: string): Promise<Snapshot> {
    const { snapshots } = this.deps;
    await snapshots.precheck(instance, snapshot);
    return snapshots.get(instance, snapshot);
  }

  async create(instance: string, req: CreateSnapshotRequest): Promise<Operation> {
    const { snapshots, operations } = this.deps;
    await snapshots.precheck(instance, req.name, false);
    return operations.start({
      kind: 'snapshot.create',
      description: `Snapshotting ${instance} as ${req.name}`,
      target: instance,
      run: (opCtx) => snapshots.create(instance, req, opCtx),
    });
  }

  async delete(instance: string, snapshot: string): Promise<Operation> {
    const { snapshots, operations } = this.deps;
    await snapshots.precheck(instance, snapshot, true);
    return operations.start({
      kind: 'snapshot.delete',
      description: `Deleting snapshot ${snapshot} of ${instance}`,
      target: instance,
      run: (opCtx) => snapshots.delete(instance, snapshot, opCtx),
    });
  }

  async restore(instance: string, snapshot: string): Promise<Operation> {
    const { snapshots, operations } = this.deps;
    await snapshots.precheck(instance, snapshot, true);
    return operations.start({
      kind: 'snapshot.restore',
      description: `Restoring ${instance} to snapshot ${snapshot}`,
      target: instance,
      run: (opCtx) => snapshots.restore(instance, snapshot, opCtx),
    });
  }
}
