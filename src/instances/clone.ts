import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, rename, rm } from 'node:fs/promises';
import { copyNvram, snapshotNvramFile } from '../qemu/firmware.js';
import { isAbsolute, join } from 'node:path';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Instance, InstanceView } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { createLinkedClone, exportSnapshotVolume, flattenVolume, listDiskSnapshots, sharedVolumeInfo, volumeInfo } from '../storage/qemu-img.js';
import type { Nics } from './nics.js';
import type { InstanceContext } from './registry.js';

/**
 * New instances from existing ones (clone, clone from a snapshot) and the stopped-disk access
 * publish uses to turn an instance into an image.
 */
export class Cloning {
  constructor(
    private readonly shared: InstanceContext,
    private readonly nics: Nics,
  ) {}

  /**
   * Clones a stopped instance. Linked (default): the source's disk becomes a frozen,
   * read-only layer in its folder, and both the source and the clone get a fresh qcow2
   * overlay on it — O(1) in disk size; the source then cannot be deleted while the clone
   * exists. Full: the whole chain (overlay + image) is flattened into an independent copy.
   * The clone gets new MACs and no port forwards (host ports cannot be shared).
   */
  async clone(source: string, name: string, opts: { full?: boolean; fromSnapshot?: string } = {}, ctx?: OperationContext): Promise<InstanceView> {
    const { registry, paths, events } = this.shared;
    const cloneName = validateName(name, 'instance name');
    if (opts.fromSnapshot !== undefined) return this.cloneFromSnapshot(source, cloneName, validateName(opts.fromSnapshot, 'snapshot name'), !!opts.full, ctx);
    return registry
      .withLock(source, () =>
        registry.withLock(cloneName, async () => {
          const src = await registry.load(source);
          if (src.state !== 'stopped') {
            throw vmkitError('VMKIT_INVALID_STATE', `Instance "${source}" is ${src.state}; only a stopped instance is cloned.`, {
              hint: `Stop it first ("vmkit stop ${source}").`,
            });
          }
          const inst = await this.cloneRecord(src, cloneName, !opts.full);
          const dir = paths.instance(inst.id);
          const srcDir = paths.instance(src.id);
          await mkdir(dir, { recursive: true });
          try {
            if (opts.full) {
              const srcFile = registry.diskPath(src, src.disks[0]!);
              const total = (await volumeInfo(srcFile, 'qcow2')).virtualSize;
              ctx?.progress({ phase: 'copying disk', percent: 0, bytesDone: 0, bytesTotal: total });
              await flattenVolume(srcFile, join(dir, 'root.qcow2'), {
                signal: ctx?.signal,
                onProgress: (f) => ctx?.progress({ phase: 'copying disk', percent: Math.min(99, Math.round(f * 100)), bytesDone: Math.round(f * total), bytesTotal: total }),
              });
            } else {
              if (isAbsolute(src.disks[0]!.file)) {
                throw vmkitError('VMKIT_INVALID_STATE', `The disk of "${source}" is on shared storage; a linked clone would tie a local disk to it.`, {
                  hint: `Use "vmkit clone ${source} ${cloneName} --full".`,
                });
              }
              // Internal snapshots live in the source's disk file, which a linked clone freezes
              // into a read-only layer: they would no longer be revertible.
              const snaps = await listDiskSnapshots(join(srcDir, 'root.qcow2'));
              if (snaps.length > 0) {
                throw vmkitError('VMKIT_INVALID_STATE', `Instance "${source}" has snapshots (${snaps.map((x) => x.name).join(', ')}); a linked clone would freeze them.`, {
                  hint: `Use "vmkit clone ${source} ${cloneName} --full", or delete its snapshots first.`,
                });
              }
              ctx?.progress({ phase: 'freezing the source disk', percent: 30 });
              const layer = join(srcDir, `layer-${randomBytes(4).toString('hex')}.qcow2`);
              await rename(join(srcDir, 'root.qcow2'), layer);
              try {
                await createLinkedClone(layer, 'qcow2', join(srcDir, 'root.qcow2'));
              } catch (err) {
                await rename(layer, join(srcDir, 'root.qcow2'));
                throw err;
              }
              // A frozen layer is read by several guests: root's, read-only (no guest uid may chmod it back).
              await chown(layer, 0, 0);
              await chmod(layer, 0o444);
              await createLinkedClone(layer, 'qcow2', join(dir, 'root.qcow2'));
            }
            // A UEFI source's NVRAM (boot entries, variables) goes with its disk.
            await copyNvram(paths.instance(src.id), dir);
            ctx?.checkCancelled();
            await registry.insertRow(inst);
          } catch (err) {
            await rm(dir, { recursive: true, force: true });
            throw err;
          }
          events.lifecycle('instance-created', cloneName, { clonedFrom: source, full: !!opts.full });
          return registry.view(inst);
        }),
      )
      .finally(() => this.nics.settle(cloneName));
  }

  /** The row of a new clone of `src`: same image and size, new id and MACs, no forwards. */
  private async cloneRecord(src: Instance, cloneName: string, linked: boolean): Promise<Instance> {
    const { store, images, host } = this.shared;
    if (await store.get('instances', cloneName)) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `An instance named "${cloneName}" already exists.`, { hint: 'Choose another name.' });
    }
    const image = await images.get(src.image);
    const nics = await this.nics.allocate(
      src.nics.map((n) => ({ network: n.network, model: n.model })),
      image,
      cloneName,
    );
    const now = new Date().toISOString();
    return {
      id: randomBytes(6).toString('hex'),
      name: cloneName,
      image: src.image,
      imageVersion: src.imageVersion,
      type: src.type,
      cpus: src.cpus,
      memoryMiB: src.memoryMiB,
      nics,
      forwards: [],
      disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
      state: 'stopped',
      createdAt: now,
      updatedAt: now,
      host: host.hostName,
      ...(linked ? { linkedFrom: src.name } : {}),
      ...(src.firmware === 'uefi' ? { firmware: src.firmware } : {}),
      // The same machine type: a guest made on i440fx (or q35) keeps the board it knows.
      ...(src.machine ? { machine: src.machine } : {}),
      // Same user-data and keys; the new id is a new cloud-init instance-id (and machine-id, host keys: see config-drive.ts).
      ...(src.cloudInit ? { cloudInit: { ...src.cloudInit, generation: undefined } } : {}),
    };
  }

  /**
   * A new instance whose disk is the source's disk at a snapshot. The source may run (the
   * snapshot's clusters are immutable). Linked by default: the new disk holds only what
   * differs from the source's read-only backing volume and is an overlay of it.
   */
  private async cloneFromSnapshot(source: string, cloneName: string, snapshot: string, full: boolean, ctx?: OperationContext): Promise<InstanceView> {
    const { registry, store, paths, events } = this.shared;
    return registry
      .withLock(source, () =>
        registry.withLock(cloneName, async () => {
          const src = await registry.load(source);
          if (src.state === 'deleting' || src.state === 'migrating') {
            throw vmkitError('VMKIT_INVALID_STATE', `Instance "${source}" is ${src.state}.`, { hint: 'Wait for the running operation to finish.' });
          }
          if (!(await store.get('snapshots', `${source}/${snapshot}`))) {
            throw vmkitError('VMKIT_SNAPSHOT_NOT_FOUND', `Instance "${source}" has no snapshot "${snapshot}".`, {
              hint: `"vmkit snapshot list ${source}" shows its snapshots.`,
            });
          }
          const srcDisk = registry.diskPath(src, src.disks[0]!);
          const srcInfo = await sharedVolumeInfo(srcDisk);
          const base = full ? undefined : srcInfo.backing;
          // A base inside the source's folder (a frozen layer) ties the clone to the source.
          const tiedToSource = !!base && base.file.startsWith(paths.instance(src.id) + '/');
          const inst = await this.cloneRecord(src, cloneName, tiedToSource);
          const dir = paths.instance(inst.id);
          await mkdir(dir, { recursive: true });
          try {
            const total = srcInfo.virtualSize;
            ctx?.progress({ phase: `copying snapshot ${snapshot}`, percent: 0, bytesDone: 0, bytesTotal: total });
            await exportSnapshotVolume(srcDisk, snapshot, join(dir, 'root.qcow2'), base, {
              signal: ctx?.signal,
              onProgress: (f) =>
                ctx?.progress({ phase: `copying snapshot ${snapshot}`, percent: Math.min(99, Math.round(f * 100)), bytesDone: Math.round(f * total), bytesTotal: total }),
            });
            // A UEFI source's NVRAM (boot entries, variables) goes with its disk.
            if (!(await copyNvram(paths.instance(src.id), dir, snapshotNvramFile(snapshot)))) await copyNvram(paths.instance(src.id), dir);
            ctx?.checkCancelled();
            await registry.insertRow(inst);
          } catch (err) {
            await rm(dir, { recursive: true, force: true });
            throw err;
          }
          events.lifecycle('instance-created', cloneName, { clonedFrom: source, snapshot, full });
          return registry.view(inst);
        }),
      )
      .finally(() => this.nics.settle(cloneName));
  }

  /**
   * Runs `fn` on a stopped instance's root disk while holding its lock (publish reads the
   * disk; nothing may start the instance meanwhile).
   */
  async withStoppedInstance<T>(name: string, verb: string, fn: (inst: Instance, rootDisk: string) => Promise<T>): Promise<T> {
    const { registry } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      if (inst.state !== 'stopped') {
        throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is ${inst.state}; only a stopped instance can be ${verb}.`, {
          hint: `Stop it first ("vmkit stop ${name}").`,
        });
      }
      return fn(inst, registry.diskPath(inst, inst.disks[0]!));
    });
  }
}
