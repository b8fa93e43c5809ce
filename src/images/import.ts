import { basename, extname, join } from 'node:path';
import { rm } from 'node:fs/promises';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { FidelityEntry, Image, NicModel } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { convertVolume } from '../storage/qemu-img.js';
import type { ImageStore } from './image-store.js';
import { inspectUntrusted, type InspectedFile } from './safety.js';

export interface ImportRequest {
  /** Absolute path on the daemon's host. */
  source: string;
  name?: string;
  /** Declared format of a disk file (qcow2, raw, vmdk, vdi, vhdx) or `ova`. */
  format?: string;
  description?: string;
  /** Where the file came from when `source` is a download (recorded as the image's origin). */
  origin?: string;
}

export interface ImportResult {
  image: Image;
  fidelity: FidelityEntry[];
}

/** Defaults for a bare disk: no metadata travels with it. */
// virtio-net: the cloud kernels of Debian and Ubuntu cloud images have no e1000 driver (vmkit image set IMG --nic-model changes it).
export const DISK_DEFAULTS = { cpus: 1, memoryMiB: 512, nicModel: 'virtio-net' as NicModel };

export function defaultImageName(source: string): string {
  const stem = basename(source, extname(source))
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
  return stem || 'imported';
}

/**
 * Converts one inspected untrusted disk into a stored qcow2 volume (the only format the
 * image store keeps), with byte progress; `base`/`span` place it inside a multi-disk import.
 */
export async function convertInto(file: InspectedFile, dest: string, ctx: OperationContext | undefined, progress: { done: number; total: number; phase: string }): Promise<void> {
  ctx?.checkCancelled();
  await convertVolume(file.path, file.format, dest, 'qcow2', {
    untrusted: true,
    signal: ctx?.signal,
    onProgress: (f) => {
      const bytesDone = progress.done + Math.round(f * file.info.virtualSize);
      ctx?.progress({
        phase: progress.phase,
        percent: Math.min(99, Math.round((bytesDone / Math.max(1, progress.total)) * 100)),
        bytesDone,
        bytesTotal: progress.total,
      });
    },
  });
  ctx?.checkCancelled();
}

/** `vmkit image import DISK`: a bare disk image becomes an image that boots with firmware. */
export async function importDisk(images: ImageStore, req: ImportRequest, ctx?: OperationContext): Promise<ImportResult> {
  const name = validateName(req.name ?? defaultImageName(req.source), 'image name');
  const release = await images.reserve(name);
  try {
    return await importDiskAs(images, name, req, ctx);
  } finally {
    release();
  }
}

async function importDiskAs(images: ImageStore, name: string, req: ImportRequest, ctx?: OperationContext): Promise<ImportResult> {
  ctx?.progress({ phase: 'inspecting', percent: 0 });
  const file = await inspectUntrusted(req.source, req.format);
  const tmp = await images.tempDir(`import-${name}`);
  try {
    await convertInto(file, join(tmp, 'root.qcow2'), ctx, { done: 0, total: file.info.virtualSize, phase: `converting ${file.format} to qcow2` });
    const fidelity: FidelityEntry[] = [
      { item: 'disk root', value: `${file.format} → qcow2, ${file.info.virtualSize} bytes`, status: 'mapped' },
      { item: 'vCPUs', value: String(DISK_DEFAULTS.cpus), status: 'defaulted', reason: 'a bare disk carries no VM settings' },
      { item: 'memory', value: `${DISK_DEFAULTS.memoryMiB} MiB`, status: 'defaulted', reason: 'a bare disk carries no VM settings' },
      {
        item: 'nic0',
        value: DISK_DEFAULTS.nicModel,
        status: 'defaulted',
        reason: 'cloud images have virtio drivers (their cloud kernels lack e1000); change it with "vmkit image set NAME --nic-model"',
      },
      { item: 'firmware', value: 'BIOS (SeaBIOS), boots the disk', status: 'defaulted', reason: 'no direct-kernel boot files in a bare disk' },
    ];
    const image: Image = {
      name,
      version: new Date().toISOString().slice(0, 10).replace(/-/g, ''),
      description: req.description ?? `Imported from ${basename(req.source)}`,
      arch: 'x86_64',
      defaults: { cpus: DISK_DEFAULTS.cpus, memoryMiB: DISK_DEFAULTS.memoryMiB },
      nicModels: [DISK_DEFAULTS.nicModel],
      disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2', virtualSize: file.info.virtualSize }],
      source: 'import',
      origin: req.origin ?? req.source,
      fidelity,
      createdAt: new Date().toISOString(),
    };
    ctx?.progress({ phase: 'registering', percent: 99, bytesDone: file.info.virtualSize, bytesTotal: file.info.virtualSize });
    await images.commit(image, tmp);
    return { image, fidelity };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

export function assertAbsolute(path: string, what: string): void {
  if (!path.startsWith('/')) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `${what} must be an absolute path on the daemon's host, not ${JSON.stringify(path)}.`, {
      hint: 'The CLI resolves relative paths; over the API send an absolute path.',
    });
  }
}
