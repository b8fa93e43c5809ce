import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { vmkitError } from '../errors.js';
import { assertTransition } from '../domain/state.js';
import type { DiskRef, Instance, InstanceAgent, InstanceState, InstanceView, Nic } from '../domain/types.js';
import type { DataPaths } from '../paths.js';
import type { Store } from '../store/store.js';
import type { ImageStore } from '../images/image-store.js';
import type { EventBus } from '../operations/events.js';
import { isProcessAlive, waitForExit } from '../qemu/process.js';
import type { QmpClient, QmpEvent } from '../qemu/qmp.js';
import { Confinement } from './confinement.js';
import type { HostEnvironment, InstanceNetworking, InstanceOwnership, SuspendHandler } from './types.js';

const USER_NET_GUEST_IP = '10.0.2.15';

/**
 * A NIC as shown: the address the guest agent reported for its MAC when it answered,
 * else QEMU user-mode's fixed lease (assumed), else vmkit's own (configured).
 */
function nicView(n: Nic, rt: Runtime | undefined): Nic {
  const reported = rt?.agent?.available ? rt.agent.interfaces?.find((i) => i.mac === n.mac.toLowerCase())?.ipv4[0] : undefined;
  if (reported) return { ...n, ipv4: reported, ipv4Source: 'agent' };
  // QEMU's user-mode DHCP server always leases 10.0.2.15 to its (only) guest.
  if (rt && n.network === 'user' && !n.ipv4) return { ...n, ipv4: USER_NET_GUEST_IP, ipv4Source: 'assumed' };
  return n.ipv4 ? { ...n, ipv4Source: 'configured' } : n;
}

/** What the daemon holds for a running QEMU. */
export interface Runtime {
  pid: number;
  qmp: QmpClient;
  startedAtMs: number;
  /** Set when the daemon asked QEMU to end, so its exit is a stop, not a crash. */
  expectExit: boolean;
  guestShutdown: boolean;
  accel: 'kvm' | 'tcg';
  /** The instance's id (its cgroup is named after it). */
  instanceId?: string;
  /** The uid QEMU runs as (from /proc), and its cgroup (`/vmkit/<id>`), when confined. */
  uid?: number;
  cgroup?: string;
  /**
   * Set while a snapshot/suspend job drives the run state itself: QEMU's own STOP/RESUME
   * events during the job are then not mirrored into the instance row.
   */
  ownRunState?: boolean;
  /** Keeps the console log under its cap while this QEMU runs (closed when the daemon lets go of it). */
  consoleCap?: { close(): void };
  /** What the guest agent last said (addresses), refreshed by src/instances/agent.ts. */
  agent?: InstanceAgent;
  /** The last BLOCK_IO_ERROR QEMU reported since the guest last ran: the STOP that follows is an `io-error` pause. */
  ioError?: IoErrorInfo;
}

/** What QEMU's BLOCK_IO_ERROR event says (its `action` was `stop`: the guest is paused). */
export interface IoErrorInfo {
  device?: string;
  nodeName?: string;
  operation?: string;
  nospace?: boolean;
  /** QEMU's words for the error (strerror), e.g. "No space left on device". */
  message?: string;
}

/** The stateReason of an instance QEMU paused on a disk I/O error (werror/rerror=stop). */
export const IO_ERROR_REASON = 'io-error';

/** How often a row an event handler could not store (full disk, …) is tried again. */
const STORE_RETRY_MS = 2_000;

/**
 * The modules instances call out to, given to the instance manager when it is made (the
 * daemon wires them; a missing one means: no vmkit networks, no cluster, no suspend).
 */
export interface InstancePeers {
  readonly networking?: InstanceNetworking;
  /** In a cluster, instance names are claimed cluster-wide (etcd) before a row is written. */
  readonly ownership?: InstanceOwnership;
  /** How a `suspended` instance is resumed or its saved state dropped (the snapshot module). */
  readonly suspend?: SuspendHandler;
}

/** What every instance module shares, so none needs setters to reach another's internals. */
export interface InstanceContext {
  readonly store: Store;
  readonly paths: DataPaths;
  readonly images: ImageStore;
  readonly events: EventBus;
  readonly host: HostEnvironment;
  readonly registry: InstanceRegistry;
  readonly peers: InstancePeers;
}

/**
 * The instances this host holds: their rows (load/save), the per-instance locks, the QEMU
 * processes attached, and the one writer of an instance's state, which checks every change
 * against the state machine (src/domain/state.ts).
 */
export class InstanceRegistry {
  private readonly runtimes = new Map<string, Runtime>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /**
   * Rows an event handler changed but the store refused (SQLITE_FULL on a full disk, …): kept
   * here, served by load/list as the truth, and written again every STORE_RETRY_MS until the
   * store takes them. A QEMU event must never be lost, nor kill the daemon.
   */
  private readonly unsaved = new Map<string, Instance>();
  private retryTimer?: NodeJS.Timeout;
  /** The guests' uids and cgroups (src/instances/confinement.ts). */
  readonly confinement: Confinement;

  constructor(
    private readonly store: Store,
    private readonly paths: DataPaths,
    private readonly events: EventBus,
    private readonly peers: InstancePeers,
  ) {
    this.confinement = new Confinement(paths, { list: () => this.list(), save: (inst) => this.save(inst) });
  }

  /** Serializes work on one instance, so two operations never interleave on it. */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    // The previous holder's failure is its caller's to report; this one runs regardless.
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(name, next);
    const unlock = () => {
      if (this.locks.get(name) === next) this.locks.delete(name);
    };
    // The failure goes to this call's caller (returned below); the clean-up must not re-raise it.
    void next.finally(unlock).catch(() => undefined);
    return next;
  }

  async load(name: string): Promise<Instance> {
    const found = await this.loadIfPresent(name);
    if (!found) {
      throw vmkitError('VMKIT_INSTANCE_NOT_FOUND', `There is no instance "${name}".`, {
        hint: '"vmkit list" shows the instances.',
      });
    }
    return found;
  }

  async save(inst: Instance): Promise<void> {
    inst.updatedAt = new Date().toISOString();
    await this.store.put('instances', inst.name, inst);
    // A newer write supersedes one an event handler could not store.
    if (this.unsaved.get(inst.name)?.id === inst.id) this.unsaved.delete(inst.name);
  }

  /** The only writer of an instance's state: a change the state machine forbids throws VMKIT_INVALID_STATE. */
  async setState(inst: Instance, state: InstanceState, reason?: string): Promise<void> {
    assertTransition(inst.name, inst.state, state, VERBS[state]);
    inst.state = state;
    inst.stateReason = reason;
    await this.save(inst);
  }

  /** Writes a new row, after claiming its name cluster-wide when in a cluster. */
  async insertRow(inst: Instance): Promise<void> {
    await this.peers.ownership?.claim(inst.name, { image: inst.image, cpus: inst.cpus, memoryMiB: inst.memoryMiB });
    try {
      await this.putNew(inst);
    } catch (err) {
      await this.peers.ownership?.released(inst.name).catch((e: Error) => console.error(`vmkitd: releasing the name ${inst.name}: ${e.message}`));
      throw err;
    }
  }

  /** Adds a row that must not exist yet (an instance arriving by migration: its name moves at take-over, not here). */
  async insert(inst: Instance): Promise<void> {
    inst.updatedAt = new Date().toISOString();
    await this.putNew(inst);
  }

  /** Every new row (create, clone, a migration's target) gets a guest uid unique on this host. */
  private async putNew(inst: Instance): Promise<void> {
    const { uid, done } = await this.confinement.reserveUid();
    inst.uid = uid;
    try {
      await this.store.put('instances', inst.name, inst, { expectRevision: 0 });
    } finally {
      done();
    }
  }

  async list(): Promise<Instance[]> {
    return (await this.store.list<Instance>('instances')).map((v) => {
      const held = this.unsaved.get(v.key);
      return held && held.id === v.value.id ? structuredClone(held) : v.value;
    });
  }

  async has(name: string): Promise<boolean> {
    return (await this.store.get('instances', name)) !== undefined;
  }

  /** A disk's file: relative names live in the instance folder, shared disks are absolute. */
  diskPath(inst: Instance, d: DiskRef): string {
    return resolve(this.paths.instance(inst.id), d.file);
  }

  instanceDir(inst: Instance): string {
    return this.paths.instance(inst.id);
  }

  rootDisk(inst: Instance): string {
    return this.diskPath(
      inst,
      inst.disks.find((d) => d.name === 'root')!,
    );
  }

  view(inst: Instance): InstanceView {
    const rt = this.runtimes.get(inst.name);
    return {
      ...inst,
      // QEMU's user-mode DHCP server always leases 10.0.2.15 to its (only) guest.
      nics: inst.nics.map((n) => nicView(n, rt)),
      runtime: rt
        ? {
            pid: rt.pid,
            accel: rt.accel,
            qemuStatus: inst.state === 'paused' ? (inst.stateReason === IO_ERROR_REASON ? IO_ERROR_REASON : 'paused') : 'running',
            uptimeSeconds: Math.round((Date.now() - rt.startedAtMs) / 100) / 10,
            ...(rt.uid !== undefined ? { uid: rt.uid } : {}),
            ...(rt.cgroup ? { cgroup: rt.cgroup } : {}),
            ...(rt.agent ? { agent: rt.agent } : {}),
          }
        : {},
    };
  }

  // ---- QEMU processes ---------------------------------------------------------------------

  /** The attached QEMU of an instance, or undefined when none runs. */
  current(name: string): Runtime | undefined {
    return this.runtimes.get(name);
  }

  /** The QMP client of the instance's QEMU, or undefined when none runs. */
  qmp(name: string): QmpClient | undefined {
    return this.runtimes.get(name)?.qmp;
  }

  /** The attached QEMU of an instance; throws when none runs. */
  runtime(inst: Instance): Runtime {
    const rt = this.runtimes.get(inst.name);
    if (!rt) {
      throw vmkitError('VMKIT_INVALID_STATE', `Instance "${inst.name}" has no QEMU process attached.`, {
        hint: `Start it with "vmkit start ${inst.name}".`,
      });
    }
    return rt;
  }

  /** Watches a QEMU: its QMP events and the end of its QMP connection (= the process ended). */
  attach(name: string, rt: Runtime): void {
    const previous = this.runtimes.get(name);
    if (previous && previous !== rt) previous.consoleCap?.close();
    this.runtimes.set(name, rt);
    rt.qmp.on('event', (e: QmpEvent) => {
      this.onQmpEvent(name, rt, e).catch((err: Error) => console.error(`vmkitd: QEMU event ${e.event} of ${name}: ${err.message}`));
    });
    rt.qmp.on('close', () => {
      this.onQemuGone(name, rt).catch((err: Error) => console.error(`vmkitd: settling the end of QEMU of ${name}: ${err.message}`));
    });
  }

  /** Drops the entry of a QEMU whose end the caller settles itself. */
  forget(name: string): void {
    this.runtimes.get(name)?.consoleCap?.close();
    this.runtimes.delete(name);
  }

  /** Ends an instance's QEMU (if any) without touching its row. */
  async killRuntime(name: string): Promise<void> {
    const rt = this.runtimes.get(name);
    if (!rt) return;
    rt.expectExit = true;
    rt.consoleCap?.close();
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
    if (rt.instanceId) await this.confinement.release(rt.instanceId);
  }

  /** Lets go of every QEMU without stopping it (daemon shutdown): VMs keep running. */
  detachAll(): void {
    for (const [name, rt] of this.runtimes) {
      rt.consoleCap?.close();
      this.runtimes.delete(name);
      rt.qmp.close();
    }
    if (this.retryTimer) clearInterval(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** A QEMU the migration code drove is handed back to the lifecycle in this state. */
  async adopt(name: string, state: InstanceState): Promise<void> {
    const rt = this.runtimes.get(name);
    if (rt) rt.ownRunState = false;
    const inst = await this.load(name);
    if (state === 'running' && inst.state !== 'running') inst.lastStartedAt = inst.lastStartedAt ?? new Date().toISOString();
    await this.setState(inst, state);
    this.events.lifecycle(state === 'running' ? 'instance-started' : 'instance-paused', name);
  }

  /** Runs fn while QEMU's STOP/RESUME events are not mirrored into the row. */
  async owningRunState<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const rt = this.runtimes.get(name);
    if (rt) rt.ownRunState = true;
    try {
      return await fn();
    } finally {
      if (rt) rt.ownRunState = false;
    }
  }

  private async onQmpEvent(name: string, rt: Runtime, e: QmpEvent): Promise<void> {
    if (e.event === 'SHUTDOWN') {
      rt.guestShutdown = true;
      return;
    }
    if (e.event === 'BLOCK_IO_ERROR') {
      // werror/rerror=stop: QEMU stops the guest right after this event (STOP follows).
      const d = e.data;
      if (d.action !== 'stop') return;
      const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
      const first = rt.ioError === undefined;
      rt.ioError = { device: str(d.device) || undefined, nodeName: str(d['node-name']), operation: str(d.operation), nospace: d.nospace === true, message: str(d.reason) };
      // Every in-flight request fails at once: one event (and one log line) per pause.
      if (first) {
        console.error(
          `vmkitd: ${name}: disk I/O error on ${rt.ioError.nodeName ?? rt.ioError.device} (${rt.ioError.operation}${rt.ioError.nospace ? ', no space left' : ''}: ${rt.ioError.message ?? 'unknown'}): QEMU paused the guest`,
        );
        this.events.lifecycle('instance-io-error', name, rt.ioError);
      }
    }
    // The guest runs again (`cont`): a later STOP is not that I/O error's.
    const ioError = e.event === 'STOP' ? rt.ioError : undefined;
    if (e.event === 'RESUME') rt.ioError = undefined;
    if (this.runtimes.get(name) !== rt || rt.ownRunState) return;
    // Pauses and resumes made outside the daemon (e.g. by QEMU on an I/O error) are reflected.
    if (e.event === 'STOP' || e.event === 'RESUME') {
      const want: InstanceState = e.event === 'STOP' ? 'paused' : 'running';
      const reason = ioError ? IO_ERROR_REASON : undefined;
      const inst = await this.loadIfPresent(name);
      if (!inst) return;
      const was = inst.state;
      if ((was === 'running' || was === 'paused') && (was !== want || inst.stateReason !== reason)) {
        await this.setStateFromEvent(inst, want, reason);
        if (was !== want || reason) {
          this.events.lifecycle(want === 'paused' ? 'instance-paused' : 'instance-resumed', name, ioError ? { reason, ...ioError } : undefined);
        }
      }
    }
  }

  /** The row as load() sees it (unsaved changes included), or undefined when there is none. */
  async loadIfPresent(name: string): Promise<Instance | undefined> {
    const row = (await this.store.get<Instance>('instances', name))?.value;
    const held = this.unsaved.get(name);
    // A held change is served only while its row is there (a delete or a namesake wins).
    if (held && row?.id === held.id) return structuredClone(held);
    if (held) this.unsaved.delete(name);
    return row;
  }

  /**
   * setState for event handlers (QEMU events, timers): a state change the state machine refuses
   * throws as always, but a store that refuses the write (full disk, I/O error, locked) does
   * not: the change is logged, kept in memory and retried until stored.
   */
  async setStateFromEvent(inst: Instance, state: InstanceState, reason?: string): Promise<void> {
    assertTransition(inst.name, inst.state, state, VERBS[state]);
    inst.state = state;
    inst.stateReason = reason;
    try {
      await this.save(inst);
    } catch (err) {
      this.keepUnsaved(inst, err as Error);
    }
  }

  private keepUnsaved(inst: Instance, err: Error): void {
    if (!this.unsaved.has(inst.name)) {
      console.error(
        `vmkitd: instance ${inst.name}: the store refused its new state ${inst.state} (${err.message}); kept in memory and written again every ${STORE_RETRY_MS / 1000} s`,
      );
    }
    this.unsaved.set(inst.name, structuredClone(inst));
    if (!this.retryTimer) {
      this.retryTimer = setInterval(() => void this.retryUnsaved(), STORE_RETRY_MS);
      this.retryTimer.unref();
    }
  }

  /** Writes the rows event handlers could not store; never throws (a timer calls it). */
  async retryUnsaved(): Promise<void> {
    for (const [name, inst] of [...this.unsaved]) {
      try {
        const row = (await this.store.get<Instance>('instances', name))?.value;
        // Deleted, or replaced by a namesake, or written since by someone else: nothing to restore.
        if (!row || row.id !== inst.id || row.updatedAt > inst.updatedAt) {
          if (this.unsaved.get(name) === inst) this.unsaved.delete(name);
          continue;
        }
        await this.store.put('instances', name, inst);
        if (this.unsaved.get(name) === inst) this.unsaved.delete(name);
        console.error(`vmkitd: instance ${name}: its state ${inst.state} is stored now`);
      } catch {
        // Still refused: the next tick tries again (the first failure was logged).
      }
    }
    if (this.unsaved.size === 0 && this.retryTimer) {
      clearInterval(this.retryTimer);
      this.retryTimer = undefined;
    }
  }

  private async onQemuGone(name: string, rt: Runtime): Promise<void> {
    // A stop or kill the daemon asked for is settled by the code that asked.
    if (rt.expectExit || this.runtimes.get(name) !== rt) return;
    await waitForExit(rt.pid, 5_000);
    if (rt.expectExit || this.runtimes.get(name) !== rt) return;
    this.runtimes.delete(name);
    rt.consoleCap?.close();
    // Under the instance's lock: an operation that removes the instance meanwhile (a migration's
    // target aborting, a delete) finishes first, and a row it removed is not written back here
    // (an aborted incoming migration's QEMU exits by itself; its row used to come back as `error`).
    await this.withLock(name, async () => {
      const inst = await this.loadIfPresent(name);
      if (!inst || (rt.instanceId !== undefined && inst.id !== rt.instanceId)) return;
      await rm(this.paths.run(inst.id), { recursive: true, force: true }).catch((err: Error) => console.error(`vmkitd: removing the run folder of ${name}: ${err.message}`));
      const oom = rt.guestShutdown ? undefined : await this.confinement.oomKilled(inst.id).catch(() => undefined);
      await this.confinement.release(inst.id);
      if (inst.state === 'deleting') return;
      if (rt.guestShutdown) {
        await this.setStateFromEvent(inst, 'stopped', 'the guest powered off');
        this.events.lifecycle('instance-stopped', name);
      } else {
        const why = oom
          ? `the kernel's OOM killer ended the QEMU process: its cgroup reached its memory limit${oom.limitMiB ? ` (${oom.limitMiB} MiB)` : ''}`
          : 'the QEMU process ended unexpectedly (killed or crashed)';
        await this.setStateFromEvent(inst, 'error', `${why}; its forwards were released`);
        this.events.lifecycle('instance-crashed', name, { pid: rt.pid, ...(oom ? { oomKilled: true } : {}) });
      }
      await this.peers.networking?.unplug(inst).catch((err: Error) => console.error(`vmkitd: unplugging ${name}: ${err.message}`));
    });
  }
}

// The verb an error names when a change to this state is refused ("Cannot pause instance …").
const VERBS: Record<InstanceState, string> = {
  starting: 'start',
  running: 'run',
  paused: 'pause',
  stopping: 'stop',
  stopped: 'stop',
  suspended: 'suspend',
  migrating: 'migrate',
  error: 'mark as failed',
  deleting: 'delete',
};
