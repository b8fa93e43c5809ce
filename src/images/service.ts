import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { validateName } from '../domain/names.js';
import type { ImageView, InstanceView, Operation } from '../domain/types.js';
import { vmkitError } from '../errors.js';
import type { EventBus } from '../operations/events.js';
import type { OperationManager } from '../operations/operations.js';
import type { ImageStore } from './image-store.js';
import { assertAbsolute, defaultImageName, importDisk, type ImportRequest } from './import.js';
import { exportImage, importOva, type ExportRequest } from './ova.js';
import { publishInstance, type PublishRequest, type PublishSource } from './publish.js';
import { RepositoryManager } from './repository.js';
import { buildDebianImage, type BuildDebianRequest } from './build-debian.js';
import { downloadChecked, downloadUrl, validateSha256 } from './download.js';
import { NIC_MODELS, type Image, type NicModel } from '../domain/types.js';
import { formatFromExtension, maxImageBytes } from './safety.js';
import { findOvmf, parseFirmware } from '../qemu/firmware.js';

export interface ImageServiceDeps {
  images: ImageStore;
  /** The instance manager, by shape (instances/ imports images/, not the other way). */
  instances: PublishSource & { list(): Promise<InstanceView[]> };
  operations: OperationManager;
  events: EventBus;
  dataDir: string;
  /** Where image builds are kept between runs (default <dataDir>/cache; env VMKIT_BUILD_CACHE). */
  buildCacheDir?: string;
}

/** `vmkit image set`: the defaults an image gives its instances. */
export interface ImageDefaultsChange {
  nicModel?: NicModel;
  minDiskBytes?: number;
  firmware?: string;
  cpus?: number;
  memoryMiB?: number;
}

/** `vmkit image import https://…`: a download, checked against its sha256, then imported like a file. */
export interface ImportUrlRequest {
  url: string;
  sha256: string;
  name?: string;
  format?: string;
  description?: string;
}

/** An upload's query: the image's name and how to tell the file's format. */
export interface UploadRequest {
  name?: string;
  diskFormat?: string;
  /** The file's name on the client: its extension declares the format when diskFormat is absent. */
  filename?: string;
  description?: string;
  /** The Content-Length the client declared, when it did: refused early above the quota. */
  declaredBytes?: number;
}

/** A pass-through that fails once more than `cap` bytes went by. */
function capped(cap: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > cap) {
        done(
          vmkitError('VMKIT_IMAGE_TOO_LARGE', `The upload is larger than the ${cap / 1024 ** 3} GiB quota.`, {
            hint: 'Raise VMKIT_MAX_IMAGE_GIB for the daemon if this size is genuine.',
          }),
        );
        return;
      }
      done(null, chunk);
    },
  });
}

/**
 * The image verbs that are more than one store call: import (a path or an upload), export,
 * publish, delete (refused while in use), and the repositories (one manager per daemon:
 * the service is made once and shared by every listener). Long work runs as an operation;
 * what can be checked at once is, so bad input answers 4xx, not a failed operation.
 */
export class ImageService {
  private repoManager: RepositoryManager | undefined;

  constructor(private readonly deps: ImageServiceDeps) {}

  /** Remote repositories and serving this daemon's images as one (made on first use). */
  get repos(): RepositoryManager {
    this.repoManager ??= new RepositoryManager(this.deps.images, this.deps.dataDir);
    return this.repoManager;
  }

  /** Stops serving the repository, if it was ever started. */
  async stopServing(): Promise<void> {
    await this.repoManager?.stopServing();
  }

  /** An image with its checksum and what depends on it. */
  async view(name: string): Promise<ImageView> {
    await this.deps.images.checksum(name);
    const image = await this.deps.images.get(name);
    // `web` may stand for the newest `web:N`: users are those of the image it resolved to.
    const instances = (await this.deps.instances.list()).filter((i) => i.image === image.name).map((i) => i.name);
    return { ...image, users: { instances } };
  }

  async delete(name: string): Promise<{ deleted: string }> {
    const view = await this.view(name);
    if (view.name !== name) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${name}" names the newest version of a built image, ${view.name}; delete versions one by one.`, {
        hint: `Name the version: vmkit image delete ${view.name} ("vmkit image list" shows them all).`,
      });
    }
    if (view.users.instances.length > 0) {
      throw vmkitError('VMKIT_IMAGE_IN_USE', `Image "${name}" is used by instance(s) ${view.users.instances.join(', ')}.`, {
        hint: 'Delete those instances first (a full clone or a published image keeps their data).',
      });
    }
    await this.deps.images.remove(name);
    this.deps.events.lifecycle('image-deleted', name);
    return { deleted: name };
  }

  /** Edits an image's defaults (NIC model, minimum disk, firmware, size) for instances made from now on. */
  async setDefaults(name: string, change: ImageDefaultsChange): Promise<Image> {
    if (change.nicModel !== undefined && !NIC_MODELS.includes(change.nicModel)) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown NIC model "${change.nicModel}".`, { hint: `Use one of ${NIC_MODELS.join(', ')}.` });
    }
    const firmware = change.firmware !== undefined ? parseFirmware(change.firmware) : undefined;
    if (firmware === 'uefi') await findOvmf();
    for (const [k, v] of Object.entries({ minDiskBytes: change.minDiskBytes, cpus: change.cpus, memoryMiB: change.memoryMiB })) {
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `${k} must be a positive integer.`);
    }
    const updated = await this.deps.images.update(name, (image) => {
      if (change.nicModel) image.nicModels = [change.nicModel, ...image.nicModels.filter((m) => m !== change.nicModel)];
      if (change.minDiskBytes !== undefined) image.minDiskBytes = change.minDiskBytes;
      if (firmware !== undefined) image.firmware = firmware;
      if (change.cpus !== undefined) image.defaults.cpus = change.cpus;
      if (change.memoryMiB !== undefined) image.defaults.memoryMiB = change.memoryMiB;
      return image;
    });
    this.deps.events.lifecycle('image-updated', name, change);
    return updated;
  }

  /** Builds a Debian cloud image from the host's Debian mirror (cached between builds). */
  buildDebian(req: BuildDebianRequest): Operation {
    validateName(req.name, 'image name');
    const cacheDir = this.deps.buildCacheDir ?? process.env.VMKIT_BUILD_CACHE ?? join(this.deps.dataDir, 'cache');
    return this.deps.operations.start({
      kind: 'image.build',
      description: `Building Debian ${req.release ?? 'bookworm'} as ${req.name}`,
      target: req.name,
      mayCancel: true,
      run: async (opCtx) => {
        await this.deps.images.assertFree(req.name);
        const image = await buildDebianImage(this.deps.images, req, cacheDir, opCtx);
        this.deps.events.lifecycle('image-created', image.name);
        return { image };
      },
    });
  }

  /** Downloads a disk image (resumable, sha256-checked), then imports it like a file. */
  importUrl(req: ImportUrlRequest): Operation {
    const url = downloadUrl(req.url);
    const sha256 = validateSha256(req.sha256);
    const name = validateName(req.name ?? defaultImageName(url.pathname.split('/').pop() || 'download'), 'image name');
    const ext = formatFromExtension(url.pathname) ? extname(url.pathname).toLowerCase() : '';
    // Named by checksum: a second import of the same file resumes the first's partial download.
    const part = join(this.deps.dataDir, 'downloads', `${sha256}${ext}`);
    return this.deps.operations.start({
      kind: 'image.import',
      description: `Downloading ${url.href} as ${name}`,
      target: name,
      mayCancel: true,
      run: async (opCtx) => {
        await this.deps.images.assertFree(name);
        await downloadChecked(url, sha256, part, opCtx);
        try {
          const r = await importDisk(
            this.deps.images,
            { source: part, name, format: req.format, description: req.description ?? `Downloaded from ${url.href}`, origin: url.href },
            opCtx,
          );
          this.deps.events.lifecycle('image-created', r.image.name);
          return r;
        } finally {
          await rm(part, { force: true });
        }
      },
    });
  }

  /** A disk image or an OVA from a path on the daemon host. */
  importPath(req: ImportRequest): Operation {
    assertAbsolute(req.source, 'source');
    return this.deps.operations.start({
      kind: 'image.import',
      description: `Importing ${req.source}`,
      target: req.name,
      mayCancel: true,
      run: async (opCtx) => {
        const isOva = req.format === 'ova' || (!req.format && /\.ova$/i.test(req.source));
        const r = isOva ? await importOva(this.deps.images, req, opCtx) : await importDisk(this.deps.images, req, opCtx);
        this.deps.events.lifecycle('image-created', r.image.name);
        return r;
      },
    });
  }

  /**
   * An uploaded file, streamed (never held in memory) into `<dataDir>/images/.upload-<random>`
   * under the VMKIT_MAX_IMAGE_GIB cap, then imported exactly as a path is (same untrusted-file
   * checks); the temporary file is removed afterwards whatever happens. `received` is the
   * request body as parsed: a stream for application/octet-stream, checked here.
   */
  async importUpload(received: unknown, req: UploadRequest): Promise<Operation> {
    const { diskFormat, filename, description } = req;
    const name = validateName(req.name ?? defaultImageName(filename ?? 'upload'), 'image name');
    // The temporary file keeps the client's extension (a known one only): the import then
    // decides the format exactly as for a path, declared format or extension.
    const ext = filename && formatFromExtension(filename) ? extname(filename).toLowerCase() : filename && /\.ova$/i.test(filename) ? '.ova' : '';
    await this.deps.images.assertFree(name);
    const body = received as Readable | undefined;
    if (!body || typeof body.pipe !== 'function') {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'The upload needs the file as the request body with Content-Type: application/octet-stream.');
    }
    const cap = maxImageBytes();
    const declared = req.declaredBytes ?? NaN;
    if (Number.isFinite(declared) && declared > cap) {
      body.resume();
      throw vmkitError('VMKIT_IMAGE_TOO_LARGE', `The upload (${declared} bytes) is larger than the ${cap / 1024 ** 3} GiB quota.`, {
        hint: 'Raise VMKIT_MAX_IMAGE_GIB for the daemon if this size is genuine.',
      });
    }
    const dir = join(this.deps.dataDir, 'images');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.upload-${randomBytes(12).toString('hex')}${ext}`);
    // The caller's error (or result) is what matters; a temporary file left behind is only space.
    const cleanup = () => rm(tmp, { force: true, recursive: true }).catch(() => undefined);
    try {
      await pipeline(body, capped(cap), createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
    } catch (err) {
      await cleanup();
      body.resume();
      throw err;
    }
    try {
      return this.deps.operations.start({
        kind: 'image.import',
        description: `Importing the uploaded ${filename ?? diskFormat ?? 'file'} as ${name}`,
        target: name,
        mayCancel: true,
        run: async (opCtx) => {
          try {
            const r0 = { source: tmp, name, ...(diskFormat ? { format: diskFormat } : {}), description: description ?? `Uploaded ${filename ?? `${diskFormat ?? 'disk'} file`}` };
            const isOva = diskFormat === 'ova' || (!diskFormat && ext === '.ova');
            const r = isOva ? await importOva(this.deps.images, r0, opCtx) : await importDisk(this.deps.images, r0, opCtx);
            this.deps.events.lifecycle('image-created', r.image.name);
            return r;
          } finally {
            await cleanup();
          }
        },
      });
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  /** To a path on the daemon host: an OVA or one disk file. */
  async export(name: string, req: ExportRequest): Promise<Operation> {
    assertAbsolute(req.path, 'path');
    await this.deps.images.get(name);
    return this.deps.operations.start({
      kind: 'image.export',
      description: `Exporting ${name} to ${req.path}`,
      target: name,
      mayCancel: true,
      run: (opCtx) => exportImage(this.deps.images, name, req, opCtx),
    });
  }

  /**
   * For a download (`GET /1.0/images/NAME/export`): the export is written into a temporary
   * folder of the image store (never a path the caller names), then streamed by the caller,
   * which calls `cleanup` once the file has been sent (or the client went away). `signal`
   * ends the conversion when the client disconnects before the file is ready.
   */
  async exportForDownload(
    name: string,
    format: ExportRequest['format'],
    signal: AbortSignal,
  ): Promise<{ file: string; filename: string; size: number; cleanup: () => Promise<void> }> {
    const image = await this.deps.images.get(name);
    const fmt = format ?? 'ova';
    const dir = await this.deps.images.tempDir(`download-${image.name}`);
    const cleanup = () => rm(dir, { recursive: true, force: true }).catch(() => undefined);
    const filename = `${image.name}.${fmt === 'raw' ? 'img' : fmt}`;
    try {
      const opCtx = {
        signal,
        progress: () => undefined,
        checkCancelled: () => {
          if (signal.aborted) throw vmkitError('VMKIT_OPERATION_CANCELLED', 'The download was cancelled.');
        },
      };
      const r = await exportImage(this.deps.images, name, { path: join(dir, filename), format: fmt }, opCtx);
      return { file: r.path, filename, size: r.size, cleanup };
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  /** A stopped instance becomes a new image (its disk chain flattened). */
  async publish(source: string, req: PublishRequest): Promise<Operation> {
    await this.deps.instances.get(source);
    await this.deps.images.assertFree(req.name);
    return this.deps.operations.start({
      kind: 'image.publish',
      description: `Publishing ${source} as image ${req.name}`,
      target: req.name,
      mayCancel: true,
      run: async (opCtx) => {
        const image = await publishInstance(this.deps.images, this.deps.instances, source, req, opCtx);
        this.deps.events.lifecycle('image-created', image.name);
        return image;
      },
    });
  }

  /** Download from a repository (resumable, verified before it appears). */
  async pull(req: { repo: string; image: string; name?: string }): Promise<Operation> {
    const { repo, image, name } = req;
    await this.repos.remote(repo);
    await this.deps.images.assertFree(name ?? image);
    return this.deps.operations.start({
      kind: 'image.pull',
      description: `Pulling ${repo}:${image}`,
      target: name ?? image,
      mayCancel: true,
      run: async (opCtx) => {
        const pulled = await this.repos.pull(repo, image, name, opCtx);
        this.deps.events.lifecycle('image-created', pulled.name);
        return pulled;
      },
    });
  }

  /** Upload to a writable repository. */
  async push(name: string, repo: string): Promise<Operation> {
    await this.deps.images.get(name);
    await this.repos.remote(repo);
    return this.deps.operations.start({
      kind: 'image.push',
      description: `Pushing ${name} to ${repo}`,
      target: name,
      mayCancel: true,
      run: (opCtx) => this.repos.push(name, repo, opCtx),
    });
  }
}
