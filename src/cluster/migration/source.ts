import { randomUUID } from 'node:crypto';
import { asVmkitError, vmkitError } from '../../errors.js';
import type { InstanceState } from '../../domain/types.js';
import type { OperationContext } from '../../operations/operations.js';
import * as engine from '../../qemu/migrate.js';
import { queryRunState, resumeGuest } from '../../qemu/power.js';
import { sharedVolumeInfo } from '../../storage/qemu-img.js';
import { packNvram } from '../../qemu/firmware.js';
import { Revert } from '../../util/revert.js';
import { splitAddress, type PeerClient } from '../peer.js';
import { settleOwnership, stepLogger, type StepLog } from '../switchover.js';
import type { MigrationMode, MigrationPlan } from '../types.js';
import type { MigrationContext } from './context.js';
import { imageChecksumOrNone, planMigration } from './plan.js';
import {
  blocked,
  cancelled,
  DEFAULT_DOWNTIME_MS,
  isLive,
  peerTimeoutMs,
  RECORDS,
  type MigrateOptions,
  type MigrateResult,
  type MigrationRecord,
  type PrepareReply,
  type PrepareRequest,
} from './protocol.js';

/**
 * The source host drives a migration: it checks, asks the target to prepare (an incoming
 * QEMU, or a row waiting for disk files), moves storage and memory, and lets the target take
 * ownership in etcd by compare-and-swap before the guest runs there. Only then does the
 * source let go. Any failure before that leaves the source running and tells the target to
 * remove what it prepared.
 */
export class MigrationSource {
  constructor(private readonly ctx: MigrationContext) {}

  async migrate(name: string, opts: MigrateOptions, op?: OperationContext): Promise<MigrateResult> {
    const { cluster, instances, snapshots } = this.ctx;
    const started = Date.now();
    op?.progress({ phase: 'checking', percent: 1 });
    const plan = await planMigration(this.ctx, name, opts);
    if (!plan.ok) throw blocked(plan);
    const peer = await cluster.peer(opts.to);
    const mode = plan.mode;
    // Cold and suspend stop the guest first (with the public verbs: they take the lock).
    const before = await instances.get(name);
    const wasRunning = before.state === 'running';
    if (mode === 'cold' && (before.state === 'running' || before.state === 'paused')) {
      op?.progress({ phase: 'stopping', percent: 5 });
      await instances.stop(name, { timeout: 30 }, op);
    }
    if (mode === 'suspend' && (before.state === 'running' || before.state === 'paused')) {
      op?.progress({ phase: 'suspending (saving memory to disk)', percent: 5 });
      await snapshots.suspend(name, op);
    }
    try {
      return await this.migrateLocked(name, opts, plan, peer, started, wasRunning, op);
    } catch (err) {
      // A cold or suspend move that failed leaves the guest stopped or suspended here: it was
      // running, so it runs again (start resumes a suspended one) — unless it moved after all.
      const e = asVmkitError(err);
      if (wasRunning && (mode === 'cold' || mode === 'suspend') && !e.details?.moved) {
        await instances.start(name).catch((err2: Error) => console.error(`vmkitd: migration of ${name} failed (${e.message}); starting it again here failed too: ${err2.message}`));
      }
      throw err;
    }
  }

  private async migrateLocked(
    name: string,
    opts: MigrateOptions,
    plan: MigrationPlan,
    peer: PeerClient,
    started: number,
    wasRunning: boolean,
    op?: OperationContext,
  ): Promise<MigrateResult> {
    const { cluster, registry, instances, networks, local } = this.ctx;
    const mode = plan.mode;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const owner = await cluster.owner(name);
      if (!owner || owner.record.host !== cluster.name) {
        throw vmkitError('VMKIT_INVALID_STATE', `This host does not own "${name}" in the cluster store.`, { hint: '"vmkit list" shows where it runs.' });
      }
      const id = randomUUID();
      const record: MigrationRecord = { id, role: 'source', instance: name, peer: opts.to, mode, phase: 'prepare', wasRunning, startedAt: new Date().toISOString() };
      const abort = new AbortController();
      const onCancel = () => abort.abort();
      op?.signal.addEventListener('abort', onCancel);
      this.ctx.active.set(id, { record, abort });
      await local.put(RECORDS, id, record);
      const live = isLive(mode);
      const prevState = inst.state;
      const disks = [];
      for (const d of inst.disks) disks.push({ name: d.name, virtualSize: (await sharedVolumeInfo(registry.diskPath(inst, d))).virtualSize });
      const imageChecksum = await imageChecksumOrNone(this.ctx, inst.image);
      const snapshots = (await local.list('snapshots')).filter((s) => s.key.startsWith(`${name}/`)).map((s) => ({ key: s.key, value: s.value }));
      let prepared = false;
      let switched = false;
      let withdrawn = false;
      let undecided = false;
      const log = stepLogger(id, 'source', name);
      let jobs: engine.MirrorJob[] = [];
      const events = (action: string, metadata?: unknown) => this.ctx.events.lifecycle(action, name, { id, to: opts.to, mode, ...(metadata as object) });
      events('instance-migrating');
      try {
        if (live) await registry.setState(inst, 'migrating');
        op?.progress({ phase: `preparing ${opts.to}`, percent: 10 });
        const req: PrepareRequest = {
          id,
          mode,
          instance: inst,
          snapshots,
          source: cluster.name!,
          sourceIp: this.ctx.myIp(),
          sharedDisks: plan.sharedStorage,
          disks,
          imageChecksum,
          wasRunning,
          // UEFI: the variable store goes along (a live move's flash also travels with the RAM,
          // and the target's QEMU writes it back into this file when the guest resumes there).
          ...(inst.firmware === 'uefi' ? { nvram: await packNvram(registry.instanceDir(inst)) } : {}),
        };
        const prep = await peer.request<PrepareReply>('POST', '/1.0/internal/migrations', req, 60_000);
        prepared = true;
        // The target's answer is checked like a request: QEMU sends the guest's memory and
        // disks only to the target's own cluster address, on a real port.
        checkPrepareReply(prep, splitAddress((await cluster.host(opts.to)).address)[0], mode);
        this.startPeerWatch(id, peer, abort);
        let result: { totalTimeMs?: number; downtimeMs?: number; transferredBytes?: number } = {};
        if (live) {
          const qmp = this.ctx.qmpOf(name);
          const tls = await this.ctx.qemuTls(inst, qmp, id, 'client', prep.targetIp);
          log(`sending over TLS (tls-creds-x509, cluster CA; the target must be ${prep.targetIp})`);
          await registry.owningRunState(name, async () => {
            if (mode === 'live-copy') {
              op?.progress({ phase: 'copying storage', percent: 15 });
              record.phase = 'copying storage';
              jobs = await engine.startMirror(qmp, {
                host: prep.targetIp,
                port: prep.nbdPort!,
                nodes: inst.disks.map((d) => ({ node: d.name, exportName: d.name })),
                tls,
                signal: abort.signal,
                onProgress: (done, total) =>
                  op?.progress({ phase: 'copying storage', percent: 15 + Math.round((done / Math.max(1, total)) * 40), bytesDone: done, bytesTotal: total }),
              });
            }
            record.phase = 'migrating memory';
            await engine.setMigrationParameters(qmp, {
              downtimeLimitMs: opts.downtimeMs ?? DEFAULT_DOWNTIME_MS,
              maxBandwidthBytes: opts.bandwidthMiBs ? opts.bandwidthMiBs * 1024 * 1024 : undefined,
              tls,
            });
            const base = mode === 'live-copy' ? 55 : 15;
            result = await engine.migrate(qmp, {
              host: prep.targetIp,
              port: prep.migrationPort!,
              signal: abort.signal,
              onProgress: (p) =>
                op?.progress({
                  phase: 'migrating memory',
                  percent: Math.min(95, base + Math.round((p.transferredBytes / Math.max(1, p.totalBytes)) * (95 - base))),
                  bytesDone: p.transferredBytes,
                  bytesTotal: p.totalBytes,
                  dirtyRatePagesPerSec: p.dirtyRatePagesPerSec,
                  expectedDowntimeMs: p.expectedDowntimeMs,
                }),
            });
            if (jobs.length > 0) await engine.finishMirror(qmp, jobs);
            jobs = [];
          });
          log(`memory sent (QEMU: total ${result.totalTimeMs ?? '?'} ms, downtime ${result.downtimeMs ?? '?'} ms); the guest is stopped here`);
          // The last state is on the target: floating addresses leave this host now, before
          // the target claims them, so no client ever reaches two holders.
          withdrawn = true;
          await networks?.withdraw(inst, log).catch((err: Error) => log(`withdrawing floating addresses failed (the target claims them anyway): ${err.message}`));
        } else {
          record.phase = 'copying storage';
          if (!plan.sharedStorage) {
            for (const d of inst.disks) {
              const file = registry.diskPath(inst, d);
              await peer.putFile(
                `/1.0/internal/migrations/${id}/disks/${d.name}`,
                file,
                (done, total) => op?.progress({ phase: `copying disk ${d.name}`, percent: 10 + Math.round((done / Math.max(1, total)) * 80), bytesDone: done, bytesTotal: total }),
                abort.signal,
              );
            }
          }
        }
        if (abort.signal.aborted) throw cancelled();
        record.phase = 'switching over';
        op?.progress({ phase: 'switching over', percent: 96 });
        this.ctx.stopWatch(id);
        log('asking the target to take over');
        try {
          await peer.request('POST', `/1.0/internal/migrations/${id}/finish`, { ownerRevision: owner.revision, start: !live && wasRunning }, 60_000);
        } catch (err) {
          // The answer may be lost after the target took over. etcd decides, and a fence
          // makes the decision final: the guest never runs on both hosts.
          log(`the target's answer: ${asVmkitError(err).message}; settling ownership in etcd`);
          const holder = await settleOwnership(cluster, name, opts.to, owner.revision, log);
          if (holder === 'unknown') {
            undecided = true;
            throw vmkitError(
              'VMKIT_MIGRATION_FAILED',
              `Migration of "${name}" to ${opts.to}: the cluster store cannot say which host owns it now, so neither copy is resumed yet.`,
              {
                hint: `The guest stays paused until etcd answers; this host then resumes it or lets it go. Check etcd, then "vmkit list".`,
                details: { cause: asVmkitError(err).code },
              },
            );
          }
          if (holder === 'source') throw err;
        }
        log('the target runs the guest');
        switched = true;
        // The target runs the guest now: let go here.
        record.phase = 'releasing source';
        const fresh = await registry.load(name);
        await instances.release(fresh);
        for (const s of snapshots) await local.delete('snapshots', s.key).catch((err: Error) => log(`removing snapshot row ${s.key} failed (the instance left): ${err.message}`));
        log('released here');
        const totalTimeMs = Date.now() - started;
        op?.progress({ phase: 'done', percent: 100, downtimeMs: result.downtimeMs });
        events('instance-migrated', { totalTimeMs, downtimeMs: result.downtimeMs });
        return { instance: name, from: cluster.name!, to: opts.to, mode, totalTimeMs, downtimeMs: result.downtimeMs, transferredBytes: result.transferredBytes };
      } catch (err) {
        if (switched) {
          // Nothing to undo: the instance lives on the target; only the clean-up here failed.
          throw vmkitError('VMKIT_MIGRATION_FAILED', `"${name}" now runs on ${opts.to}, but this host could not let go of its copy: ${asVmkitError(err).message}`, {
            hint: `Check "vmkit list"; delete the leftover folder of "${name}" on ${cluster.name} if one remains.`,
            details: { moved: true },
          });
        }
        if (undecided) {
          this.resolveLater(name, opts.to, owner.revision, prevState, withdrawn, peer, id, log);
          throw err;
        }
        await this.rollbackSource(name, prevState, jobs, live, withdrawn, log);
        if (prepared) this.abortTarget(peer, id);
        events('instance-migration-failed', { error: asVmkitError(err).message });
        const byUser = op?.signal.aborted || abort.signal.reason === 'user';
        if (abort.signal.aborted && !byUser) {
          // Not the user: the watchdog gave up on a silent target.
          throw vmkitError('VMKIT_MIGRATION_FAILED', `Migration of "${name}" to ${opts.to} failed: ${opts.to} stopped answering (its daemon or the link to it is down).`, {
            hint: `"${name}" keeps running here; ${opts.to} removes what it prepared when it is back. Retry then.`,
          });
        }
        if (byUser) throw cancelled();
        const e = asVmkitError(err);
        if (e.code.startsWith('VMKIT_MIGRATION') || e.code === 'VMKIT_OPERATION_CANCELLED') throw e;
        throw vmkitError('VMKIT_MIGRATION_FAILED', `Migration of "${name}" to ${opts.to} failed: ${e.message}`, {
          hint: `"${name}" stays here; the target removes what it prepared. ${e.hint ?? ''}`.trim(),
          details: { cause: e.code },
        });
      } finally {
        op?.signal.removeEventListener('abort', onCancel);
        this.ctx.stopWatch(id);
        this.ctx.active.delete(id);
        // An undecided switch-over keeps its record: a restarted daemon settles it (recover).
        if (!undecided) await local.delete(RECORDS, id).catch((err: Error) => log(`removing the migration record failed: ${err.message}`));
      }
    });
  }

  /**
   * The source keeps (or gets back) the guest: outgoing migration and mirrors stopped, QEMU
   * resumed, its state restored, floating addresses claimed back. Every step is tried; one
   * that fails is logged and the others still run.
   */
  private async rollbackSource(name: string, prevState: InstanceState, jobs: engine.MirrorJob[], live: boolean, withdrawn: boolean, log: StepLog): Promise<void> {
    const { registry, networks } = this.ctx;
    const qmp = registry.qmp(name);
    // Revert runs its steps newest first, so they are added here in the reverse of the order
    // they run in: migrate_cancel, mirrors, cont, state, floating addresses.
    const undo = new Revert(log);
    if (withdrawn) {
      undo.add('the withdrawal of the floating addresses', async () => {
        // Already gone: nothing to announce.
        const inst = await registry.load(name).catch(() => undefined);
        if (inst) await networks?.announce(inst, log);
      });
    }
    if (live) {
      undo.add(`the "migrating" state (back to ${prevState})`, async () => {
        // Already gone: no state to restore.
        const inst = await registry.load(name).catch(() => undefined);
        if (inst && inst.state !== prevState) await registry.setState(inst, prevState);
      });
    }
    if (qmp && live) {
      undo.add('the pause of the source (cont)', async () => {
        // No answer: QEMU is gone and there is nothing to resume (the row says so next).
        const status = await queryRunState(qmp).catch(() => undefined);
        // After a completed memory copy the source sits in `postmigrate`: `cont` takes the disks back.
        if (prevState === 'running' && status && status.status !== 'running') await resumeGuest(qmp);
        log('the guest runs on here (rolled back)');
      });
      if (jobs.length > 0) undo.add('the storage mirror', () => engine.abortMirror(qmp, jobs));
      undo.add('the outgoing migration (migrate_cancel)', () => engine.cancelMigration(qmp));
    }
    await undo.fail();
  }

  /** An undecided switch-over: keep asking etcd, then resume here or let go. */
  private resolveLater(name: string, to: string, revision: number, prevState: InstanceState, withdrawn: boolean, peer: PeerClient, id: string, log: StepLog): void {
    const { cluster, registry, instances, local } = this.ctx;
    void (async () => {
      for (;;) {
        const holder = await settleOwnership(cluster, name, to, revision, log, { attempts: 1 });
        if (holder === 'unknown') {
          await new Promise((r) => setTimeout(r, 2_000));
          continue;
        }
        await registry.withLock(name, async () => {
          if (holder === 'target') {
            // Already gone: nothing to release.
            const inst = await registry.load(name).catch(() => undefined);
            if (inst) await instances.release(inst);
          } else {
            await this.rollbackSource(name, prevState, [], true, withdrawn, log);
            this.abortTarget(peer, id);
          }
        });
        await local.delete(RECORDS, id).catch((err: Error) => log(`removing the migration record failed: ${err.message}`));
        log(`settled: the guest runs on ${holder === 'target' ? to : cluster.name}`);
        return;
      }
    })().catch((err: Error) => log(`settling the switch-over failed: ${err.message}`));
  }

  /** Tells the target to remove what it prepared, retrying in the background (the link may be down). */
  abortTarget(peer: PeerClient, id: string): void {
    void (async () => {
      let last = '';
      for (let i = 0; i < 30; i++) {
        try {
          await peer.request('DELETE', `/1.0/internal/migrations/${id}`, undefined, 5_000);
          return;
        } catch (err) {
          last = asVmkitError(err).message;
          await new Promise((r) => setTimeout(r, 2_000));
        }
      }
      console.error(`vmkitd: migration ${id.slice(0, 8)}: the target did not take the abort (${last}); its own watch of this host cleans up`);
    })();
  }

  /** While memory moves, the source checks that the target's daemon still answers. */
  private startPeerWatch(id: string, peer: PeerClient, abort: AbortController): void {
    const entry = this.ctx.active.get(id);
    if (!entry) return;
    let lastOk = Date.now();
    entry.watchdog = setInterval(() => {
      void peer
        .request('GET', `/1.0/internal/migrations/${id}`, undefined, 2_000)
        .then(() => (lastOk = Date.now()))
        .catch(() => {
          // One missed answer is normal under load; only a silence longer than the timeout aborts.
          if (Date.now() - lastOk > peerTimeoutMs()) abort.abort();
        });
    }, 1_000);
  }

  /** `vmkit migrate NAME --cancel`: aborts the running migration of an instance. */
  cancel(name: string): { id: string } {
    for (const [id, e] of this.ctx.active) {
      if (e.record.role === 'source' && e.record.instance === name) {
        e.abort?.abort('user');
        return { id };
      }
    }
    throw vmkitError('VMKIT_NOT_FOUND', `No migration of "${name}" is running on this host.`, { hint: '"vmkit operation list" shows the operations.' });
  }
}

/** A target's PrepareReply: its address must be the one the cluster knows it by; ports 1–65535, present where the mode needs them. */
export function checkPrepareReply(prep: PrepareReply, targetHost: string, mode: MigrationMode): void {
  const port = (p: unknown) => p === undefined || (Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535);
  const ok =
    typeof prep === 'object' &&
    prep !== null &&
    prep.targetIp === targetHost &&
    port(prep.migrationPort) &&
    port(prep.nbdPort) &&
    (!isLive(mode) || prep.migrationPort !== undefined) &&
    (mode !== 'live-copy' || prep.nbdPort !== undefined);
  if (!ok)
    throw vmkitError('VMKIT_MIGRATION_FAILED', `The target answered the migration with an address or ports it may not use (${JSON.stringify(prep).slice(0, 200)}).`, {
      hint: 'Every host must run the same vmkit version; the migration was undone.',
    });
}
