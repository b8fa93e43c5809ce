import { vmkitError } from '../errors.js';
import type { InstanceState } from './types.js';

/**
 * The instance state machine. Every state change the daemon makes goes through
 * `assertTransition`, so an impossible request (start a running VM, pause a stopped one)
 * fails with VMKIT_INVALID_STATE before anything is touched.
 */
const TRANSITIONS: Record<InstanceState, readonly InstanceState[]> = {
  stopped: ['starting', 'deleting', 'migrating'],
  starting: ['running', 'paused', 'error', 'stopped'],
  running: ['paused', 'stopping', 'stopped', 'error', 'suspended', 'migrating', 'starting'],
  paused: ['running', 'stopping', 'stopped', 'error', 'suspended', 'migrating'],
  stopping: ['stopped', 'error', 'running'],
  suspended: ['starting', 'deleting', 'stopped'],
  migrating: ['running', 'paused', 'stopped', 'error'],
  error: ['starting', 'deleting', 'stopped'],
  deleting: [],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

export function assertTransition(name: string, from: InstanceState, to: InstanceState, verb: string): void {
  if (canTransition(from, to)) return;
  const hints: Partial<Record<InstanceState, string>> = {
    running: `Stop it first with "vmkit stop ${name}", or use "vmkit restart ${name}".`,
    paused: `Resume it with "vmkit resume ${name}" or stop it with "vmkit stop ${name} --force".`,
    stopped: `Start it first with "vmkit start ${name}".`,
    starting: 'Wait for the running operation to finish ("vmkit operation list").',
    stopping: 'Wait for the running operation to finish ("vmkit operation list").',
    deleting: 'The instance is being deleted.',
    error: `Start it again with "vmkit start ${name}" or delete it.`,
  };
  throw vmkitError('VMKIT_INVALID_STATE', `Cannot ${verb} instance "${name}": it is ${from}.`, {
    hint: hints[from],
    details: { state: from },
  });
}

/** States in which a QEMU process exists for the instance. */
export const ACTIVE_STATES: readonly InstanceState[] = ['starting', 'running', 'paused', 'stopping', 'migrating'];
export function isActive(state: InstanceState): boolean {
  return ACTIVE_STATES.includes(state);
}
