import { chmod, chown, lstat, open, readdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { vmkitError } from '../errors.js';
import type { Instance } from '../domain/types.js';
import { allocateGuestUid, confineGuests } from '../host/guest-uids.js';
import { cgroupOfProcess, createGuestCgroup, detectCgroups, guestCgroup, guestLimits, memoryLimitOf, oomKillsOf, removeGuestCgroup, type CgroupLayout } from '../host/cgroups.js';
import { confinementPrefix } from '../qemu/confine.js';
import type { DataPaths } from '../paths.js';

/**
 * Least privilege for each guest's QEMU (libvirt's "dynamic ownership" + per-VM uid, and its
 * cgroups): every instance holds a uid (= gid) of its own from src/host/guest-uids.ts; before
 * each start the files QEMU opens are given to that uid, a cgroup with the instance's memory
 * and CPU limits is made, and QEMU is launched through the prefix of src/qemu/confine.ts.
 *
 *   instance folder           root:root 0711 (QEMU reaches its files by name, lists nothing)
 *   root.qcow2 (+ shared)     uid:uid 0600   (QEMU writes it: disk, internal snapshots, suspend)
 *   layer-*.qcow2             root:root 0444 (frozen layers of linked clones, read by several guests)
 *   cidata.img                uid:uid 0400   (the config drive, read-only)
 *   console.log               uid:uid 0600   (QEMU appends the serial console)
 *   run/                      uid:uid 0700   (QMP, serial, VNC sockets and the pid file QEMU makes)
 *   images, kernels, bases    root, 0444 files in 0755 folders (readable, never writable)
 *   vmkit.db, tokens          root only
 *
 * VMKIT_QEMU_AS_ROOT=1 is for the bench only (it measures the cost of all this): QEMU then
 * runs as the daemon's user in the daemon's cgroup, as before. It is not a user setting.
 */
export interface Confined {
  /** Put before QEMU's argv (empty: QEMU runs as the daemon's user). */
  prefix: string[];
  /** The instance's cgroup inside the hierarchy (`/vmkit/<id>`), when one was made. */
  cgroup?: string;
}

export function qemuRunsAsRoot(): boolean {
  return !confineGuests();
}

export class Confinement {
  /** uids handed out whose row is not written yet (two creates at once get different uids). */
  private readonly pending = new Set<number>();
  private layout: CgroupLayout | undefined | null = null;

  constructor(
    private readonly paths: DataPaths,
    private readonly rows: { list(): Promise<Instance[]>; save(inst: Instance): Promise<void> },
  ) {}

  /** A fresh uid for a row about to be written; `done` must be called once it is (or failed). */
  async reserveUid(): Promise<{ uid: number; done: () => void }> {
    const rows = await this.rows.list();
    // Synchronous from here: a second caller sees this one's pending uid.
    const uid = allocateGuestUid([...rows.map((r) => r.uid).filter((u): u is number => u !== undefined), ...this.pending]);
    this.pending.add(uid);
    return { uid, done: () => this.pending.delete(uid) };
  }

  /** An instance from before uids (an older row): it gets one at its first start. */
  async ensureUid(inst: Instance): Promise<number> {
    if (inst.uid !== undefined) return inst.uid;
    const { uid, done } = await this.reserveUid();
    try {
      inst.uid = uid;
      await this.rows.save(inst);
    } finally {
      done();
    }
    return uid;
  }

  cgroupLayout(): CgroupLayout | undefined {
    if (this.layout === null) this.layout = detectCgroups();
    return this.layout;
  }

  /** The instance's cgroup path if the host has cgroups (it may not exist). */
  cgroupPath(inst: Instance): string | undefined {
    const layout = this.cgroupLayout();
    return layout ? guestCgroup(layout, inst.id).path : undefined;
  }

  /**
   * Before QEMU starts: files owned by the instance's uid, its cgroup made with its limits;
   * returns the prefix that confines QEMU. Called with the instance's lock held.
   */
  async prepare(inst: Instance, accel: 'kvm' | 'tcg', diskFiles: readonly string[], readFiles: readonly string[] = []): Promise<Confined> {
    if (qemuRunsAsRoot()) return { prefix: [] };
    // QEMU's user-mode stack binds these itself, and an unprivileged QEMU may not bind below 1024.
    const low = inst.forwards.filter((f) => f.hostPort < 1024 && inst.nics.find((n) => n.id === f.nic)?.network === 'user');
    if (low.length > 0) {
      throw vmkitError(
        'VMKIT_PORT_PRIVILEGED',
        `Host port ${low.map((f) => f.hostPort).join(', ')} of "${inst.name}" is below 1024 on a user-mode NIC; its QEMU runs unprivileged and cannot bind it.`,
        {
          hint: `Use a port from 1024 up ("vmkit forward remove ${inst.name} ${low[0]!.hostPort}", then add another), or put the guest on a nat network, whose forwards the kernel holds.`,
        },
      );
    }
    const uid = await this.ensureUid(inst);
    try {
      await this.grantFiles(inst, uid, diskFiles);
      await letRead(readFiles);
    } catch (err) {
      throw vmkitError('VMKIT_STORAGE_FAILED', `Cannot give the files of "${inst.name}" to its uid ${uid}: ${(err as Error).message}`, {
        hint: 'The daemon must run as root, and the data folder (and shared storage) must allow chown (no root_squash).',
        cause: err,
      });
    }
    const layout = this.cgroupLayout();
    if (!layout) {
      throw vmkitError('VMKIT_QEMU_FAILED', 'This host has no usable memory and cpu cgroup controllers; vmkit confines every QEMU to a cgroup of its own.', {
        hint: 'Mount the cgroup v2 hierarchy at /sys/fs/cgroup (Debian 12 default) or the v1 memory and cpu hierarchies. To run the daemon in a network namespace use "nsenter --net=/run/netns/NAME": "ip netns exec" remounts /sys without them.',
      });
    }
    const g = await createGuestCgroup(layout, inst.id, guestLimits(inst, accel));
    const groups = accel === 'kvm' ? [await kvmGroup()] : [];
    return { prefix: confinementPrefix({ uid, gid: uid, groups, cgroupProcs: g.procs }), cgroup: g.path };
  }

  /** After QEMU ended (or a start failed): its cgroup goes. Failures are logged, never thrown. */
  async release(instanceId: string): Promise<void> {
    const layout = this.cgroupLayout();
    if (!layout || qemuRunsAsRoot()) return;
    await removeGuestCgroup(layout, instanceId).catch((err: Error) => console.error(`vmkitd: cgroup of instance ${instanceId}: ${err.message}`));
  }

  /**
   * Why a QEMU that ended unexpectedly ended, when its cgroup knows: the kernel's OOM killer
   * (the group reached its memory limit). Read before `release` removes the group.
   */
  async oomKilled(instanceId: string): Promise<{ limitMiB?: number } | undefined> {
    const layout = this.cgroupLayout();
    if (!layout || qemuRunsAsRoot()) return undefined;
    const kills = await oomKillsOf(layout, instanceId);
    if (!kills) return undefined;
    const limit = await memoryLimitOf(layout, instanceId);
    return { limitMiB: limit === undefined ? undefined : Math.round(limit / 1024 / 1024) };
  }

  /** The cgroup a running QEMU is in (after a daemon restart), as `/vmkit/<id>`. */
  async cgroupOf(pid: number): Promise<string | undefined> {
    const layout = this.cgroupLayout();
    return layout ? cgroupOfProcess(pid, layout) : undefined;
  }

  private async grantFiles(inst: Instance, uid: number, diskFiles: readonly string[]): Promise<void> {
    const { paths } = this;
    const dir = paths.instance(inst.id);
    // Every folder from the data folder down must let the guest's uid pass (not list).
    for (const d of [paths.root, paths.instances]) await chmod(d, 0o711);
    await chown(dir, 0, 0);
    await chmod(dir, 0o711);
    const mine = new Set(diskFiles);
    for (const entry of await readdir(dir)) {
      const file = join(dir, entry);
      const st = await lstat(file);
      if (st.isSymbolicLink()) continue;
      if (mine.has(file)) await own(file, uid, 0o600);
      else if (entry.startsWith('layer-')) await own(file, 0, 0o444);
      else if (entry === 'cidata.img') await own(file, uid, 0o400);
      else if (entry === 'console.log') await own(file, uid, 0o600);
      else if (entry === 'run') await own(file, uid, 0o700);
    }
    for (const f of diskFiles) {
      if (!f.startsWith(dir + '/') && isAbsolute(f)) {
        // A disk on shared storage: chowned on the host that runs it (a migration's target
        // does the same at its start); its folder only lets the guest pass.
        await own(f, uid, 0o600);
        await chmod(dirname(f), 0o711);
        // <shared>/disks/<id>/: the guest's uid must also pass through disks/ and the shared
        // folder itself (a NAS mount made 0700 would refuse it): search, never list, is added.
        for (const up of [dirname(dirname(f)), dirname(dirname(dirname(f)))]) {
          const st = await stat(up);
          if ((st.mode & 0o001) === 0) await chmod(up, (st.mode & 0o7777) | 0o011);
        }
      }
    }
  }
}

/**
 * Files QEMU only reads that are not the instance's (the image's kernel and initrd): readable
 * by all, in folders all may pass. Image files are 0444 already; a daemon run with a strict
 * umask could have made their folders 0700.
 */
async function letRead(files: readonly string[]): Promise<void> {
  for (const f of files) {
    const st = await stat(f);
    if ((st.mode & 0o004) === 0) await chmod(f, (st.mode & 0o777) | 0o444);
    const dir = dirname(f);
    const dst = await stat(dir);
    if ((dst.mode & 0o001) === 0) await chmod(dir, (dst.mode & 0o777) | 0o111);
  }
}

async function own(file: string, uid: number, mode: number): Promise<void> {
  await chown(file, uid, uid);
  await chmod(file, mode);
}

/** The group that may open /dev/kvm (Debian: `kvm`, 0660); QEMU keeps it as its only supplementary group. */
async function kvmGroup(): Promise<number> {
  const st = await stat('/dev/kvm');
  if (st.gid === 0 || (st.mode & 0o060) !== 0o060) {
    throw vmkitError('VMKIT_QEMU_FAILED', '/dev/kvm is not group read-write for a group other than root; an unprivileged QEMU cannot open it.', {
      hint: 'Make it root:kvm 0660 (Debian\'s udev rule does: "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm"), or use TCG (VMKIT_ACCEL=tcg).',
    });
  }
  return st.gid;
}

/** Creates the console log (if missing) so it can be given to the guest's uid before QEMU opens it. */
export async function touch(file: string): Promise<void> {
  const fh = await open(file, 'a');
  await fh.close();
}
