import type { DiskRef, Instance, InstanceView, Nic, PortForward } from '../domain/types.js';
import type { DataPaths } from '../paths.js';
import type { Store } from '../store/store.js';
import type { ImageStore } from '../images/image-store.js';
import type { EventBus } from '../operations/events.js';
import type { OperationContext } from '../operations/operations.js';
import type { ForwardRequest } from '../network/forwards.js';
import { GuestAgent } from './agent.js';
import { Cloning } from './clone.js';
import { Consoles } from './console.js';
import { Disks } from './disks.js';
import { CloudInitSettings } from './cloud-init.js';
import type { CloudInitRequest } from '../domain/cloud-init.js';
import { Forwards } from './forwards.js';
import { Lifecycle } from './lifecycle.js';
import { Nics } from './nics.js';
import { Provisioning } from './provision.js';
import { Recovery, type KeptFolders } from './recovery.js';
import { InstanceRegistry, type InstanceContext, type InstancePeers } from './registry.js';
import type { CreateInstanceRequest, HostEnvironment, NicRequest, StopOptions } from './types.js';

export type { InstancePeers } from './registry.js';
export type { KeptFolders } from './recovery.js';
export type { CreateInstanceRequest, HostEnvironment, InstanceNetworking, InstanceOwnership, NicRequest, StartHooks, StopOptions, SuspendHandler } from './types.js';

/**
 * Instance lifecycle: create from an image (linked clone), start/stop/pause/resume/restart,
 * delete, port forwards, and re-attaching to running QEMU processes after a daemon restart.
 * The API and CLI are skins over these methods; every state change is checked by the state
 * machine, persisted, and announced as an event. This class only composes the modules of
 * this folder (one concern each) around one shared context.
 */
export class InstanceManager {
  /**
   * The per-instance locks, rows, attached QEMUs and state writer. Snapshots and migration
   * take part in an instance's life through it (and through `lifecycle`), holding the lock.
   */
  readonly registry: InstanceRegistry;
  /** Start/stop steps; the `…Locked` ones expect the caller to hold the instance's lock. */
  readonly lifecycle: Lifecycle;
  /** The guest agent (exec, files, addresses, freeze, shutdown, clock): src/instances/agent.ts. */
  readonly agent: GuestAgent;
  private readonly provisioning: Provisioning;
  private readonly cloning: Cloning;
  private readonly forwards: Forwards;
  private readonly nics: Nics;
  private readonly consoles: Consoles;
  private readonly recovery: Recovery;
  private readonly disks: Disks;
  private readonly cloudInit: CloudInitSettings;

  /**
   * `peers` are the modules instances call out to (networks, cluster names, suspended state).
   * They are built around this manager, so the daemon passes objects that reach them late
   * (see daemon.ts); each is read at call time.
   */
  constructor(store: Store, paths: DataPaths, images: ImageStore, events: EventBus, host: HostEnvironment, peers: InstancePeers = {}) {
    this.registry = new InstanceRegistry(store, paths, events, peers);
    const shared: InstanceContext = { store, paths, images, events, host, registry: this.registry, peers };
    this.agent = new GuestAgent(shared);
    this.lifecycle = new Lifecycle(shared, this.agent);
    this.nics = new Nics(shared);
    this.forwards = new Forwards(shared);
    this.provisioning = new Provisioning(shared, this.lifecycle, this.nics, this.forwards);
    this.cloning = new Cloning(shared, this.nics);
    this.consoles = new Consoles(shared);
    this.recovery = new Recovery(shared, this.provisioning);
    this.disks = new Disks(shared);
    this.cloudInit = new CloudInitSettings(shared);
  }

  /** Addresses from the guest agent are the last known ones; stale ones are refreshed in the background. */
  async list(): Promise<InstanceView[]> {
    const all = await this.registry.list();
    this.agent.refreshStale(all.filter((i) => i.state === 'running').map((i) => i.name));
    return all.map((i) => this.registry.view(i));
  }

  async get(name: string): Promise<InstanceView> {
    return this.registry.view(await this.registry.load(name));
  }

  /**
   * `vmkit info`: like get, but a running instance's addresses are asked of its guest agent
   * first (≤ 2.5 s; an agent found missing is asked again after 10 s at the earliest).
   */
  async info(name: string): Promise<InstanceView> {
    const inst = await this.registry.load(name);
    const last = this.registry.current(name)?.agent;
    const fresh = last && !last.available && Date.now() - Date.parse(last.checkedAt) < 10_000;
    if (inst.state === 'running' && !fresh) await this.agent.refresh(name);
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

  /**
   * Lets go of an instance that now lives elsewhere (a migration): QEMU ended, row and local
   * files removed, shared disks kept. The caller holds the instance's lock.
   */
  release(inst: Instance): Promise<void> {
    return this.provisioning.release(inst);
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
  recover(keep?: KeptFolders): Promise<void> {
    return this.recovery.recover(keep);
  }

  /** Lets go of every QEMU without stopping it (daemon shutdown): VMs keep running. */
  detachAll(): void {
    this.registry.detachAll();
  }
}
