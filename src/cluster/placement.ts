import { vmkitError } from '../errors.js';
import type { HostView } from './types.js';

/** Live hosts (but `except`) with the image and room for the memory, the emptiest first. */
export function placementOrder(hosts: readonly HostView[], image: string, memoryMiB: number, except?: string): HostView[] {
  const room = (h: HostView) => Math.min(h.memoryFreeMiB, h.memoryTotalMiB - h.memoryAssignedMiB);
  return hosts
    .filter((h) => h.state === 'alive' && h.name !== except && h.images.some((i) => i.name === image) && room(h) >= memoryMiB)
    .sort((a, b) => room(b) - room(a) || a.name.localeCompare(b.name));
}

export function noHostFits(image: string, memoryMiB: number): Error {
  return vmkitError('VMKIT_RESOURCES_EXCEEDED', `No live host with image "${image}" has ${memoryMiB} MiB free.`, {
    hint: '"vmkit cluster list" shows each host\'s free memory; pick one with --target.',
  });
}
