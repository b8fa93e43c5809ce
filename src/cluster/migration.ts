import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import net from 'node:net';
import { isAbsolute } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { asVmkitError, vmkitError, VmkitError } from '../errors.js';
import type { Instance, InstanceState } from '../domain/types.js';
import type { InstanceAccess, InstanceManager } from '../instances/manager.js';
import type { SnapshotManager } from '../snapshots/snapshots.js';
import type { ImageStore } from '../images/image-store.js';
import type { NetworkManager } from '../network/manager.js';
import type { Store } from '../store/store.js';
import type { EventBus } from '../operations/events.js';
import type { OperationContext } from '../operations/operations.js';
import type { QmpClient } from '../qemu/qmp.js';
import { compareVersions } from '../qemu/capabilities.js';
import { createEmptyVolume, rebaseUnsafe, sharedVolumeInfo } from '../storage/qemu-img.js';
import * as engine from '../qemu/migrate.js';
import type { ClusterManager } from './cluster.js';
import { splitAddress, type PeerClient } from './peer.js';
import { closePeerPort, openPeerPort, resetPeerPorts } from './firewall.js';
import { settleOwnership, stepLogger, takeOwnership, type StepLog } from './switchover.js';
import type { Blocker, HostRecord, MigrationMode, MigrationPlan } from './types.js';

export interface MigrateOptions {
  to: string;
  mode?: MigrationMode;
  /** QEMU's downtime limit (ms) and bandwidth cap (MiB/s) for live modes. */
  downtimeMs?: number;
  bandwidthMiBs?: number;
}

/** What the source sends the target when a migration begins. */
interface PrepareRequest {
  id: string;
  mode: MigrationMode;
  instance: Instance;
  snapshots: Array<{ key: string; value: unknown }>;
  source: string;
  /** The source host's cluster IP: the only address the migration ports accept. */
  sourceIp: string;
  sharedDisks: boolean;
  /** Per disk: its virtual size (a live copy creates an empty disk of that size). */
  disks: Array<{ name: string; virtualSize: number }>;
  /** Checksum of the instance's image here: the target must hold the very same image. */
  imageChecksum?: string;
  /** The source's runstate: the target resumes only a running guest. */
  wasRunning: boolean;
}

interface PrepareReply {
  migrationPort?: number;
  nbdPort?: number;
  targetIp: string;
}

/** A migration this host takes part in, persisted so a restarted daemon can finish or undo it. */
interface MigrationRecord {
  id: string;
  role: 'source' | 'target';
  instance: string;
  peer: string;
  mode: MigrationMode;
  phase: string;
  ports?: number[];
  wasRunning?: boolean;
  /** Target: the id of the incoming instance (so an abort never touches another of that name). */
  instanceId?: string;
  /** The instance's state on the source when it left (stopped or suspended for the copy modes). */
  sourceState?: InstanceState;
  startedAt: string;
}

const DEFAULT_DOWNTIME_MS = 50;
/** Memory a target keeps free beyond the guest's (QEMU's own overhead). */
const MEMORY_MARGIN_MIB = 64;

/**
 * Moving instances between cluster hosts. The source host drives: it checks, asks the target
 * to prepare (an incoming QEMU, or a row waiting for disk files), moves storage and memory,
 * and lets the target take ownership in etcd by compare-and-swap before the guest runs there.
 * Only then does the source let go. Any failure before that leaves the source running and
 * tells the target to remove what it prepared.
 */
export class MigrationService {
  private readonly active = new Map<string, { record: MigrationRecord; abort?: AbortController; watchdog?: NodeJS.Timeout }>();

  constructor(
    private readonly cluster: ClusterManager,
    private readonly instances: InstanceManager,
    private readonly access: InstanceAccess,
    private readonly snapshots: SnapshotManager,
    private readonly images: ImageStore,
    private readonly networks: NetworkManager | undefined,
    private readonly local: Store,
    private readonly events: EventBus,
    private readonly self: () => Promise<Omit<HostRecord, 'name' | 'address' | 'hostId' | 'updatedAt'>>,
  ) {}

  private myIp(): string {
    return splitAddress(this.cluster.address!)[0];
  }

  // ---- pre-flight ---------------------------------------------------------------------------

  /** Everything that would stop the migration, from both ends; moves nothing. */
  async plan(name: string, opts: MigrateOptions): Promise<MigrationPlan> {
    const inst = await this.access.load(name);
    const from = this.cluster.name!;
    const blockers: Blocker[] = [];
    const target = await this.cluster.host(opts.to).catch(() => undefined);
    if (!target) blockers.push({ check: 'host', message: `There is no cluster host "${opts.to}".` });
    else if (target.state !== 'alive') blockers.push({ check: 'host', message: `Host "${opts.to}" is dead (its lease expired).` });
    if (opts.to === from) blockers.push({ check: 'host', message: `"${name}" already runs on ${from}.` });
    const me = await this.self();
    const sharedDisks = inst.disks.every((d) => isAbsolute(d.file)) && !!me.sharedStorage && target?.sharedStorage?.id === me.sharedStorage.id && target.sharedStorage.path === me.sharedStorage.path;
    const running = inst.state === 'running' || inst.state === 'paused';
    const mode: MigrationMode = opts.mode ?? (running ? (sharedDisks ? 'live' : 'live-copy') : 'cold');
    if (!['running', 'paused', 'stopped', 'suspended'].includes(inst.state)) {
      blockers.push({ check: 'state', message: `"${name}" is ${inst.state}; only a running, paused, stopped or suspended instance moves.` });
    }
    if ((mode === 'live' || mode === 'live-copy') && !running) blockers.push({ check: 'state', message: `A ${mode} migration needs a running instance; "${name}" is ${inst.state} (use --mode cold).` });
    if (mode === 'suspend' && !(running || inst.state === 'suspended')) blockers.push({ check: 'state', message: `--mode suspend needs a running instance; "${name}" is ${inst.state}.` });
    if (mode === 'live' && !sharedDisks) {
      blockers.push({ check: 'storage', message: `The disks of "${name}" are not on storage ${opts.to} also sees; a live migration with shared storage is impossible (use --mode live-copy).` });
    }
    if (inst.linkedFrom && !sharedDisks) blockers.push({ check: 'storage', message: `"${name}" is a linked clone of "${inst.linkedFrom}"; its disk cannot leave this host without its base (use shared storage, or a full clone).` });
    const snaps = (await this.snapshots.list(name)).filter((s) => !s.name.startsWith('vmkit-'));
    if (mode === 'live-copy' && snaps.length > 0) {
      blockers.push({ check: 'snapshots', message: `"${name}" has snapshots (${snaps.map((s) => s.name).join(', ')}); a live storage copy carries only the current disk (use --mode cold or suspend, which keep them).` });
    }
    if (target && target.state === 'alive' && opts.to !== from) {
      if (compareVersions(target.qemuVersion, me.qemuVersion) < 0 && (mode === 'live' || mode === 'live-copy' || mode === 'suspend')) {
        blockers.push({ check: 'qemu-version', message: `QEMU on ${opts.to} is ${target.qemuVersion}, older than ${me.qemuVersion} here; QEMU does not migrate state to an older version.` });
      }
      const machine = inst.machine ?? 'pc';
      if (!target.machines.includes(machine)) blockers.push({ check: 'machine-type', message: `QEMU on ${opts.to} has no machine type "${machine}" (the instance's).` });
      if (mode === 'live' || mode === 'live-copy') {
        if (target.accel !== me.accel) blockers.push({ check: 'accelerator', message: `${opts.to} runs guests with ${target.accel}, this host with ${me.accel}: a running guest cannot change accelerator.` });
        if (target.cpuModel !== me.cpuModel) blockers.push({ check: 'cpu-model', message: `The guest CPU model differs (${me.cpuModel} here, ${target.cpuModel} on ${opts.to}).` });
      }
      // The target's own view: networks, addresses, ports, image, memory.
      try {
        const peer = await this.cluster.peer(opts.to);
        const imageChecksum = await this.images.checksum(inst.image).catch(() => undefined);
        const theirs = await peer.request<Blocker[]>('POST', '/1.0/internal/migrations/check', { instance: inst, mode, sharedDisks, source: from, imageChecksum });
        blockers.push(...theirs);
      } catch (err) {
        blockers.push({ check: 'host', message: asVmkitError(err).message });
      }
    }
    return { instance: name, from, to: opts.to, mode, sharedStorage: sharedDisks, blockers, ok: blockers.length === 0 };
  }

  /** Target side of the pre-flight: what this host lacks to take the instance. */
  async checkIncoming(req: { instance: Instance; mode: MigrationMode; sharedDisks: boolean; source: string; imageChecksum?: string }): Promise<Blocker[]> {
    const inst = req.instance;
    const blockers: Blocker[] = [];
    if (await this.instances.has(inst.name)) blockers.push({ check: 'name', message: `${this.cluster.name} already has an instance "${inst.name}".` });
    const me = await this.self();
    const room = Math.min(me.memoryFreeMiB, me.memoryTotalMiB - me.memoryAssignedMiB) - MEMORY_MARGIN_MIB;
    if (room < inst.memoryMiB) blockers.push({ check: 'memory', message: `${this.cluster.name} has ${Math.max(0, room)} MiB free for guests; "${inst.name}" needs ${inst.memoryMiB} MiB.` });
    if (inst.cpus > me.cpus) blockers.push({ check: 'cpus', message: `${this.cluster.name} has ${me.cpus} CPUs; "${inst.name}" has ${inst.cpus} vCPUs.` });
    const image = await this.images.get(inst.image).catch(() => undefined);
    if (!image) blockers.push({ check: 'image', message: `${this.cluster.name} has no image "${inst.image}" (its kernel and firmware files are needed to run the guest).` });
    else if (req.imageChecksum && (await this.images.checksum(image.name)) !== req.imageChecksum) {
      blockers.push({ check: 'image', message: `Image "${inst.image}" on ${this.cluster.name} differs from the source's (checksum); the disk is backed by it.` });
    }
    const locals = (await this.instances.list()).filter((i) => i.name !== inst.name);
    for (const nic of inst.nics) {
      if (nic.network === 'user') continue;
      const n = await this.networks?.load(nic.network).catch(() => undefined);
      if (!n) {
        blockers.push({ check: 'network', message: `${this.cluster.name} has no network "${nic.network}" (NIC ${nic.id}).` });
        continue;
      }
      if (nic.ipv4 && locals.some((o) => o.nics.some((x) => x.network === nic.network && x.ipv4 === nic.ipv4))) {
        blockers.push({ check: 'address', message: `${nic.ipv4} is already used on network "${nic.network}" of ${this.cluster.name}.` });
      }
    }
    for (const f of inst.forwards) {
      const clash = locals.find((o) => o.forwards.some((x) => x.hostPort === f.hostPort && x.proto === f.proto));
      if (clash) blockers.push({ check: 'port', message: `Host port ${f.proto}/${f.hostPort} is already forwarded to "${clash.name}" on ${this.cluster.name}.` });
    }
    if (req.mode === 'live' && !req.sharedDisks) blockers.push({ check: 'storage', message: 'No shared storage between the hosts.' });
    return blockers;
  }

  // ---- source side --------------------------------------------------------------------------

  async migrate(name: string, opts: MigrateOptions, ctx?: OperationContext): Promise<{ instance: string; from: string; to: string; mode: MigrationMode; totalTimeMs: number; downtimeMs?: number; transferredBytes?: number }> {
    const started = Date.now();
    ctx?.progress({ phase: 'checking', percent: 1 });
    const plan = await this.plan(name, opts);
    if (!plan.ok) throw blocked(plan);
    const peer = await this.cluster.peer(opts.to);
    const mode = plan.mode;
    // Cold and suspend stop the guest first (with the public verbs: they take the lock).
    const before = await this.instances.get(name);
    const wasRunning = before.state === 'running';
    if (mode === 'cold' && (before.state === 'running' || before.state === 'paused')) {
      ctx?.progress({ phase: 'stopping', percent: 5 });
      await this.instances.stop(name, { timeout: 30 }, ctx);
    }
    if (mode === 'suspend' && (before.state === 'running' || before.state === 'paused')) {
      ctx?.progress({ phase: 'suspending (saving memory to disk)', percent: 5 });
      await this.snapshots.suspend(name, ctx);
    }
    try {
      return await this.migrateLocked(name, opts, plan, peer, started, wasRunning, ctx);
    } catch (err) {
      // A cold or suspend move that failed leaves the guest stopped or suspended here: it was
      // running, so it runs again (start resumes a suspended one) — unless it moved after all.
      const e = asVmkitError(err);
      if (wasRunning && (mode === 'cold' || mode === 'suspend') && !e.details?.moved) {
        await this.instances.start(name).catch(() => undefined);
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
    ctx?: OperationContext,
  ): Promise<{ instance: string; from: string; to: string; mode: MigrationMode; totalTimeMs: number; downtimeMs?: number; transferredBytes?: number }> {
    const mode = plan.mode;
    return this.access.withLock(name, async () => {
      const inst = await this.access.load(name);
      const owner = await this.cluster.owner(name);
      if (!owner || owner.record.host !== this.cluster.name) {
        throw vmkitError('VMKIT_INVALID_STATE', `This host does not own "${name}" in the cluster store.`, { hint: '"vmkit list" shows where it runs.' });
      }
      const id = randomUUID();
      const record: MigrationRecord = { id, role: 'source', instance: name, peer: opts.to, mode, phase: 'prepare', wasRunning, startedAt: new Date().toISOString() };
      const abort = new AbortController();
      const onCancel = () => abort.abort();
      ctx?.signal.addEventListener('abort', onCancel);
      this.active.set(id, { record, abort });
      await this.local.put('migrations', id, record);
      const live = mode === 'live' || mode === 'live-copy';
      const prevState = inst.state;
      const disks = [];
      for (const d of inst.disks) disks.push({ name: d.name, virtualSize: (await sharedVolumeInfo(this.access.diskPath(inst, d))).virtualSize });
      const imageChecksum = await this.images.checksum(inst.image).catch(() => undefined);
      const snapshots = (await this.local.list('snapshots')).filter((s) => s.key.startsWith(`${name}/`)).map((s) => ({ key: s.key, value: s.value }));
      let prepared = false;
      let switched = false;
      let withdrawn = false;
      let undecided = false;
      const log = stepLogger(id, 'source', name);
      let jobs: engine.MirrorJob[] = [];
      const events = (action: string, metadata?: unknown) => this.events.lifecycle(action, name, { id, to: opts.to, mode, ...(metadata as object) });
      events('instance-migrating');
      try {
        if (live) await this.access.setState(inst, 'migrating');
        ctx?.progress({ phase: `preparing ${opts.to}`, percent: 10 });
        const req: PrepareRequest = { id, mode, instance: inst, snapshots, source: this.cluster.name!, sourceIp: this.myIp(), sharedDisks: plan.sharedStorage, disks, imageChecksum, wasRunning };
        const prep = await peer.request<PrepareReply>('POST', '/1.0/internal/migrations', req, 60_000);
        prepared = true;
        this.startPeerWatch(id, peer, abort);
        let result: { totalTimeMs?: number; downtimeMs?: number; transferredBytes?: number } = {};
        if (live) {
          const qmp = this.qmpOf(name);
          await this.access.owningRunState(name, async () => {
            if (mode === 'live-copy') {
              ctx?.progress({ phase: 'copying storage', percent: 15 });
              record.phase = 'copying storage';
              jobs = await engine.startMirror(qmp, {
                host: prep.targetIp,
                port: prep.nbdPort!,
                nodes: inst.disks.map((d) => ({ node: d.name, exportName: d.name })),
                signal: abort.signal,
                onProgress: (done, total) => ctx?.progress({ phase: 'copying storage', percent: 15 + Math.round((done / Math.max(1, total)) * 40), bytesDone: done, bytesTotal: total }),
              });
            }
            record.phase = 'migrating memory';
            await engine.setMigrationParameters(qmp, { downtimeLimitMs: opts.downtimeMs ?? DEFAULT_DOWNTIME_MS, maxBandwidthBytes: opts.bandwidthMiBs ? opts.bandwidthMiBs * 1024 * 1024 : undefined });
            const base = mode === 'live-copy' ? 55 : 15;
            result = await engine.migrate(qmp, {
              host: prep.targetIp,
              port: prep.migrationPort!,
              signal: abort.signal,
              onProgress: (p) =>
                ctx?.progress({
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
          await this.access
            .networking()
            ?.withdraw(inst, log)
            .catch((err: Error) => log(`withdrawing floating addresses failed (the target claims them anyway): ${err.message}`));
        } else {
          record.phase = 'copying storage';
          if (!plan.sharedStorage) {
            for (const d of inst.disks) {
              const file = this.access.diskPath(inst, d);
              await peer.putFile(`/1.0/internal/migrations/${id}/disks/${d.name}`, file, (done, total) =>
                ctx?.progress({ phase: `copying disk ${d.name}`, percent: 10 + Math.round((done / Math.max(1, total)) * 80), bytesDone: done, bytesTotal: total }), abort.signal);
            }
          }
        }
        if (abort.signal.aborted) throw cancelled();
        record.phase = 'switching over';
        ctx?.progress({ phase: 'switching over', percent: 96 });
        this.stopPeerWatch(id);
        log('asking the target to take over');
        try {
          await peer.request('POST', `/1.0/internal/migrations/${id}/finish`, { ownerRevision: owner.revision, start: !live && wasRunning }, 60_000);
        } catch (err) {
          // The answer may be lost after the target took over. etcd decides, and a fence
          // makes the decision final: the guest never runs on both hosts.
          log(`the target's answer: ${asVmkitError(err).message}; settling ownership in etcd`);
          const holder = await settleOwnership(this.cluster, name, opts.to, owner.revision, log);
          if (holder === 'unknown') {
            undecided = true;
            throw vmkitError('VMKIT_MIGRATION_FAILED', `Migration of "${name}" to ${opts.to}: the cluster store cannot say which host owns it now, so neither copy is resumed yet.`, {
              hint: `The guest stays paused until etcd answers; this host then resumes it or lets it go. Check etcd, then "vmkit list".`,
              details: { cause: asVmkitError(err).code },
            });
          }
          if (holder === 'source') throw err;
        }
        log('the target runs the guest');
        switched = true;
        // The target runs the guest now: let go here.
        record.phase = 'releasing source';
        const fresh = await this.access.load(name);
        await this.access.release(fresh);
        for (const s of snapshots) await this.local.delete('snapshots', s.key).catch(() => undefined);
        log('released here');
        const totalTimeMs = Date.now() - started;
        ctx?.progress({ phase: 'done', percent: 100, downtimeMs: result.downtimeMs });
        events('instance-migrated', { totalTimeMs, downtimeMs: result.downtimeMs });
        return { instance: name, from: this.cluster.name!, to: opts.to, mode, totalTimeMs, downtimeMs: result.downtimeMs, transferredBytes: result.transferredBytes };
      } catch (err) {
        if (switched) {
          // Nothing to undo: the instance lives on the target; only the clean-up here failed.
          throw vmkitError('VMKIT_MIGRATION_FAILED', `"${name}" now runs on ${opts.to}, but this host could not let go of its copy: ${asVmkitError(err).message}`, {
            hint: `Check "vmkit list"; delete the leftover folder of "${name}" on ${this.cluster.name} if one remains.`,
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
        const byUser = ctx?.signal.aborted || abort.signal.reason === 'user';
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
        ctx?.signal.removeEventListener('abort', onCancel);
        this.stopPeerWatch(id);
        this.active.delete(id);
        // An undecided switch-over keeps its record: a restarted daemon settles it (recover).
        if (!undecided) await this.local.delete('migrations', id).catch((err: Error) => log(`removing the migration record failed: ${err.message}`));
      }
    });
  }

  private qmpOf(name: string): QmpClient {
    const q = this.access.qmp(name);
    if (!q) throw vmkitError('VMKIT_INVALID_STATE', `"${name}" has no QEMU attached.`, { hint: 'Start it first.' });
    return q;
  }

  /** The source keeps (or gets back) the guest: mirrors stopped, QEMU resumed, state restored. */
  private async rollbackSource(name: string, prevState: InstanceState, jobs: engine.MirrorJob[], live: boolean, withdrawn = false, log: StepLog = () => undefined): Promise<void> {
    const qmp = this.access.qmp(name);
    if (qmp && live) {
      await engine.cancelMigration(qmp).catch((err: Error) => log(`migrate_cancel: ${err.message}`));
      if (jobs.length > 0) await engine.abortMirror(qmp, jobs).catch((err: Error) => log(`aborting the storage mirror: ${err.message}`));
      const status = await qmp.queryStatus().catch(() => undefined);
      // After a completed memory copy the source sits in `postmigrate`: `cont` takes the disks back.
      if (prevState === 'running' && status && status.status !== 'running') await qmp.cont().catch((err: Error) => log(`resuming the source: ${err.message}`));
      log('the guest runs on here (rolled back)');
    }
    const inst = await this.access.load(name).catch(() => undefined);
    if (inst && inst.state !== prevState && live) await this.access.setState(inst, prevState);
    if (inst && withdrawn) await this.access.networking()?.announce(inst, log).catch((err: Error) => log(`claiming floating addresses back: ${err.message}`));
  }

  /** An undecided switch-over: keep asking etcd, then resume here or let go. */
  private resolveLater(name: string, to: string, revision: number, prevState: InstanceState, withdrawn: boolean, peer: PeerClient, id: string, log: StepLog): void {
    void (async () => {
      for (;;) {
        const holder = await settleOwnership(this.cluster, name, to, revision, log, { attempts: 1 });
        if (holder === 'unknown') {
          await new Promise((r) => setTimeout(r, 2_000));
          continue;
        }
        await this.access.withLock(name, async () => {
          if (holder === 'target') {
            const inst = await this.access.load(name).catch(() => undefined);
            if (inst) await this.access.release(inst);
          } else {
            await this.rollbackSource(name, prevState, [], true, withdrawn, log);
            this.abortTarget(peer, id);
          }
        });
        await this.local.delete('migrations', id).catch((err: Error) => log(`removing the migration record failed: ${err.message}`));
        log(`settled: the guest runs on ${holder === 'target' ? to : this.cluster.name}`);
        return;
      }
    })().catch((err: Error) => log(`settling the switch-over failed: ${err.message}`));
  }

  /** Tells the target to remove what it prepared, retrying in the background (the link may be down). */
  private abortTarget(peer: PeerClient, id: string): void {
    void (async () => {
      for (let i = 0; i < 30; i++) {
        try {
          await peer.request('DELETE', `/1.0/internal/migrations/${id}`, undefined, 5_000);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 2_000));
        }
      }
    })();
  }

  /** While memory moves, the source checks that the target's daemon still answers. */
  private startPeerWatch(id: string, peer: PeerClient, abort: AbortController): void {
    const entry = this.active.get(id);
    if (!entry) return;
    let lastOk = Date.now();
    entry.watchdog = setInterval(() => {
      void peer
        .request('GET', `/1.0/internal/migrations/${id}`, undefined, 2_000)
        .then(() => (lastOk = Date.now()))
        .catch(() => {
          if (Date.now() - lastOk > peerTimeoutMs()) abort.abort();
        });
    }, 1_000);
  }

  private stopPeerWatch(id: string): void {
    const entry = this.active.get(id);
    if (entry?.watchdog) clearInterval(entry.watchdog);
    if (entry) entry.watchdog = undefined;
  }

  /** `vmkit migrate NAME --cancel`: aborts the running migration of an instance. */
  cancel(name: string): { id: string } {
    for (const [id, e] of this.active) {
      if (e.record.role === 'source' && e.record.instance === name) {
        e.abort?.abort('user');
        return { id };
      }
    }
    throw vmkitError('VMKIT_NOT_FOUND', `No migration of "${name}" is running on this host.`, { hint: '"vmkit operation list" shows the operations.' });
  }

  /** GET /1.0/internal/migrations/:id on either side. */
  status(id: string): { id: string; role: string; phase: string } {
    const e = this.active.get(id);
    if (!e) throw vmkitError('VMKIT_NOT_FOUND', `No migration ${id} here.`, { hint: 'It ended.' });
    return { id, role: e.record.role, phase: e.record.phase };
  }

  // ---- target side --------------------------------------------------------------------------

  async prepareIncoming(req: PrepareRequest): Promise<PrepareReply> {
    const blockers = await this.checkIncoming({ instance: req.instance, mode: req.mode, sharedDisks: req.sharedDisks, source: req.source, imageChecksum: req.imageChecksum });
    if (blockers.length > 0) throw blocked({ instance: req.instance.name, from: req.source, to: this.cluster.name!, mode: req.mode, sharedStorage: req.sharedDisks, blockers, ok: false });
    const owner = await this.cluster.owner(req.instance.name);
    if (owner?.record.host !== req.source) {
      throw vmkitError('VMKIT_INVALID_STATE', `"${req.instance.name}" is not owned by ${req.source} in the cluster store.`, { hint: 'Retry from the owning host.' });
    }
    const live = req.mode === 'live' || req.mode === 'live-copy';
    const record: MigrationRecord = { id: req.id, role: 'target', instance: req.instance.name, peer: req.source, mode: req.mode, phase: 'prepare', ports: [], wasRunning: req.wasRunning, sourceState: req.instance.state, instanceId: req.instance.id, startedAt: new Date().toISOString() };
    await this.local.put('migrations', req.id, record);
    this.active.set(req.id, { record });
    const inst: Instance = {
      ...req.instance,
      id: req.instance.id,
      host: this.cluster.name!,
      state: live ? 'stopped' : 'migrating',
      stateReason: undefined,
      // Local disks get local names; disks on shared storage keep their (shared) path.
      disks: req.instance.disks.map((d) => (req.sharedDisks ? d : { ...d, file: isAbsolute(d.file) ? `${d.name}.${d.format}` : d.file })),
    };
    const ip = this.myIp();
    try {
      await mkdir(this.access.instanceDir(inst), { recursive: true });
      await this.access.insert(inst);
      for (const s of req.snapshots) await this.local.put('snapshots', s.key, s.value);
      if (!live) {
        record.phase = 'receiving disks';
        this.startSourceWatch(req.id, req.source);
        return { targetIp: ip };
      }
      if (!req.sharedDisks) {
        for (const d of inst.disks) {
          const size = req.disks.find((x) => x.name === d.name)!.virtualSize;
          await createEmptyVolume(this.access.diskPath(inst, d), size);
        }
      }
      const migrationPort = await freePort(ip);
      await openPeerPort(migrationPort, req.sourceIp);
      record.ports!.push(migrationPort);
      let nbdPort: number | undefined;
      if (!req.sharedDisks) {
        nbdPort = await freePort(ip);
        await openPeerPort(nbdPort, req.sourceIp);
        record.ports!.push(nbdPort);
      }
      await this.local.put('migrations', req.id, record);
      await this.access.withLock(inst.name, () => this.access.start(inst.name, undefined, { extraArgs: engine.buildIncomingArgs(), finalState: 'migrating' }));
      const qmp = this.qmpOf(inst.name);
      if (nbdPort) await engine.startNbdExport(qmp, { host: ip, port: nbdPort, nodes: inst.disks.map((d) => d.name) });
      await engine.startIncoming(qmp, { host: ip, port: migrationPort });
      record.phase = 'receiving memory';
      this.startSourceWatch(req.id, req.source);
      this.events.lifecycle('instance-migrating-in', inst.name, { id: req.id, from: req.source, mode: req.mode });
      return { migrationPort, nbdPort, targetIp: ip };
    } catch (err) {
      await this.abortIncoming(req.id).catch(() => undefined);
      // A failure before the row was written leaves only the folder: it goes too.
      if (!(await this.instances.has(inst.name))) await rm(this.access.instanceDir(inst), { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** PUT /1.0/internal/migrations/:id/disks/:disk (cold and suspend modes). */
  async receiveDisk(id: string, disk: string, body: Readable): Promise<void> {
    const e = this.active.get(id);
    if (!e || e.record.role !== 'target') throw vmkitError('VMKIT_NOT_FOUND', `No incoming migration ${id} here.`, { hint: 'Start the migration from the source host.' });
    const inst = await this.access.load(e.record.instance);
    const d = inst.disks.find((x) => x.name === disk);
    if (!d || isAbsolute(d.file)) throw vmkitError('VMKIT_NOT_FOUND', `Instance "${inst.name}" has no local disk "${disk}".`, { hint: 'Disks on shared storage are not copied.' });
    const file = this.access.diskPath(inst, d);
    await pipeline(body, createWriteStream(`${file}.part`, { mode: 0o640 }));
    await rename(`${file}.part`, file);
  }

  /** The source is done: take ownership (compare-and-swap), then run the guest here. */
  async finishIncoming(id: string, req: { ownerRevision: number; start?: boolean }): Promise<{ instance: string; state: InstanceState }> {
    const e = this.active.get(id);
    if (!e || e.record.role !== 'target') throw vmkitError('VMKIT_NOT_FOUND', `No incoming migration ${id} here.`, { hint: 'It was aborted; start the migration again.' });
    this.stopSourceWatch(id);
    const name = e.record.instance;
    const live = e.record.mode === 'live' || e.record.mode === 'live-copy';
    const log = stepLogger(id, 'target', name);
    return this.access.withLock(name, async () => {
      const inst = await this.access.load(name);
      if (!live) await this.rebaseReceived(inst);
      const qmp = live ? this.qmpOf(name) : undefined;
      log('asked to take over');
      if (qmp) {
        // The source reports completion a moment before the target has loaded the last state.
        await engine.awaitIncomingComplete(qmp);
        log('incoming state loaded');
        if (e.record.mode === 'live-copy') await engine.stopNbdExport(qmp).catch((err: Error) => log(`stopping the NBD export: ${err.message}`));
      }
      const moved = await takeOwnership(this.cluster, name, e.record.peer, req.ownerRevision, { image: inst.image, cpus: inst.cpus, memoryMiB: inst.memoryMiB }, log);
      if (!moved) throw vmkitError('VMKIT_MIGRATION_FAILED', `Ownership of "${name}" changed while it moved; this host did not take it.`, { hint: 'Check "vmkit list"; retry the migration.' });
      log('owner in etcd');
      e.record.phase = 'running';
      await this.local.put('migrations', id, e.record);
      let state: InstanceState;
      if (live) {
        // Floating addresses first (the source gave them up): packets that arrive before the
        // guest runs wait in its tap queue instead of finding no host.
        await this.access.networking()?.announce(inst, log).catch((err: Error) => log(`claiming floating addresses: ${err.message}`));
        if (e.record.wasRunning !== false) await engine.resumeTarget(qmp!);
        log('guest resumed');
        state = e.record.wasRunning !== false ? 'running' : 'paused';
        await this.access.adopt(name, state);
      } else {
        const wasSuspended = e.record.sourceState === 'suspended';
        await this.access.setState(inst, wasSuspended ? 'suspended' : 'stopped');
        state = wasSuspended ? 'suspended' : 'stopped';
      }
      await this.closePorts(e.record);
      this.active.delete(id);
      await this.local.delete('migrations', id);
      this.events.lifecycle('instance-migrated-in', name, { id, from: e.record.peer, mode: e.record.mode });
      return { instance: name, state };
    }).then(async (r) => {
      if (!live && req.start) {
        const v = await this.instances.start(name);
        return { instance: name, state: v.state };
      }
      return r;
    });
  }

  /** A copied overlay still names the source's image file as backing: point it at ours. */
  private async rebaseReceived(inst: Instance): Promise<void> {
    for (const d of inst.disks) {
      if (isAbsolute(d.file)) continue;
      const file = this.access.diskPath(inst, d);
      const info = await sharedVolumeInfo(file);
      if (!info.backing) continue;
      // The pre-flight proved this host's image is the very same (checksum).
      const image = await this.images.get(inst.image);
      await rebaseUnsafe(file, this.images.file(image, image.disks[0]!.file), image.disks[0]!.format);
    }
  }

  /** DELETE /1.0/internal/migrations/:id: the target removes everything it prepared. */
  async abortIncoming(id: string): Promise<void> {
    const rec = this.active.get(id)?.record ?? (await this.local.get<MigrationRecord>('migrations', id))?.value;
    if (!rec || rec.role !== 'target') return;
    // Unknown owner (etcd not answering): this host may have taken the guest over, so nothing
    // is torn down (this throws); the watch, the source's retries or a restart ask again.
    const owner = await this.cluster.owner(rec.instance);
    this.stopSourceWatch(id);
    if (owner?.record.host === this.cluster.name) {
      // Too late to undo: this host took the instance over.
      return;
    }
    await this.access.withLock(rec.instance, async () => {
      const inst = await this.access.load(rec.instance).catch(() => undefined);
      if (inst && (!rec.instanceId || inst.id === rec.instanceId)) {
        const snapKeys = (await this.local.list('snapshots')).filter((s) => s.key.startsWith(`${rec.instance}/`)).map((s) => s.key);
        await this.access.release(inst);
        for (const k of snapKeys) await this.local.delete('snapshots', k).catch(() => undefined);
      }
    });
    await this.closePorts(rec);
    this.active.delete(id);
    await this.local.delete('migrations', id);
    this.events.lifecycle('instance-migration-aborted', rec.instance, { id });
  }

  private async closePorts(rec: MigrationRecord): Promise<void> {
    for (const p of rec.ports ?? []) await closePeerPort(p).catch(() => undefined);
    rec.ports = [];
  }

  /** The target checks that the source still drives the migration; if not, it cleans up. */
  private startSourceWatch(id: string, source: string): void {
    const entry = this.active.get(id);
    if (!entry) return;
    let lastOk = Date.now();
    entry.watchdog = setInterval(() => {
      void this.cluster
        .peer(source)
        .then((p) => p.request('GET', `/1.0/internal/migrations/${id}`, undefined, 2_000))
        .then(() => (lastOk = Date.now()))
        .catch((err: unknown) => {
          const gone = asVmkitError(err).code === 'VMKIT_NOT_FOUND';
          if (gone || Date.now() - lastOk > peerTimeoutMs() * 2) void this.abortIncoming(id).catch(() => undefined);
        });
    }, 1_000);
  }

  private stopSourceWatch(id: string): void {
    const entry = this.active.get(id);
    if (entry?.watchdog) clearInterval(entry.watchdog);
    if (entry) entry.watchdog = undefined;
  }

  // ---- recovery -------------------------------------------------------------------------------

  /**
   * After a daemon restart: every migration this host took part in is finished or undone,
   * decided by who owns the instance in etcd (the one fact both sides agree on).
   */
  async recover(): Promise<void> {
    await resetPeerPorts();
    const undecided = new Set<string>();
    for (const { value: rec } of await this.local.list<MigrationRecord>('migrations')) {
      const owner = await this.cluster.owner(rec.instance).catch(() => undefined);
      if (owner === undefined && this.cluster.joined) {
        // etcd unreachable: decide later (keep the record, leave the guest as it is).
        if (!(await this.clusterReachable())) {
          undecided.add(rec.instance);
          continue;
        }
      }
      const me = this.cluster.name;
      if (rec.role === 'source') {
        const inst = await this.access.load(rec.instance).catch(() => undefined);
        const log = stepLogger(rec.id, 'source', rec.instance);
        // Still the owner: fence the target out before the guest may run here again (its
        // "take over" may still be on its way).
        const holder = owner && owner.record.host === me ? await settleOwnership(this.cluster, rec.instance, rec.peer, owner.revision, log, { attempts: 3 }) : undefined;
        if (holder === 'unknown') {
          // etcd does not answer: the guest stays paused; the next restart decides.
          undecided.add(rec.instance);
          continue;
        }
        if ((owner?.record.host && owner.record.host !== me) || holder === 'target') {
          // The target took over before this daemon died: let go of the local copy.
          if (inst) await this.access.withLock(rec.instance, () => this.access.release(inst));
        } else if (inst) {
          await this.access.withLock(rec.instance, async () => {
            const qmp = this.access.qmp(rec.instance);
            if (qmp) {
              await engine.cancelMigration(qmp).catch(() => undefined);
              const st = await qmp.queryStatus().catch(() => undefined);
              if (st && st.status !== 'running' && rec.wasRunning !== false) await qmp.cont().catch(() => undefined);
              await this.access.adopt(rec.instance, rec.wasRunning === false ? 'paused' : 'running');
            } else if (inst.state === 'migrating') {
              await this.access.setState(inst, 'stopped', 'QEMU ended during a migration');
            }
          });
          try {
            const peer = await this.cluster.peer(rec.peer);
            this.abortTarget(peer, rec.id);
          } catch {
            /* the target cleans up by itself */
          }
        }
        await this.local.delete('migrations', rec.id);
      } else {
        if (owner?.record.host === me) {
          // Ownership moved here: make sure the guest runs.
          const qmp = this.access.qmp(rec.instance);
          if (qmp) {
            const st = await qmp.queryStatus().catch(() => undefined);
            if (st && st.status !== 'running' && rec.wasRunning !== false) await qmp.cont().catch(() => undefined);
            await this.access.adopt(rec.instance, rec.wasRunning === false ? 'paused' : 'running');
          }
          else {
            const inst = await this.access.load(rec.instance).catch(() => undefined);
            if (inst?.state === 'migrating') await this.access.setState(inst, rec.sourceState === 'suspended' ? 'suspended' : 'stopped');
          }
          await this.closePorts(rec);
          await this.local.delete('migrations', rec.id);
        } else {
          this.active.set(rec.id, { record: rec });
          await this.abortIncoming(rec.id).catch((err: Error) => console.error(`vmkitd: migration ${rec.id.slice(0, 8)}: undoing the incoming ${rec.instance} waits for etcd: ${err.message}`));
        }
      }
    }
    // A row left `migrating` with no migration record: give it back its plain state.
    for (const v of await this.instances.list()) {
      if (v.state !== 'migrating' || undecided.has(v.name)) continue;
      await this.access.withLock(v.name, async () => {
        const qmp = this.access.qmp(v.name);
        if (qmp) {
          const st = await qmp.queryStatus().catch(() => undefined);
          if (st && st.status !== 'running' && st.status !== 'paused') await qmp.cont().catch(() => undefined);
          await this.access.adopt(v.name, st?.status === 'paused' ? 'paused' : 'running');
        } else {
          await this.access.setState(await this.access.load(v.name), 'stopped', 'found mid-migration after a restart');
        }
      });
    }
  }

  private async clusterReachable(): Promise<boolean> {
    try {
      await this.cluster.listHosts();
      return true;
    } catch {
      return false;
    }
  }
}

function blocked(plan: MigrationPlan): VmkitError {
  return vmkitError('VMKIT_MIGRATION_BLOCKED', `"${plan.instance}" cannot move to ${plan.to} (${plan.mode}): ${plan.blockers.map((b) => b.message).join(' ')}`, {
    hint: `"vmkit migrate ${plan.instance} --to ${plan.to} --check" lists the blockers.`,
    details: { blockers: plan.blockers, mode: plan.mode },
  });
}

function cancelled(): VmkitError {
  return vmkitError('VMKIT_OPERATION_CANCELLED', 'The migration was cancelled; the instance keeps running on its host.', { hint: 'Start it again when ready.' });
}

/** How long a silent peer is tolerated during a migration (ms). */
function peerTimeoutMs(): number {
  const n = Number(process.env.VMKIT_MIGRATION_PEER_TIMEOUT_MS ?? '');
  return Number.isFinite(n) && n > 0 ? n : 5_000;
}

/** A free TCP port on an address (bound and released: QEMU takes it right after). */
async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

