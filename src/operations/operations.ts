import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { asVmkitError, vmkitError } from '../errors.js';
import type { Operation, OperationProgress } from '../domain/types.js';
import type { EventBus } from './events.js';

/** What a running operation's body sees: progress reporting and the cancellation signal. */
export interface OperationContext {
  readonly signal: AbortSignal;
  progress(p: OperationProgress): void;
  /** Throws VMKIT_OPERATION_CANCELLED when the user cancelled; call between steps. */
  checkCancelled(): void;
}

export interface OperationSpec<T> {
  kind: string;
  description: string;
  target?: string;
  mayCancel?: boolean;
  run: (ctx: OperationContext) => Promise<T>;
}

const KEEP_FINISHED = 500;

/**
 * Long work runs as an operation: the API answers 202 at once with its id, clients wait on
 * it or cancel it, and every change is an event.
 */
export class OperationManager {
  private readonly ops = new Map<string, Operation>();
  private readonly controllers = new Map<string, AbortController>();
  private readonly done = new EventEmitter();

  constructor(private readonly events: EventBus) {
    this.done.setMaxListeners(0);
  }

  start<T>(spec: OperationSpec<T>): Operation {
    const now = new Date().toISOString();
    const op: Operation = {
      id: randomUUID(),
      kind: spec.kind,
      description: spec.description,
      target: spec.target,
      status: 'pending',
      progress: { phase: 'queued' },
      mayCancel: spec.mayCancel ?? false,
      createdAt: now,
      updatedAt: now,
    };
    const controller = new AbortController();
    this.ops.set(op.id, op);
    this.controllers.set(op.id, controller);
    this.prune();
    this.events.emit({ type: 'operation', action: 'operation-created', target: spec.target, metadata: op });
    const ctx: OperationContext = {
      signal: controller.signal,
      progress: (p) => this.update(op, { progress: p }),
      checkCancelled: () => {
        if (controller.signal.aborted) {
          throw vmkitError('VMKIT_OPERATION_CANCELLED', `${op.description} was cancelled.`);
        }
      },
    };
    // Run on the next tick so the caller gets the operation before any progress.
    setImmediate(() => {
      this.update(op, { status: 'running' });
      spec
        .run(ctx)
        .then((result) => this.finish(op, { status: 'success', result, progress: { ...op.progress, phase: 'done', percent: 100 } }))
        .catch((err: unknown) => {
          const e = asVmkitError(err);
          const cancelled = controller.signal.aborted || e.code === 'VMKIT_OPERATION_CANCELLED';
          this.finish(op, {
            status: cancelled ? 'cancelled' : 'failure',
            error: { code: e.code, message: e.message, hint: e.hint },
          });
        });
    });
    return { ...op };
  }

  has(id: string): boolean {
    return this.ops.has(id);
  }

  get(id: string): Operation {
    const op = this.ops.get(id);
    if (!op) {
      throw vmkitError('VMKIT_OPERATION_NOT_FOUND', `There is no operation ${id}.`, {
        hint: 'Operations are kept in memory for the daemon\'s lifetime; "vmkit operation list" shows them.',
      });
    }
    return { ...op };
  }

  list(): Operation[] {
    return [...this.ops.values()].reverse().map((o) => ({ ...o }));
  }

  /** Resolves with the operation once it has ended, or as it is when the timeout passes. */
  async wait(id: string, timeoutMs: number): Promise<Operation> {
    const op = this.get(id);
    if (isFinished(op)) return op;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.done.off(id, onDone);
        resolve();
      }, timeoutMs);
      const onDone = () => {
        clearTimeout(timer);
        resolve();
      };
      this.done.once(id, onDone);
    });
    return this.get(id);
  }

  cancel(id: string): Operation {
    const op = this.get(id);
    if (isFinished(op)) {
      throw vmkitError('VMKIT_INVALID_STATE', `Operation ${id} has already ended (${op.status}).`);
    }
    if (!op.mayCancel) {
      throw vmkitError('VMKIT_INVALID_STATE', `Operation ${id} (${op.kind}) cannot be cancelled.`, {
        hint: 'Wait for it to finish.',
      });
    }
    this.controllers.get(id)?.abort();
    return op;
  }

  private update(op: Operation, patch: Partial<Operation>): void {
    Object.assign(op, patch, { updatedAt: new Date().toISOString() });
    this.events.emit({ type: 'operation', action: 'operation-updated', target: op.target, metadata: { ...op } });
  }

  private finish(op: Operation, patch: Partial<Operation>): void {
    this.update(op, patch);
    op.mayCancel = false;
    this.controllers.delete(op.id);
    this.done.emit(op.id);
  }

  private prune(): void {
    if (this.ops.size <= KEEP_FINISHED) return;
    for (const [id, op] of this.ops) {
      if (this.ops.size <= KEEP_FINISHED) break;
      if (isFinished(op)) this.ops.delete(id);
    }
  }
}

export function isFinished(op: Operation): boolean {
  return op.status === 'success' || op.status === 'failure' || op.status === 'cancelled';
}
