import { randomBytes } from 'node:crypto';
import { vmkitError } from '../errors.js';
import type { CloudInitConfig, Image, Nic, PortForward } from '../domain/types.js';
import { NIC_MODELS } from '../domain/types.js';
import { DEVICE_RELEASE_TIMEOUT_MS, hotplugNic, unplugNic } from '../qemu/devices.js';
import type { InstanceContext } from './registry.js';
import type { NicRequest } from './types.js';

/**
 * An instance's NICs: new ones get a unique MAC and an address on their network (at create,
 * clone, or later), and NICs are added and removed, hot-plugged on a running instance.
 */
export class Nics {
  constructor(private readonly shared: InstanceContext) {}

  /**
   * NICs for `reqs` of instance `owner`, numbered from nic<first>, with MACs no instance of
   * this host uses. Their addresses stay claimed for `owner` until `settle(owner)`: call it
   * once the row holds them, or the change failed.
   */
  async allocate(reqs: NicRequest[], image: Image, owner: string, first = 0): Promise<Nic[]> {
    const networking = this.shared.peers.networking;
    const used = new Set((await this.shared.registry.list()).flatMap((i) => i.nics.map((n) => n.mac)));
    const out: Nic[] = [];
    for (const [i, r] of reqs.entries()) {
      const model = r.model ?? image.nicModels[0] ?? 'virtio-net';
      if (!NIC_MODELS.includes(model)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown NIC model "${model}".`, { hint: `Use one of ${NIC_MODELS.join(', ')}.` });
      }
      const network = r.network ?? 'user';
      let address: { ipv4?: string; dhcp?: boolean } = {};
      if (network === 'user') {
        if (r.ipv4) {
          throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A user-mode NIC cannot have a static address (QEMU gives it 10.0.2.15).', {
            hint: 'Put the NIC on a vmkit network ("vmkit network create") to choose its address.',
          });
        }
      } else if (!networking) {
        throw vmkitError('VMKIT_NETWORK_NOT_FOUND', `Network "${network}" does not exist.`, {
          hint: 'Only user-mode NAT ("user") NICs are available on this host.',
        });
      } else {
        address = await networking.allocate(network, r.ipv4, out, owner);
      }
      let mac: string;
      do {
        // 52:54:00 is QEMU's locally administered prefix.
        mac = ['52', '54', '00', ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
      } while (used.has(mac));
      used.add(mac);
      out.push({ id: `nic${first + i}`, model, mac, network, ...(address.ipv4 ? { ipv4: address.ipv4 } : {}), ...(address.dhcp ? { dhcp: true } : {}) });
    }
    return out;
  }

  /** The addresses allocated for `owner` are in its row now, or its change failed: their claims end. */
  settle(owner: string): void {
    this.shared.peers.networking?.settle?.(owner);
  }

  /** Adds a NIC; on a running instance it is hot-plugged (QMP netdev_add + device_add). */
  async add(name: string, req: NicRequest): Promise<Nic> {
    const { registry, images, events, peers } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      if (inst.state !== 'stopped' && inst.state !== 'running') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot add a NIC to instance "${name}" while it is ${inst.state}.`, {
          hint: 'NICs are added to stopped or running instances.',
        });
      }
      const image = await images.get(inst.image);
      const next = Math.max(-1, ...inst.nics.map((n) => Number(n.id.replace(/^nic/, '')))) + 1;
      const [nic] = await this.allocate([req], image, name, next);
      const before = inst.nics;
      const beforeCloudInit = inst.cloudInit;
      inst.nics = [...before, nic!];
      inst.cloudInit = nextGeneration(inst.cloudInit);
      try {
        await registry.save(inst);
      } finally {
        this.settle(name);
      }
      const rt = inst.state === 'running' ? registry.current(name) : undefined;
      try {
        if (nic!.network !== 'user') {
          if (rt) await peers.networking?.plug(inst);
          else await peers.networking?.sync();
        }
        if (rt) {
          const tap = peers.networking?.taps(inst)[nic!.id];
          await hotplugNic(rt.qmp, { id: nic!.id, model: nic!.model, mac: nic!.mac, ...(tap ? { tap } : {}) });
        }
      } catch (err) {
        inst.nics = before;
        inst.cloudInit = beforeCloudInit;
        await registry.save(inst);
        if (nic!.network !== 'user') {
          await peers.networking?.unplug({ ...inst, nics: [nic!] }).catch((e: Error) => console.error(`vmkitd: unplugging NIC ${nic!.id} of ${name}: ${e.message}`));
          await peers.networking?.sync().catch((e: Error) => console.error(`vmkitd: network sync after NIC ${nic!.id} of ${name}: ${e.message}`));
        }
        throw err;
      }
      events.lifecycle('nic-added', name, nic);
      return nic!;
    });
  }

  /**
   * Removes a NIC; on a running instance it is hot-unplugged. Port forwards to it are refused
   * unless `force`, which removes them too (the answer lists them).
   */
  async remove(name: string, nicId: string, opts: { force?: boolean } = {}): Promise<Nic & { removedForwards: PortForward[] }> {
    const { registry, events, peers } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const nic = inst.nics.find((n) => n.id === nicId);
      if (!nic) {
        throw vmkitError('VMKIT_NIC_NOT_FOUND', `Instance "${name}" has no NIC "${nicId}".`, { hint: `"vmkit nic list ${name}" shows its NICs.` });
      }
      if (inst.state !== 'stopped' && inst.state !== 'running') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot remove a NIC from instance "${name}" while it is ${inst.state}.`);
      }
      const removedForwards = inst.forwards.filter((f) => f.nic === nic.id);
      if (removedForwards.length > 0 && !opts.force) {
        const list = removedForwards.map((f) => `${f.hostAddress}:${f.hostPort}->${f.guestPort}/${f.proto}`).join(', ');
        throw vmkitError('VMKIT_NIC_IN_USE', `NIC ${nic.id} of "${name}" carries port forward(s) ${list}; it is not removed.`, {
          hint: `Remove the forwards first ("vmkit forward remove ${name} PORT"), or pass --force to remove them with the NIC.`,
          details: { forwards: removedForwards },
        });
      }
      const rt = inst.state === 'running' ? registry.current(name) : undefined;
      if (rt && !(await unplugNic(rt.qmp, nic.id))) {
        throw vmkitError('VMKIT_TIMEOUT', `The guest of "${name}" did not release NIC ${nic.id} within ${DEVICE_RELEASE_TIMEOUT_MS / 1000} s.`, {
          hint: 'The guest needs ACPI PCI hot-plug; stop the instance and remove the NIC then.',
        });
      }
      inst.nics = inst.nics.filter((n) => n !== nic);
      inst.forwards = inst.forwards.filter((f) => f.nic !== nic.id);
      inst.cloudInit = nextGeneration(inst.cloudInit);
      await registry.save(inst);
      if (nic.network !== 'user') {
        await peers.networking?.unplug({ ...inst, nics: [nic] });
        await peers.networking?.sync();
      }
      events.lifecycle('nic-removed', name, nic);
      return { ...nic, removedForwards };
    });
  }
}

/**
 * The NICs (or user-data) changed: the next start writes the config drive with a new
 * cloud-init instance-id, so the guest applies the new network-config (cloud-init renders
 * network configuration only for a new instance).
 */
export function nextGeneration(ci: CloudInitConfig | undefined): CloudInitConfig {
  return { ...(ci ?? {}), generation: (ci?.generation ?? 0) + 1 };
}
