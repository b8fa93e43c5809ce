import type { Instance } from '../../domain/types.js';
import type { PrepareRequest } from './protocol.js';

/**
 * A well-formed peer migration payload (an instance and the prepare request that carries it),
 * for tests that bend one field at a time into something hostile.
 */
export function peerInstance(over: Partial<Instance> | Record<string, unknown> = {}): Instance {
  return {
    id: '0123456789ab',
    name: 'web',
    image: 'appliance',
    imageVersion: '1',
    cpus: 1,
    memoryMiB: 128,
    state: 'stopped',
    host: 'a',
    nics: [],
    forwards: [],
    disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2' }],
    createdAt: '',
    updatedAt: '',
    ...over,
  } as Instance;
}

export function prepareRequest(instance: Instance | Record<string, unknown>, extra: Partial<PrepareRequest> | Record<string, unknown> = {}): PrepareRequest {
  return {
    id: '6f1c1a4e-2b7a-4a3e-9a53-0c3c1d6b9e10',
    mode: 'cold',
    instance,
    snapshots: [],
    source: 'a',
    sourceIp: '10.0.0.1',
    sharedDisks: false,
    disks: [{ name: 'root', virtualSize: 1024 }],
    wasRunning: false,
    ...extra,
  } as PrepareRequest;
}
