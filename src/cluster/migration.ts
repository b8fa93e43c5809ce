import type { Readable } from 'node:stream';
import { vmkitError } from '../errors.js';
import type { InstanceState } from '../domain/types.js';
import type { InstanceManager } from '../instances/manager.js';
import type { SnapshotManager } from '../snapshots/snapshots.js';
import type { ImageStore } from '../images/image-store.js';
import type { NetworkManager } from '../network/manager.js';
import type { Store } from '../store/store.js';
import type { EventBus } from '../operations/events.js';
import type { OperationContext } from '../operations/operations.js';
import type { ClusterManager } from './cluster.js';
import type { Blocker, MigrationPlan } from './types.js';
import { MigrationContext, type SelfFacts } from './migration/context.js';
import { checkIncoming, planMigration } from './migration/plan.js';
import type { CheckRequest, FinishRequest, MigrateOptions, MigrateResult, PrepareReply, PrepareRequest } from './migration/protocol.js';
import { recover } from './migration/recover.js';
import { MigrationSource } from './migration/source.js';
import { MigrationTarget } from './migration/target.js';

export type { MigrateOptions, MigrateResult, PrepareReply, PrepareRequest } from './migration/protocol.js';

/**
 * Moving instances between cluster hosts: the one object the daemon and the API hold. It
 * only routes; the source side lives in migration/source.ts, the target side in
 * migration/target.ts, the restart rules in migration/recover.ts.
 */
export class MigrationService {
  private readonly ctx: MigrationContext;
  private readonly source: MigrationSource;
  private readonly target: MigrationTarget;

  constructor(
    cluster: ClusterManager,
    instances: InstanceManager,
    snapshots: SnapshotManager,
    images: ImageStore,
    networks: NetworkManager | undefined,
    local: Store,
    events: EventBus,
    self: SelfFacts,
  ) {
    this.ctx = new MigrationContext(cluster, instances, snapshots, images, networks, local, events, self);
    this.source = new MigrationSource(this.ctx);
    this.target = new MigrationTarget(this.ctx);
  }

  /** Everything that would stop the migration, from both ends; moves nothing. */
  plan(name: string, opts: MigrateOptions): Promise<MigrationPlan> {
    return planMigration(this.ctx, name, opts);
  }

  /** Target side of the pre-flight: what this host lacks to take the instance. */
  checkIncoming(req: CheckRequest): Promise<Blocker[]> {
    return checkIncoming(this.ctx, req);
  }

  migrate(name: string, opts: MigrateOptions, ctx?: OperationContext): Promise<MigrateResult> {
    return this.source.migrate(name, opts, ctx);
  }

  /** `vmkit migrate NAME --cancel`: aborts the running migration of an instance. */
  cancel(name: string): { id: string } {
    return this.source.cancel(name);
  }

  /** GET /1.0/internal/migrations/:id on either side. */
  status(id: string): { id: string; role: string; phase: string } {
    const e = this.ctx.active.get(id);
    if (!e) throw vmkitError('VMKIT_NOT_FOUND', `No migration ${id} here.`, { hint: 'It ended.' });
    return { id, role: e.record.role, phase: e.record.phase };
  }

  prepareIncoming(req: PrepareRequest): Promise<PrepareReply> {
    return this.target.prepareIncoming(req);
  }

  /** PUT /1.0/internal/migrations/:id/disks/:disk (cold and suspend modes). */
  receiveDisk(id: string, disk: string, body: Readable): Promise<void> {
    return this.target.receiveDisk(id, disk, body);
  }

  /** The source is done: take ownership (compare-and-swap), then run the guest here. */
  finishIncoming(id: string, req: FinishRequest): Promise<{ instance: string; state: InstanceState }> {
    return this.target.finishIncoming(id, req);
  }

  /** DELETE /1.0/internal/migrations/:id: the target removes everything it prepared. */
  abortIncoming(id: string): Promise<void> {
    return this.target.abortIncoming(id);
  }

  /** After a daemon restart: every migration this host took part in is finished or undone. */
  recover(): Promise<void> {
    return recover(this.ctx, this.source, this.target);
  }
}
