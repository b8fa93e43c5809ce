import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { chmod, mkdir, readFile, readdir, rename, rm, open } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import { assertTransition, isActive } from '../domain/state.js';
import { findInstanceType } from '../domain/instance-types.js';
import type { DiskRef, Image, Instance, InstanceState, InstanceView, Nic, NicModel, PortForward } from '../domain/types.js';
import { NIC_MODELS } from '../domain/types.js';
import type { DataPaths } from '../paths.js';
import type { Store } from '../store/store.js';
import type { ImageStore } from '../images/image-store.js';
import type { EventBus } from '../operations/events.js';
import type { OperationContext } from '../operations/operations.js';
import { createLinkedClone, exportSnapshotVolume, flattenVolume, listDiskSnapshots, sharedVolumeInfo, volumeInfo } from '../storage/qemu-img.js';
import { writeConfigDrive } from '../storage/config-drive.js';
import { buildQemuArgv, hostfwdRule, nicDevice, RUN_FILES, type QemuDisk } from '../qemu/argv.js';
import { launchQemu, findQemuProcess, waitForExit, isProcessAlive } from '../qemu/process.js';
import type { QmpClient, QmpEvent } from '../qemu/qmp.js';
import { QmpClient as Qmp } from '../qemu/qmp.js';
import {
  assertHostPortFree,
  describeForward,
  forwardsCollide,
  normalizeForward,
  type ForwardRequest,
} from '../network/forwards.js';

export interface CreateInstanceRequest {
  name: string;
  image: string;
  type?: string;
  cpus?: number;
  memoryMiB?: number;
  nics?: NicRequest[];
  forwards?: ForwardRequest[];
  allowPrivileged?: boolean;
  /** `local` keeps the disk in the host's data folder even when shared storage is set. */
  storage?: 'local' | 'shared';
}

export interface NicRequest {
  network?: string;
  model?: NicModel;
  /** A static IPv4 address on a vmkit network (reserved in its DHCP server too). */
  ipv4?: string;
}

/** What instances need from vmkit networks (src/network/manager.ts implements it). */
export interface InstanceNetworking {
  /** Checks the network and picks the NIC's address (static, or a DHCP reservation). */
  allocate(network: string, requestedIp: string | undefined, pending: readonly Nic[]): Promise<{ ipv4?: string; dhcp?: boolean }>;
  addressing(network: string): Promise<{ prefix: number; gateway?: string; dns?: string[] } | undefined>;
  taps(inst: Instance): Record<string, string>;
  /** Before QEMU starts: taps, reservations, rules. */
  plug(inst: Instance): Promise<void>;
  /** After QEMU ended: taps removed, rules updated. */
  unplug(inst: Instance): Promise<void>;
  /** Instances or forwards changed: reservations and rules re-applied. */
  sync(): Promise<void>;
  /** Throws unless port forwards can reach a NIC on this network (nat only). */
  assertForwardable(network: string): Promise<void>;
  /** The guest runs on this host: floating forward addresses move here. */
  announce(inst: Instance, log?: (msg: string) => void): Promise<void>;
  /** A migration's switch-over: floating addresses (and their rules) leave this host. */
  withdraw(inst: Instance, log?: (msg: string) => void): Promise<void>;
}

/** Cluster-wide instance names (src/cluster/cluster.ts implements it). */
export interface InstanceOwnership {
  claim(name: string, summary: { image: string; cpus: number; memoryMiB: number }): Promise<void>;
  released(name: string): Promise<void>;
}

export interface StopOptions {
  force?: boolean;
  /** Seconds to wait for the guest to power off before forcing. */
  timeout?: number;
}

export interface HostEnvironment {
  hostName: string;
  qemuBinary: () => string;
  accel: () => Promise<'kvm' | 'tcg'>;
  /** Storage every cluster host mounts at the same path (a NAS): new disks go there. */
  sharedDir?: string;
  /** QEMU's concrete machine type for `pc` on this host (e.g. pc-i440fx-7.2), fixed per instance. */
  machineType?: () => Promise<string>;
}

/** What the daemon holds for a running QEMU. */
interface Runtime {
  pid: number;
  qmp: QmpClient;
  startedAtMs: number;
  /** Set when the daemon asked QEMU to end, so its exit is a stop, not a crash. */
  expectExit: boolean;
  guestShutdown: boolean;
  accel: 'kvm' | 'tcg';
  /**
   * Set while a snapshot/suspend job drives the run state itself: QEMU's own STOP/RESUME
   * events during the job are then not mirrored into the instance row.
   */
  ownRunState?: boolean;
}

/** Extra steps of a start: restore saved state before `cont` (suspend/restore), stay paused. */
export interface StartHooks {
  /** Called with QEMU launched paused (-S), before `cont`. */
  beforeCont?: (qmp: QmpClient, inst: Instance) => Promise<void>;
  /** Keep the vCPUs stopped: the instance ends `paused`. */
  leavePaused?: boolean;
  /** Called once the instance runs (or is paused as asked); failures here do not fail the start. */
  afterStart?: (qmp: QmpClient, inst: Instance) => Promise<void>;
  /** Extra QEMU arguments (`-incoming defer` for the target of a migration). */
  extraArgs?: string[];
  /** The state the instance ends in instead of running/paused (`migrating` on a target). */
  finalState?: InstanceState;
}

/** What the snapshot module provides for suspended instances. */
export interface SuspendHandler {
  /** Start steps that resume a suspended instance from its saved state. */
  resumeHooks(inst: Instance): StartHooks;
  /** Drops the saved state of a suspended instance (stop --force). */
  discard(inst: Instance): Promise<void>;
}

/**
 * The small, explicit surface the snapshot module (src/snapshots/) uses: the per-instance
 * lock, the instance row, the QMP connection of a running QEMU, and the start/stop steps.
 * Every method except withLock must be called inside withLock for that instance.
 */
export interface InstanceAccess {
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  load(name: string): Promise<Instance>;
  save(inst: Instance): Promise<void>;
  setState(inst: Instance, state: InstanceState, reason?: string): Promise<void>;
  view(inst: Instance): InstanceView;
  /** The root disk's file. */
  rootDisk(inst: Instance): string;
  /** A disk's file (relative names live in the instance folder; shared disks are absolute). */
  diskPath(inst: Instance, d: DiskRef): string;
  instanceDir(inst: Instance): string;
  /** Adds a row that must not exist yet (an instance arriving by migration). */
  insert(inst: Instance): Promise<void>;
  /** Lets go of an instance that now lives elsewhere: QEMU ended, row and local files removed, shared disks kept. */
  release(inst: Instance): Promise<void>;
  networking(): InstanceNetworking | undefined;
  /** A QEMU the migration code drove is handed back to the lifecycle in this state. */
  adopt(name: string, state: InstanceState): Promise<void>;
  /** The QMP client of the instance's QEMU, or undefined when none runs. */
  qmp(name: string): QmpClient | undefined;
  /** Runs fn while QEMU's STOP/RESUME events are not mirrored into the row. */
  owningRunState<T>(name: string, fn: () => Promise<T>): Promise<T>;
  start(name: string, ctx: OperationContext | undefined, hooks: StartHooks): Promise<InstanceView>;
  stop(name: string, opts: StopOptions, ctx?: OperationContext): Promise<InstanceView>;
  /** Ends QEMU (its state already saved) and leaves the instance in `state` (suspended). */
  quit(name: string, state: InstanceState, reason?: string): Promise<void>;
}

const DEFAULT_STOP_TIMEOUT_S = 30;
const USER_NET_GUEST_IP = '10.0.2.15';

/**
 * Instance lifecycle: create from an image (linked clone), start/stop/pause/resume/restart,
 * delete, port forwards, and re-attaching to running QEMU processes after a daemon restart.
 * The API and CLI are skins over these methods; every state change is checked by the state
 * machine, persisted, and announced as an event.
 */
export class InstanceManager {
  private readonly runtimes = new Map<string, Runtime>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private networking?: InstanceNetworking;

  constructor(
    private readonly store: Store,
    private readonly paths: DataPaths,
    private readonly images: ImageStore,
    private readonly events: EventBus,
    private readonly host: HostEnvironment,
  ) {}

  setNetworking(n: InstanceNetworking): void {
    this.networking = n;
  }

  /** In a cluster, instance names are claimed cluster-wide (etcd) before a row is written. */
  private ownership?: InstanceOwnership;
  setOwnership(o: InstanceOwnership): void {
    this.ownership = o;
  }

  private async insertRow(inst: Instance): Promise<void> {
    await this.ownership?.claim(inst.name, { image: inst.image, cpus: inst.cpus, memoryMiB: inst.memoryMiB });
    try {
      await this.store.put('instances', inst.name, inst, { expectRevision: 0 });
    } catch (err) {
      await this.ownership?.released(inst.name).catch(() => undefined);
      throw err;
    }
  }

  /** Serializes work on one instance, so two operations never interleave on it. */
  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(name, next);
    void next.finally(() => {
      if (this.locks.get(name) === next) this.locks.delete(name);
    }).catch(() => undefined);
    return next;
  }

  /** Lets the snapshot module take part in the lifecycle (see InstanceAccess). */
  access(): InstanceAccess {
    return {
      withLock: (name, fn) => this.withLock(name, fn),
      load: (name) => this.load(name),
      save: (inst) => this.save(inst),
      setState: (inst, state, reason) => this.setState(inst, state, reason),
      view: (inst) => this.view(inst),
      rootDisk: (inst) => this.diskPath(inst, inst.disks.find((d) => d.name === 'root')!),
      diskPath: (inst, d) => this.diskPath(inst, d),
      instanceDir: (inst) => this.paths.instance(inst.id),
      insert: async (inst) => {
        inst.updatedAt = new Date().toISOString();
        await this.store.put('instances', inst.name, inst, { expectRevision: 0 });
      },
      release: (inst) => this.release(inst),
      networking: () => this.networking,
      adopt: async (name, state) => {
        const rt = this.runtimes.get(name);
        if (rt) rt.ownRunState = false;
        const inst = await this.load(name);
        if (state === 'running' && inst.state !== 'running') inst.lastStartedAt = inst.lastStartedAt ?? new Date().toISOString();
        await this.setState(inst, state);
        this.events.lifecycle(state === 'running' ? 'instance-started' : 'instance-paused', name);
      },
      qmp: (name) => this.runtimes.get(name)?.qmp,
      owningRunState: async (name, fn) => {
        const rt = this.runtimes.get(name);
        if (rt) rt.ownRunState = true;
        try {
          return await fn();
        } finally {
          if (rt) rt.ownRunState = false;
        }
      },
      start: (name, ctx, hooks) => this.startLocked(name, ctx, hooks),
      stop: (name, opts, ctx) => this.stopLocked(name, opts, ctx),
      quit: (name, state, reason) => this.quitLocked(name, state, reason),
    };
  }

  /** How a `suspended` instance is resumed or its saved state dropped (set by the snapshot module). */
  private suspendHandler?: SuspendHandler;
  setSuspendHandler(handler: SuspendHandler): void {
    this.suspendHandler = handler;
  }

  async list(): Promise<InstanceView[]> {
    return (await this.store.list<Instance>('instances')).map((v) => this.view(v.value));
  }

  async get(name: string): Promise<InstanceView> {
    return this.view(await this.load(name));
  }

  /** A disk's file: relative names live in the instance folder, shared disks are absolute. */
  diskPath(inst: Instance, d: DiskRef): string {
    return resolve(this.paths.instance(inst.id), d.file);
  }

  /**
   * The instance now lives on another host (migration done): end the local QEMU, drop the
   * row and the local folder, unplug its taps. Shared disks stay: the new owner uses them.
   */
  private async release(inst: Instance): Promise<void> {
    await this.killRuntime(inst.name);
    await rm(this.paths.instance(inst.id), { recursive: true, force: true });
    await this.store.delete('instances', inst.name);
    if (inst.nics.some((n) => n.network !== 'user')) {
      await this.networking?.unplug(inst).catch(() => undefined);
      await this.networking?.sync().catch(() => undefined);
    }
  }

  /** Whether a row for this instance exists on this host. */
  async has(name: string): Promise<boolean> {
    return (await this.store.get('instances', name)) !== undefined;
  }

  private view(inst: Instance): InstanceView {
    const rt = this.runtimes.get(inst.name);
    return {
      ...inst,
      // QEMU's user-mode DHCP server always leases 10.0.2.15 to its (only) guest.
      nics: inst.nics.map((n) => (rt && n.network === 'user' && !n.ipv4 ? { ...n, ipv4: USER_NET_GUEST_IP } : n)),
      runtime: rt
        ? {
            pid: rt.pid,
            accel: rt.accel,
            qemuStatus: inst.state === 'paused' ? 'paused' : 'running',
            uptimeSeconds: Math.round((Date.now() - rt.startedAtMs) / 100) / 10,
          }
        : {},
    };
  }

  private async load(name: string): Promise<Instance> {
    const found = await this.store.get<Instance>('instances', name);
    if (!found) {
      throw vmkitError('VMKIT_INSTANCE_NOT_FOUND', `There is no instance "${name}".`, {
        hint: '"vmkit list" shows the instances.',
      });
    }
    return found.value;
  }

  private async save(inst: Instance): Promise<void> {
    inst.updatedAt = new Date().toISOString();
    await this.store.put('instances', inst.name, inst);
  }

  private async setState(inst: Instance, state: InstanceState, reason?: string): Promise<void> {
    inst.state = state;
    inst.stateReason = reason;
    await this.save(inst);
  }

  // ---- create -------------------------------------------------------------------------

  async create(req: CreateInstanceRequest, ctx?: OperationContext): Promise<InstanceView> {
    const name = validateName(req.name, 'instance name');
    return this.withLock(name, async () => {
      if (await this.store.get('instances', name)) {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `An instance named "${name}" already exists.`, {
          hint: 'Choose another name, or delete the existing instance first.',
        });
      }
      const image = await this.images.get(req.image);
      const { cpus, memoryMiB } = this.sizeFor(req, image);
      const nics = await this.allocateNics(req.nics ?? [{}], image);
      const forwardNic = nics.find((n) => n.network === 'user') ?? nics.find((n) => n.ipv4) ?? nics[0]!;
      const forwards = (req.forwards ?? []).map((f) =>
        normalizeForward({ ...f, allowPrivileged: f.allowPrivileged ?? req.allowPrivileged }, forwardNic.id),
      );
      if (forwards.length > 0 && forwardNic.network !== 'user') await this.networking?.assertForwardable(forwardNic.network);
      if (forwards.some((f) => f.floating) && forwardNic.network === 'user') throw floatingNeedsNat();
      this.assertNoSelfCollision(forwards);
      await this.assertNoForwardConflict(name, forwards);
      for (const f of forwards) await assertHostPortFree(f);

      const id = randomBytes(6).toString('hex');
      const dir = this.paths.instance(id);
      const now = new Date().toISOString();
      const inst: Instance = {
        id,
        name,
        image: image.name,
        imageVersion: image.version,
        type: req.type,
        cpus,
        memoryMiB,
        nics,
        forwards,
        disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
        state: 'stopped',
        createdAt: now,
        updatedAt: now,
        host: this.host.hostName,
        machine: await this.host.machineType?.(),
      };
      const shared = this.host.sharedDir && req.storage !== 'local' ? this.host.sharedDir : undefined;
      if (shared) inst.disks = [{ name: 'root', file: join(shared, 'disks', id, 'root.qcow2'), format: 'qcow2' }];
      ctx?.progress({ phase: 'cloning disk', percent: 30 });
      // Files first, row second: a crash in between leaves a folder without a row, which
      // reconcile() removes; never a row pointing at a missing disk.
      await mkdir(dir, { recursive: true });
      try {
        const rootImage = image.disks[0]!;
        const rootFile = this.diskPath(inst, inst.disks[0]!);
        if (shared) {
          // Every host must reach the whole chain: the image's disk is copied once into the
          // shared storage (named by its checksum) and the instance's disk is backed by that.
          const base = await this.images.sharedBase(image, shared);
          await mkdir(dirname(rootFile), { recursive: true });
          await createLinkedClone(base, rootImage.format, rootFile);
        } else {
          await createLinkedClone(this.images.file(image, rootImage.file), rootImage.format, rootFile);
        }
        ctx?.checkCancelled();
        await this.insertRow(inst);
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        if (shared) await rm(join(shared, 'disks', id), { recursive: true, force: true });
        throw err;
      }
      if (inst.nics.some((n) => n.network !== 'user')) await this.networking?.sync();
      this.events.lifecycle('instance-created', name);
      return this.view(inst);
    });
  }

  private sizeFor(req: CreateInstanceRequest, image: Image): { cpus: number; memoryMiB: number } {
    const t = req.type ? findInstanceType(req.type) : undefined;
    const cpus = req.cpus ?? t?.cpus ?? image.defaults.cpus;
    const memoryMiB = req.memoryMiB ?? t?.memoryMiB ?? image.defaults.memoryMiB;
    const hostCpus = os.cpus().length;
    const hostMiB = Math.floor(os.totalmem() / 1024 / 1024);
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > hostCpus) {
      throw vmkitError('VMKIT_RESOURCES_EXCEEDED', `${cpus} vCPUs is not possible on this host (1 to ${hostCpus}).`, {
        hint: `Ask for at most ${hostCpus} vCPUs (the host's CPU count).`,
      });
    }
    if (!Number.isInteger(memoryMiB) || memoryMiB < 32 || memoryMiB > hostMiB) {
      throw vmkitError('VMKIT_RESOURCES_EXCEEDED', `${memoryMiB} MiB of memory is not possible on this host (32 to ${hostMiB} MiB).`, {
        hint: `Ask for at most ${hostMiB} MiB (the host's memory).`,
      });
    }
    return { cpus, memoryMiB };
  }

  private async allocateNics(reqs: NicRequest[], image: Image, first = 0): Promise<Nic[]> {
    const used = new Set((await this.store.list<Instance>('instances')).flatMap((v) => v.value.nics.map((n) => n.mac)));
    const out: Nic[] = [];
    for (const [i, r] of reqs.entries()) {
      const model = r.model ?? image.nicModels[0] ?? 'virtio-net';
      if (!NIC_MODELS.includes(model)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown NIC model "${model}".`, { hint: `Use one of ${NIC_MODELS.join(', ')}.` });
      }
      const network = r.network ?? 'user';
      let address: { ipv4?: string; dhcp?: boolean } = {};
      if (network === 'user') {
        if (r.ipv4) {
          throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A user-mode NIC cannot have a static address (QEMU gives it 10.0.2.15).', {
            hint: 'Put the NIC on a vmkit network ("vmkit network create") to choose its address.',
          });
        }
      } else if (!this.networking) {
        throw vmkitError('VMKIT_NETWORK_NOT_FOUND', `Network "${network}" does not exist.`, {
          hint: 'Only user-mode NAT ("user") NICs are available on this host.',
        });
      } else {
        address = await this.networking.allocate(network, r.ipv4, out);
      }
      let mac: string;
      do {
        // 52:54:00 is QEMU's locally administered prefix.
        mac = ['52', '54', '00', ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
      } while (used.has(mac));
      used.add(mac);
      out.push({ id: `nic${first + i}`, model, mac, network, ...(address.ipv4 ? { ipv4: address.ipv4 } : {}), ...(address.dhcp ? { dhcp: true } : {}) });
    }
    return out;
  }

  private assertNoSelfCollision(forwards: PortForward[]): void {
    forwards.forEach((f, i) => {
      const other = forwards.slice(0, i).find((g) => forwardsCollide(f, g));
      if (other) {
        throw vmkitError('VMKIT_FORWARD_CONFLICT', `Forwards ${describeForward(other)} and ${describeForward(f)} use the same host port.`, {
          hint: 'Give each forward its own host port.',
        });
      }
    });
  }

  private async assertNoForwardConflict(self: string, forwards: PortForward[]): Promise<void> {
    for (const { value: other } of await this.store.list<Instance>('instances')) {
      if (other.name === self) continue;
      for (const f of forwards) {
        const hit = other.forwards.find((g) => forwardsCollide(f, g));
        if (hit) {
          throw vmkitError('VMKIT_FORWARD_CONFLICT', `Host port ${f.hostPort}/${f.proto} is already forwarded to instance "${other.name}" (${describeForward(hit)}).`, {
            hint: `Choose another host port, or remove that forward ("vmkit forward remove ${other.name} ${hit.hostPort}").`,
          });
        }
      }
    }
  }

  // ---- start --------------------------------------------------------------------------

  async start(name: string, ctx?: OperationContext): Promise<InstanceView> {
    return this.withLock(name, () => this.startLocked(name, ctx));
  }

  private async startLocked(name: string, ctx?: OperationContext, hooks?: StartHooks): Promise<InstanceView> {
    const inst = await this.load(name);
    if (!hooks && inst.state === 'suspended' && this.suspendHandler) hooks = this.suspendHandler.resumeHooks(inst);
    if (inst.state === 'running' || inst.state === 'paused') {
      throw vmkitError('VMKIT_INSTANCE_RUNNING', `Instance "${name}" is already ${inst.state}.`, {
        hint: inst.state === 'paused' ? `Resume it with "vmkit resume ${name}".` : `Use "vmkit restart ${name}" to restart it.`,
      });
    }
    assertTransition(name, inst.state, 'starting', 'start');
    const image = await this.images.get(inst.image);
    for (const f of inst.forwards) await assertHostPortFree(f);
    const accel = await this.host.accel();
    const qemuBinary = this.host.qemuBinary();

    await this.setState(inst, 'starting');
    this.events.lifecycle('instance-starting', name);
    const dir = this.paths.instance(inst.id);
    const runDir = this.paths.run(inst.id);
    try {
      ctx?.progress({ phase: 'preparing', percent: 10 });
      await rm(runDir, { recursive: true, force: true });
      await mkdir(runDir, { recursive: true, mode: 0o750 });
      await this.rotateConsoleLog(inst);
      const addressing: Record<string, { prefix: number; gateway?: string; dns?: string[] }> = {};
      for (const nic of inst.nics) {
        const a = nic.network !== 'user' && nic.ipv4 && !nic.dhcp ? await this.networking?.addressing(nic.network) : undefined;
        if (a) addressing[nic.id] = a;
      }
      await writeConfigDrive(join(dir, 'cidata.img'), { instanceId: inst.id, hostname: inst.name, nics: inst.nics, addressing });
      await this.networking?.plug(inst);
      const disks: QemuDisk[] = inst.disks.map((d) => ({ id: d.name, file: this.diskPath(inst, d), format: d.format }));
      disks.push({ id: 'cidata', file: join(dir, 'cidata.img'), format: 'raw', readOnly: true });
      const argv = buildQemuArgv({
        qemuBinary,
        name: inst.name,
        instanceId: inst.id,
        accel,
        cpus: inst.cpus,
        memoryMiB: inst.memoryMiB,
        kernel: image.boot ? this.images.file(image, image.boot.kernel) : undefined,
        initrd: image.boot?.initrd ? this.images.file(image, image.boot.initrd) : undefined,
        cmdline: image.boot?.cmdline,
        display: image.display !== 'none',
        disks,
        nics: inst.nics,
        forwards: inst.forwards,
        taps: this.networking?.taps(inst),
        runDir,
        consoleLog: this.paths.consoleLog(inst.id),
        startPaused: true,
        machine: inst.machine,
        extraArgs: hooks?.extraArgs,
      });
      ctx?.progress({ phase: 'starting QEMU', percent: 40 });
      const { pid, qmp } = await launchQemu(argv, runDir);
      const rt: Runtime = { pid, qmp, startedAtMs: Date.now(), expectExit: false, guestShutdown: false, accel };
      this.attach(inst.name, rt);
      if (hooks?.beforeCont) {
        ctx?.progress({ phase: 'restoring saved state', percent: 60 });
        rt.ownRunState = true;
        await hooks.beforeCont(qmp, inst);
      }
      if (hooks?.finalState) {
        // A migration target: QEMU waits for the incoming state; the caller drives the rest.
        rt.ownRunState = true;
        await this.setState(inst, hooks.finalState);
        return this.view(inst);
      }
      ctx?.progress({ phase: 'booting', percent: 80 });
      if (!hooks?.leavePaused) await qmp.cont();
      rt.ownRunState = false;
      rt.startedAtMs = Date.now();
      inst.lastStartedAt = new Date().toISOString();
      await this.setState(inst, hooks?.leavePaused ? 'paused' : 'running');
      await this.networking?.announce(inst).catch((err: Error) => console.error(`vmkitd: floating addresses of ${name}: ${err.message}`));
      this.events.lifecycle('instance-started', name, { pid });
      if (hooks?.afterStart) {
        await hooks.afterStart(qmp, inst).catch((err: unknown) => {
          console.error(`vmkitd: after starting ${name}: ${(err as Error).message}`);
        });
      }
      return this.view(await this.load(name));
    } catch (err) {
      await this.killRuntime(inst.name);
      await rm(runDir, { recursive: true, force: true }).catch(() => undefined);
      const fresh = await this.load(name);
      await this.setState(fresh, 'stopped', `last start failed: ${(err as Error).message}`);
      await this.networking?.unplug(fresh).catch(() => undefined);
      this.events.lifecycle('instance-stopped', name, { reason: 'start failed' });
      throw err;
    }
  }

  /** Keeps the console log from growing without bound: past 1 MiB, keep the last half. */
  private async rotateConsoleLog(inst: Instance): Promise<void> {
    const file = this.paths.consoleLog(inst.id);
    const fh = await open(file, 'a+').catch(() => undefined);
    if (!fh) return;
    try {
      const { size } = await fh.stat();
      if (size <= 1024 * 1024) return;
      const keep = Buffer.alloc(512 * 1024);
      await fh.read(keep, 0, keep.length, size - keep.length);
      await fh.truncate(0);
      await fh.write(keep, 0, keep.length, 0);
    } finally {
      await fh.close();
    }
  }

  /** Watches a QEMU: its QMP events and the end of its QMP connection (= the process ended). */
  private attach(name: string, rt: Runtime): void {
    this.runtimes.set(name, rt);
    rt.qmp.on('event', (e: QmpEvent) => void this.onQmpEvent(name, rt, e));
    rt.qmp.on('close', () => void this.onQemuGone(name, rt));
  }

  private async onQmpEvent(name: string, rt: Runtime, e: QmpEvent): Promise<void> {
    if (e.event === 'SHUTDOWN') {
      rt.guestShutdown = true;
      return;
    }
    if (this.runtimes.get(name) !== rt || rt.ownRunState) return;
    // Pauses and resumes made outside the daemon (e.g. by QEMU on an I/O error) are reflected.
    if (e.event === 'STOP' || e.event === 'RESUME') {
      const inst = await this.store.get<Instance>('instances', name);
      if (!inst) return;
      const want: InstanceState = e.event === 'STOP' ? 'paused' : 'running';
      if (inst.value.state === 'running' || inst.value.state === 'paused') {
        if (inst.value.state !== want) {
          await this.setState(inst.value, want);
          this.events.lifecycle(want === 'paused' ? 'instance-paused' : 'instance-resumed', name);
        }
      }
    }
  }

  private async onQemuGone(name: string, rt: Runtime): Promise<void> {
    // A stop or kill the daemon asked for is settled by the code that asked.
    if (rt.expectExit || this.runtimes.get(name) !== rt) return;
    await waitForExit(rt.pid, 5_000);
    if (rt.expectExit || this.runtimes.get(name) !== rt) return;
    this.runtimes.delete(name);
    const found = await this.store.get<Instance>('instances', name);
    if (!found) return;
    const inst = found.value;
    await rm(this.paths.run(inst.id), { recursive: true, force: true }).catch(() => undefined);
    if (inst.state === 'deleting') return;
    if (rt.guestShutdown) {
      await this.setState(inst, 'stopped', 'the guest powered off');
      this.events.lifecycle('instance-stopped', name);
    } else {
      await this.setState(inst, 'error', 'the QEMU process ended unexpectedly (killed or crashed); its forwards were released');
      this.events.lifecycle('instance-crashed', name, { pid: rt.pid });
    }
    await this.networking?.unplug(inst).catch(() => undefined);
  }

  private async killRuntime(name: string): Promise<void> {
    const rt = this.runtimes.get(name);
    if (!rt) return;
    rt.expectExit = true;
    this.runtimes.delete(name);
    rt.qmp.close();
    if (isProcessAlive(rt.pid)) {
      try {
        process.kill(rt.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await waitForExit(rt.pid, 5_000);
    }
  }

  private runtime(inst: Instance): Runtime {
    const rt = this.runtimes.get(inst.name);
    if (!rt) {
      throw vmkitError('VMKIT_INVALID_STATE', `Instance "${inst.name}" has no QEMU process attached.`, {
        hint: `Start it with "vmkit start ${inst.name}".`,
      });
    }
    return rt;
  }

  // ---- stop / restart / pause / resume --------------------------------------------------

  async stop(name: string, opts: StopOptions = {}, ctx?: OperationContext): Promise<InstanceView> {
    return this.withLock(name, () => this.stopLocked(name, opts, ctx));
  }

  private async stopLocked(name: string, opts: StopOptions, ctx?: OperationContext): Promise<InstanceView> {
    const inst = await this.load(name);
    if (inst.state === 'suspended' && this.suspendHandler) {
      if (!opts.force) {
        throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is suspended: no QEMU runs, its state is saved on its disk.`, {
          hint: `Resume it with "vmkit start ${name}", or discard the saved state with "vmkit stop ${name} --force".`,
          details: { state: inst.state },
        });
      }
      await this.suspendHandler.discard(inst);
      await this.setState(inst, 'stopped', 'its suspended state was discarded (stop --force)');
      this.events.lifecycle('instance-stopped', name, { forced: true });
      return this.view(inst);
    }
    if (!isActive(inst.state)) {
      throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is not running (it is ${inst.state}).`, {
        hint: `Start it with "vmkit start ${name}".`,
      });
    }
    assertTransition(name, inst.state, 'stopping', 'stop');
    const rt = this.runtime(inst);
    const previous = inst.state;
    await this.setState(inst, 'stopping');
    this.events.lifecycle('instance-stopping', name, { force: !!opts.force });
    rt.expectExit = true;
    let forced = !!opts.force;
    try {
      if (!forced) {
        ctx?.progress({ phase: 'ACPI power button pressed', percent: 20 });
        if (previous === 'paused') await rt.qmp.cont();
        await rt.qmp.systemPowerdown();
        const timeoutMs = (opts.timeout ?? DEFAULT_STOP_TIMEOUT_S) * 1000;
        if (!(await waitForExitOrCancel(rt.pid, timeoutMs, ctx))) forced = true;
      }
      if (forced) {
        ctx?.progress({ phase: 'forcing', percent: 70 });
        await rt.qmp.quit().catch(() => undefined);
        if (!(await waitForExit(rt.pid, 3_000))) {
          process.kill(rt.pid, 'SIGKILL');
          await waitForExit(rt.pid, 5_000);
        }
      }
    } catch (err) {
      if (isProcessAlive(rt.pid) && this.runtimes.get(name) === rt) {
        rt.expectExit = false;
        const again = await this.load(name);
        await this.setState(again, previous);
        throw err;
      }
    }
    this.runtimes.delete(name);
    rt.qmp.close();
    await rm(this.paths.run(inst.id), { recursive: true, force: true });
    const after = await this.load(name);
    await this.setState(after, 'stopped', forced && !opts.force ? 'forced after the guest did not power off in time' : undefined);
    await this.networking?.unplug(after).catch(() => undefined);
    this.events.lifecycle('instance-stopped', name, { forced });
    return this.view(after);
  }

  /** QEMU's state was saved (suspend): end the process and leave the instance in `state`. */
  private async quitLocked(name: string, state: InstanceState, reason?: string): Promise<void> {
    const inst = await this.load(name);
    const rt = this.runtime(inst);
    assertTransition(name, inst.state, state, 'suspend');
    rt.expectExit = true;
    this.runtimes.delete(name);
    await rt.qmp.quit();
    if (!(await waitForExit(rt.pid, 5_000))) {
      process.kill(rt.pid, 'SIGKILL');
      await waitForExit(rt.pid, 5_000);
    }
    rt.qmp.close();
    await rm(this.paths.run(inst.id), { recursive: true, force: true });
    await this.setState(inst, state, reason);
    this.events.lifecycle(state === 'suspended' ? 'instance-suspended' : 'instance-stopped', name);
  }

  async restart(name: string, opts: StopOptions = {}, ctx?: OperationContext): Promise<InstanceView> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      if (isActive(inst.state)) await this.stopLocked(name, opts, ctx);
      return this.startLocked(name, ctx);
    });
  }

  async pause(name: string): Promise<InstanceView> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      if (inst.state !== 'running') assertTransition(name, inst.state, 'paused', 'pause');
      if (inst.state === 'paused') return this.view(inst);
      if (inst.state !== 'running') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot pause instance "${name}": it is ${inst.state}.`);
      }
      await this.runtime(inst).qmp.stop();
      await this.setState(inst, 'paused');
      this.events.lifecycle('instance-paused', name);
      return this.view(inst);
    });
  }

  async resume(name: string): Promise<InstanceView> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      if (inst.state !== 'paused') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot resume instance "${name}": it is ${inst.state}, not paused.`, {
          hint: inst.state === 'stopped' ? `Use "vmkit start ${name}".` : undefined,
        });
      }
      await this.runtime(inst).qmp.cont();
      await this.setState(inst, 'running');
      this.events.lifecycle('instance-resumed', name);
      return this.view(inst);
    });
  }

  // ---- clone / publish ---------------------------------------------------------------

  /**
   * Clones a stopped instance. Linked (default): the source's disk becomes a frozen,
   * read-only layer in its folder, and both the source and the clone get a fresh qcow2
   * overlay on it — O(1) in disk size; the source then cannot be deleted while the clone
   * exists. Full: the whole chain (overlay + image) is flattened into an independent copy.
   * The clone gets new MACs and no port forwards (host ports cannot be shared).
   */
  async clone(source: string, name: string, opts: { full?: boolean; fromSnapshot?: string } = {}, ctx?: OperationContext): Promise<InstanceView> {
    const cloneName = validateName(name, 'instance name');
    if (opts.fromSnapshot !== undefined) return this.cloneFromSnapshot(source, cloneName, validateName(opts.fromSnapshot, 'snapshot name'), !!opts.full, ctx);
    return this.withLock(source, () =>
      this.withLock(cloneName, async () => {
        const src = await this.load(source);
        if (src.state !== 'stopped') {
          throw vmkitError('VMKIT_INVALID_STATE', `Instance "${source}" is ${src.state}; only a stopped instance is cloned.`, {
            hint: `Stop it first ("vmkit stop ${source}").`,
          });
        }
        const inst = await this.cloneRecord(src, cloneName, !opts.full);
        const dir = this.paths.instance(inst.id);
        const srcDir = this.paths.instance(src.id);
        await mkdir(dir, { recursive: true });
        try {
          if (opts.full) {
            const srcFile = this.diskPath(src, src.disks[0]!);
            const total = (await volumeInfo(srcFile, 'qcow2')).virtualSize;
            ctx?.progress({ phase: 'copying disk', percent: 0, bytesDone: 0, bytesTotal: total });
            await flattenVolume(srcFile, join(dir, 'root.qcow2'), {
              signal: ctx?.signal,
              onProgress: (f) => ctx?.progress({ phase: 'copying disk', percent: Math.min(99, Math.round(f * 100)), bytesDone: Math.round(f * total), bytesTotal: total }),
            });
          } else {
            if (isAbsolute(src.disks[0]!.file)) {
              throw vmkitError('VMKIT_INVALID_STATE', `The disk of "${source}" is on shared storage; a linked clone would tie a local disk to it.`, {
                hint: `Use "vmkit clone ${source} ${cloneName} --full".`,
              });
            }
            // Internal snapshots live in the source's disk file, which a linked clone freezes
            // into a read-only layer: they would no longer be revertible.
            const snaps = await listDiskSnapshots(join(srcDir, 'root.qcow2'));
            if (snaps.length > 0) {
              throw vmkitError('VMKIT_INVALID_STATE', `Instance "${source}" has snapshots (${snaps.map((x) => x.name).join(', ')}); a linked clone would freeze them.`, {
                hint: `Use "vmkit clone ${source} ${cloneName} --full", or delete its snapshots first.`,
              });
            }
            ctx?.progress({ phase: 'freezing the source disk', percent: 30 });
            const layer = join(srcDir, `layer-${randomBytes(4).toString('hex')}.qcow2`);
            await rename(join(srcDir, 'root.qcow2'), layer);
            try {
              await createLinkedClone(layer, 'qcow2', join(srcDir, 'root.qcow2'));
            } catch (err) {
              await rename(layer, join(srcDir, 'root.qcow2'));
              throw err;
            }
            await chmod(layer, 0o444);
            await createLinkedClone(layer, 'qcow2', join(dir, 'root.qcow2'));
          }
          ctx?.checkCancelled();
          await this.insertRow(inst);
        } catch (err) {
          await rm(dir, { recursive: true, force: true });
          throw err;
        }
        this.events.lifecycle('instance-created', cloneName, { clonedFrom: source, full: !!opts.full });
        return this.view(inst);
      }),
    );
  }

  /** The row of a new clone of `src`: same image and size, new id and MACs, no forwards. */
  private async cloneRecord(src: Instance, cloneName: string, linked: boolean): Promise<Instance> {
    if (await this.store.get('instances', cloneName)) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `An instance named "${cloneName}" already exists.`, { hint: 'Choose another name.' });
    }
    const image = await this.images.get(src.image);
    const nics = await this.allocateNics(src.nics.map((n) => ({ network: n.network, model: n.model })), image);
    const now = new Date().toISOString();
    return {
      id: randomBytes(6).toString('hex'),
      name: cloneName,
      image: src.image,
      imageVersion: src.imageVersion,
      type: src.type,
      cpus: src.cpus,
      memoryMiB: src.memoryMiB,
      nics,
      forwards: [],
      disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
      state: 'stopped',
      createdAt: now,
      updatedAt: now,
      host: this.host.hostName,
      ...(linked ? { linkedFrom: src.name } : {}),
    };
  }

  /**
   * A new instance whose disk is the source's disk at a snapshot. The source may run (the
   * snapshot's clusters are immutable). Linked by default: the new disk holds only what
   * differs from the source's read-only backing volume and is an overlay of it.
   */
  private async cloneFromSnapshot(source: string, cloneName: string, snapshot: string, full: boolean, ctx?: OperationContext): Promise<InstanceView> {
    return this.withLock(source, () =>
      this.withLock(cloneName, async () => {
        const src = await this.load(source);
        if (src.state === 'deleting' || src.state === 'migrating') {
          throw vmkitError('VMKIT_INVALID_STATE', `Instance "${source}" is ${src.state}.`, { hint: 'Wait for the running operation to finish.' });
        }
        if (!(await this.store.get('snapshots', `${source}/${snapshot}`))) {
          throw vmkitError('VMKIT_SNAPSHOT_NOT_FOUND', `Instance "${source}" has no snapshot "${snapshot}".`, {
            hint: `"vmkit snapshot list ${source}" shows its snapshots.`,
          });
        }
        const srcDisk = this.diskPath(src, src.disks[0]!);
        const srcInfo = await sharedVolumeInfo(srcDisk);
        const base = full ? undefined : srcInfo.backing;
        // A base inside the source's folder (a frozen layer) ties the clone to the source.
        const tiedToSource = !!base && base.file.startsWith(this.paths.instance(src.id) + '/');
        const inst = await this.cloneRecord(src, cloneName, tiedToSource);
        const dir = this.paths.instance(inst.id);
        await mkdir(dir, { recursive: true });
        try {
          const total = srcInfo.virtualSize;
          ctx?.progress({ phase: `copying snapshot ${snapshot}`, percent: 0, bytesDone: 0, bytesTotal: total });
          await exportSnapshotVolume(srcDisk, snapshot, join(dir, 'root.qcow2'), base, {
            signal: ctx?.signal,
            onProgress: (f) => ctx?.progress({ phase: `copying snapshot ${snapshot}`, percent: Math.min(99, Math.round(f * 100)), bytesDone: Math.round(f * total), bytesTotal: total }),
          });
          ctx?.checkCancelled();
          await this.insertRow(inst);
        } catch (err) {
          await rm(dir, { recursive: true, force: true });
          throw err;
        }
        this.events.lifecycle('instance-created', cloneName, { clonedFrom: source, snapshot, full });
        return this.view(inst);
      }),
    );
  }

  /**
   * Runs `fn` on a stopped instance's root disk while holding its lock (publish reads the
   * disk; nothing may start the instance meanwhile).
   */
  async withStoppedInstance<T>(name: string, verb: string, fn: (inst: Instance, rootDisk: string) => Promise<T>): Promise<T> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      if (inst.state !== 'stopped') {
        throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is ${inst.state}; only a stopped instance can be ${verb}.`, {
          hint: `Stop it first ("vmkit stop ${name}").`,
        });
      }
      return fn(inst, this.diskPath(inst, inst.disks[0]!));
    });
  }

  // ---- delete -------------------------------------------------------------------------

  async delete(name: string, opts: { force?: boolean } = {}, ctx?: OperationContext): Promise<void> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      const clones = (await this.store.list<Instance>('instances')).filter((v) => v.value.linkedFrom === name).map((v) => v.key);
      if (clones.length > 0) {
        throw vmkitError('VMKIT_INSTANCE_IN_USE', `Linked clone(s) ${clones.join(', ')} depend on the disk of "${name}".`, {
          hint: 'Delete the clones first, or make independent copies with "vmkit clone SOURCE NAME --full".',
        });
      }
      if (isActive(inst.state)) {
        if (!opts.force) {
          throw vmkitError('VMKIT_INSTANCE_RUNNING', `Instance "${name}" is ${inst.state}; it is not deleted.`, {
            hint: `Stop it first ("vmkit stop ${name}") or pass --force to stop and delete it.`,
          });
        }
        await this.stopLocked(name, { force: true }, ctx);
      }
      await this.finishDelete(await this.load(name));
    });
  }

  /** Row marked first, files removed, row deleted last: a crash mid-way is finished on restart. */
  private async finishDelete(inst: Instance): Promise<void> {
    if (inst.state !== 'deleting') await this.setState(inst, 'deleting');
    await this.killRuntime(inst.name);
    await rm(this.paths.instance(inst.id), { recursive: true, force: true });
    for (const d of inst.disks) if (isAbsolute(d.file)) await rm(dirname(d.file), { recursive: true, force: true });
    await this.store.delete('instances', inst.name);
    await this.ownership?.released(inst.name).catch(() => undefined);
    if (inst.nics.some((n) => n.network !== 'user')) {
      await this.networking?.unplug(inst).catch(() => undefined);
      await this.networking?.sync().catch(() => undefined);
    }
    this.events.lifecycle('instance-deleted', inst.name);
  }

  // ---- forwards -----------------------------------------------------------------------

  async listForwards(name: string): Promise<PortForward[]> {
    return (await this.load(name)).forwards;
  }

  async addForward(name: string, req: ForwardRequest): Promise<PortForward> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      const nic = req.nic
        ? inst.nics.find((n) => n.id === req.nic)
        : (inst.nics.find((n) => n.network === 'user') ?? inst.nics.find((n) => n.ipv4));
      if (!nic || (nic.network !== 'user' && !nic.ipv4)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `Instance "${name}" has no ${req.nic ? `NIC ${req.nic} with an address` : 'user-mode or nat NIC'} to forward to.`, {
          hint: 'Forwards go to a user-mode NIC or to a NIC with an address on a nat network.',
        });
      }
      if (nic.network !== 'user') await this.networking?.assertForwardable(nic.network);
      const f = normalizeForward(req, nic.id);
      if (f.floating && nic.network === 'user') throw floatingNeedsNat();
      const mine = inst.forwards.find((g) => forwardsCollide(f, g));
      if (mine) {
        throw vmkitError('VMKIT_FORWARD_CONFLICT', `Instance "${name}" already forwards ${describeForward(mine)}.`, {
          hint: `Remove it first ("vmkit forward remove ${name} ${mine.hostPort}").`,
        });
      }
      await this.assertNoForwardConflict(name, [f]);
      await assertHostPortFree(f);
      const rt = nic.network === 'user' ? this.runtimes.get(name) : undefined;
      if (rt) await rt.qmp.hmpOrThrow(`hostfwd_add ${f.nic} ${hostfwdRule(f)}`);
      try {
        inst.forwards.push(f);
        await this.save(inst);
        // Forwards to NICs on nat networks are nftables DNAT rules, re-applied as a whole.
        if (nic.network !== 'user') await this.networking?.sync();
        if (f.floating && this.runtimes.get(name)) await this.networking?.announce(inst);
      } catch (err) {
        if (rt) await rt.qmp.humanMonitorCommand(`hostfwd_remove ${f.nic} ${f.proto}:${f.hostAddress}:${f.hostPort}`).catch(() => undefined);
        if (nic.network !== 'user') {
          inst.forwards = inst.forwards.filter((g) => g !== f);
          await this.save(inst);
        }
        throw err;
      }
      this.events.lifecycle('forward-added', name, f);
      return f;
    });
  }

  async removeForward(name: string, hostPort: number, proto: 'tcp' | 'udp' = 'tcp', hostAddress?: string): Promise<PortForward> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      const idx = inst.forwards.findIndex(
        (f) => f.hostPort === hostPort && f.proto === proto && (!hostAddress || f.hostAddress === hostAddress),
      );
      if (idx < 0) {
        throw vmkitError('VMKIT_FORWARD_NOT_FOUND', `Instance "${name}" has no ${proto} forward from host port ${hostPort}.`, {
          hint: `"vmkit forward list ${name}" shows its forwards.`,
        });
      }
      const f = inst.forwards[idx]!;
      const onUser = inst.nics.find((n) => n.id === f.nic)?.network === 'user';
      const rt = onUser ? this.runtimes.get(name) : undefined;
      if (rt) {
        const out = await rt.qmp.humanMonitorCommand(`hostfwd_remove ${f.nic} ${f.proto}:${f.hostAddress}:${f.hostPort}`);
        if (out.trim() && !/removed/i.test(out)) {
          throw vmkitError('VMKIT_QMP_ERROR', `QEMU refused to remove forward ${describeForward(f)}: ${out.trim()}`);
        }
      }
      inst.forwards.splice(idx, 1);
      await this.save(inst);
      if (!onUser) await this.networking?.sync();
      this.events.lifecycle('forward-removed', name, f);
      return f;
    });
  }

  // ---- NICs (hot-plug) ------------------------------------------------------------------

  /** Adds a NIC; on a running instance it is hot-plugged (QMP netdev_add + device_add). */
  async addNic(name: string, req: NicRequest): Promise<Nic> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      if (inst.state !== 'stopped' && inst.state !== 'running') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot add a NIC to instance "${name}" while it is ${inst.state}.`, {
          hint: 'NICs are added to stopped or running instances.',
        });
      }
      const image = await this.images.get(inst.image);
      const next = Math.max(-1, ...inst.nics.map((n) => Number(n.id.replace(/^nic/, '')))) + 1;
      const [nic] = await this.allocateNics([req], image, next);
      const before = inst.nics;
      inst.nics = [...before, nic!];
      await this.save(inst);
      const rt = inst.state === 'running' ? this.runtimes.get(name) : undefined;
      try {
        if (nic!.network !== 'user') {
          if (rt) await this.networking?.plug(inst);
          else await this.networking?.sync();
        }
        if (rt) {
          const tap = this.networking?.taps(inst)[nic!.id];
          await rt.qmp.execute('netdev_add', tap ? { type: 'tap', id: nic!.id, ifname: tap, script: 'no', downscript: 'no' } : { type: 'user', id: nic!.id });
          try {
            await rt.qmp.execute('device_add', { driver: nicDevice(nic!.model), netdev: nic!.id, mac: nic!.mac, id: `${nic!.id}-dev` });
          } catch (err) {
            await rt.qmp.execute('netdev_del', { id: nic!.id }).catch(() => undefined);
            throw err;
          }
        }
      } catch (err) {
        inst.nics = before;
        await this.save(inst);
        if (nic!.network !== 'user') {
          await this.networking?.unplug({ ...inst, nics: [nic!] }).catch(() => undefined);
          await this.networking?.sync().catch(() => undefined);
        }
        throw err;
      }
      this.events.lifecycle('nic-added', name, nic);
      return nic!;
    });
  }

  /** Removes a NIC (and its forwards); on a running instance it is hot-unplugged. */
  async removeNic(name: string, nicId: string): Promise<Nic> {
    return this.withLock(name, async () => {
      const inst = await this.load(name);
      const nic = inst.nics.find((n) => n.id === nicId);
      if (!nic) {
        throw vmkitError('VMKIT_NIC_NOT_FOUND', `Instance "${name}" has no NIC "${nicId}".`, { hint: `"vmkit nic list ${name}" shows its NICs.` });
      }
      if (inst.state !== 'stopped' && inst.state !== 'running') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot remove a NIC from instance "${name}" while it is ${inst.state}.`);
      }
      const rt = inst.state === 'running' ? this.runtimes.get(name) : undefined;
      if (rt) {
        // The guest must release the device (ACPI eject) before its netdev can go.
        const deleted = new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => {
            rt.qmp.off('event', onEvent);
            resolve(false);
          }, 15_000);
          const onEvent = (e: QmpEvent) => {
            if (e.event === 'DEVICE_DELETED' && e.data.device === `${nic.id}-dev`) {
              clearTimeout(timer);
              rt.qmp.off('event', onEvent);
              resolve(true);
            }
          };
          rt.qmp.on('event', onEvent);
        });
        await rt.qmp.execute('device_del', { id: `${nic.id}-dev` });
        if (!(await deleted)) {
          throw vmkitError('VMKIT_TIMEOUT', `The guest of "${name}" did not release NIC ${nic.id} within 15 s.`, {
            hint: 'The guest needs ACPI PCI hot-plug; stop the instance and remove the NIC then.',
          });
        }
        await rt.qmp.execute('netdev_del', { id: nic.id });
      }
      inst.nics = inst.nics.filter((n) => n !== nic);
      inst.forwards = inst.forwards.filter((f) => f.nic !== nic.id);
      await this.save(inst);
      if (nic.network !== 'user') {
        await this.networking?.unplug({ ...inst, nics: [nic] });
        await this.networking?.sync();
      }
      this.events.lifecycle('nic-removed', name, nic);
      return nic;
    });
  }

  // ---- console ------------------------------------------------------------------------

  async logs(name: string, tailBytes?: number): Promise<string> {
    const inst = await this.load(name);
    const text = await readFile(this.paths.consoleLog(inst.id), 'utf8').catch(() => '');
    return tailBytes && text.length > tailBytes ? text.slice(-tailBytes) : text;
  }

  async serialSocket(name: string): Promise<string> {
    const inst = await this.load(name);
    this.runtime(inst);
    return join(this.paths.run(inst.id), RUN_FILES.serial);
  }

  /** The VNC server socket of a running instance (its graphical console). */
  async vncSocket(name: string): Promise<string> {
    const inst = await this.load(name);
    this.runtime(inst);
    return join(this.paths.run(inst.id), RUN_FILES.vnc);
  }

  // ---- recovery -----------------------------------------------------------------------

  /**
   * After a daemon (re)start: re-attach to every QEMU still running, settle instances whose
   * process is gone, finish interrupted deletes and remove folders no row owns.
   */
  async recover(): Promise<void> {
    await mkdir(this.paths.instances, { recursive: true });
    const rows = (await this.store.list<Instance>('instances')).map((v) => v.value);
    const ids = new Set(rows.map((r) => r.id));
    for (const entry of await readdir(this.paths.instances)) {
      if (!ids.has(entry)) await rm(this.paths.instance(entry), { recursive: true, force: true });
    }
    for (const inst of rows) {
      if (inst.state === 'deleting') {
        await this.finishDelete(inst);
        continue;
      }
      const runDir = this.paths.run(inst.id);
      const pid = await findQemuProcess(runDir, inst.id);
      if (!pid) {
        // Settled by the migration recovery (it knows whether the move finished).
        if (inst.state === 'migrating') continue;
        if (isActive(inst.state)) {
          await rm(runDir, { recursive: true, force: true });
          await this.setState(inst, 'stopped', 'QEMU ended while the daemon was not running');
          this.events.lifecycle('instance-stopped', inst.name, { reason: 'found stopped after daemon restart' });
        }
        continue;
      }
      try {
        const qmp = await Qmp.connect(join(runDir, RUN_FILES.qmp), { timeoutMs: 5_000 });
        const status = await qmp.queryStatus();
        const rt: Runtime = {
          pid,
          qmp,
          startedAtMs: inst.lastStartedAt ? Date.parse(inst.lastStartedAt) : Date.now(),
          expectExit: false,
          guestShutdown: false,
          accel: (await qmp.queryKvm()).enabled ? 'kvm' : 'tcg',
        };
        this.attach(inst.name, rt);
        // A start interrupted between launch and `cont` is finished; a stop interrupted
        // before QEMU ended is undone (the VM keeps running).
        if (inst.state === 'migrating') {
          // The migration code (src/cluster/migration.ts) decides: finish or undo.
          rt.ownRunState = true;
          continue;
        }
        if (status.status === 'prelaunch') await qmp.cont();
        const state: InstanceState = status.status === 'paused' ? 'paused' : 'running';
        if (inst.state !== state) await this.setState(inst, state);
      } catch (err) {
        await this.setState(inst, 'error', `cannot re-attach to QEMU pid ${pid}: ${(err as Error).message}`);
      }
    }
  }

  /** Lets go of every QEMU without stopping it (daemon shutdown): VMs keep running. */
  detachAll(): void {
    for (const [name, rt] of this.runtimes) {
      this.runtimes.delete(name);
      rt.qmp.close();
    }
  }

  async usesImage(image: string): Promise<boolean> {
    return (await this.store.list<Instance>('instances')).some((v) => v.value.image === image);
  }
}

function floatingNeedsNat(): Error {
  return vmkitError('VMKIT_INVALID_ARGUMENT', 'A floating forward needs a NIC on a nat network (user-mode NICs forward from QEMU itself).', {
    hint: 'Give the instance a NIC on a nat network: --nic NETWORK.',
  });
}

async function waitForExitOrCancel(pid: number, timeoutMs: number, ctx?: OperationContext): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await waitForExit(pid, Math.min(250, deadline - Date.now()))) return true;
    if (ctx?.signal.aborted) return false;
  }
  return waitForExit(pid, 0);
}
