import { open, readFile, readdir, rm, stat, writeFile, rename } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { vmkitError } from '../../errors.js';

/**
 * The build step cache, `<data>/build-cache/`: one qcow2 overlay per step result,
 * `<key>.qcow2`, linked on its parent step's overlay (the first step's on the base image), and
 * beside it `<key>.json` with what the step was and when a build last used it.
 *
 * Eviction keeps the chains whole: an overlay whose parent is removed would later be linked on
 * a rebuilt parent with other contents (a corrupt disk), so removing an entry removes every
 * entry below it. Entries a running build uses — every key of its recipe, pinned before it
 * looks at the cache — and the chain of a build VM kept by `--keep-on-failure` (a `.pin` file
 * in `<data>/builds/` while that VM exists) are never removed, nor anything above them.
 * Pinning, the cache lookup and pruning are serialized, so a prune never removes an overlay a
 * build has just decided to reuse.
 */

export interface CacheEntry {
  key: string;
  /** Bytes on disk (allocated blocks). */
  bytes: number;
  createdAt: string;
  /** The last build that made or reused it (its file's time for entries older than this index). */
  lastUsed: string;
  /** The entry it is linked on; absent for a first step (linked on a base image). */
  parent?: string;
  /** The step, as `vmkit image build` prints it, and the image it was built for. */
  step?: string;
  image?: string;
  /** A running build (or a kept build VM) uses it: never evicted. */
  inUse: boolean;
}

export interface CacheLimits {
  /** Total bytes kept after a build (0: no limit). */
  maxBytes: number;
  /** Entries kept after a build (0: no limit). */
  maxEntries: number;
}

export interface PruneRequest {
  /** Every entry not in use. */
  all?: boolean;
  /** Entries not used for this long. */
  olderThanSeconds?: number;
}

export interface PruneResult {
  removed: Array<Pick<CacheEntry, 'key' | 'bytes' | 'lastUsed' | 'step' | 'image'>>;
  freedBytes: number;
  kept: number;
  keptBytes: number;
}

export const DEFAULT_CACHE_LIMITS: CacheLimits = { maxBytes: 10 * 2 ** 30, maxEntries: 0 };

const KEY_FILE = /^([0-9a-f]{64})\.qcow2$/;

/** `10G`, `512M`, `1.5T`, or bytes; `0` = no limit. */
export function parseCacheSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `${what} ${JSON.stringify(text)} is not a size.`, {
      hint: 'Write bytes or a number with K, M, G or T (powers of 1024), e.g. 20G; 0 means no limit.',
    });
  }
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * unit);
}

/** The limits from the environment: VMKIT_BUILD_CACHE_MAX (size) and VMKIT_BUILD_CACHE_MAX_ENTRIES. */
export function cacheLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): CacheLimits {
  const limits = { ...DEFAULT_CACHE_LIMITS };
  if (env.VMKIT_BUILD_CACHE_MAX) limits.maxBytes = parseCacheSize(env.VMKIT_BUILD_CACHE_MAX, 'VMKIT_BUILD_CACHE_MAX');
  if (env.VMKIT_BUILD_CACHE_MAX_ENTRIES) {
    const n = Number(env.VMKIT_BUILD_CACHE_MAX_ENTRIES);
    if (!Number.isInteger(n) || n < 0) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `VMKIT_BUILD_CACHE_MAX_ENTRIES ${JSON.stringify(env.VMKIT_BUILD_CACHE_MAX_ENTRIES)} is not a whole number.`, {
        hint: 'Give the number of step overlays to keep, or 0 for no limit.',
      });
    }
    limits.maxEntries = n;
  }
  return limits;
}

/**
 * The backing file a qcow2 header names (undefined: none). Read from the header itself
 * (backing_file_offset at byte 8, backing_file_size at 16, big-endian): no process per entry.
 */
export async function qcow2Backing(file: string): Promise<string | undefined> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(20);
    const { bytesRead } = await fh.read(head, 0, 20, 0);
    if (bytesRead < 20 || head.readUInt32BE(0) !== 0x514649fb) return undefined;
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0 || size > 4096) return undefined;
    const name = Buffer.alloc(size);
    await fh.read(name, 0, size, offset);
    return name.toString('utf8');
  } finally {
    await fh.close();
  }
}

interface Meta {
  createdAt?: string;
  lastUsed?: string;
  step?: string;
  image?: string;
}

export class BuildCache {
  /** Key → number of running builds using it. */
  private readonly pins = new Map<string, number>();
  private lock: Promise<unknown> = Promise.resolve();

  /**
   * @param dir the cache folder
   * @param pinDir where kept build VMs leave `<vm>.pin` (a JSON array of keys)
   * @param vmExists whether a kept build VM still exists (its pin file goes when it does not)
   */
  constructor(
    readonly dir: string,
    private readonly pinDir: string,
    readonly limits: CacheLimits = DEFAULT_CACHE_LIMITS,
    private readonly vmExists: (name: string) => Promise<boolean> = async () => true,
  ) {}

  /** Runs `fn` alone against other locked sections (lookup + pin, prune). */
  locked<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.catch(() => undefined).then(fn);
    this.lock = next;
    return next;
  }

  /** Marks keys as used by a running build; the function returned lets go of them. */
  pin(keys: readonly string[]): () => void {
    for (const k of keys) this.pins.set(k, (this.pins.get(k) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const k of keys) {
        const n = (this.pins.get(k) ?? 1) - 1;
        if (n <= 0) this.pins.delete(k);
        else this.pins.set(k, n);
      }
    };
  }

  file(key: string): string {
    return join(this.dir, `${key}.qcow2`);
  }

  private metaFile(key: string): string {
    return join(this.dir, `${key}.json`);
  }

  private async readMeta(key: string): Promise<Meta> {
    try {
      return JSON.parse(await readFile(this.metaFile(key), 'utf8')) as Meta;
    } catch {
      return {};
    }
  }

  /** A build made or reused the entry now. */
  async touch(key: string, info: { step?: string; image?: string } = {}, now = new Date()): Promise<void> {
    const old = await this.readMeta(key);
    const meta: Meta = { createdAt: old.createdAt ?? now.toISOString(), lastUsed: now.toISOString(), step: info.step ?? old.step, image: info.image ?? old.image };
    const tmp = `${this.metaFile(key)}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(meta) + '\n');
    await rename(tmp, this.metaFile(key));
  }

  /** The keys kept build VMs hold (their pin files; a pin whose VM is gone is removed). */
  private async keptPins(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const f of await readdir(this.pinDir).catch(() => [] as string[])) {
      if (!f.endsWith('.pin')) continue;
      const vm = f.slice(0, -'.pin'.length);
      if (!(await this.vmExists(vm).catch(() => true))) {
        await rm(join(this.pinDir, f), { force: true });
        continue;
      }
      try {
        for (const k of JSON.parse(await readFile(join(this.pinDir, f), 'utf8')) as string[]) out.add(k);
      } catch {
        // unreadable: protects nothing
      }
    }
    return out;
  }

  /** Every entry, oldest use first. */
  async list(): Promise<CacheEntry[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const inUse = new Set([...this.pins.keys(), ...(await this.keptPins())]);
    const entries: CacheEntry[] = [];
    for (const n of names) {
      const m = KEY_FILE.exec(n);
      if (!m) continue;
      const key = m[1]!;
      const st = await stat(join(this.dir, n)).catch(() => undefined);
      if (!st) continue;
      const meta = await this.readMeta(key);
      const backing = await qcow2Backing(join(this.dir, n)).catch(() => undefined);
      const parentPath = backing ? resolve(this.dir, backing) : undefined;
      const parentKey = parentPath && dirname(parentPath) === resolve(this.dir) ? KEY_FILE.exec(basename(parentPath))?.[1] : undefined;
      entries.push({
        key,
        bytes: st.blocks * 512,
        createdAt: meta.createdAt ?? st.mtime.toISOString(),
        lastUsed: meta.lastUsed ?? st.mtime.toISOString(),
        ...(parentKey ? { parent: parentKey } : {}),
        ...(meta.step ? { step: meta.step } : {}),
        ...(meta.image ? { image: meta.image } : {}),
        inUse: false,
      });
    }
    // In use: pinned, or above something pinned (its chain backs a disk in use).
    const byKey = new Map(entries.map((e) => [e.key, e]));
    for (const k of inUse) {
      for (let e = byKey.get(k); e && !e.inUse; e = e.parent ? byKey.get(e.parent) : undefined) e.inUse = true;
    }
    return entries.sort((a, b) => a.lastUsed.localeCompare(b.lastUsed) || a.key.localeCompare(b.key));
  }

  /** Removes the entries the request names (never one in use), each with the entries below it. */
  prune(req: PruneRequest, now = Date.now()): Promise<PruneResult> {
    if (!req.all && req.olderThanSeconds === undefined) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'Say what to prune: all (every entry not in use) or olderThanSeconds.', {
        hint: 'vmkit image build-cache prune --all, or --older-than 7d.',
      });
    }
    return this.locked(async () => {
      const entries = await this.list();
      const cutoff = req.all ? Infinity : now - req.olderThanSeconds! * 1000;
      const doomed = entries.filter((e) => !e.inUse && Date.parse(e.lastUsed) <= cutoff).map((e) => e.key);
      return this.remove(entries, doomed);
    });
  }

  /**
   * After a build: least recently used entries go (with what is below them) until the cache is
   * within its limits. Entries in use stay even when that leaves it over a limit.
   */
  enforceLimits(): Promise<PruneResult> {
    return this.locked(async () => {
      const { maxBytes, maxEntries } = this.limits;
      const entries = await this.list();
      const gone = new Set<string>();
      const children = childrenOf(entries);
      let bytes = entries.reduce((s, e) => s + e.bytes, 0);
      let count = entries.length;
      const over = () => (maxBytes > 0 && bytes > maxBytes) || (maxEntries > 0 && count > maxEntries);
      // An entry counts as used when anything below it was (removing it removes them); within
      // a chain used together, the deepest goes first, so a shared prefix outlives its leaves.
      const byKey = new Map(entries.map((e) => [e.key, e]));
      const used = (e: CacheEntry) =>
        subtree(e.key, children)
          .map((k) => byKey.get(k)?.lastUsed ?? '')
          .sort()
          .at(-1)!;
      const order = [...entries].sort((a, b) => used(a).localeCompare(used(b)) || depth(b.key, byKey) - depth(a.key, byKey));
      for (const e of order) {
        if (!over()) break;
        if (e.inUse || gone.has(e.key)) continue;
        for (const d of subtree(e.key, children)) {
          if (gone.has(d)) continue;
          gone.add(d);
          const x = entries.find((y) => y.key === d);
          bytes -= x?.bytes ?? 0;
          count--;
        }
      }
      return this.remove(entries, [...gone]);
    });
  }

  private async remove(entries: CacheEntry[], keys: string[]): Promise<PruneResult> {
    const children = childrenOf(entries);
    const byKey = new Map(entries.map((e) => [e.key, e]));
    const all = new Set<string>();
    for (const k of keys) for (const d of subtree(k, children)) all.add(d);
    const removed: PruneResult['removed'] = [];
    // Below first: a child is never left without its parent, even when a removal fails half-way.
    const order = [...all].sort((a, b) => depth(b, byKey) - depth(a, byKey));
    for (const k of order) {
      const e = byKey.get(k)!;
      if (e.inUse) continue; // cannot happen (in use is closed upwards); never remove one anyway
      await rm(this.file(k), { force: true });
      await rm(this.metaFile(k), { force: true });
      removed.push({ key: k, bytes: e.bytes, lastUsed: e.lastUsed, ...(e.step ? { step: e.step } : {}), ...(e.image ? { image: e.image } : {}) });
    }
    const freedBytes = removed.reduce((s, e) => s + e.bytes, 0);
    const left = entries.filter((e) => !removed.some((r) => r.key === e.key));
    return { removed, freedBytes, kept: left.length, keptBytes: left.reduce((s, e) => s + e.bytes, 0) };
  }
}

function childrenOf(entries: CacheEntry[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const e of entries) if (e.parent) m.set(e.parent, [...(m.get(e.parent) ?? []), e.key]);
  return m;
}

/** The key and every key below it. */
function subtree(key: string, children: Map<string, string[]>): string[] {
  const out: string[] = [];
  const todo = [key];
  while (todo.length) {
    const k = todo.pop()!;
    if (out.includes(k)) continue;
    out.push(k);
    todo.push(...(children.get(k) ?? []));
  }
  return out;
}

function depth(key: string, byKey: Map<string, CacheEntry>): number {
  let d = 0;
  for (let e = byKey.get(key); e?.parent && d < 10_000; e = byKey.get(e.parent)) d++;
  return d;
}
