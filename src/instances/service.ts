import { validateName } from '../domain/names.js';
import { validateCloudInit } from '../domain/cloud-init.js';
import type { InstanceView, Operation } from '../domain/types.js';
import type { OperationContext, OperationManager } from '../operations/operations.js';
import { findOvmf, parseFirmware } from '../qemu/firmware.js';
import type { CreateInstanceRequest, InstanceManager } from './manager.js';

export type StateAction = 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'suspend';

export interface StateChange {
  action: StateAction;
  force?: boolean;
  /** Seconds to wait for the guest to power off before forcing. */
  timeout?: number;
}

/** A create that may start the new instance at once (`vmkit launch`). */
export type LaunchRequest = CreateInstanceRequest & { start?: boolean };

/**
 * Suspending saves memory to disk, which the snapshot manager owns. Named by shape: snapshots/
 * imports instances/, so instances/ must not import snapshots/.
 */
export interface Suspender {
  suspend(name: string, ctx?: OperationContext): Promise<InstanceView>;
}

export interface InstanceServiceDeps {
  /** The instance manager's public verbs only (its internals are being rewritten). */
  instances: Pick<InstanceManager, 'get' | 'create' | 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'delete' | 'clone'>;
  images: { get(name: string): Promise<{ firmware?: string }> };
  snapshots: Suspender;
  operations: OperationManager;
}

const VERBS = { start: 'Starting', stop: 'Stopping', restart: 'Restarting', pause: 'Pausing', resume: 'Resuming', suspend: 'Suspending' } as const;

/**
 * The instance verbs that are more than one manager call: each checks what it can at once
 * (so bad input answers 4xx, not a failed operation) and runs the work as an operation.
 */
export class InstanceService {
  constructor(private readonly deps: InstanceServiceDeps) {}

  /** Create, and with `start` also start; a failed start takes the fresh instance with it. */
  async launch(req: LaunchRequest): Promise<Operation> {
    const { instances, images, operations } = this.deps;
    validateName(req.name, 'instance name');
    validateCloudInit(req);
    const image = await images.get(req.image);
    // Refused before an operation starts (a 4xx/5xx, not a failed operation): an unknown
    // firmware, or UEFI on a host without OVMF.
    if (parseFirmware(req.firmware ?? image.firmware ?? 'bios') === 'uefi') await findOvmf();
    return operations.start({
      kind: req.start ? 'instance.launch' : 'instance.create',
      description: `${req.start ? 'Launching' : 'Creating'} ${req.name}`,
      target: req.name,
      mayCancel: true,
      run: async (opCtx) => {
        const created = await instances.create(req, opCtx);
        if (!req.start) return created;
        try {
          return await instances.start(req.name, opCtx);
        } catch (err) {
          // The start's error is the one to report; an instance the clean-up left behind is
          // still listed and can be deleted by hand.
          await instances.delete(req.name, { force: true }).catch(() => undefined);
          throw err;
        }
      },
    });
  }

  /** start, stop, restart, pause, resume or suspend, as an operation (only a stop may be cancelled). */
  async changeState(name: string, change: StateChange): Promise<Operation> {
    const { instances, snapshots, operations } = this.deps;
    const { action, force, timeout } = change;
    await instances.get(name);
    return operations.start({
      kind: `instance.${action}`,
      description: `${VERBS[action]} ${name}`,
      target: name,
      mayCancel: action === 'stop',
      run: async (opCtx) => {
        switch (action) {
          case 'start':
            return instances.start(name, opCtx);
          case 'stop':
            return instances.stop(name, { force, timeout }, opCtx);
          case 'restart':
            return instances.restart(name, { force, timeout }, opCtx);
          case 'pause':
            return instances.pause(name);
          case 'resume':
            return instances.resume(name);
          case 'suspend':
            return snapshots.suspend(name, opCtx);
        }
      },
    });
  }

  async delete(name: string, opts: { force?: boolean }): Promise<Operation> {
    const { instances, operations } = this.deps;
    await instances.get(name);
    return operations.start({
      kind: 'instance.delete',
      description: `Deleting ${name}`,
      target: name,
      run: async (opCtx) => {
        await instances.delete(name, { force: opts.force }, opCtx);
        return { deleted: name };
      },
    });
  }

  /** A linked (default) or full copy of a stopped instance, or of any instance at a snapshot. */
  async clone(source: string, req: { name: string; full?: boolean; fromSnapshot?: string }): Promise<Operation> {
    const { instances, operations } = this.deps;
    const { name, full, fromSnapshot } = req;
    validateName(name, 'instance name');
    if (fromSnapshot !== undefined) validateName(fromSnapshot, 'snapshot name');
    await instances.get(source);
    return operations.start({
      kind: 'instance.clone',
      description: `Cloning ${source}${fromSnapshot ? ` at snapshot ${fromSnapshot}` : ''} to ${name}${full ? ' (full copy)' : ''}`,
      target: name,
      mayCancel: true,
      run: (opCtx) => instances.clone(source, name, { full, fromSnapshot }, opCtx),
    });
  }
}
