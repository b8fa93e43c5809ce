import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import { isActive } from '../domain/state.js';
import { findInstanceType } from '../domain/instance-types.js';
import type { Image, Instance, InstanceView } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { createLinkedClone, resizeVolume } from '../storage/qemu-img.js';
import { parseSize, validateCloudInit } from '../domain/cloud-init.js';
import { assertHostPortFree, normalizeForward } from '../network/forwards.js';
import { floatingNeedsNat, type Forwards } from './forwards.js';
import type { Lifecycle } from './lifecycle.js';
import type { Nics } from './nics.js';
import type { InstanceContext } from './registry.js';
import type { CreateInstanceRequest } from './types.js';
import { confinePath, isSafeSegment } from '../util/confine.js';
import { findOvmf, parseFirmware } from '../qemu/firmware.js';

/**
 * The birth and end of an instance on this host: create from an image (a linked clone of its
 * disk), delete, and release (the instance moved to another host). Files and rows are
 * ordered so a crash mid-way leaves nothing that recovery cannot finish or remove.
 */
export class Provisioning {
  constructor(
    private readonly shared: InstanceContext,
    private readonly lifecycle: Lifecycle,
    private readonly nics: Nics,
    private readonly forwards: Forwards,
  ) {}

  async create(req: CreateInstanceRequest, ctx?: OperationContext): Promise<InstanceView> {
    const { registry } = this.shared;
    const name = validateName(req.name, 'instance name');
    // The NICs' addresses are claimed from their pick until the row holds them (or this failed).
    return registry.withLock(name, () => this.createLocked(req, name, ctx).finally(() => this.nics.settle(name)));
  }

  private async createLocked(req: CreateInstanceRequest, name: string, ctx?: OperationContext): Promise<InstanceView> {
    const { registry, store, images, paths, host, events, peers } = this.shared;
    if (await store.get('instances', name)) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `An instance named "${name}" already exists.`, {
        hint: 'Choose another name, or delete the existing instance first.',
      });
    }
    const image = await images.get(req.image);
    const { cpus, memoryMiB } = sizeFor(req, image);
    const firmware = parseFirmware(req.firmware ?? image.firmware ?? 'bios');
    // Checked before anything is made: a UEFI instance on a host without OVMF would never start.
    if (firmware === 'uefi') await findOvmf();
    const cloudInit = validateCloudInit(req);
    const imageBytes = image.disks[0]?.virtualSize ?? 0;
    const diskBytes = rootDiskBytes(req.diskBytes, image);
    const nics = await this.nics.allocate(req.nics ?? [{}], image, name);
    const forwardNic = nics.find((n) => n.network === 'user') ?? nics.find((n) => n.ipv4) ?? nics[0]!;
    const forwards = (req.forwards ?? []).map((f) => normalizeForward({ ...f, allowPrivileged: f.allowPrivileged ?? req.allowPrivileged }, forwardNic.id));
    if (forwards.length > 0 && forwardNic.network !== 'user') await peers.networking?.assertForwardable(forwardNic.network);
    if (forwards.some((f) => f.floating) && forwardNic.network === 'user') throw floatingNeedsNat();
    this.forwards.assertNoSelfCollision(forwards);
    await this.forwards.assertNoConflict(name, forwards);
    for (const f of forwards) await assertHostPortFree(f);

    const id = randomBytes(6).toString('hex');
    const dir = paths.instance(id);
    const now = new Date().toISOString();
    const inst: Instance = {
      id,
      name,
      image: image.name,
      imageVersion: image.version,
      type: req.type,
      cpus,
      memoryMiB,
      nics,
      forwards,
      disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
      state: 'stopped',
      createdAt: now,
      updatedAt: now,
      host: host.hostName,
      machine: await host.machineType?.(),
      ...(firmware === 'uefi' ? { firmware } : {}),
      ...(cloudInit ? { cloudInit } : {}),
    };
    const shared = host.sharedDir && req.storage !== 'local' ? host.sharedDir : undefined;
    if (shared) inst.disks = [{ name: 'root', file: join(shared, 'disks', id, 'root.qcow2'), format: 'qcow2' }];
    ctx?.progress({ phase: 'cloning disk', percent: 30 });
    // Files first, row second: a crash in between leaves a folder without a row, which
    // reconcile() removes; never a row pointing at a missing disk.
    await mkdir(dir, { recursive: true });
    try {
      const rootImage = image.disks[0]!;
      const rootFile = registry.diskPath(inst, inst.disks[0]!);
      if (shared) {
        // Every host must reach the whole chain: the image's disk is copied once into the
        // shared storage (named by its checksum) and the instance's disk is backed by that.
        const base = await images.sharedBase(image, shared);
        await mkdir(dirname(rootFile), { recursive: true });
        await createLinkedClone(base, rootImage.format, rootFile);
      } else {
        await createLinkedClone(images.file(image, rootImage.file), rootImage.format, rootFile);
      }
      // The overlay grows; cloud-init's growpart and resizefs grow the guest's partition and filesystem at boot.
      if (diskBytes !== undefined && diskBytes > imageBytes) {
        ctx?.progress({ phase: 'growing disk', percent: 60 });
        await resizeVolume(rootFile, 'qcow2', diskBytes);
      }
      ctx?.checkCancelled();
      await registry.insertRow(inst);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      if (shared) await rm(join(shared, 'disks', id), { recursive: true, force: true });
      throw err;
    }
    if (inst.nics.some((n) => n.network !== 'user')) await peers.networking?.sync();
    events.lifecycle('instance-created', name);
    return registry.view(inst);
  }

  async delete(name: string, opts: { force?: boolean } = {}, ctx?: OperationContext): Promise<void> {
    const { registry } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const clones = (await registry.list()).filter((i) => i.linkedFrom === name).map((i) => i.name);
      if (clones.length > 0) {
        throw vmkitError('VMKIT_INSTANCE_IN_USE', `Linked clone(s) ${clones.join(', ')} depend on the disk of "${name}".`, {
          hint: 'Delete the clones first, or make independent copies with "vmkit clone SOURCE NAME --full".',
        });
      }
      if (isActive(inst.state)) {
        if (!opts.force) {
          throw vmkitError('VMKIT_INSTANCE_RUNNING', `Instance "${name}" is ${inst.state}; it is not deleted.`, {
            hint: `Stop it first ("vmkit stop ${name}") or pass --force to stop and delete it.`,
          });
        }
        await this.lifecycle.stopLocked(name, { force: true }, ctx);
      }
      await this.finishDelete(await registry.load(name));
    });
  }

  /** The instance's own folder, and only it: an id that is not one path segment is refused (never rm -rf outside). */
  private ownFolder(inst: Instance): string {
    const { paths } = this.shared;
    if (!isSafeSegment(inst.id))
      throw vmkitError('VMKIT_PATH_FORBIDDEN', `Instance "${inst.name}" has an id (${JSON.stringify(inst.id)}) that is not a folder name; its files are left alone.`, {
        hint: 'Remove the row by hand after checking its files.',
      });
    return confinePath(paths.instances, paths.instance(inst.id), 'instance folder');
  }

  /** Row marked first, files removed, row deleted last: a crash mid-way is finished on restart. */
  async finishDelete(inst: Instance): Promise<void> {
    const { registry, store, events, peers, host } = this.shared;
    if (inst.state !== 'deleting') await registry.setState(inst, 'deleting');
    await registry.killRuntime(inst.name);
    await registry.confinement.release(inst.id);
    await rm(this.ownFolder(inst), { recursive: true, force: true });
    for (const d of inst.disks) {
      if (!isAbsolute(d.file)) continue;
      // A shared disk lives in <shared>/disks/<id>/ (create() puts it there): that folder
      // goes, and nothing else — a row naming another path keeps its files.
      const own = host.sharedDir ? join(host.sharedDir, 'disks', inst.id) : undefined;
      if (own && isSafeSegment(inst.id) && confinePath(host.sharedDir!, dirname(d.file), 'shared disk folder') === confinePath(host.sharedDir!, own, 'shared disk folder'))
        await rm(own, { recursive: true, force: true });
      else console.error(`vmkitd: deleting ${inst.name}: disk ${d.file} is not in its own shared folder; it is left in place`);
    }
    await store.delete('instances', inst.name);
    await peers.ownership?.released(inst.name).catch((err: Error) => console.error(`vmkitd: releasing the name ${inst.name}: ${err.message}`));
    if (inst.nics.some((n) => n.network !== 'user')) {
      await peers.networking?.unplug(inst).catch((err: Error) => console.error(`vmkitd: unplugging ${inst.name}: ${err.message}`));
      await peers.networking?.sync().catch((err: Error) => console.error(`vmkitd: network sync after deleting ${inst.name}: ${err.message}`));
    }
    events.lifecycle('instance-deleted', inst.name);
  }

  /**
   * The instance now lives on another host (migration done): end the local QEMU, drop the
   * row and the local folder, unplug its taps. Shared disks stay: the new owner uses them.
   */
  async release(inst: Instance): Promise<void> {
    const { registry, store, peers } = this.shared;
    await registry.killRuntime(inst.name);
    await registry.confinement.release(inst.id);
    await rm(this.ownFolder(inst), { recursive: true, force: true });
    await store.delete('instances', inst.name);
    if (inst.nics.some((n) => n.network !== 'user')) {
      await peers.networking?.unplug(inst).catch((err: Error) => console.error(`vmkitd: unplugging ${inst.name}: ${err.message}`));
      await peers.networking?.sync().catch((err: Error) => console.error(`vmkitd: network sync after releasing ${inst.name}: ${err.message}`));
    }
  }
}

/** The root disk size a create asks for (or the image's minimum); never below the image's own size. */
export function rootDiskBytes(requested: number | undefined, image: Image): number | undefined {
  const imageBytes = image.disks[0]?.virtualSize ?? 0;
  const min = image.minDiskBytes;
  if (requested === undefined) return min !== undefined && min > imageBytes ? min : undefined;
  const bytes = parseSize(requested, 'Disk size');
  const floor = Math.max(imageBytes, min ?? 0);
  if (bytes < floor) {
    throw vmkitError(
      'VMKIT_INVALID_ARGUMENT',
      `A ${gib(bytes)} disk is smaller than ${min !== undefined && min > imageBytes ? "the image's minimum" : 'the image'} (${gib(floor)}).`,
      {
        hint: `Ask for at least ${gib(floor)} (--disk ${Math.ceil(floor / 1024 ** 3)}G), or leave --disk out.`,
      },
    );
  }
  return bytes;
}

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(2).replace(/\.?0+$/, '')} GiB`;
}

function sizeFor(req: CreateInstanceRequest, image: Image): { cpus: number; memoryMiB: number } {
  const t = req.type ? findInstanceType(req.type) : undefined;
  const cpus = req.cpus ?? t?.cpus ?? image.defaults.cpus;
  const memoryMiB = req.memoryMiB ?? t?.memoryMiB ?? image.defaults.memoryMiB;
  const hostCpus = os.cpus().length;
  const hostMiB = Math.floor(os.totalmem() / 1024 / 1024);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > hostCpus) {
    throw vmkitError('VMKIT_RESOURCES_EXCEEDED', `${cpus} vCPUs is not possible on this host (1 to ${hostCpus}).`, {
      hint: `Ask for at most ${hostCpus} vCPUs (the host's CPU count).`,
    });
  }
  if (!Number.isInteger(memoryMiB) || memoryMiB < 32 || memoryMiB > hostMiB) {
    throw vmkitError('VMKIT_RESOURCES_EXCEEDED', `${memoryMiB} MiB of memory is not possible on this host (32 to ${hostMiB} MiB).`, {
      hint: `Ask for at most ${hostMiB} MiB (the host's memory).`,
    });
  }
  return { cpus, memoryMiB };
}
