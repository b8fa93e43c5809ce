import { vmkitError } from '../errors.js';
import type { InstanceType } from './types.js';

/** Named sizes, like a cloud's instance types (the seed's "A1.large"). */
export const INSTANCE_TYPES: readonly InstanceType[] = [
  { name: 'tiny', cpus: 1, memoryMiB: 128, description: 'the smallest useful guest' },
  { name: 'small', cpus: 1, memoryMiB: 256, description: 'one service' },
  { name: 'medium', cpus: 2, memoryMiB: 512, description: 'a few services' },
  { name: 'large', cpus: 4, memoryMiB: 2048, description: 'a busy server' },
  { name: 'xlarge', cpus: 8, memoryMiB: 8192, description: 'a database or build machine' },
];

export function findInstanceType(name: string): InstanceType {
  const t = INSTANCE_TYPES.find((x) => x.name === name);
  if (!t) {
    throw vmkitError('VMKIT_TYPE_UNKNOWN', `There is no instance type "${name}".`, {
      hint: `Known types: ${INSTANCE_TYPES.map((x) => x.name).join(', ')} ("vmkit types" lists them).`,
    });
  }
  return t;
}
