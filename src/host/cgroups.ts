import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';

/**
 * One cgroup per running guest, with a memory and a CPU limit from the instance's size
 * (what libvirt does under machine.slice and Incus under lxc.payload.*). Both layouts:
 *
 *   v2 (Debian 12's default, one hierarchy):  ROOT/vmkit/<id>/{memory.max, cpu.max}
 *       with `+memory +cpu` written to ROOT/cgroup.subtree_control and ROOT/vmkit/'s.
 *   v1 (one hierarchy per controller):         ROOT/memory/vmkit/<id>/memory.limit_in_bytes
 *                                               ROOT/cpu[,cpuacct]/vmkit/<id>/cpu.cfs_{quota,period}_us
 *
 * A hybrid host (v1 controllers plus an empty v2 tree at ROOT/unified) is v1. The group is
 * named after the instance id, so a restarted daemon finds it again (from the instance, or
 * from /proc/PID/cgroup of the QEMU it re-attaches) and keeps it. QEMU enters it before it
 * allocates anything: the shell that becomes QEMU writes its own pid to `procs` and then
 * execs (src/qemu/confine.ts).
 */
export const CGROUP_PARENT = 'vmkit';

export type CgroupLayout = { version: 2; root: string } | { version: 1; memory: string; cpu: string };

export interface CgroupLimits {
  memoryBytes: number;
  /** CPU time per period (µs): (vCPUs + 1) × period, see guestLimits. */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
}

export interface GuestCgroup {
  version: 1 | 2;
  /** Its path inside the hierarchy, as /proc/PID/cgroup shows it: `/vmkit/<id>`. */
  path: string;
  /** The folders of the group (one for v2; memory and cpu for v1). */
  dirs: string[];
  /** The `cgroup.procs` files a process must be written to, in order. */
  procs: string[];
}

/** The host's cgroup layout under `root` (VMKIT_CGROUP_ROOT for tests), or undefined when neither is usable. */
export function detectCgroups(root = process.env.VMKIT_CGROUP_ROOT || '/sys/fs/cgroup'): CgroupLayout | undefined {
  let controllers: string | undefined;
  try {
    controllers = readFileSync(join(root, 'cgroup.controllers'), 'utf8');
  } catch {
    // Not a v2 root (v1 or hybrid): the v1 hierarchies are looked for below.
  }
  if (controllers !== undefined && /\bmemory\b/.test(controllers) && /\bcpu\b/.test(controllers)) return { version: 2, root };
  const memory = join(root, 'memory');
  const cpu = ['cpu', 'cpu,cpuacct', 'cpuacct,cpu'].map((d) => join(root, d)).find((d) => existsSync(join(d, 'cpu.cfs_quota_us')));
  if (existsSync(join(memory, 'memory.limit_in_bytes')) && cpu) return { version: 1, memory, cpu };
  return undefined;
}

function checkId(id: string): string {
  if (!/^[0-9a-f]{1,64}$/.test(id)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${id}" is not an instance id.`, { hint: 'Instance ids are lower-case hex.' });
  return id;
}

/** Where the group of instance `id` lives (nothing is created). */
export function guestCgroup(layout: CgroupLayout, id: string): GuestCgroup {
  const path = `/${CGROUP_PARENT}/${checkId(id)}`;
  const dirs = layout.version === 2 ? [join(layout.root, path)] : [join(layout.memory, path), join(layout.cpu, path)];
  return { version: layout.version, path, dirs, procs: dirs.map((d) => join(d, 'cgroup.procs')) };
}

/**
 * The files and values that set the limits (the unit tests compare them; create writes them).
 * Besides the quota, the group's CPU weight is that of its threads (vCPUs + 1): in a group of
 * its own, QEMU would otherwise compete with every other busy task on the host as ONE task.
 */
export function limitFiles(layout: CgroupLayout, id: string, limits: CgroupLimits): Array<[string, string]> {
  const g = guestCgroup(layout, id);
  const threads = Math.max(1, Math.round(limits.cpuQuotaUs / limits.cpuPeriodUs));
  if (layout.version === 2) {
    return [
      [join(g.dirs[0]!, 'memory.max'), String(limits.memoryBytes)],
      [join(g.dirs[0]!, 'cpu.max'), `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`],
      [join(g.dirs[0]!, 'cpu.weight'), String(Math.min(10_000, 100 * threads))],
    ];
  }
  return [
    [join(g.dirs[0]!, 'memory.limit_in_bytes'), String(limits.memoryBytes)],
    [join(g.dirs[1]!, 'cpu.cfs_period_us'), String(limits.cpuPeriodUs)],
    [join(g.dirs[1]!, 'cpu.cfs_quota_us'), String(limits.cpuQuotaUs)],
    [join(g.dirs[1]!, 'cpu.shares'), String(1024 * threads)],
  ];
}

/**
 * The weight of the `vmkit` parent group: the sum of its children's, so the guests together
 * weigh what their threads would outside it (one parent of default weight would make every
 * guest on the host share one task's worth of CPU under contention).
 */
async function reweighParent(layout: CgroupLayout): Promise<void> {
  const parent = layout.version === 2 ? join(layout.root, CGROUP_PARENT) : join(layout.cpu, CGROUP_PARENT);
  const file = layout.version === 2 ? 'cpu.weight' : 'cpu.shares';
  let sum = 0;
  for (const e of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
    if (!e.isDirectory()) continue;
    sum += Number((await readFile(join(parent, e.name, file), 'utf8').catch(() => '0')).trim()) || 0;
  }
  const value = layout.version === 2 ? Math.min(10_000, Math.max(100, sum)) : Math.min(262_144, Math.max(1024, sum));
  await writeFile(join(parent, file), String(value)).catch(() => undefined); // best effort: the limits above are what matter
}

function cgroupError(what: string, err: unknown): never {
  throw vmkitError('VMKIT_QEMU_FAILED', `Cannot ${what}: ${(err as Error).message}`, {
    hint: 'The daemon must run as root on a host with the memory and cpu cgroup controllers (v1 or v2); "vmkit doctor" checks the host.',
    cause: err,
  });
}

/**
 * Creates (or re-uses) the group of instance `id` and sets its limits. On v2 the memory and
 * cpu controllers are first enabled for the children of the root and of `vmkit/`.
 */
export async function createGuestCgroup(layout: CgroupLayout, id: string, limits: CgroupLimits): Promise<GuestCgroup> {
  const g = guestCgroup(layout, id);
  try {
    if (layout.version === 2) {
      await enableControllers(layout.root);
      await mkdir(join(layout.root, CGROUP_PARENT), { recursive: true });
      await enableControllers(join(layout.root, CGROUP_PARENT));
    }
    for (const d of g.dirs) await mkdir(d, { recursive: true });
    for (const [file, value] of limitFiles(layout, id, limits)) await writeFile(file, value);
    await reweighParent(layout);
  } catch (err) {
    cgroupError(`set up the cgroup ${g.path}`, err);
  }
  return g;
}

async function enableControllers(dir: string): Promise<void> {
  const file = join(dir, 'cgroup.subtree_control');
  const have = await readFile(file, 'utf8').catch(() => '');
  const missing = ['memory', 'cpu'].filter((c) => !new RegExp(`\\b${c}\\b`).test(have));
  if (missing.length > 0) await writeFile(file, missing.map((c) => `+${c}`).join(' '));
}

/**
 * Removes the group once its QEMU is gone. A process that has just exited can keep the group
 * busy for a moment, so EBUSY is retried for up to `waitMs`; a group still busy after that is
 * left (and reported), never a reason to fail a stop.
 */
export async function removeGuestCgroup(layout: CgroupLayout, id: string, waitMs = 3_000): Promise<void> {
  const g = guestCgroup(layout, id);
  const deadline = Date.now() + waitMs;
  // v1: the memory group last, so a busy cpu group does not leave memory accounting behind.
  for (const d of [...g.dirs].reverse()) {
    for (;;) {
      try {
        await rmdir(d);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code === 'EBUSY' && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        // A fake root (tests) holds regular files: the folder is not empty for rmdir.
        if (code === 'ENOTEMPTY' && !existsSync(join(d, 'cgroup.procs'))) break;
        throw vmkitError('VMKIT_QEMU_FAILED', `Cannot remove the cgroup ${d}: ${(err as Error).message}`, {
          hint: 'A process may still run in it; "cat cgroup.procs" in that folder lists it.',
          cause: err,
        });
      }
    }
  }
  await reweighParent(layout);
}

/**
 * The cgroup a process is in (the memory controller's on v1, the unified one on v2), as the
 * path inside the hierarchy (`/vmkit/<id>`), from /proc/PID/cgroup.
 */
export async function cgroupOfProcess(pid: number, layout: CgroupLayout, procRoot = '/proc'): Promise<string | undefined> {
  const text = await readFile(join(procRoot, String(pid), 'cgroup'), 'utf8').catch(() => '');
  return parseProcCgroup(text, layout.version);
}

export function parseProcCgroup(text: string, version: 1 | 2): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (version === 2 && m[1] === '0' && m[2] === '') return m[3];
    if (version === 1 && m[2]!.split(',').includes('memory')) return m[3];
  }
  return undefined;
}

/** Reads a group's memory limit back (bytes), for `vmkit info` and the tests. */
export async function memoryLimitOf(layout: CgroupLayout, id: string): Promise<number | undefined> {
  const g = guestCgroup(layout, id);
  const file = join(g.dirs[0]!, layout.version === 2 ? 'memory.max' : 'memory.limit_in_bytes');
  const text = (await readFile(file, 'utf8').catch(() => '')).trim();
  const n = Number(text);
  return text && Number.isFinite(n) ? n : undefined;
}

/**
 * How often the kernel's OOM killer ended a process of the group for reaching its memory limit
 * (v2: `oom_kill` in memory.events; v1: `oom_kill` in memory.oom_control, kernel 4.13+), read
 * before the group is removed so a crash can say why. Undefined when the kernel does not say.
 */
export async function oomKillsOf(layout: CgroupLayout, id: string): Promise<number | undefined> {
  const g = guestCgroup(layout, id);
  const text = await readFile(join(g.dirs[0]!, layout.version === 2 ? 'memory.events' : 'memory.oom_control'), 'utf8').catch(() => '');
  return parseOomKills(text);
}

export function parseOomKills(text: string): number | undefined {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

// ---- the limits of a guest ------------------------------------------------------------------

/**
 * TCG's translation cache, bounded with `-accel tcg,tb-size=` whenever QEMU runs in a guest's
 * cgroup. QEMU 7.2's default reserves 1 GiB and touches it as the guest translates code,
 * flushing only once all of it is used: the appliance touches ≈ 47 MiB in its boot, but a
 * Debian cloud guest had touched 440 MiB by the time ssh answered and 760 MiB a minute later
 * (code pages freed and reused by new processes are translated again; the old translations
 * stay until a flush). Unbounded, the Debian guest's QEMU crossed its limit (then RAM + 96 +
 * 256 MiB) and the kernel's OOM killer ended it in the middle of cloud-init's first boot.
 * Bounded at 256 MiB the cache is flushed every minute or so while such a guest boots
 * (boot to ssh 280 s vs 293 s unbounded, side by side on a host at load 14) and never for
 * the appliance; 64 MiB was too small (the appliance's snapshot tests thrashed).
 */
export const TCG_TB_SIZE_MIB = 256;

/**
 * What the limit allows for TCG: the bounded cache, and 64 MiB for its index (QEMU's hash
 * table of translated blocks and their page descriptors, on QEMU's heap, which grow with the
 * number of blocks until a flush). Measured on the Debian guest (512 MiB, guest RAM filled
 * with page cache, cache full): 512 MiB RAM + 255 MiB cache + 68 MiB for all the rest.
 */
export const TCG_CACHE_ALLOWANCE_MIB = TCG_TB_SIZE_MIB + 64;

/**
 * What a QEMU process needs beside guest RAM and the TCG cache: its code, heap, device and
 * block-layer buffers, slirp. Measured on the appliance under TCG (QEMU 7.2): ≈ 35–45 MiB of
 * RSS outside those two mappings; 96 leaves room for snapshot/migration buffers.
 */
export const QEMU_OVERHEAD_MIB = 96;

/**
 * The memory limit of a guest's cgroup: guest RAM + QEMU's overhead (+ the TCG translation
 * cache's allowance under TCG). Measured on the appliance (see doc/security.md, "Cgroups").
 * VMKIT_TEST_MEMORY_LIMIT_MIB replaces the result, only so the tests can prove the limit bites.
 */
export function memoryLimitBytes(memoryMiB: number, accel: 'kvm' | 'tcg', env: NodeJS.ProcessEnv = process.env): number {
  const forced = Number(env.VMKIT_TEST_MEMORY_LIMIT_MIB);
  if (env.VMKIT_TEST_MEMORY_LIMIT_MIB && Number.isInteger(forced) && forced > 0) return forced * 1024 * 1024;
  return (memoryMiB + QEMU_OVERHEAD_MIB + (accel === 'tcg' ? TCG_CACHE_ALLOWANCE_MIB : 0)) * 1024 * 1024;
}

export const CPU_PERIOD_US = 100_000;

/**
 * CPU quota: one CPU per vCPU, plus one for QEMU's own threads (main loop, block I/O, slirp),
 * which work beside the vCPU threads — libvirt accounts them apart as its "emulator" threads.
 * With the quota at exactly the vCPUs, a 1-vCPU TCG guest doing I/O (`sync`) was throttled
 * enough to miss the tests' console deadlines.
 */
export function guestLimits(size: { cpus: number; memoryMiB: number }, accel: 'kvm' | 'tcg', env: NodeJS.ProcessEnv = process.env): CgroupLimits {
  return { memoryBytes: memoryLimitBytes(size.memoryMiB, accel, env), cpuQuotaUs: (size.cpus + 1) * CPU_PERIOD_US, cpuPeriodUs: CPU_PERIOD_US };
}
