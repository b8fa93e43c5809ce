import { vmkitError, type VmkitError } from '../errors.js';
import type { InstanceState } from './types.js';

/**
 * The instance state machine. Every state change the daemon makes goes through
 * `assertTransition`, so an impossible request (start a running VM, pause a stopped one)
 * fails with VMKIT_INVALID_STATE before anything is touched.
 */
const TRANSITIONS: Record<InstanceState, readonly InstanceState[]> = {
  stopped: ['starting', 'deleting', 'migrating'],
  // migrating: the target of a live migration starts QEMU waiting for the incoming state.
  starting: ['running', 'paused', 'error', 'stopped', 'migrating'],
  running: ['paused', 'stopping', 'stopped', 'error', 'suspended', 'migrating', 'starting'],
  paused: ['running', 'stopping', 'stopped', 'error', 'suspended', 'migrating'],
  // paused: a failed stop of a paused instance, or one a daemon restart interrupted, leaves it paused.
  stopping: ['stopped', 'error', 'running', 'paused'],
  // paused: the daemon died between a suspend's row write and QEMU's quit; the re-attached
  // QEMU is paused (see suspend in src/snapshots/). error: that re-attach failed.
  suspended: ['starting', 'deleting', 'stopped', 'paused', 'error'],
  // suspended: a suspend-mode migration's target row arrives migrating and ends suspended.
  migrating: ['running', 'paused', 'stopped', 'error', 'suspended'],
  // running, paused: a re-attach that failed left QEMU running; the next daemon start re-attaches.
  error: ['starting', 'deleting', 'stopped', 'running', 'paused'],
  deleting: [],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

export function assertTransition(name: string, from: InstanceState, to: InstanceState, verb: string): void {
  if (canTransition(from, to)) return;
  throw invalidState(name, from, verb);
}

/** The VMKIT_INVALID_STATE error for `verb` on an instance in `from`, with a hint that fits. */
export function invalidState(name: string, from: InstanceState, verb: string): VmkitError {
  const hints: Partial<Record<InstanceState, string>> = {
    running: `Stop it first with "vmkit stop ${name}", or use "vmkit restart ${name}".`,
    paused: `Resume it with "vmkit resume ${name}" or stop it with "vmkit stop ${name} --force".`,
    stopped: `Start it first with "vmkit start ${name}".`,
    starting: 'Wait for the running operation to finish ("vmkit operation list").',
    stopping: 'Wait for the running operation to finish ("vmkit operation list").',
    deleting: 'The instance is being deleted.',
    error: `Start it again with "vmkit start ${name}" or delete it.`,
  };
  return vmkitError('VMKIT_INVALID_STATE', `Cannot ${verb} instance "${name}": it is ${from}.`, {
    hint: hints[from],
    details: { state: from },
  });
}

/** States in which a QEMU process exists for the instance. */
export const ACTIVE_STATES: readonly InstanceState[] = ['starting', 'running', 'paused', 'stopping', 'migrating'];
export function isActive(state: InstanceState): boolean {
  return ACTIVE_STATES.includes(state);
}
