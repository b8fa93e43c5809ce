import type { Operation } from '../domain/types.js';
import type { OperationContext, OperationManager } from '../operations/operations.js';
import type { ClusterManager } from './cluster.js';
import type { MigrateOptions, MigrateResult } from './migration/protocol.js';
import { joinedCluster } from './support.js';
import type { MigrationPlan } from './types.js';

/** What a migrate request needs of the migration service (by shape: migration/ is edited apart). */
export interface MigrationVerbs {
  plan(name: string, opts: MigrateOptions): Promise<MigrationPlan>;
  migrate(name: string, opts: MigrateOptions, ctx?: OperationContext): Promise<MigrateResult>;
  cancel(name: string): { id: string };
}

export interface MigrateRequestDeps {
  cluster: Pick<ClusterManager, 'requireJoined'> | undefined;
  migrations: MigrationVerbs | undefined;
  instances: { get(name: string): Promise<unknown> };
  operations: OperationManager;
}

/** A pre-flight answers at once; a move runs as an operation. */
export type MigrateStart = { plan: MigrationPlan } | { operation: Operation };

/**
 * `POST /1.0/instances/{name}/migrate` and its cancel: checks that this host is in a cluster
 * and holds the instance (4xx at once), then plans (check=true) or starts the move.
 */
export class MigrateRequests {
  constructor(private readonly deps: MigrateRequestDeps) {}

  async start(name: string, req: MigrateOptions & { check?: boolean }): Promise<MigrateStart> {
    const migrations = this.migrations();
    await this.deps.instances.get(name);
    const { check, ...opts } = req;
    if (check) return { plan: await migrations.plan(name, opts) };
    const operation = this.deps.operations.start({
      kind: 'instance.migrate',
      description: `Migrating ${name} to ${opts.to}`,
      target: name,
      mayCancel: true,
      run: (opCtx) => migrations.migrate(name, opts, opCtx),
    });
    return { operation };
  }

  /** `vmkit migrate NAME --cancel`: the source keeps running, the target is cleaned up. */
  cancel(name: string): { id: string } {
    if (!this.deps.migrations) joinedCluster(this.deps.cluster);
    return this.deps.migrations!.cancel(name);
  }

  private migrations(): MigrationVerbs {
    joinedCluster(this.deps.cluster);
    // A joined cluster always has the migration service (daemon.ts makes both).
    return this.deps.migrations!;
  }
}
