import type { DiskRef, Instance, InstanceView, Nic, PortForward } from '../domain/types.js';
import type { DataPaths } from '../paths.js';
import type { Store } from '../store/store.js';
import type { ImageStore } from '../images/image-store.js';
import type { EventBus } from '../operations/events.js';
import type { OperationContext } from '../operations/operations.js';
import type { ForwardRequest } from '../network/forwards.js';
import { Cloning } from './clone.js';
import { Consoles } from './console.js';
import { Disks } from './disks.js';
import { CloudInitSettings } from './cloud-init.js';
import type { CloudInitRequest } from '../domain/cloud-init.js';
import { Forwards } from './forwards.js';
import { Lifecycle } from './lifecycle.js';
import { Nics } from './nics.js';
import { Provisioning } from './provision.js';
import { Recovery } from './recovery.js';
import { InstanceRegistry, type InstanceContext, type InstancePeers } from './registry.js';
import type { CreateInstanceRequest, HostEnvironment, InstanceAccess, InstanceNetworking, InstanceOwnership, NicRequest, StopOptions, SuspendHandler } from './types.js';

export type {
  CreateInstanceRequest,
  HostEnvironment,
  InstanceAccess,
  InstanceNetworking,
  InstanceOwnership,
  NicRequest,
  StartHooks,
  StopOptions,
  SuspendHandler,
} from './types.js';

/**
 * Instance lifecycle: create from an image (linked clone), start/stop/pause/resume/restart,
 * delete, port forwards, and re-attaching to running QEMU processes after a daemon restart.
 * The API and CLI are skins over these methods; every state change is checked by the state
 * machine, persisted, and announced as an event. This class only composes the modules of
 * this folder (one concern each) around one shared context.
 */
export class InstanceManager {
  private readonly peers: InstancePeers = {};
  private readonly registry: InstanceRegistry;
  private readonly lifecycle: Lifecycle;
  private readonly provisioning: Provisioning;
  private readonly cloning: Cloning;
  private readonly forwards: Forwards;
  private readonly nics: Nics;
  private readonly consoles: Consoles;
  private readonly recovery: Recovery;
  private readonly disks: Disks;
  private readonly cloudInit: CloudInitSettings;

  constructor(store: Store, paths: DataPaths, images: ImageStore, events: EventBus, host: HostEnvironment) {
    this.registry = new InstanceRegistry(store, paths, events, this.peers);
    const shared: InstanceContext = { store, paths, images, events, host, registry: this.registry, peers: this.peers };
    this.lifecycle = new Lifecycle(shared);
    this.nics = new Nics(shared);
    this.forwards = new Forwards(shared);
    this.provisioning = new Provisioning(shared, this.lifecycle, this.nics, this.forwards);
    this.cloning = new Cloning(shared, this.nics);
    this.consoles = new Consoles(shared);
    this.recovery = new Recovery(shared, this.provisioning);
    this.disks = new Disks(shared);
    this.cloudInit = new CloudInitSettings(shared);
  }

  // The daemon builds networks, cluster and snapshots after this manager, then hands them in.

  setNetworking(n: InstanceNetworking): void {
    this.peers.networking = n;
  }

  /** In a cluster, instance names are claimed cluster-wide (etcd) before a row is written. */
  setOwnership(o: InstanceOwnership): void {
    this.peers.ownership = o;
  }

  /** How a `suspended` instance is resumed or its saved state dropped (set by the snapshot module). */
  setSuspendHandler(handler: SuspendHandler): void {
    this.peers.suspend = handler;
  }

  /** Lets the snapshot module take part in the lifecycle (see InstanceAccess). */
  access(): InstanceAccess {
    const { registry, lifecycle, provisioning, peers } = this;
    return {
      withLock: (name, fn) => registry.withLock(name, fn),
      load: (name) => registry.load(name),
      save: (inst) => registry.save(inst),
      setState: (inst, state, reason) => registry.setState(inst, state, reason),
      view: (inst) => registry.view(inst),
      rootDisk: (inst) => registry.rootDisk(inst),
      diskPath: (inst, d) => registry.diskPath(inst, d),
      instanceDir: (inst) => registry.instanceDir(inst),
      insert: (inst) => registry.insert(inst),
      release: (inst) => provisioning.release(inst),
      networking: () => peers.networking,
      adopt: (name, state) => registry.adopt(name, state),
      qmp: (name) => registry.current(name)?.qmp,
      owningRunState: (name, fn) => registry.owningRunState(name, fn),
      start: (name, ctx, hooks) => lifecycle.startLocked(name, ctx, hooks),
      stop: (name, opts, ctx) => lifecycle.stopLocked(name, opts, ctx),
      quit: (name, state, reason) => lifecycle.quitLocked(name, state, reason),
    };
  }

  async list(): Promise<InstanceView[]> {
    return (await this.registry.list()).map((i) => this.registry.view(i));
  }

  async get(name: string): Promise<InstanceView> {
    return this.registry.view(await this.registry.load(name));
  }

  /** A disk's file: relative names live in the instance folder, shared disks are absolute. */
  diskPath(inst: Instance, d: DiskRef): string {
    return this.registry.diskPath(inst, d);
  }

  /** Whether a row for this instance exists on this host. */
  async has(name: string): Promise<boolean> {
    return this.registry.has(name);
  }

  async usesImage(image: string): Promise<boolean> {
    return (await this.registry.list()).some((i) => i.image === image);
  }

  create(req: CreateInstanceRequest, ctx?: OperationContext): Promise<InstanceView> {
    return this.provisioning.create(req, ctx);
  }

  start(name: string, ctx?: OperationContext): Promise<InstanceView> {
    return this.lifecycle.start(name, ctx);
  }

  stop(name: string, opts: StopOptions = {}, ctx?: OperationContext): Promise<InstanceView> {
    return this.lifecycle.stop(name, opts, ctx);
  }

  restart(name: string, opts: StopOptions = {}, ctx?: OperationContext): Promise<InstanceView> {
    return this.lifecycle.restart(name, opts, ctx);
  }

  pause(name: string): Promise<InstanceView> {
    return this.lifecycle.pause(name);
  }

  resume(name: string): Promise<InstanceView> {
    return this.lifecycle.resume(name);
  }

  /** See Cloning.clone: linked (default) or full, from the current disk or a snapshot. */
  clone(source: string, name: string, opts: { full?: boolean; fromSnapshot?: string } = {}, ctx?: OperationContext): Promise<InstanceView> {
    return this.cloning.clone(source, name, opts, ctx);
  }

  /**
   * Runs `fn` on a stopped instance's root disk while holding its lock (publish reads the
   * disk; nothing may start the instance meanwhile).
   */
  withStoppedInstance<T>(name: string, verb: string, fn: (inst: Instance, rootDisk: string) => Promise<T>): Promise<T> {
    return this.cloning.withStoppedInstance(name, verb, fn);
  }

  delete(name: string, opts: { force?: boolean } = {}, ctx?: OperationContext): Promise<void> {
    return this.provisioning.delete(name, opts, ctx);
  }

  listForwards(name: string): Promise<PortForward[]> {
    return this.forwards.list(name);
  }

  addForward(name: string, req: ForwardRequest): Promise<PortForward> {
    return this.forwards.add(name, req);
  }

  removeForward(name: string, hostPort: number, proto: 'tcp' | 'udp' = 'tcp', hostAddress?: string): Promise<PortForward> {
    return this.forwards.remove(name, hostPort, proto, hostAddress);
  }

  /** Adds a NIC; on a running instance it is hot-plugged (QMP netdev_add + device_add). */
  addNic(name: string, req: NicRequest): Promise<Nic> {
    return this.nics.add(name, req);
  }

  /** Removes a NIC; forwards to it are refused unless `force` (then removed with it). */
  removeNic(name: string, nicId: string, opts: { force?: boolean } = {}): Promise<Nic & { removedForwards: PortForward[] }> {
    return this.nics.remove(name, nicId, opts);
  }

  /** Replaces user-data, SSH keys or meta-data; cloud-init applies them at the next boot (new instance-id). */
  setCloudInit(name: string, req: CloudInitRequest): Promise<InstanceView> {
    return this.cloudInit.update(name, req);
  }

  /** Grows a disk (online through QMP block_resize when running); never shrinks. */
  resizeDisk(name: string, size: number | string, disk = 'root'): ReturnType<Disks['resize']> {
    return this.disks.resize(name, size, disk);
  }

  logs(name: string, tailLines?: number): Promise<string> {
    return this.consoles.logs(name, tailLines);
  }

  serialSocket(name: string): Promise<string> {
    return this.consoles.serialSocket(name);
  }

  /** The VNC server socket of a running instance (its graphical console). */
  vncSocket(name: string): Promise<string> {
    return this.consoles.vncSocket(name);
  }

  /**
   * After a daemon (re)start: re-attach to every QEMU still running, settle instances whose
   * process is gone, finish interrupted deletes and remove folders no row owns.
   */
  recover(): Promise<void> {
    return this.recovery.recover();
  }

  /** Lets go of every QEMU without stopping it (daemon shutdown): VMs keep running. */
  detachAll(): void {
    this.registry.detachAll();
  }
}
