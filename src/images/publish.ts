import { copyFile, constants, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { validateName } from '../domain/names.js';
import type { Image, Instance, InstanceView } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { flattenVolume, volumeInfo } from '../storage/qemu-img.js';
import type { ImageStore } from './image-store.js';

/**
 * What publishing needs of the instance manager, by shape: instances/ imports images/, so
 * images/ must not import instances/.
 */
export interface PublishSource {
  get(name: string): Promise<InstanceView>;
  /** Runs `fn` while the instance is held stopped (refused when it is not stopped). */
  withStoppedInstance<T>(name: string, verb: string, fn: (inst: Instance, rootDisk: string) => Promise<T>): Promise<T>;
}

export interface PublishRequest {
  name: string;
  description?: string;
  version?: string;
}

/**
 * `vmkit publish INSTANCE --name IMAGE`: a stopped instance becomes a new image. Its disk
 * chain (overlay + layers + source image) is flattened into one independent qcow2, so the
 * new image depends on nothing; boot files, vCPUs, memory and NIC models come along.
 */
export async function publishInstance(images: ImageStore, instances: PublishSource, source: string, req: PublishRequest, ctx?: OperationContext): Promise<Image> {
  const name = validateName(req.name, 'image name');
  const release = await images.reserve(name);
  try {
    return await publishAs(images, instances, source, name, req, ctx);
  } finally {
    release();
  }
}

async function publishAs(images: ImageStore, instances: PublishSource, source: string, name: string, req: PublishRequest, ctx?: OperationContext): Promise<Image> {
  await instances.get(source);
  const tmp = await images.tempDir(`publish-${name}`);
  try {
    const image = await instances.withStoppedInstance(source, 'published', async (inst, rootDisk) => {
      const from = await images.get(inst.image);
      const total = (await volumeInfo(rootDisk, 'qcow2')).virtualSize;
      ctx?.progress({ phase: 'flattening disk', percent: 0, bytesDone: 0, bytesTotal: total });
      await flattenVolume(rootDisk, join(tmp, 'root.qcow2'), {
        signal: ctx?.signal,
        onProgress: (f) => ctx?.progress({ phase: 'flattening disk', percent: Math.min(98, Math.round(f * 100)), bytesDone: Math.round(f * total), bytesTotal: total }),
      });
      ctx?.checkCancelled();
      if (from.boot) {
        for (const f of [from.boot.kernel, from.boot.initrd].filter((x): x is string => !!x)) {
          await copyFile(images.file(from, f), join(tmp, f), constants.COPYFILE_FICLONE);
        }
      }
      const info = await volumeInfo(join(tmp, 'root.qcow2'), 'qcow2');
      const published: Image = {
        name,
        version: req.version ?? new Date().toISOString().replace(/[-:]/g, '').slice(0, 15),
        description: req.description ?? `Published from instance ${inst.name} (image ${from.name})`,
        arch: from.arch,
        boot: from.boot,
        defaults: { cpus: inst.cpus, memoryMiB: inst.memoryMiB },
        nicModels: [...new Set(inst.nics.map((n) => n.model))],
        // The firmware comes along (the instance's NVRAM does not: each new instance starts empty).
        ...(inst.firmware === 'uefi' ? { firmware: 'uefi' as const } : {}),
        disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2', virtualSize: info.virtualSize }],
        source: 'publish',
        origin: `instance ${inst.name}`,
        createdAt: new Date().toISOString(),
      };
      return published;
    });
    ctx?.progress({ phase: 'registering', percent: 99 });
    return await images.commit(image, tmp);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
