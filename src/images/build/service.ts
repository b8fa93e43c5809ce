import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { Image, Operation } from '../../domain/types.js';
import { vmkitError } from '../../errors.js';
import type { EventBus } from '../../operations/events.js';
import type { OperationContext, OperationManager } from '../../operations/operations.js';
import { buildDebianImage } from '../build-debian.js';
import type { ImageStore } from '../image-store.js';
import { buildImage, cacheDir, journalDir, recoverBuilds, type BuildRequest, type BuildVms } from './builder.js';
import { BuildCache, cacheLimitsFromEnv, type CacheEntry, type CacheLimits, type PruneRequest, type PruneResult } from './cache.js';
import { parseRecipe } from './recipe.js';

export interface ImageBuildDeps {
  images: ImageStore;
  /** The instance manager, by shape: it runs the build VM. */
  vms: BuildVms;
  operations: OperationManager;
  events: EventBus;
  dataDir: string;
  buildCacheDir?: string;
  /** Limits of the step cache (default: VMKIT_BUILD_CACHE_MAX / VMKIT_BUILD_CACHE_MAX_ENTRIES, else 10 GiB). */
  stepCacheLimits?: CacheLimits;
}

/** `vmkit image build`: checks the recipe at once (a bad one answers 400), then builds as an operation. */
export class ImageBuildService {
  readonly cache: BuildCache;

  constructor(private readonly deps: ImageBuildDeps) {
    const vms = deps.vms;
    this.cache = new BuildCache(cacheDir(deps.dataDir), journalDir(deps.dataDir), deps.stepCacheLimits ?? cacheLimitsFromEnv(), (name) =>
      vms.has ? vms.has(name) : Promise.resolve(true),
    );
  }

  /** The step cache's entries, least recently used first (GET /1.0/images/build/cache). */
  async cacheList(): Promise<{ entries: CacheEntry[]; bytes: number; limits: CacheLimits }> {
    const entries = await this.cache.list();
    return { entries, bytes: entries.reduce((s, e) => s + e.bytes, 0), limits: this.cache.limits };
  }

  /** Removes step cache entries no build uses (POST /1.0/images/build/cache/prune). */
  cachePrune(req: PruneRequest): Promise<PruneResult> {
    return this.cache.prune(req);
  }

  build(req: BuildRequest): Operation {
    const recipe = parseRecipe(req.recipe);
    if (req.dir !== undefined && !isAbsolute(req.dir)) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `dir must be an absolute path on the daemon host, not ${JSON.stringify(req.dir)}.`, {
        hint: 'The CLI sends the absolute folder of the recipe file.',
      });
    }
    const copy = recipe.steps.findIndex((s) => s.kind === 'copy');
    if (copy >= 0 && req.dir === undefined) {
      throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field steps[${copy}].copy: copy steps read files from the recipe's folder, which a remote daemon cannot see.`, {
        hint: 'Run the build on the daemon host (without --remote), or replace the copy step by a run step that fetches the file (wget) or writes it (cat <<EOF).',
        details: { path: `steps[${copy}].copy.src` },
      });
    }
    return this.deps.operations.start({
      kind: 'image.build',
      description: `Building image ${recipe.name} (${recipe.steps.length} steps)`,
      target: recipe.name,
      mayCancel: true,
      run: async (ctx) => {
        const r = await buildImage(
          { images: this.deps.images, vms: this.deps.vms, dataDir: this.deps.dataDir, debianBase: (rel, c) => this.debianBase(rel, c), cache: this.cache },
          req,
          ctx,
        );
        this.deps.events.lifecycle('image-created', r.image.name);
        return r;
      },
    });
  }

  /** The recipe and the build log of a built image (GET /1.0/images/{name}/build). */
  async record(name: string): Promise<{ name: string; recipe: string; log: string; build: NonNullable<Image['build']> }> {
    const image = await this.deps.images.get(name);
    if (!image.build) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `Image "${image.name}" was not built from a recipe.`, {
        hint: 'Only images made by "vmkit image build" have a recipe and a build log.',
      });
    }
    const [recipe, log] = await Promise.all([readFile(this.deps.images.file(image, image.build.recipe), 'utf8'), readFile(this.deps.images.file(image, image.build.log), 'utf8')]);
    return { name: image.name, recipe, log, build: image.build };
  }

  /** `base: { debian: RELEASE }`: the image debian-RELEASE, built once from Debian packages. */
  private async debianBase(release: string, ctx?: OperationContext): Promise<Image> {
    const name = `debian-${release}`;
    const have = await this.deps.images.getExact(name);
    if (have) return have;
    const cacheDir = this.deps.buildCacheDir ?? process.env.VMKIT_BUILD_CACHE ?? join(this.deps.dataDir, 'cache');
    const image = await buildDebianImage(this.deps.images, { name, release }, cacheDir, ctx);
    this.deps.events.lifecycle('image-created', image.name);
    return image;
  }

  /** At daemon start: build VMs and half-written cache files of builds a crash interrupted. */
  recover(log?: (line: string) => void): Promise<void> {
    return recoverBuilds(this.deps.vms, this.deps.dataDir, log);
  }
}
