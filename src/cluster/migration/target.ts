import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { asVmkitError, vmkitError } from '../../errors.js';
import type { Instance, InstanceState } from '../../domain/types.js';
import * as engine from '../../qemu/migrate.js';
import { createEmptyVolume, rebaseUnsafe, sharedVolumeInfo } from '../../storage/qemu-img.js';
import { unpackNvram } from '../../qemu/firmware.js';
import { Revert } from '../../util/revert.js';
import { confinePath, isSafeSegment } from '../../util/confine.js';
import { validateName } from '../../domain/names.js';
import { closePeerPort, openPeerPort } from '../firewall.js';
import { stepLogger, takeOwnership } from '../switchover.js';
import { freePort, type MigrationContext } from './context.js';
import { checkIncoming } from './plan.js';
import { blocked, isLive, peerTimeoutMs, RECORDS, type FinishRequest, type MigrationRecord, type PrepareReply, type PrepareRequest } from './protocol.js';

/**
 * The target host follows the source: it prepares (an incoming QEMU, or a row waiting for
 * disk files), takes ownership in etcd when told to finish, and removes everything it
 * prepared when told to abort — or by itself when the source stops driving.
 */
export class MigrationTarget {
  constructor(private readonly ctx: MigrationContext) {}

  async prepareIncoming(req: PrepareRequest): Promise<PrepareReply> {
    const { cluster, registry, instances, lifecycle, local } = this.ctx;
    // Before anything is created: every path this request will make stays in this host's folders.
    await this.checkPaths(req);
    const blockers = await checkIncoming(this.ctx, { instance: req.instance, mode: req.mode, sharedDisks: req.sharedDisks, source: req.source, imageChecksum: req.imageChecksum });
    if (blockers.length > 0)
      throw blocked({ instance: req.instance.name, from: req.source, to: cluster.name!, mode: req.mode, sharedStorage: req.sharedDisks, blockers, ok: false });
    const owner = await cluster.owner(req.instance.name);
    if (owner?.record.host !== req.source) {
      throw vmkitError('VMKIT_INVALID_STATE', `"${req.instance.name}" is not owned by ${req.source} in the cluster store.`, { hint: 'Retry from the owning host.' });
    }
    const name = req.instance.name;
    const live = isLive(req.mode);
    const record: MigrationRecord = {
      id: req.id,
      role: 'target',
      instance: name,
      peer: req.source,
      mode: req.mode,
      phase: 'prepare',
      ports: [],
      wasRunning: req.wasRunning,
      sourceState: req.instance.state,
      instanceId: req.instance.id,
      startedAt: new Date().toISOString(),
    };
    await local.put(RECORDS, req.id, record);
    this.ctx.active.set(req.id, { record });
    const inst: Instance = {
      ...req.instance,
      id: req.instance.id,
      host: cluster.name!,
      state: live ? 'stopped' : 'migrating',
      stateReason: undefined,
      // Local disks get local names; disks on shared storage keep their (shared) path.
      disks: req.instance.disks.map((d) => (req.sharedDisks ? d : { ...d, file: isAbsolute(d.file) ? `${d.name}.${d.format}` : d.file })),
    };
    const ip = this.ctx.myIp();
    const log = stepLogger(req.id, 'target', name);
    const undo = new Revert(log);
    try {
      const dir = registry.instanceDir(inst);
      await mkdir(dir, { recursive: true });
      undo.add('the instance folder', async () => {
        // A row of that name (another instance's, or ours when its release failed) keeps it.
        if (!(await this.ctx.instances.has(name))) await rm(dir, { recursive: true, force: true });
      });
      if (req.nvram) await unpackNvram(dir, req.nvram);
      await registry.insert(inst);
      // Releasing the row also ends the incoming QEMU started below.
      undo.add(`the row of "${name}"`, () =>
        registry.withLock(name, async () => {
          // Already gone: nothing to settle.
          const cur = await registry.load(name).catch(() => undefined);
          if (cur && cur.id === inst.id) await instances.release(cur);
        }),
      );
      for (const s of req.snapshots) {
        await local.put('snapshots', s.key, s.value);
        undo.add(`snapshot row ${s.key}`, () => local.delete('snapshots', s.key));
      }
      if (!live) {
        record.phase = 'receiving disks';
        this.startSourceWatch(req.id, req.source, undo);
        undo.success();
        return { targetIp: ip };
      }
      if (!req.sharedDisks) {
        for (const d of inst.disks) {
          const size = req.disks.find((x) => x.name === d.name)!.virtualSize;
          await createEmptyVolume(registry.diskPath(inst, d), size);
        }
      }
      const migrationPort = await this.openPort(record, ip, req.sourceIp, undo);
      const nbdPort = req.sharedDisks ? undefined : await this.openPort(record, ip, req.sourceIp, undo);
      await local.put(RECORDS, req.id, record);
      await registry.withLock(name, () => lifecycle.startLocked(name, undefined, { extraArgs: engine.buildIncomingArgs(), finalState: 'migrating' }));
      const qmp = this.ctx.qmpOf(name);
      const tls = await this.ctx.qemuTls(inst, qmp, req.id, 'server');
      if (nbdPort) await engine.startNbdExport(qmp, { host: ip, port: nbdPort, nodes: inst.disks.map((d) => d.name), tls });
      await engine.startIncoming(qmp, { host: ip, port: migrationPort, tls });
      log(`listening for the migration${nbdPort ? ' and NBD' : ''} stream over TLS (tls-creds-x509, cluster CA)`);
      record.phase = 'receiving memory';
      this.startSourceWatch(req.id, req.source, undo);
      this.ctx.events.lifecycle('instance-migrating-in', name, { id: req.id, from: req.source, mode: req.mode });
      undo.success();
      return { migrationPort, nbdPort, targetIp: ip };
    } catch (err) {
      log(`preparing failed: ${asVmkitError(err).message}; undoing`);
      // The record goes only once all it describes is gone; otherwise it stays for the
      // recovery at the next start (a leftover row must not outlive its record).
      if (await undo.fail()) await this.forget(record, log);
      throw err;
    }
  }

  /**
   * A peer names the instance's id (its folder), disk files and snapshot keys: each must stay
   * where this host keeps such things — the id one folder name under the instances folder, a
   * local disk a plain file name in it, a shared disk inside `<shared>/disks/<id>/` of the
   * storage both hosts mount. Refused before anything is created (the route's schema already
   * refused most of it; this is the check that does not depend on the route).
   */
  private async checkPaths(req: PrepareRequest): Promise<void> {
    const inst = req.instance;
    validateName(inst.name, 'instance name');
    const refuse = (what: string) => {
      throw vmkitError('VMKIT_PATH_FORBIDDEN', `Migration ${String(req.id).slice(0, 8)}: ${what}; nothing was created.`, {
        hint: 'A peer names files only inside the instance folder or its own folder on shared storage.',
      });
    };
    if (!isSafeSegment(inst.id)) refuse(`the instance id ${JSON.stringify(inst.id)} is not a folder name`);
    const dir = this.ctx.registry.instanceDir(inst);
    confinePath(dirname(dir), dir, 'instance folder');
    const shared = req.sharedDisks ? (await this.ctx.self()).sharedStorage?.path : undefined;
    for (const d of inst.disks) {
      if (!isSafeSegment(d.name)) refuse(`the disk name ${JSON.stringify(d.name)} is not a plain name`);
      if (!isAbsolute(d.file)) {
        if (!isSafeSegment(d.file)) refuse(`the disk file ${JSON.stringify(d.file)} is not a plain file name`);
        continue;
      }
      // Not shared: an absolute file gets a local name (below); shared: it must be the instance's own folder there.
      if (!req.sharedDisks) continue;
      if (!shared) refuse(`the disk ${d.name} is on shared storage this host does not have`);
      const own = confinePath(shared!, join(shared!, 'disks', inst.id), 'shared disk folder');
      if (confinePath(shared!, d.file, 'shared disk file') !== join(own, d.file.slice(d.file.lastIndexOf('/') + 1)) || !isSafeSegment(d.file.slice(d.file.lastIndexOf('/') + 1)))
        refuse(`the disk file ${JSON.stringify(d.file)} is not in ${join(shared!, 'disks', inst.id)}`);
    }
    for (const s of req.snapshots) {
      const rest = typeof s.key === 'string' && s.key.startsWith(`${inst.name}/`) ? s.key.slice(inst.name.length + 1) : undefined;
      if (!rest || !isSafeSegment(rest)) refuse(`the snapshot key ${JSON.stringify(s.key)} is not one of "${inst.name}"'s`);
    }
  }

  /** A migration port that accepts the source only (firewall), recorded so it is closed again. */
  private async openPort(record: MigrationRecord, ip: string, sourceIp: string, undo: Revert): Promise<number> {
    const port = await freePort(ip);
    await openPeerPort(port, sourceIp);
    record.ports!.push(port);
    undo.add(`the firewall opening of port ${port}`, async () => {
      await closePeerPort(port);
      record.ports = record.ports!.filter((p) => p !== port);
    });
    return port;
  }

  /** PUT /1.0/internal/migrations/:id/disks/:disk (cold and suspend modes). */
  async receiveDisk(id: string, disk: string, body: Readable): Promise<void> {
    const e = this.ctx.active.get(id);
    if (!e || e.record.role !== 'target') throw vmkitError('VMKIT_NOT_FOUND', `No incoming migration ${id} here.`, { hint: 'Start the migration from the source host.' });
    const inst = await this.ctx.registry.load(e.record.instance);
    const d = inst.disks.find((x) => x.name === disk);
    if (!d || isAbsolute(d.file)) throw vmkitError('VMKIT_NOT_FOUND', `Instance "${inst.name}" has no local disk "${disk}".`, { hint: 'Disks on shared storage are not copied.' });
    const dir = this.ctx.registry.instanceDir(inst);
    const file = confinePath(dir, this.ctx.registry.diskPath(inst, d), 'disk file');
    await pipeline(body, createWriteStream(`${file}.part`, { mode: 0o640 }));
    await rename(`${file}.part`, file);
  }

  /** The source is done: take ownership (compare-and-swap), then run the guest here. */
  async finishIncoming(id: string, req: FinishRequest): Promise<{ instance: string; state: InstanceState }> {
    const { cluster, registry, networks, local } = this.ctx;
    const e = this.ctx.active.get(id);
    if (!e || e.record.role !== 'target') throw vmkitError('VMKIT_NOT_FOUND', `No incoming migration ${id} here.`, { hint: 'It was aborted; start the migration again.' });
    this.ctx.stopWatch(id);
    const name = e.record.instance;
    const live = isLive(e.record.mode);
    const log = stepLogger(id, 'target', name);
    return registry
      .withLock(name, async () => {
        const inst = await registry.load(name);
        if (!live) await this.rebaseReceived(inst);
        const qmp = live ? this.ctx.qmpOf(name) : undefined;
        log('asked to take over');
        if (qmp) {
          // The source reports completion a moment before the target has loaded the last state.
          await engine.awaitIncomingComplete(qmp);
          log('incoming state loaded');
          if (e.record.mode === 'live-copy') await engine.stopNbdExport(qmp).catch((err: Error) => log(`stopping the NBD export: ${err.message}`));
        }
        const moved = await takeOwnership(cluster, name, e.record.peer, req.ownerRevision, { image: inst.image, cpus: inst.cpus, memoryMiB: inst.memoryMiB }, log);
        if (!moved)
          throw vmkitError('VMKIT_MIGRATION_FAILED', `Ownership of "${name}" changed while it moved; this host did not take it.`, {
            hint: 'Check "vmkit list"; retry the migration.',
          });
        log('owner in etcd');
        e.record.phase = 'running';
        await local.put(RECORDS, id, e.record);
        let state: InstanceState;
        if (live) {
          // Floating addresses first (the source gave them up): packets that arrive before the
          // guest runs wait in its tap queue instead of finding no host.
          await networks?.announce(inst, log).catch((err: Error) => log(`claiming floating addresses: ${err.message}`));
          if (e.record.wasRunning !== false) await engine.resumeTarget(qmp!);
          log('guest resumed');
          state = e.record.wasRunning !== false ? 'running' : 'paused';
          await registry.adopt(name, state);
        } else {
          const wasSuspended = e.record.sourceState === 'suspended';
          await registry.setState(inst, wasSuspended ? 'suspended' : 'stopped');
          state = wasSuspended ? 'suspended' : 'stopped';
        }
        await this.closePorts(e.record);
        this.ctx.active.delete(id);
        await local.delete(RECORDS, id);
        this.ctx.events.lifecycle('instance-migrated-in', name, { id, from: e.record.peer, mode: e.record.mode });
        return { instance: name, state };
      })
      .then(async (r) => {
        if (!live && req.start) {
          const v = await this.ctx.instances.start(name);
          return { instance: name, state: v.state };
        }
        return r;
      });
  }

  /** A copied overlay still names the source's image file as backing: point it at ours. */
  private async rebaseReceived(inst: Instance): Promise<void> {
    for (const d of inst.disks) {
      if (isAbsolute(d.file)) continue;
      const file = this.ctx.registry.diskPath(inst, d);
      const info = await sharedVolumeInfo(file);
      if (!info.backing) continue;
      // The pre-flight proved this host's image is the very same (checksum).
      const image = await this.ctx.images.get(inst.image);
      await rebaseUnsafe(file, this.ctx.images.file(image, image.disks[0]!.file), image.disks[0]!.format);
    }
  }

  /**
   * DELETE /1.0/internal/migrations/:id: the target removes everything it prepared. Unlike
   * a Revert, it stops at the first failure and keeps its record: the source's retries, the
   * source watch or the next start then ask again, so nothing is left without a record.
   */
  async abortIncoming(id: string): Promise<void> {
    const { cluster, registry, instances, local } = this.ctx;
    const rec = this.ctx.active.get(id)?.record ?? (await local.get<MigrationRecord>(RECORDS, id))?.value;
    if (!rec || rec.role !== 'target') return;
    // Unknown owner (etcd not answering): this host may have taken the guest over, so nothing
    // is torn down (this throws); the watch, the source's retries or a restart ask again.
    const owner = await cluster.owner(rec.instance);
    this.ctx.stopWatch(id);
    if (owner?.record.host === cluster.name) {
      // Too late to undo: this host took the instance over.
      return;
    }
    const log = stepLogger(id, 'target', rec.instance);
    await registry.withLock(rec.instance, async () => {
      // Already gone (an earlier abort got this far): nothing to release.
      const inst = await registry.load(rec.instance).catch(() => undefined);
      if (inst && (!rec.instanceId || inst.id === rec.instanceId)) {
        const snapKeys = (await local.list('snapshots')).filter((s) => s.key.startsWith(`${rec.instance}/`)).map((s) => s.key);
        await instances.release(inst);
        for (const k of snapKeys) await local.delete('snapshots', k).catch((err: Error) => log(`removing snapshot row ${k} failed: ${err.message}`));
      }
    });
    await this.closePorts(rec);
    await this.forget(rec, log);
  }

  /** The end of an aborted incoming migration: its record goes, and the event says so. */
  private async forget(rec: MigrationRecord, log: (msg: string) => void): Promise<void> {
    this.ctx.active.delete(rec.id);
    await this.ctx.local.delete(RECORDS, rec.id);
    log('aborted: everything prepared here is removed');
    this.ctx.events.lifecycle('instance-migration-aborted', rec.instance, { id: rec.id });
  }

  async closePorts(rec: MigrationRecord): Promise<void> {
    for (const p of rec.ports ?? [])
      await closePeerPort(p).catch((err: Error) => console.error(`vmkitd: migration ${rec.id.slice(0, 8)}: closing firewall port ${p} failed: ${err.message}`));
    rec.ports = [];
  }

  /** The target checks that the source still drives the migration; if not, it cleans up. */
  private startSourceWatch(id: string, source: string, undo: Revert): void {
    const entry = this.ctx.active.get(id);
    if (!entry) return;
    undo.add('the watch of the source', () => this.ctx.stopWatch(id));
    let lastOk = Date.now();
    let lastError = '';
    entry.watchdog = setInterval(() => {
      void this.ctx.cluster
        .peer(source)
        .then((p) => p.request('GET', `/1.0/internal/migrations/${id}`, undefined, 2_000))
        .then(() => (lastOk = Date.now()))
        .catch((err: unknown) => {
          const gone = asVmkitError(err).code === 'VMKIT_NOT_FOUND';
          if (gone || Date.now() - lastOk > peerTimeoutMs() * 2) {
            // The watch keeps asking: an abort that fails now (etcd down) is tried again next
            // tick; the same failure is logged once, not every second.
            void this.abortIncoming(id).catch((e: Error) => {
              if (e.message !== lastError) console.error(`vmkitd: migration ${id.slice(0, 8)}: the source is gone; undoing the incoming instance failed (retrying): ${e.message}`);
              lastError = e.message;
            });
          }
        });
    }, 1_000);
  }
}
