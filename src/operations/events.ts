import { EventEmitter } from 'node:events';
import type { VmkitEvent } from '../domain/types.js';

/** The daemon's event bus: lifecycle and operation events, fanned out to SSE subscribers. */
export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  emit(event: Omit<VmkitEvent, 'timestamp'>): void {
    this.emitter.emit('event', { ...event, timestamp: new Date().toISOString() } satisfies VmkitEvent);
  }

  lifecycle(action: string, target: string, metadata?: unknown): void {
    this.emit({ type: 'lifecycle', action, target, metadata });
  }

  subscribe(listener: (e: VmkitEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
