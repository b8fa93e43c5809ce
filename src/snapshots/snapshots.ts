import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Instance, InstanceView, Snapshot } from '../domain/types.js';
import type { StartHooks, SuspendHandler } from '../instances/manager.js';
import type { InstanceRegistry } from '../instances/registry.js';
import type { Lifecycle } from '../instances/lifecycle.js';
import type { GuestAgent } from '../instances/agent.js';
import type { EventBus } from '../operations/events.js';
import type { OperationContext } from '../operations/operations.js';
import type { QmpClient } from '../qemu/qmp.js';
import { saveVm, settleJobs } from '../qemu/jobs.js';
import { queryRunState } from '../qemu/power.js';
import { deleteVmSnapshot, listLiveSnapshots, loadVm, restoreLive, saveForSuspend, snapshotDiskLive } from '../qemu/snapshots.js';
import type { Store } from '../store/store.js';
import { dropSnapshotNvram, restoreSnapshotNvram, saveSnapshotNvram } from '../qemu/firmware.js';
import { diskSnapshot, listDiskSnapshots, type InternalSnapshotInfo } from '../storage/qemu-img.js';

/**
 * Checkpoints as internal qcow2 snapshots of the instance's root disk (see doc/snapshots.md).
 * A running/paused instance is saved with QEMU's `snapshot-save` job (disk + RAM + device
 * state in the qcow2, one instant); `--no-memory` uses `blockdev-snapshot-internal-sync`
 * (crash-consistent disk); a stopped instance uses `qemu-img snapshot`. Rows in the store
 * (kind `snapshots`, key `<instance>/<snapshot>`) carry the metadata; the QEMU tag is
 * written first and the row second, and recover() reconciles the two after a crash.
 */

/** The reserved tag holding a suspended instance's state (not a valid user name: it has no row). */
export const SUSPEND_TAG = 'vmkit-suspend';
/** Only the root disk takes part: the config drive (cidata) is raw and read-only. */

export interface CreateSnapshotRequest {
  name: string;
  description?: string;
  /** false = disk only (crash-consistent for a running instance). Default true. */
  memory?: boolean;
  /** Freeze the guest's filesystems around a live snapshot: true required, false never, unset when an agent answers. */
  quiesce?: boolean;
}

export interface SnapshotResult {
  snapshot: Snapshot;
  /** Wall time of the whole operation. */
  durationMs: number;
}

export interface RestoreResult {
  instance: InstanceView;
  snapshot: Snapshot;
  durationMs: number;
}

const key = (instance: string, snap: string) => `${instance}/${snap}`;

/** The name grammar, plus the reserved suspend tag. */
export function validateSnapshotName(name: unknown): string {
  const valid = validateName(name, 'snapshot name');
  if (valid === SUSPEND_TAG) {
    throw vmkitError('VMKIT_NAME_INVALID', `The snapshot name "${SUSPEND_TAG}" is reserved (it holds a suspended instance's state).`, {
      hint: 'Choose another name.',
    });
  }
  return valid;
}

/**
 * Snapshots take part in an instance's life through its registry (the lock, the row, the QMP
 * connection, the state writer) and its lifecycle's start/stop steps, always holding the
 * instance's lock. It is also the instances' SuspendHandler: a start of a suspended instance
 * resumes from the saved state, `stop --force` drops it.
 */
export class SnapshotManager implements SuspendHandler {
  constructor(
    private readonly store: Store,
    private readonly registry: InstanceRegistry,
    private readonly lifecycle: Lifecycle,
    private readonly events: EventBus,
    private readonly agent?: GuestAgent,
  ) {
    // Rows die with their instance.
    this.events.subscribe((e) => {
      if (e.type === 'lifecycle' && e.action === 'instance-deleted' && e.target) {
        const target = e.target;
        void this.dropRows(target).catch((err: Error) => console.error(`vmkitd: dropping the snapshot rows of deleted instance ${target}: ${err.message}`));
      }
    });
  }

  /** The start steps that resume a suspended instance from its saved state. */
  resumeHooks(): StartHooks {
    return {
      beforeCont: async (qmp, inst) => {
        try {
          await loadVm(qmp, SUSPEND_TAG);
        } catch (err) {
          // The start fails and leaves the instance stopped (next start: a cold boot), so the
          // saved state can never be used again: do not let it hold disk space.
          await deleteVmSnapshot(qmp, SUSPEND_TAG).catch((e: Error) => console.error(`vmkitd: dropping the unusable suspended state of ${inst.name}: ${e.message}`));
          throw err;
        }
      },
      afterStart: async (qmp) => {
        await deleteVmSnapshot(qmp, SUSPEND_TAG);
      },
    };
  }

  /** Drops the saved state of a suspended instance (stop --force). */
  async discard(inst: Instance): Promise<void> {
    const file = this.registry.rootDisk(inst);
    if ((await listDiskSnapshots(file)).some((s) => s.name === SUSPEND_TAG)) await diskSnapshot('delete', file, SUSPEND_TAG);
  }

  // ---- queries --------------------------------------------------------------------------

  async list(instance: string): Promise<Snapshot[]> {
    const inst = await this.registry.load(instance);
    return this.rowsOf(inst);
  }

  async get(instance: string, name: string): Promise<Snapshot> {
    const inst = await this.registry.load(instance);
    return this.row(inst, name);
  }

  private async rowsOf(inst: Instance): Promise<Snapshot[]> {
    return (await this.store.list<Snapshot>('snapshots'))
      .map((v) => v.value)
      .filter((s) => s.instance === inst.name && s.instanceId === inst.id)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  private async row(inst: Instance, name: string): Promise<Snapshot> {
    const found = await this.store.get<Snapshot>('snapshots', key(inst.name, name));
    if (!found || found.value.instanceId !== inst.id) {
      throw vmkitError('VMKIT_SNAPSHOT_NOT_FOUND', `Instance "${inst.name}" has no snapshot "${name}".`, {
        hint: `"vmkit snapshot list ${inst.name}" shows its snapshots.`,
      });
    }
    return found.value;
  }

  /** Checks what can be checked before an operation is started (4xx instead of a failed operation). */
  async precheck(instance: string, snapshot?: string, exists?: boolean): Promise<void> {
    validateName(instance, 'instance name');
    if (snapshot !== undefined) validateSnapshotName(snapshot);
    const inst = await this.registry.load(instance);
    if (snapshot === undefined || exists === undefined) return;
    if (exists) await this.row(inst, snapshot);
    else await this.assertFree(inst, snapshot);
  }

  private async assertFree(inst: Instance, name: string): Promise<void> {
    const found = await this.store.get<Snapshot>('snapshots', key(inst.name, name));
    if (found && found.value.instanceId === inst.id) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `Instance "${inst.name}" already has a snapshot named "${name}".`, {
        hint: `Choose another name, or delete it first ("vmkit snapshot delete ${inst.name} ${name}").`,
      });
    }
  }

  // ---- create ---------------------------------------------------------------------------

  async create(instance: string, req: CreateSnapshotRequest, ctx?: OperationContext): Promise<SnapshotResult> {
    const name = validateSnapshotName(req.name);
    return this.registry.withLock(instance, async () => {
      const t0 = Date.now();
      const inst = await this.registry.load(instance);
      await this.assertFree(inst, name);
      const file = this.registry.rootDisk(inst);
      let withMemory = req.memory !== false;
      let vmState: Snapshot['vmState'] = null;
      let pausedMs = 0;
      let quiesced: boolean | undefined;
      let quiesceNote: string | undefined;
      if (inst.state === 'running' || inst.state === 'paused') {
        const qmp = this.qmpOf(inst);
        // A leftover tag of the same name (e.g. from a crash before the row was written) goes first.
        if ((await listLiveSnapshots(qmp)).some((s) => s.name === name)) await deleteVmSnapshot(qmp, name);
        const take = async (): Promise<void> => {
          if (withMemory) {
            vmState = inst.state as 'running' | 'paused';
            ctx?.progress({ phase: 'saving memory and disk', percent: 20 });
            pausedMs = await this.registry.owningRunState(inst.name, () => saveVm(qmp, name, inst.state === 'paused'));
          } else {
            ctx?.progress({ phase: 'snapshotting disk', percent: 20 });
            const t = Date.now();
            await snapshotDiskLive(qmp, name);
            pausedMs = Date.now() - t;
          }
        };
        // Filesystems frozen by the guest agent around the snapshot (a paused guest's agent cannot answer).
        // Default: a disk-only snapshot of a running guest is quiesced when its agent answers
        // (its disk is all it keeps). A memory snapshot is consistent at its instant already;
        // frozen, every restore would depend on the agent to thaw it: only with --quiesce.
        const mode = req.quiesce === false || !this.agent ? 'off' : req.quiesce === true ? 'on' : inst.state === 'running' && !withMemory ? 'auto' : 'off';
        if (mode === 'on' && inst.state !== 'running') {
          throw vmkitError('VMKIT_AGENT_UNAVAILABLE', `Cannot quiesce ${inst.name}: it is ${inst.state}, its guest agent cannot answer.`, {
            hint: 'Resume it first, or snapshot without --quiesce.',
          });
        }
        if (mode !== 'off' && this.agent) {
          ctx?.progress({ phase: 'freezing guest filesystems', percent: 10 });
          const r = await this.agent.quiesced(inst.name, mode, take);
          quiesced = r.frozen;
          quiesceNote = r.note;
        } else {
          await take();
        }
      } else if (inst.state === 'stopped') {
        withMemory = false;
        ctx?.progress({ phase: 'snapshotting disk', percent: 20 });
        if ((await listDiskSnapshots(file)).some((s) => s.name === name)) await diskSnapshot('delete', file, name);
        await diskSnapshot('create', file, name);
      } else {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot snapshot instance "${inst.name}": it is ${inst.state}.`, {
          hint:
            inst.state === 'suspended'
              ? `Start it first ("vmkit start ${inst.name}"); its suspended state is itself a saved checkpoint.`
              : 'Snapshots are taken of running, paused or stopped instances; wait for the current operation to finish.',
          details: { state: inst.state },
        });
      }
      // A UEFI instance's variables as they were (a disk-only checkpoint has no other copy).
      if (inst.firmware === 'uefi') await saveSnapshotNvram(this.registry.instanceDir(inst), name);
      ctx?.progress({ phase: 'recording', percent: 90 });
      // The size is informative only: a snapshot whose size cannot be read is still taken.
      const size = await this.sizeOf(inst, name).catch(() => undefined);
      const snap: Snapshot = {
        instance: inst.name,
        instanceId: inst.id,
        name,
        description: req.description,
        parent: inst.currentSnapshot,
        createdAt: new Date().toISOString(),
        withMemory,
        vmState,
        pausedMs,
        size,
        ...(quiesced !== undefined ? { quiesced } : {}),
        ...(quiesceNote ? { quiesceNote: quiesceNote.slice(0, 300) } : {}),
      };
      // The tag exists now; the row makes it visible. A crash in between leaves a tag that
      // recover() deletes.
      await this.store.put('snapshots', key(inst.name, name), snap);
      const fresh = await this.registry.load(inst.name);
      fresh.currentSnapshot = name;
      await this.registry.save(fresh);
      this.events.lifecycle('snapshot-created', inst.name, { snapshot: name, withMemory, pausedMs });
      return { snapshot: snap, durationMs: Date.now() - t0 };
    });
  }

  // ---- restore --------------------------------------------------------------------------

  async restore(instance: string, name: string, ctx?: OperationContext): Promise<RestoreResult> {
    validateSnapshotName(name);
    return this.registry.withLock(instance, async () => {
      const t0 = Date.now();
      let inst = await this.registry.load(instance);
      const snap = await this.row(inst, name);
      const file = this.registry.rootDisk(inst);
      if (snap.withMemory) {
        if (inst.state === 'running' || inst.state === 'paused') {
          const qmp = this.qmpOf(inst);
          ctx?.progress({ phase: 'loading memory and disk', percent: 30 });
          const wasRunning = inst.state === 'running';
          await this.registry.owningRunState(inst.name, () => restoreLive(qmp, name, wasRunning, snap.vmState === 'running'));
          inst = await this.registry.load(instance);
          await this.registry.setState(inst, snap.vmState === 'running' ? 'running' : 'paused');
          if (snap.vmState === 'running') await this.afterLiveRestore(instance, snap);
        } else if (inst.state === 'stopped' || inst.state === 'suspended') {
          const wasSuspended = inst.state === 'suspended';
          // The flash comes back with the machine state at `cont`; the file agrees from the start.
          if (inst.firmware === 'uefi') await restoreSnapshotNvram(this.registry.instanceDir(inst), name);
          ctx?.progress({ phase: 'starting QEMU and loading the snapshot', percent: 30 });
          await this.lifecycle.startLocked(instance, ctx, {
            beforeCont: async (qmp) => loadVm(qmp, name),
            leavePaused: snap.vmState === 'paused',
            afterStart: async (qmp) => {
              if (wasSuspended) await deleteVmSnapshot(qmp, SUSPEND_TAG);
              if (snap.vmState === 'running') await this.afterLiveRestore(instance, snap);
            },
          });
        } else {
          throw this.badState(inst, 'restore a snapshot of');
        }
      } else {
        if (inst.state === 'running' || inst.state === 'paused') {
          throw vmkitError('VMKIT_INSTANCE_RUNNING', `Snapshot "${name}" holds the disk only; instance "${inst.name}" must be stopped to restore it.`, {
            hint: `Stop it first ("vmkit stop ${inst.name}"), then restore; the restored instance starts with a cold boot.`,
          });
        }
        if (inst.state === 'suspended') {
          // Reverting the disk invalidates the saved memory: drop it, the instance is stopped.
          await diskSnapshot('delete', file, SUSPEND_TAG).catch((e: Error) => console.error(`vmkitd: dropping the suspended state of ${inst.name}: ${e.message}`));
          await this.registry.setState(inst, 'stopped', 'suspended state discarded by a snapshot restore');
        } else if (inst.state !== 'stopped') {
          throw this.badState(inst, 'restore a snapshot of');
        }
        ctx?.progress({ phase: 'reverting disk', percent: 50 });
        await diskSnapshot('apply', file, name);
        if (inst.firmware === 'uefi') await restoreSnapshotNvram(this.registry.instanceDir(inst), name);
      }
      const fresh = await this.registry.load(instance);
      fresh.currentSnapshot = name;
      await this.registry.save(fresh);
      this.events.lifecycle('snapshot-restored', instance, { snapshot: name });
      return { instance: this.registry.view(fresh), snapshot: snap, durationMs: Date.now() - t0 };
    });
  }

  /**
   * A memory snapshot taken quiesced holds a guest whose filesystems are frozen: its agent
   * (restored with it, still holding the freeze) thaws them. The clock is set either way.
   */
  private async afterLiveRestore(instance: string, snap: Snapshot): Promise<void> {
    if (!this.agent) return;
    if (snap.quiesced) await this.agent.thawAfterRestore(instance);
    this.agent.syncClock(instance);
  }

  // ---- delete ---------------------------------------------------------------------------

  async delete(instance: string, name: string, ctx?: OperationContext): Promise<{ deleted: string }> {
    validateSnapshotName(name);
    return this.registry.withLock(instance, async () => {
      const inst = await this.registry.load(instance);
      const snap = await this.row(inst, name);
      ctx?.progress({ phase: 'deleting', percent: 30 });
      if (inst.state === 'running' || inst.state === 'paused') {
        const qmp = this.qmpOf(inst);
        if ((await listLiveSnapshots(qmp)).some((s) => s.name === name)) await deleteVmSnapshot(qmp, name);
      } else if (inst.state === 'stopped' || inst.state === 'suspended' || inst.state === 'error') {
        const file = this.registry.rootDisk(inst);
        if ((await listDiskSnapshots(file)).some((s) => s.name === name)) await diskSnapshot('delete', file, name);
      } else {
        throw this.badState(inst, 'delete a snapshot of');
      }
      // Tag gone first, then the row; children now descend from the deleted one's parent.
      await dropSnapshotNvram(this.registry.instanceDir(inst), name);
      await this.store.delete('snapshots', key(inst.name, name));
      for (const child of (await this.rowsOf(inst)).filter((s) => s.parent === name)) {
        child.parent = snap.parent;
        await this.store.put('snapshots', key(inst.name, child.name), child);
      }
      const fresh = await this.registry.load(instance);
      if (fresh.currentSnapshot === name) {
        fresh.currentSnapshot = snap.parent;
        await this.registry.save(fresh);
      }
      this.events.lifecycle('snapshot-deleted', instance, { snapshot: name });
      return { deleted: name };
    });
  }

  // ---- suspend --------------------------------------------------------------------------

  /** Saves the whole VM into the disk (reserved tag), ends QEMU: the instance is `suspended`. */
  async suspend(instance: string, ctx?: OperationContext): Promise<InstanceView & { savedMs: number }> {
    return this.registry.withLock(instance, async () => {
      const t0 = Date.now();
      const inst = await this.registry.load(instance);
      if (inst.state !== 'running' && inst.state !== 'paused') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot suspend instance "${inst.name}": it is ${inst.state}.`, {
          hint: inst.state === 'suspended' ? `It is suspended already; "vmkit start ${inst.name}" resumes it.` : 'Only a running or paused instance can be suspended.',
          details: { state: inst.state },
        });
      }
      const qmp = this.qmpOf(inst);
      const wasRunning = inst.state === 'running';
      await this.registry.owningRunState(inst.name, () => saveForSuspend(qmp, SUSPEND_TAG, wasRunning, () => ctx?.progress({ phase: 'saving memory and disk', percent: 30 })));
      // The row says `suspended` before QEMU is asked to quit: a daemon that dies now finds
      // either the paused QEMU (re-attached as paused, the tag dropped) or no QEMU and the
      // saved state (still suspended) — never a lost suspend.
      await this.registry.setState(await this.registry.load(inst.name), 'suspended');
      ctx?.progress({ phase: 'ending QEMU', percent: 80 });
      await this.lifecycle.quitLocked(inst.name, 'suspended');
      const fresh = await this.registry.load(instance);
      return { ...this.registry.view(fresh), savedMs: Date.now() - t0 };
    });
  }

  // ---- recovery -------------------------------------------------------------------------

  /**
   * After a daemon (re)start, once instances are re-attached: let snapshot jobs a crash left
   * behind finish, then make rows and tags agree (tag without row → deleted; row without tag →
   * deleted; a suspended instance without its suspend tag → stopped).
   */
  async recover(quarantined: ReadonlySet<string> = new Set()): Promise<void> {
    // Rows of instances that no longer exist go first (not those of a quarantined instance row:
    // it is damaged, not gone, and whoever repairs it needs its snapshots' rows too).
    for (const s of (await this.store.list<Snapshot>('snapshots')).map((v) => v.value)) {
      if (!quarantined.has(s.instance) && !(await this.store.get('instances', s.instance))) await this.store.delete('snapshots', key(s.instance, s.name));
    }
    const names = (await this.store.list<Instance>('instances')).map((v) => v.key);
    for (const name of names) {
      await this.registry.withLock(name, () => this.reconcile(name)).catch((err: unknown) => console.error(`vmkitd: reconciling snapshots of ${name}: ${(err as Error).message}`));
    }
  }

  private async reconcile(name: string): Promise<void> {
    let inst = await this.registry.load(name);
    const rows = new Map((await this.store.list<Snapshot>('snapshots')).filter((v) => v.value.instance === name).map((v) => [v.value.name, v.value]));
    for (const [snapName, s] of rows) {
      if (s.instanceId !== inst.id) {
        await this.store.delete('snapshots', key(name, snapName));
        rows.delete(snapName);
      }
    }
    let tags: InternalSnapshotInfo[];
    const qmp = this.registry.qmp(name);
    if ((inst.state === 'running' || inst.state === 'paused') && qmp) {
      await this.registry.owningRunState(name, () => settleJobs(qmp));
      // The job may have paused and resumed the guest: the row follows QEMU.
      const status = await queryRunState(qmp);
      const state = status.running ? 'running' : 'paused';
      inst = await this.registry.load(name);
      if (inst.state !== state) await this.registry.setState(inst, state);
      tags = await listLiveSnapshots(qmp);
      for (const t of tags) {
        if (!rows.has(t.name)) await deleteVmSnapshot(qmp, t.name);
      }
    } else if (inst.state === 'stopped' || inst.state === 'suspended' || inst.state === 'error') {
      const file = this.registry.rootDisk(inst);
      tags = await listDiskSnapshots(file);
      for (const t of tags) {
        if (rows.has(t.name)) continue;
        if (t.name === SUSPEND_TAG && inst.state === 'suspended') continue;
        await diskSnapshot('delete', file, t.name);
      }
      if (inst.state === 'suspended' && !tags.some((t) => t.name === SUSPEND_TAG)) {
        await this.registry.setState(inst, 'stopped', 'its suspended state was lost; the next start is a cold boot');
      }
    } else {
      return;
    }
    const tagNames = new Set(tags.map((t) => t.name));
    for (const snapName of rows.keys()) {
      if (!tagNames.has(snapName)) {
        await this.store.delete('snapshots', key(name, snapName));
        rows.delete(snapName);
      }
    }
    inst = await this.registry.load(name);
    if (inst.currentSnapshot && !rows.has(inst.currentSnapshot)) {
      inst.currentSnapshot = undefined;
      await this.registry.save(inst);
    }
  }

  private async dropRows(instance: string): Promise<void> {
    for (const v of await this.store.list<Snapshot>('snapshots')) {
      if (v.value.instance === instance) await this.store.delete('snapshots', v.key);
    }
  }

  // ---- helpers --------------------------------------------------------------------------

  private qmpOf(inst: Instance): QmpClient {
    const qmp = this.registry.qmp(inst.name);
    if (!qmp) {
      throw vmkitError('VMKIT_INVALID_STATE', `Instance "${inst.name}" has no QEMU process attached.`, {
        hint: `Start it with "vmkit start ${inst.name}".`,
      });
    }
    return qmp;
  }

  private async sizeOf(inst: Instance, name: string): Promise<number | undefined> {
    const qmp = this.registry.qmp(inst.name);
    const list = qmp && (inst.state === 'running' || inst.state === 'paused') ? await listLiveSnapshots(qmp) : await listDiskSnapshots(this.registry.rootDisk(inst));
    return list.find((s) => s.name === name)?.vmStateSize;
  }

  private badState(inst: Instance, verb: string) {
    return vmkitError('VMKIT_INVALID_STATE', `Cannot ${verb} instance "${inst.name}": it is ${inst.state}.`, {
      hint: 'Wait for the current operation to finish, or start/stop the instance first.',
      details: { state: inst.state },
    });
  }
}
