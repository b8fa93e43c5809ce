import { vmkitError } from '../errors.js';
import type { PortForward } from '../domain/types.js';
import { addHostForward, removeHostForward } from '../qemu/hostfwd.js';
import { assertHostPortFree, describeForward, forwardsCollide, normalizeForward, type ForwardRequest } from '../network/forwards.js';
import type { InstanceContext } from './registry.js';

/**
 * Port forwards of instances: to a user-mode NIC they are QEMU hostfwd rules (changed live
 * over HMP), to a NIC on a nat network nftables DNAT rules (re-applied by the networking).
 * No two instances, and no two forwards of one instance, share a host port.
 */
export class Forwards {
  constructor(private readonly shared: InstanceContext) {}

  async list(name: string): Promise<PortForward[]> {
    return (await this.shared.registry.load(name)).forwards;
  }

  async add(name: string, req: ForwardRequest): Promise<PortForward> {
    const { registry, events, peers } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const nic = req.nic ? inst.nics.find((n) => n.id === req.nic) : (inst.nics.find((n) => n.network === 'user') ?? inst.nics.find((n) => n.ipv4));
      if (!nic || (nic.network !== 'user' && !nic.ipv4)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `Instance "${name}" has no ${req.nic ? `NIC ${req.nic} with an address` : 'user-mode or nat NIC'} to forward to.`, {
          hint: 'Forwards go to a user-mode NIC or to a NIC with an address on a nat network.',
        });
      }
      if (nic.network !== 'user') await peers.networking?.assertForwardable(nic.network);
      const f = normalizeForward(req, nic.id);
      if (f.floating && nic.network === 'user') throw floatingNeedsNat();
      const mine = inst.forwards.find((g) => forwardsCollide(f, g));
      if (mine) {
        throw vmkitError('VMKIT_FORWARD_CONFLICT', `Instance "${name}" already forwards ${describeForward(mine)}.`, {
          hint: `Remove it first ("vmkit forward remove ${name} ${mine.hostPort}").`,
        });
      }
      await this.assertNoConflict(name, [f]);
      await assertHostPortFree(f);
      const rt = nic.network === 'user' ? registry.current(name) : undefined;
      if (rt) await addHostForward(rt.qmp, f);
      try {
        inst.forwards.push(f);
        await registry.save(inst);
        // Forwards to NICs on nat networks are nftables DNAT rules, re-applied as a whole.
        if (nic.network !== 'user') await peers.networking?.sync();
        if (f.floating && registry.current(name)) await peers.networking?.announce(inst);
      } catch (err) {
        if (rt) {
          // QEMU's refusal (text, not a rejection) is as much a failed undo as a lost connection.
          const refusal = await removeHostForward(rt.qmp, f).catch((e: Error) => e.message);
          if (refusal) console.error(`vmkitd: undoing forward ${describeForward(f)} of ${name}: ${refusal}`);
        }
        if (nic.network !== 'user') {
          inst.forwards = inst.forwards.filter((g) => g !== f);
          await registry.save(inst);
        }
        throw err;
      }
      events.lifecycle('forward-added', name, f);
      return f;
    });
  }

  async remove(name: string, hostPort: number, proto: 'tcp' | 'udp' = 'tcp', hostAddress?: string): Promise<PortForward> {
    const { registry, events, peers } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      const idx = inst.forwards.findIndex((f) => f.hostPort === hostPort && f.proto === proto && (!hostAddress || f.hostAddress === hostAddress));
      if (idx < 0) {
        throw vmkitError('VMKIT_FORWARD_NOT_FOUND', `Instance "${name}" has no ${proto} forward from host port ${hostPort}.`, {
          hint: `"vmkit forward list ${name}" shows its forwards.`,
        });
      }
      const f = inst.forwards[idx]!;
      const onUser = inst.nics.find((n) => n.id === f.nic)?.network === 'user';
      const rt = onUser ? registry.current(name) : undefined;
      if (rt) {
        const refusal = await removeHostForward(rt.qmp, f);
        if (refusal) throw vmkitError('VMKIT_QMP_ERROR', `QEMU refused to remove forward ${describeForward(f)}: ${refusal}`);
      }
      inst.forwards.splice(idx, 1);
      await registry.save(inst);
      if (!onUser) await peers.networking?.sync();
      events.lifecycle('forward-removed', name, f);
      return f;
    });
  }

  /** Throws when two of the new forwards use the same host port. */
  assertNoSelfCollision(forwards: PortForward[]): void {
    forwards.forEach((f, i) => {
      const other = forwards.slice(0, i).find((g) => forwardsCollide(f, g));
      if (other) {
        throw vmkitError('VMKIT_FORWARD_CONFLICT', `Forwards ${describeForward(other)} and ${describeForward(f)} use the same host port.`, {
          hint: 'Give each forward its own host port.',
        });
      }
    });
  }

  /** Throws when another instance already forwards one of these host ports. */
  async assertNoConflict(self: string, forwards: PortForward[]): Promise<void> {
    for (const other of await this.shared.registry.list()) {
      if (other.name === self) continue;
      for (const f of forwards) {
        const hit = other.forwards.find((g) => forwardsCollide(f, g));
        if (hit) {
          throw vmkitError('VMKIT_FORWARD_CONFLICT', `Host port ${f.hostPort}/${f.proto} is already forwarded to instance "${other.name}" (${describeForward(hit)}).`, {
            hint: `Choose another host port, or remove that forward ("vmkit forward remove ${other.name} ${hit.hostPort}").`,
          });
        }
      }
    }
  }
}

/** The error for a floating forward to a user-mode NIC (floating addresses are nftables rules). */
export function floatingNeedsNat(): Error {
  return vmkitError('VMKIT_INVALID_ARGUMENT', 'A floating forward needs a NIC on a nat network (user-mode NICs forward from QEMU itself).', {
    hint: 'Give the instance a NIC on a nat network: --nic NETWORK.',
  });
}
