import { isAbsolute } from 'node:path';
import { asVmkitError } from '../../errors.js';
import { compareVersions } from '../../qemu/capabilities.js';
import { findOvmf } from '../../qemu/firmware.js';
import type { Blocker, MigrationMode, MigrationPlan } from '../types.js';
import type { MigrationContext } from './context.js';
import { isLive, MEMORY_MARGIN_MIB, type CheckRequest, type MigrateOptions } from './protocol.js';

/** Everything that would stop the migration, from both ends; moves nothing. */
export async function planMigration(ctx: MigrationContext, name: string, opts: MigrateOptions): Promise<MigrationPlan> {
  const inst = await ctx.registry.load(name);
  const from = ctx.cluster.name!;
  const blockers: Blocker[] = [];
  // Unknown (or unreadable) host: reported as the blocker right below.
  const target = await ctx.cluster.host(opts.to).catch(() => undefined);
  if (!target) blockers.push({ check: 'host', message: `There is no cluster host "${opts.to}".` });
  else if (target.state !== 'alive') blockers.push({ check: 'host', message: `Host "${opts.to}" is dead (its lease expired).` });
  if (opts.to === from) blockers.push({ check: 'host', message: `"${name}" already runs on ${from}.` });
  const me = await ctx.self();
  const sharedDisks =
    inst.disks.every((d) => isAbsolute(d.file)) && !!me.sharedStorage && target?.sharedStorage?.id === me.sharedStorage.id && target.sharedStorage.path === me.sharedStorage.path;
  const running = inst.state === 'running' || inst.state === 'paused';
  const mode: MigrationMode = opts.mode ?? (running ? (sharedDisks ? 'live' : 'live-copy') : 'cold');
  if (!['running', 'paused', 'stopped', 'suspended'].includes(inst.state)) {
    blockers.push({ check: 'state', message: `"${name}" is ${inst.state}; only a running, paused, stopped or suspended instance moves.` });
  }
  if (isLive(mode) && !running) blockers.push({ check: 'state', message: `A ${mode} migration needs a running instance; "${name}" is ${inst.state} (use --mode cold).` });
  if (mode === 'suspend' && !(running || inst.state === 'suspended'))
    blockers.push({ check: 'state', message: `--mode suspend needs a running instance; "${name}" is ${inst.state}.` });
  if (mode === 'live' && !sharedDisks) {
    blockers.push({
      check: 'storage',
      message: `The disks of "${name}" are not on storage ${opts.to} also sees; a live migration with shared storage is impossible (use --mode live-copy).`,
    });
  }
  if (inst.linkedFrom && !sharedDisks)
    blockers.push({
      check: 'storage',
      message: `"${name}" is a linked clone of "${inst.linkedFrom}"; its disk cannot leave this host without its base (use shared storage, or a full clone).`,
    });
  const snaps = (await ctx.snapshots.list(name)).filter((s) => !s.name.startsWith('vmkit-'));
  if (mode === 'live-copy' && snaps.length > 0) {
    blockers.push({
      check: 'snapshots',
      message: `"${name}" has snapshots (${snaps.map((s) => s.name).join(', ')}); a live storage copy carries only the current disk (use --mode cold or suspend, which keep them).`,
    });
  }
  if (target && target.state === 'alive' && opts.to !== from) {
    if (compareVersions(target.qemuVersion, me.qemuVersion) < 0 && (isLive(mode) || mode === 'suspend')) {
      blockers.push({
        check: 'qemu-version',
        message: `QEMU on ${opts.to} is ${target.qemuVersion}, older than ${me.qemuVersion} here; QEMU does not migrate state to an older version.`,
      });
    }
    const machine = inst.machine ?? 'pc';
    if (!target.machines.includes(machine)) blockers.push({ check: 'machine-type', message: `QEMU on ${opts.to} has no machine type "${machine}" (the instance's).` });
    if (isLive(mode)) {
      if (target.accel !== me.accel)
        blockers.push({ check: 'accelerator', message: `${opts.to} runs guests with ${target.accel}, this host with ${me.accel}: a running guest cannot change accelerator.` });
      if (target.cpuModel !== me.cpuModel) blockers.push({ check: 'cpu-model', message: `The guest CPU model differs (${me.cpuModel} here, ${target.cpuModel} on ${opts.to}).` });
    }
    // The target's own view: networks, addresses, ports, image, memory.
    try {
      const peer = await ctx.cluster.peer(opts.to);
      const imageChecksum = await imageChecksumOrNone(ctx, inst.image);
      const req: CheckRequest = { instance: inst, mode, sharedDisks, source: from, imageChecksum };
      const theirs = await peer.request<Blocker[]>('POST', '/1.0/internal/migrations/check', req);
      blockers.push(...theirs);
    } catch (err) {
      blockers.push({ check: 'host', message: asVmkitError(err).message });
    }
  }
  return { instance: name, from, to: opts.to, mode, sharedStorage: sharedDisks, blockers, ok: blockers.length === 0 };
}

/** Target side of the pre-flight: what this host lacks to take the instance. */
export async function checkIncoming(ctx: MigrationContext, req: CheckRequest): Promise<Blocker[]> {
  const inst = req.instance;
  const here = ctx.cluster.name;
  const blockers: Blocker[] = [];
  if (await ctx.instances.has(inst.name)) blockers.push({ check: 'name', message: `${here} already has an instance "${inst.name}".` });
  const me = await ctx.self();
  const room = Math.min(me.memoryFreeMiB, me.memoryTotalMiB - me.memoryAssignedMiB) - MEMORY_MARGIN_MIB;
  if (room < inst.memoryMiB) blockers.push({ check: 'memory', message: `${here} has ${Math.max(0, room)} MiB free for guests; "${inst.name}" needs ${inst.memoryMiB} MiB.` });
  if (inst.cpus > me.cpus) blockers.push({ check: 'cpus', message: `${here} has ${me.cpus} CPUs; "${inst.name}" has ${inst.cpus} vCPUs.` });
  // A missing image is the blocker right below.
  const image = await ctx.images.get(inst.image).catch(() => undefined);
  if (!image) blockers.push({ check: 'image', message: `${here} has no image "${inst.image}" (its kernel and firmware files are needed to run the guest).` });
  else if (req.imageChecksum && (await ctx.images.checksum(image.name)) !== req.imageChecksum) {
    blockers.push({ check: 'image', message: `Image "${inst.image}" on ${here} differs from the source's (checksum); the disk is backed by it.` });
  }
  if (inst.firmware === 'uefi') {
    const ovmf = await findOvmf().catch((err: Error) => err);
    if (ovmf instanceof Error) blockers.push({ check: 'firmware', message: `${here} has no UEFI firmware (OVMF) for "${inst.name}": ${ovmf.message}` });
  }
  const locals = (await ctx.instances.list()).filter((i) => i.name !== inst.name);
  for (const nic of inst.nics) {
    if (nic.network === 'user') continue;
    // A missing network is the blocker right below.
    const n = await ctx.networks?.load(nic.network).catch(() => undefined);
    if (!n) {
      blockers.push({ check: 'network', message: `${here} has no network "${nic.network}" (NIC ${nic.id}).` });
      continue;
    }
    if (nic.ipv4 && locals.some((o) => o.nics.some((x) => x.network === nic.network && x.ipv4 === nic.ipv4))) {
      blockers.push({ check: 'address', message: `${nic.ipv4} is already used on network "${nic.network}" of ${here}.` });
    }
  }
  for (const f of inst.forwards) {
    const clash = locals.find((o) => o.forwards.some((x) => x.hostPort === f.hostPort && x.proto === f.proto));
    if (clash) blockers.push({ check: 'port', message: `Host port ${f.proto}/${f.hostPort} is already forwarded to "${clash.name}" on ${here}.` });
  }
  if (req.mode === 'live' && !req.sharedDisks) blockers.push({ check: 'storage', message: 'No shared storage between the hosts.' });
  return blockers;
}

/**
 * The image's checksum, or undefined when it cannot be read: the target then skips the
 * same-image check, as it always did (the image lookup on the target still applies).
 */
export async function imageChecksumOrNone(ctx: MigrationContext, image: string): Promise<string | undefined> {
  return ctx.images.checksum(image).catch((err: Error) => {
    console.error(`vmkitd: migration: no checksum of image "${image}" (the target skips the same-image check): ${err.message}`);
    return undefined;
  });
}
