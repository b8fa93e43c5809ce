import { validateCloudInit, type CloudInitRequest } from '../domain/cloud-init.js';
import type { InstanceView } from '../domain/types.js';
import { nextGeneration } from './nics.js';
import type { InstanceContext } from './registry.js';

/**
 * Changes what cloud-init reads (user-data, SSH keys, meta-data) after creation. The drive
 * is rewritten at the next start with a new instance-id (`<id>-g<N>`), so cloud-init runs its
 * per-instance modules again with the new settings (doc/guests.md says which).
 */
export class CloudInitSettings {
  constructor(private readonly shared: InstanceContext) {}

  async update(name: string, req: CloudInitRequest): Promise<InstanceView> {
    const { registry, events } = this.shared;
    const given = validateCloudInit(req) ?? {};
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const next = nextGeneration(inst.cloudInit);
      // A field given replaces the stored one; an empty list/object clears it.
      if (req.userData !== undefined) next.userData = given.userData;
      if (req.sshKeys !== undefined) next.sshKeys = given.sshKeys;
      if (req.meta !== undefined) next.meta = given.meta;
      for (const k of ['userData', 'sshKeys', 'meta'] as const) if (next[k] === undefined) delete next[k];
      inst.cloudInit = next;
      await registry.save(inst);
      events.lifecycle('instance-updated', name, { cloudInit: { generation: next.generation } });
      return registry.view(inst);
    });
  }
}
