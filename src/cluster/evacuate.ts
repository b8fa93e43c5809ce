import { vmkitError } from '../errors.js';
import type { InstanceView, Operation } from '../domain/types.js';
import type { OperationContext, OperationManager } from '../operations/operations.js';
import type { ClusterManager } from './cluster.js';
import type { ForwardingService, IncomingRequest, RelayedAnswer } from './forwarding.js';
import { joinedCluster } from './support.js';
import type { MigrationMode } from './types.js';

/**
 * What evacuation needs of the migration service, by shape: migration.ts is being split, and
 * only these two calls matter here.
 */
export interface EvacuationMigrations {
  plan(name: string, opts: { to: string; mode?: MigrationMode }): Promise<{ ok: boolean; blockers: Array<{ message: string }> }>;
  migrate(name: string, opts: { to: string; mode?: MigrationMode }, ctx?: OperationContext): Promise<{ to: string; mode: string }>;
}

export interface EvacuationDeps {
  cluster: ClusterManager | undefined;
  migrations: EvacuationMigrations | undefined;
  instances: { list(): Promise<InstanceView[]> };
  operations: OperationManager;
  forwarding: ForwardingService;
}

/** Started here, or run by the host being evacuated (its answer relayed). */
export type EvacuationStart = { operation: Operation } | { forwarded: RelayedAnswer };

/**
 * Maintenance: every instance of a host moves to the others. The evacuated host runs the
 * moves itself (its instances are local there), so a request to evacuate another host is
 * forwarded to it.
 */
export class EvacuationService {
  constructor(private readonly deps: EvacuationDeps) {}

  async evacuate(host: string, mode: MigrationMode | undefined, req: IncomingRequest): Promise<EvacuationStart> {
    const cluster = joinedCluster(this.deps.cluster);
    await cluster.host(host);
    if (host !== cluster.name && !req.forwardedBy) return { forwarded: await this.deps.forwarding.forward(req, host, req.body ?? {}) };
    const operation = this.deps.operations.start({
      kind: 'cluster.evacuate',
      description: `Evacuating ${host}`,
      target: host,
      mayCancel: true,
      run: (opCtx) => this.run(cluster, host, mode, opCtx),
    });
    return { operation };
  }

  private async run(
    cluster: ClusterManager,
    host: string,
    mode: MigrationMode | undefined,
    opCtx: OperationContext,
  ): Promise<{ host: string; moved: Array<{ instance: string; to: string; mode: string }> }> {
    const migrations = this.migrations();
    const moved: Array<{ instance: string; to: string; mode: string }> = [];
    const failed: Array<{ instance: string; error: string }> = [];
    const list = await this.deps.instances.list();
    for (const [i, inst] of list.entries()) {
      opCtx.checkCancelled();
      opCtx.progress({ phase: `moving ${inst.name}`, percent: Math.round((i / Math.max(1, list.length)) * 100) });
      try {
        // The first host (emptiest first) the pre-flight check accepts.
        let to: string | undefined;
        const reasons: string[] = [];
        for (const c of await cluster.candidates(inst.image, inst.memoryMiB, host)) {
          const plan = await migrations.plan(inst.name, { to: c.name, mode });
          if (plan.ok) {
            to = c.name;
            break;
          }
          reasons.push(`${c.name}: ${plan.blockers.map((b) => b.message).join(' ')}`);
        }
        if (!to) throw new Error(reasons.length > 0 ? reasons.join('; ') : 'no other live host has room for it');
        const r = await migrations.migrate(inst.name, { to, mode }, opCtx);
        moved.push({ instance: inst.name, to: r.to, mode: r.mode });
      } catch (err) {
        failed.push({ instance: inst.name, error: (err as Error).message });
      }
    }
    if (failed.length > 0) {
      throw vmkitError('VMKIT_MIGRATION_FAILED', `Evacuation of ${host} left ${failed.map((f) => `${f.instance} (${f.error})`).join('; ')}.`, {
        hint: 'Fix the blockers ("vmkit migrate NAME --to HOST --check") and evacuate again.',
        details: { moved, failed },
      });
    }
    return { host, moved };
  }

  private migrations(): EvacuationMigrations {
    // A daemon with cluster support always has migrations; without, the cluster check refused already.
    if (!this.deps.migrations) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'This daemon has no cluster support.', { hint: 'Update vmkit.' });
    return this.deps.migrations;
  }
}
