import * as engine from '../../qemu/migrate.js';
import { queryRunState, resumeGuest } from '../../qemu/power.js';
import type { QmpClient } from '../../qemu/qmp.js';
import { resetPeerPorts } from '../firewall.js';
import { settleOwnership, stepLogger, type StepLog } from '../switchover.js';
import type { MigrationContext } from './context.js';
import { RECORDS, type MigrationRecord } from './protocol.js';
import type { MigrationSource } from './source.js';
import type { MigrationTarget } from './target.js';

/**
 * After a daemon restart: every migration this host took part in is finished or undone,
 * decided by who owns the instance in etcd (the one fact both sides agree on).
 */
export async function recover(ctx: MigrationContext, source: MigrationSource, target: MigrationTarget): Promise<void> {
  const { cluster, registry, instances, local } = ctx;
  await resetPeerPorts();
  const undecided = new Set<string>();
  for (const { value: rec } of await local.list<MigrationRecord>(RECORDS)) {
    // Unreadable owner: whether etcd answers at all decides below.
    const owner = await cluster.owner(rec.instance).catch(() => undefined);
    if (owner === undefined && cluster.joined) {
      // etcd unreachable: decide later (keep the record, leave the guest as it is).
      if (!(await clusterReachable(ctx))) {
        undecided.add(rec.instance);
        continue;
      }
    }
    const me = cluster.name;
    const log = stepLogger(rec.id, rec.role, rec.instance);
    if (rec.role === 'source') {
      // Already gone: nothing to settle.
      const inst = await registry.load(rec.instance).catch(() => undefined);
      // Still the owner: fence the target out before the guest may run here again (its
      // "take over" may still be on its way).
      const holder = owner && owner.record.host === me ? await settleOwnership(cluster, rec.instance, rec.peer, owner.revision, log, { attempts: 3 }) : undefined;
      if (holder === 'unknown') {
        // etcd does not answer: the guest stays paused; the next restart decides.
        undecided.add(rec.instance);
        continue;
      }
      if ((owner?.record.host && owner.record.host !== me) || holder === 'target') {
        // The target took over before this daemon died: let go of the local copy.
        if (inst) await registry.withLock(rec.instance, () => instances.release(inst));
      } else if (inst) {
        await registry.withLock(rec.instance, async () => {
          const qmp = registry.qmp(rec.instance);
          if (qmp) {
            await engine.cancelMigration(qmp).catch((err: Error) => log(`migrate_cancel: ${err.message}`));
            await resumeUnlessRunning(qmp, rec.wasRunning !== false, log);
            await registry.adopt(rec.instance, rec.wasRunning === false ? 'paused' : 'running');
          } else if (inst.state === 'migrating') {
            await registry.setState(inst, 'stopped', 'QEMU ended during a migration');
          }
        });
        try {
          source.abortTarget(await cluster.peer(rec.peer), rec.id);
        } catch {
          /* the target cleans up by itself */
        }
      }
      await local.delete(RECORDS, rec.id);
    } else if (owner?.record.host === me) {
      // Ownership moved here: make sure the guest runs.
      const qmp = registry.qmp(rec.instance);
      if (qmp) {
        await resumeUnlessRunning(qmp, rec.wasRunning !== false, log);
        await registry.adopt(rec.instance, rec.wasRunning === false ? 'paused' : 'running');
      } else {
        // Already gone: nothing to settle.
        const inst = await registry.load(rec.instance).catch(() => undefined);
        if (inst?.state === 'migrating') await registry.setState(inst, rec.sourceState === 'suspended' ? 'suspended' : 'stopped');
      }
      await target.closePorts(rec);
      await local.delete(RECORDS, rec.id);
    } else {
      ctx.active.set(rec.id, { record: rec });
      await target
        .abortIncoming(rec.id)
        .catch((err: Error) => console.error(`vmkitd: migration ${rec.id.slice(0, 8)}: undoing the incoming ${rec.instance} waits for etcd: ${err.message}`));
    }
  }
  // A row left `migrating` with no migration record: give it back its plain state.
  for (const v of await ctx.instances.list()) {
    if (v.state !== 'migrating' || undecided.has(v.name)) continue;
    await registry.withLock(v.name, async () => {
      const qmp = registry.qmp(v.name);
      if (qmp) {
        // No answer: treated as running below, as before (QEMU's own events correct it).
        const st = await queryRunState(qmp).catch(() => undefined);
        if (st && st.status !== 'running' && st.status !== 'paused')
          await resumeGuest(qmp).catch((err: Error) => console.error(`vmkitd: resuming ${v.name} (left migrating) failed: ${err.message}`));
        await registry.adopt(v.name, st?.status === 'paused' ? 'paused' : 'running');
      } else {
        await registry.setState(await registry.load(v.name), 'stopped', 'found mid-migration after a restart');
      }
    });
  }
}

// `cont` when the guest should run and QEMU says it does not (no answer: left as it is).
async function resumeUnlessRunning(qmp: QmpClient, shouldRun: boolean, log: StepLog): Promise<void> {
  const st = await queryRunState(qmp).catch((err: Error) => {
    log(`query-status: ${err.message}`);
    return undefined;
  });
  if (st && st.status !== 'running' && shouldRun) await resumeGuest(qmp).catch((err: Error) => log(`resuming the guest failed: ${err.message}`));
}

async function clusterReachable(ctx: MigrationContext): Promise<boolean> {
  try {
    await ctx.cluster.listHosts();
    return true;
  } catch {
    return false;
  }
}
