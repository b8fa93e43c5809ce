import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, chmod, mkdir, readFile, readdir, rename, rm, stat, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Image } from '../domain/types.js';
import type { DataPaths } from '../paths.js';
import type { Store } from '../store/store.js';
import { volumeInfo } from '../storage/qemu-img.js';
import { versionedName, versionsOf } from './build/versions.js';

/** What the appliance build (guest/build.sh) writes beside its files. */
interface ApplianceManifest {
  name: string;
  version: string;
  description: string;
  arch: 'x86_64';
  boot?: Image['boot'];
  defaults: Image['defaults'];
  nicModels: Image['nicModels'];
  display?: Image['display'];
  disks: Array<{ file: string; format: 'qcow2' | 'raw' }>;
}

/**
 * Images: static, read-only metadata + volumes in `<data>/images/<name>/`. A folder appears
 * by rename only when complete and its row is written after, so a crash leaves at most a
 * temporary folder that `reconcile` removes.
 */
export class ImageStore {
  /** Names an import/publish/pull is building right now (so two cannot race for one name). */
  private readonly reserved = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly paths: DataPaths,
  ) {}

  async list(): Promise<Image[]> {
    return (await this.store.list<Image>('images')).map((v) => v.value);
  }

  /**
   * An image by name; `NAME` with no image of exactly that name is the newest `NAME:N`
   * (versioned images from `vmkit image build`, see build/versions.ts).
   */
  async get(name: string): Promise<Image> {
    let found = await this.store.get<Image>('images', name);
    if (!found && !name.includes(':')) {
      const newest = versionsOf(
        (await this.store.list<Image>('images')).map((v) => v.key),
        name,
      )[0];
      if (newest !== undefined) found = await this.store.get<Image>('images', versionedName(name, newest));
    }
    if (!found) {
      throw vmkitError('VMKIT_IMAGE_NOT_FOUND', `There is no image "${name}".`, {
        hint: '"vmkit image list" shows the images this host has.',
      });
    }
    return found.value;
  }

  /** Absolute path of a file of an image. */
  file(image: Image, relative: string): string {
    return join(this.paths.image(image.name), relative);
  }

  /** The image named exactly `name` (no version resolution), or undefined. */
  async getExact(name: string): Promise<Image | undefined> {
    return (await this.store.get<Image>('images', name))?.value;
  }

  /** Fails with VMKIT_ALREADY_EXISTS when the name is taken (checked before long work starts). */
  async assertFree(name: string): Promise<void> {
    validateName(name, 'image name');
    const versioned =
      versionsOf(
        (await this.store.list<Image>('images')).map((v) => v.key),
        name,
      ).length > 0;
    if (this.reserved.has(name) || versioned || (await this.store.get('images', name))) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `An image named "${name}" already exists.`, {
        hint: 'Choose another --name, or delete the existing image first ("vmkit image delete NAME").',
      });
    }
  }

  /**
   * Claims a name for an image being built; returns the release function (call it in a
   * finally). Fails like assertFree when the name is taken or claimed.
   */
  async reserve(name: string): Promise<() => void> {
    await this.assertFree(name);
    this.reserved.add(name);
    return () => this.reserved.delete(name);
  }

  /**
   * A fresh temporary folder for an image being built (import, publish, pull). It becomes
   * the image folder by rename in `commit`; `reconcile` removes it after a crash.
   */
  async tempDir(purpose: string): Promise<string> {
    await mkdir(this.paths.images, { recursive: true });
    const dir = join(this.paths.images, `.tmp-${purpose}-${randomBytes(4).toString('hex')}`);
    await mkdir(dir);
    return dir;
  }

  /** Makes a complete temporary folder the image's folder, files read-only, then writes the row. */
  async commit(image: Image, tmp: string): Promise<Image> {
    if (await this.store.get('images', image.name)) await this.assertFree(image.name);
    for (const d of image.disks) {
      const st = await stat(join(tmp, d.file));
      d.actualSize = st.size;
    }
    for (const f of await readdir(tmp)) await chmod(join(tmp, f), 0o444);
    await rm(this.paths.image(image.name), { recursive: true, force: true });
    await rename(tmp, this.paths.image(image.name));
    try {
      await this.store.put('images', image.name, image, { expectRevision: 0 });
    } catch (err) {
      await rm(this.paths.image(image.name), { recursive: true, force: true });
      throw err;
    }
    return image;
  }

  /** Changes an image's metadata (its defaults); the files stay as they are. Compare-and-swap on the row. */
  async update(ref: string, change: (image: Image) => Image): Promise<Image> {
    const name = (await this.get(ref)).name; // throws VMKIT_IMAGE_NOT_FOUND; `web` → its newest `web:N`
    const found = await this.store.get<Image>('images', name);
    if (!found) await this.get(name);
    const next = change(structuredClone(found!.value));
    await this.store.put('images', name, next, { expectRevision: found!.revision });
    return next;
  }

  /** Deletes an image; the caller has checked that nothing uses it. */
  async remove(name: string): Promise<void> {
    await this.get(name);
    // Row first: a crash after it leaves a folder without a row, which reconcile removes.
    await this.store.delete('images', name);
    await rm(this.paths.image(name), { recursive: true, force: true });
  }

  /** sha256 of the first disk file, computed once and kept in the row. */
  async checksum(name: string): Promise<string> {
    const image = await this.get(name);
    if (image.checksum) return image.checksum;
    const sum = `sha256:${await sha256File(this.file(image, image.disks[0]!.file))}`;
    const fresh = await this.store.get<Image>('images', name);
    if (fresh) await this.store.put('images', name, { ...fresh.value, checksum: sum });
    return sum;
  }

  /**
   * The image's first disk inside shared storage (`<shared>/bases/<sha256>.<format>`), copied
   * there once: disks on shared storage are backed by it so every host reaches the whole chain.
   * Named by content, so hosts that built the same image share one copy.
   */
  async sharedBase(image: Image, sharedDir: string): Promise<string> {
    const sum = (await this.checksum(image.name)).replace(/^sha256:/, '');
    const disk = image.disks[0]!;
    const dest = join(sharedDir, 'bases', `${sum}.${disk.format}`);
    if (
      await stat(dest).then(
        () => true,
        () => false,
      )
    )
      return dest;
    await mkdir(join(sharedDir, 'bases'), { recursive: true });
    const tmp = `${dest}.tmp-${randomBytes(4).toString('hex')}`;
    try {
      await copyFile(this.file(image, disk.file), tmp, constants.COPYFILE_FICLONE);
      await chmod(tmp, 0o444);
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return dest;
  }

  /**
   * Removes leftovers of interrupted imports: temporary folders and folders with no row.
   * `keep` names folders whose row is quarantined (damaged, not gone): their files stay.
   */
  async reconcile(keep: ReadonlySet<string> = new Set()): Promise<void> {
    await mkdir(this.paths.images, { recursive: true });
    const rows = new Set((await this.store.list<Image>('images')).map((v) => v.key));
    for (const entry of await readdir(this.paths.images)) {
      if (entry.startsWith('.tmp-') || (!rows.has(entry) && !keep.has(entry))) {
        await rm(join(this.paths.images, entry), { recursive: true, force: true });
      }
    }
  }

  /**
   * Registers the built-in appliance from the folder guest/build.sh produced. A newer build
   * (another version) replaces the old image only when no instance uses it.
   */
  async ensureAppliance(buildDir: string, inUse: (image: string) => Promise<boolean>): Promise<Image | undefined> {
    let manifest: ApplianceManifest;
    try {
      manifest = JSON.parse(await readFile(join(buildDir, 'image.json'), 'utf8')) as ApplianceManifest;
    } catch {
      return undefined;
    }
    const name = validateName(manifest.name, 'image name');
    const existing = await this.store.get<Image>('images', name);
    if (existing && (existing.value.version === manifest.version || (await inUse(name)))) return existing.value;
    const tmp = join(this.paths.images, `.tmp-${name}-${process.pid}`);
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    try {
      const files = [...manifest.disks.map((d) => d.file)];
      if (manifest.boot?.kernel) files.push(manifest.boot.kernel);
      if (manifest.boot?.initrd) files.push(manifest.boot.initrd);
      for (const f of files) {
        await copyFile(join(buildDir, f), join(tmp, f), constants.COPYFILE_FICLONE);
        await chmod(join(tmp, f), 0o444);
      }
      const disks: Image['disks'] = [];
      for (const d of manifest.disks) {
        const info = await volumeInfo(join(tmp, d.file), d.format);
        disks.push({
          name: disks.length === 0 ? 'root' : `disk${disks.length}`,
          file: d.file,
          format: d.format,
          virtualSize: info.virtualSize,
          actualSize: (await stat(join(tmp, d.file))).size,
        });
      }
      const image: Image = {
        name,
        version: manifest.version,
        description: manifest.description,
        arch: manifest.arch,
        boot: manifest.boot,
        defaults: manifest.defaults,
        nicModels: manifest.nicModels,
        ...(manifest.display ? { display: manifest.display } : {}),
        disks,
        source: 'builtin',
        createdAt: new Date().toISOString(),
      };
      await rm(this.paths.image(name), { recursive: true, force: true });
      await rename(tmp, this.paths.image(name));
      await this.store.put('images', name, image);
      return image;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }
}

export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
