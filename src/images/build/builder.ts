import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, copyFile, constants, mkdir, readFile, readdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { vmkitError } from '../../errors.js';
import type { Image } from '../../domain/types.js';
import type { OperationContext } from '../../operations/operations.js';
import { createLinkedClone, flattenVolume } from '../../storage/qemu-img.js';
import { run } from '../../util/exec.js';
import type { ImageStore } from '../image-store.js';
import { BuildCache } from './cache.js';
import { describeStep, parseRecipe, type Recipe, type RecipeStep } from './recipe.js';
import { MAX_PUSH_BYTES, SerialSession, shellQuote, type GuestSession } from './session.js';
import { nextVersion, versionedName } from './versions.js';

/**
 * What a build needs of the instance manager, by shape (instances/ imports images/, so
 * images/ must not import instances/). The build VM is an ordinary instance named
 * `build-<hex>`: it is confined (own uid, cgroup) like every guest and visible in `vmkit list`.
 */
export interface BuildVms {
  create(req: { name: string; image: string; cpus?: number; memoryMiB?: number; userData?: string }): Promise<unknown>;
  start(name: string): Promise<unknown>;
  stop(name: string, opts?: { force?: boolean; timeoutSeconds?: number }): Promise<unknown>;
  delete(name: string, opts?: { force?: boolean }): Promise<void>;
  withStoppedInstance<T>(name: string, verb: string, fn: (inst: { id: string }, rootDisk: string) => Promise<T>): Promise<T>;
  serialSocket(name: string): Promise<string>;
  setCloudInit(name: string, req: { userData?: string }): Promise<unknown>;
  /** Whether an instance exists (a build VM kept by --keep-on-failure pins its cache entries while it does). */
  has?(name: string): Promise<boolean>;
}

export interface BuildRequest {
  /** The recipe's YAML text. */
  recipe: string;
  /** The recipe's folder on the daemon host (copy steps read from it); absent for remote callers. */
  dir?: string;
  keepOnFailure?: boolean;
}

export interface BuildStepResult {
  index: number;
  step: string;
  key: string;
  cached: boolean;
  seconds: number;
}

export interface BuildResult {
  image: Image;
  steps: BuildStepResult[];
  seconds: number;
}

export interface BuildDeps {
  images: ImageStore;
  vms: BuildVms;
  dataDir: string;
  /** Finds or makes the image for `base: { debian: RELEASE }`. */
  debianBase(release: string, ctx?: OperationContext): Promise<Image>;
  /** How long the guest may take to give a shell after start (default 180 s). */
  bootTimeoutMs?: number;
  /** The step cache (default: `<data>/build-cache`, default limits). */
  cache?: BuildCache;
}

/** Where step overlays are kept, by key: `<data>/build-cache/<key>.qcow2` (root 0444). */
export function cacheDir(dataDir: string): string {
  return join(dataDir, 'build-cache');
}
/** One journal file per build VM while a build runs (`recoverBuilds` reads them after a crash). */
export function journalDir(dataDir: string): string {
  return join(dataDir, 'builds');
}

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const DEFAULT_STEP_TIMEOUT_S = 30 * 60;
/** Builds of one name at a time (the next version number is picked at the end). */
const building = new Set<string>();

interface Input {
  /** What the guest receives: a file's bytes, or a tar of a folder. */
  bytes: Buffer;
  folder: boolean;
}

/** Reads every copy step's source now: a missing or escaping file fails before anything is made. */
async function readInputs(recipe: Recipe, dir: string | undefined, tmp: () => Promise<string>): Promise<Map<number, Input>> {
  const inputs = new Map<number, Input>();
  const copies = recipe.steps.map((s, i) => [s, i] as const).filter(([s]) => s.kind === 'copy');
  if (copies.length === 0) return inputs;
  if (!dir) {
    throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field steps[${copies[0]![1]}].copy: copy steps read files from the recipe's folder, which a remote daemon cannot see.`, {
      hint: 'Run the build on the daemon host (without --remote), or replace the copy step by a run step that fetches the file (wget/curl) or writes it (cat <<EOF).',
      details: { path: `steps[${copies[0]![1]}].copy.src` },
    });
  }
  const root = await realpath(dir);
  for (const [s, i] of copies) {
    if (s.kind !== 'copy') continue;
    const path = `steps[${i}].copy.src`;
    let real: string;
    try {
      real = await realpath(join(root, s.src));
    } catch {
      throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field ${path}: ${s.src} does not exist in ${root}.`, {
        hint: "Paths are relative to the recipe's folder.",
        details: { path },
      });
    }
    if (real !== root && !real.startsWith(root + sep)) {
      throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field ${path}: ${s.src} leads outside the recipe's folder (a symbolic link?).`, {
        hint: 'A recipe reads only files inside its own folder.',
        details: { path },
      });
    }
    const st = await stat(real);
    if (st.isFile()) {
      if (st.size > MAX_PUSH_BYTES)
        throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field ${path}: ${s.src} is ${st.size} bytes; a copy step carries at most ${MAX_PUSH_BYTES}.`, {
          hint: 'Fetch large files from the network in a run step.',
          details: { path },
        });
      inputs.set(i, { bytes: await readFile(real), folder: false });
    } else if (st.isDirectory()) {
      // A reproducible tar (sorted, no times or owners): its hash is the folder's content.
      const out = join(await tmp(), `copy-${i}.tar`);
      await run(['tar', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=ustar', '-C', real, '-cf', out, '.'], {
        errorCode: 'VMKIT_RECIPE_INVALID',
        timeoutMs: 120_000,
        hint: `Check that ${real} is readable.`,
      });
      const bytes = await readFile(out);
      if (bytes.length > MAX_PUSH_BYTES)
        throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field ${path}: ${s.src} is ${bytes.length} bytes as a tar; a copy step carries at most ${MAX_PUSH_BYTES}.`, {
          hint: 'Copy less, or fetch large files in a run step.',
          details: { path },
        });
      inputs.set(i, { bytes, folder: true });
    } else {
      throw vmkitError('VMKIT_RECIPE_INVALID', `Recipe field ${path}: ${s.src} is neither a file nor a folder.`, { hint: 'Copy regular files or folders.', details: { path } });
    }
  }
  return inputs;
}

/** The cache key of a step: its parent's key, what it does, and the bytes it brings in. */
export function stepKey(parent: string, step: RecipeStep, input?: Buffer): string {
  return sha256(JSON.stringify({ v: 1, parent, step, input: input ? sha256(input) : null }));
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/**
 * `vmkit image build`: parse, check inputs, find the cached prefix of the steps, run the
 * others one boot each in a build VM (each step's disk is a linked qcow2 overlay on the
 * previous step's, kept by key), then publish the last overlay, flattened, as NAME:N.
 */
export async function buildImage(deps: BuildDeps, req: BuildRequest, ctx?: OperationContext): Promise<BuildResult> {
  const started = Date.now();
  const recipe = parseRecipe(req.recipe);
  if (building.has(recipe.name)) {
    throw vmkitError('VMKIT_INVALID_STATE', `Image "${recipe.name}" is being built already.`, { hint: 'Wait for that build to end (vmkit operation list).' });
  }
  // An unversioned image of that name (imported, published) would be shadowed: refuse.
  const plain = await deps.images.getExact(recipe.name);
  if (plain) {
    throw vmkitError('VMKIT_ALREADY_EXISTS', `An image named "${recipe.name}" exists and has no versions; a build publishes ${recipe.name}:N.`, {
      hint: 'Choose another name in the recipe, or delete the existing image.',
    });
  }
  let scratch: string | undefined;
  const tmp = async () => (scratch ??= await deps.images.tempDir(`build-in-${recipe.name}`));
  let release: (() => void) | undefined;
  let finish: (() => Promise<void>) | undefined;
  building.add(recipe.name);
  try {
    const inputs = await readInputs(recipe, req.dir, tmp);
    const log: string[] = [];
    const say = (line: string) => log.push(`${new Date().toISOString()} ${line}`);
    const base = 'image' in recipe.base ? await deps.images.get(recipe.base.image) : await deps.debianBase(recipe.base.debian, ctx);
    const baseDisk = base.disks[0]!;
    const baseFile = deps.images.file(base, baseDisk.file);
    say(`base ${base.name} (${await deps.images.checksum(base.name)})`);
    const baseKey = sha256(`base ${await deps.images.checksum(base.name)}`);

    const cache = deps.cache ?? new BuildCache(cacheDir(deps.dataDir), journalDir(deps.dataDir));
    await mkdir(cache.dir, { recursive: true });
    await chmod(cache.dir, 0o755);
    const keys: string[] = [];
    let parent = baseKey;
    for (const [i, s] of recipe.steps.entries()) {
      parent = stepKey(parent, s, inputs.get(i)?.bytes);
      keys.push(parent);
    }
    const overlay = (i: number) => (i < 0 ? baseFile : cache.file(keys[i]!));
    // The longest cached prefix: a step is reused only when every step before it was. Every key
    // of the recipe is pinned first, in the same locked section, so no prune removes an overlay
    // this build is about to use (or makes) until it ends.
    const firstMissing = await cache.locked(async () => {
      release = cache.pin(keys);
      let n = 0;
      while (n < keys.length && (await exists(overlay(n)))) n++;
      return n;
    });
    finish = async () => {
      // At the end of every build, also a failed one: least recently used entries beyond the limits go.
      await cache.enforceLimits().catch(() => undefined);
      release?.();
    };
    for (let i = 0; i < firstMissing; i++) await cache.touch(keys[i]!, { step: describeStep(recipe.steps[i]!), image: recipe.name });

    const results: BuildStepResult[] = [];
    const total = recipe.steps.length;
    const pct = (i: number) => Math.round(5 + (85 * i) / Math.max(1, total));
    for (let i = 0; i < firstMissing; i++) {
      const d = describeStep(recipe.steps[i]!);
      results.push({ index: i + 1, step: d, key: keys[i]!, cached: true, seconds: 0 });
      say(`step ${i + 1}/${total} ${d}: cached (${keys[i]!.slice(0, 12)})`);
      ctx?.progress({ phase: `step ${i + 1}/${total} ${d} (cached)`, percent: pct(i + 1) });
    }

    if (firstMissing < total) {
      await runSteps(deps, recipe, inputs, { keys, overlay, firstMissing, results, say, pct, keepOnFailure: !!req.keepOnFailure, base: base.name, cache }, ctx);
    }

    // Publish: the last overlay flattened into one independent qcow2 (images never depend on others).
    ctx?.progress({ phase: 'publishing', percent: 92 });
    const version = nextVersion(await deps.images.list(), recipe.name);
    const name = versionedName(recipe.name, version);
    const dir = await deps.images.tempDir(`build-${recipe.name}`);
    try {
      await flattenVolume(overlay(total - 1), join(dir, 'root.qcow2'), { signal: ctx?.signal });
      if (base.boot) {
        for (const f of [base.boot.kernel, base.boot.initrd].filter((x): x is string => !!x)) {
          await copyFile(deps.images.file(base, f), join(dir, f), constants.COPYFILE_FICLONE);
        }
      }
      const seconds = (Date.now() - started) / 1000;
      say(`published ${name} in ${seconds.toFixed(1)} s`);
      await writeFile(join(dir, 'recipe.yaml'), req.recipe);
      await writeFile(join(dir, 'build.log'), log.join('\n') + '\n');
      const info = await import('../../storage/qemu-img.js').then((m) => m.volumeInfo(join(dir, 'root.qcow2'), 'qcow2'));
      const image: Image = {
        name,
        version: String(version),
        description: recipe.description ?? `Built from a recipe on ${base.name}`,
        arch: base.arch,
        ...(base.boot ? { boot: base.boot } : {}),
        defaults: { cpus: recipe.size?.cpus ?? base.defaults.cpus, memoryMiB: recipe.size?.memoryMiB ?? base.defaults.memoryMiB },
        ...(base.display ? { display: base.display } : {}),
        ...(base.firmware ? { firmware: base.firmware } : {}),
        nicModels: base.nicModels,
        ...(recipe.diskBytes !== undefined || base.minDiskBytes !== undefined ? { minDiskBytes: Math.max(recipe.diskBytes ?? 0, base.minDiskBytes ?? 0) } : {}),
        disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2', virtualSize: info.virtualSize }],
        source: 'build',
        origin: `recipe on ${base.name}`,
        build: { base: base.name, recipe: 'recipe.yaml', log: 'build.log', steps: results, seconds },
        createdAt: new Date().toISOString(),
      };
      const committed = await deps.images.commit(image, dir);
      return { image: committed, steps: results, seconds };
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  } finally {
    await finish?.();
    building.delete(recipe.name);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

interface StepPlan {
  keys: string[];
  overlay: (i: number) => string;
  firstMissing: number;
  results: BuildStepResult[];
  say: (line: string) => void;
  pct: (i: number) => number;
  keepOnFailure: boolean;
  base: string;
  cache: BuildCache;
}

/** Runs the uncached steps in one build VM, one boot per step; each step's disk goes to the cache. */
async function runSteps(deps: BuildDeps, recipe: Recipe, inputs: Map<number, Input>, plan: StepPlan, ctx?: OperationContext): Promise<void> {
  const { vms, dataDir } = deps;
  const { keys, overlay, results, say, pct } = plan;
  const total = recipe.steps.length;
  const vm = `build-${randomBytes(4).toString('hex')}`;
  const journal = join(journalDir(dataDir), `${vm}.json`);
  await mkdir(journalDir(dataDir), { recursive: true });
  await writeFile(journal, JSON.stringify({ vm, image: recipe.name, startedAt: new Date().toISOString() }));
  let keep = false;
  let step = plan.firstMissing;
  try {
    await vms.create({
      name: vm,
      image: plan.base,
      userData: BUILD_USER_DATA,
      ...(recipe.size?.cpus ? { cpus: recipe.size.cpus } : {}),
      ...(buildVmMemory(recipe) ? { memoryMiB: buildVmMemory(recipe) } : {}),
    });
    say(`build VM ${vm}`);
    for (let i = plan.firstMissing; i < total; i++) {
      step = i;
      ctx?.checkCancelled();
      const s = recipe.steps[i]!;
      const d = describeStep(s);
      const t0 = Date.now();
      ctx?.progress({ phase: `step ${i + 1}/${total} ${d}`, percent: pct(i) });
      say(`step ${i + 1}/${total} ${d}: running`);
      // The step's disk: a fresh overlay on the previous step's (or the base image's) disk.
      await vms.withStoppedInstance(vm, 'prepared for a build step', async (_inst, rootDisk) => {
        await rm(rootDisk, { force: true });
        await createLinkedClone(overlay(i - 1), i === 0 ? ((await deps.images.get(plan.base)).disks[0]!.format as 'qcow2' | 'raw') : 'qcow2', rootDisk);
      });
      if (s.kind === 'cloud-init') await vms.setCloudInit(vm, { userData: withBuildUserData(s.userData) });
      else if (i > plan.firstMissing && recipe.steps[i - 1]!.kind === 'cloud-init') await vms.setCloudInit(vm, { userData: BUILD_USER_DATA });
      await vms.start(vm);
      let session: GuestSession | undefined;
      try {
        session = await SerialSession.open(await vms.serialSocket(vm), deps.bootTimeoutMs ?? 180_000, ctx?.signal);
        const r = await runStep(session, s, inputs.get(i), ctx?.signal, (t) => say(`  | ${t.replace(/\n$/, '').replace(/\n/g, '\n  | ')}`));
        if (r.exit !== 0) {
          const tail = r.output.trim().split('\n').slice(-15).join('\n');
          throw vmkitError('VMKIT_BUILD_FAILED', `Step ${i + 1}/${total} (${d}) failed with exit status ${r.exit}.${tail ? `\n${tail}` : ''}`, {
            hint: plan.keepOnFailure
              ? `The build VM ${vm} is left running: "vmkit console ${vm}" (a root shell; the step's script is /tmp/.vmkit-step.sh), then "vmkit delete ${vm} --force".`
              : 'Fix the step and build again (the steps before it are cached); --keep-on-failure leaves the build VM to look at.',
            details: { step: i + 1, exit: r.exit, ...(plan.keepOnFailure ? { vm } : {}) },
          });
        }
        // After each step a cloud-init guest forgets the build VM's boot (its instance, the
        // user-data with the console shell): the next boot — a later cloud-init step, or an
        // instance of the image — runs cloud-init as a first boot.
        const sync = await session.run('if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs; fi\nsync', { timeoutMs: 120_000 });
        if (sync.exit !== 0) throw vmkitError('VMKIT_BUILD_FAILED', 'sync failed in the build VM.', { hint: 'Look at the build VM console.' });
      } catch (err) {
        session?.close();
        if (plan.keepOnFailure && (err as { code?: string }).code !== 'VMKIT_OPERATION_CANCELLED') keep = true;
        throw err;
      }
      session.close();
      await vms.stop(vm, { timeoutSeconds: 60 });
      // Keep the step's disk by key: moved out of the instance, root-owned and read-only.
      await vms.withStoppedInstance(vm, 'saved', async (_inst, rootDisk) => {
        const part = `${overlay(i)}.tmp-${randomBytes(4).toString('hex')}`;
        await rename(rootDisk, part).catch(async () => {
          await copyFile(rootDisk, part);
          await rm(rootDisk, { force: true });
        });
        await chown(part, 0, 0).catch(() => undefined);
        await chmod(part, 0o444);
        await rename(part, overlay(i));
      });
      await plan.cache.touch(keys[i]!, { step: d, image: recipe.name });
      const seconds = (Date.now() - t0) / 1000;
      results.push({ index: i + 1, step: d, key: keys[i]!, cached: false, seconds });
      say(`step ${i + 1}/${total} ${d}: done in ${seconds.toFixed(1)} s (${keys[i]!.slice(0, 12)})`);
      ctx?.progress({ phase: `step ${i + 1}/${total} ${d} (${seconds.toFixed(1)} s)`, percent: pct(i + 1) });
    }
  } finally {
    if (keep) {
      // The kept VM's disk is linked on the cached steps before the one that failed: they stay
      // (no prune or limit removes them) while the VM exists.
      await writeFile(join(journalDir(dataDir), `${vm}.pin`), JSON.stringify(keys.slice(0, step))).catch(() => undefined);
      await rm(journal, { force: true });
    } else {
      await vms.delete(vm, { force: true }).catch(() => undefined);
      await rm(journal, { force: true });
    }
  }
}

/**
 * The build VM's memory: the recipe's size, else the base's default — but at least 1 GiB for a
 * Debian base. Under TCG a systemd guest with 512 MiB was OOM-killed in its cgroup during boot
 * (QEMU's RSS reached the limit, guest memory + 96 + 256 MiB, with the TCG code cache); 1 GiB
 * raises the limit enough (measured: a Debian build passes).
 */
export function buildVmMemory(recipe: Recipe): number | undefined {
  if ('debian' in recipe.base) return Math.max(recipe.size?.memoryMiB ?? 0, 1024);
  return recipe.size?.memoryMiB;
}

/**
 * The build VM's own user-data: on a cloud-init guest (the Debian image) it puts a root shell
 * on ttyS0 for the session, every boot of the build VM only (the serial getty is masked for
 * that boot). The appliance ignores user-data: its ttyS0 is a root shell already.
 */
export const BUILD_USER_DATA = `#cloud-config
# The build VM needs no locale: Debian bookworm's cloud-init failed generating en_US.UTF-8 there
# (status: error), which failed every cloud-init step. A step's own "locale:" still wins.
locale: false
bootcmd:
  - [sh, -c, "systemctl mask --runtime --now serial-getty@ttyS0.service >/dev/null 2>&1; (setsid sh -c 'while :; do sh -i </dev/ttyS0 >/dev/ttyS0 2>&1; sleep 1; done' </dev/null >/dev/null 2>&1 &)"]
`;

/** A cloud-init step's user-data beside the build VM's: one MIME multipart document. */
export function withBuildUserData(userData: string): string {
  const boundary = `vmkit-${randomBytes(8).toString('hex')}`;
  const type = userData.trimStart().startsWith('#!') ? 'text/x-shellscript' : 'text/cloud-config';
  return [
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    'MIME-Version: 1.0',
    '',
    `--${boundary}`,
    'Content-Type: text/cloud-config; charset="us-ascii"',
    '',
    BUILD_USER_DATA,
    `--${boundary}`,
    `Content-Type: ${type}; charset="utf-8"`,
    '',
    userData,
    `--${boundary}--`,
    '',
  ].join('\n');
}

async function runStep(
  session: GuestSession,
  s: RecipeStep,
  input: Input | undefined,
  signal: AbortSignal | undefined,
  onOutput: (t: string) => void,
): Promise<{ exit: number; output: string }> {
  if (s.kind === 'run') return session.run(s.command, { timeoutMs: (s.timeoutSeconds ?? DEFAULT_STEP_TIMEOUT_S) * 1000, onOutput, signal });
  if (s.kind === 'cloud-init') {
    const script =
      'if ! command -v cloud-init >/dev/null 2>&1; then echo "this base image has no cloud-init: use run steps"; exit 127; fi\nrc=0; cloud-init status --wait >/dev/null || rc=$?\ncloud-init status --long\nexit $rc\n';
    return session.run(script, { timeoutMs: (s.timeoutSeconds ?? DEFAULT_STEP_TIMEOUT_S) * 1000, onOutput, signal });
  }
  if (!input) throw vmkitError('VMKIT_INTERNAL', 'A copy step has no input.');
  const mode = s.mode ?? 0o644;
  if (!input.folder) {
    await session.push(s.dest, input.bytes, mode);
    return { exit: 0, output: '' };
  }
  await session.push('/tmp/.vmkit-copy.tar', input.bytes, 0o600);
  const dest = shellQuote(s.dest);
  const chmodPart = s.mode !== undefined ? `\nfind ${dest} -type f -exec chmod ${mode.toString(8)} {} +` : '';
  return session.run(`mkdir -p ${dest}\ntar -xf /tmp/.vmkit-copy.tar -C ${dest}\nrm -f /tmp/.vmkit-copy.tar${chmodPart}\n`, { timeoutMs: 300_000, onOutput });
}

/**
 * After a daemon restart: a build that was running is gone with its operation. Its build VM is
 * deleted and half-written cache files are removed; finished step overlays stay in the cache,
 * so running the build again resumes after the last step that completed.
 */
export async function recoverBuilds(vms: Pick<BuildVms, 'delete'>, dataDir: string, log: (line: string) => void = () => undefined): Promise<void> {
  const jdir = journalDir(dataDir);
  const entries = await readdir(jdir).catch(() => [] as string[]);
  for (const e of entries) {
    if (!e.endsWith('.json')) continue;
    try {
      const j = JSON.parse(await readFile(join(jdir, e), 'utf8')) as { vm: string };
      if (/^build-[0-9a-f]{8}$/.test(j.vm)) {
        await vms.delete(j.vm, { force: true }).catch((err: Error) => {
          if (!/VMKIT_INSTANCE_NOT_FOUND|no instance/i.test(`${(err as { code?: string }).code} ${err.message}`)) throw err;
        });
        log(`removed build VM ${j.vm} of an interrupted image build`);
      }
    } catch (err) {
      log(`warning: interrupted build ${e}: ${(err as Error).message}`);
      continue;
    }
    await rm(join(jdir, e), { force: true });
  }
  for (const f of await readdir(cacheDir(dataDir)).catch(() => [] as string[])) {
    if (f.includes('.tmp-')) await rm(join(cacheDir(dataDir), f), { force: true });
  }
}
