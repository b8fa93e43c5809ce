import { vmkitError } from '../errors.js';
import { assertHostPortFree } from '../network/forwards.js';
import { intToIp, ipToInt, parseCidr } from '../network/network.js';
import { Revert } from '../util/revert.js';
import type { StackPlan, StackSpec, StackView } from '../wire/stack.js';
import type { StackController } from './controller.js';
import { planChanges } from './plan.js';
import { parseStack, sameSpec, stackInvalid } from './spec.js';
import type { StackRecord } from './types.js';

/**
 * The stack verbs of the API: apply, diff, rollback, delete, list, show. Each checks the file
 * against the host (images, networks, ports) before anything is made, then writes the new
 * spec to the stack's row and leaves the rest to the controller's loop.
 */
export class StackService {
  constructor(private readonly controller: StackController) {}

  private get deps() {
    return this.controller.deps;
  }

  list(): Promise<StackView[]> {
    return Promise.all(this.controller.all().map((r) => this.controller.refreshedView(r)));
  }

  async get(name: string): Promise<StackView> {
    return this.controller.refreshedView(this.load(name));
  }

  private load(name: string): StackRecord {
    const rec = this.controller.record(name);
    if (!rec) throw vmkitError('VMKIT_STACK_NOT_FOUND', `There is no stack "${name}".`, { hint: '"vmkit stack list" shows the stacks; "vmkit apply -f FILE" makes one.' });
    return rec;
  }

  /** What apply would do (nothing is changed). */
  async diff(file: string): Promise<StackPlan> {
    const spec = parseStack(file);
    await this.check(spec);
    const cur = this.controller.record(spec.name);
    const changes = planChanges(cur?.spec, spec);
    return { stack: spec.name, changed: changes.length > 0, changes };
  }

  /** Makes the stack's spec the file's: nothing when it is the same ("no changes"). */
  async apply(file: string): Promise<StackPlan> {
    const spec = parseStack(file);
    return this.controller.withLock(spec.name, async () => {
      const cur = this.controller.record(spec.name);
      if (cur?.deleting) throw vmkitError('VMKIT_INVALID_STATE', `Stack "${spec.name}" is being deleted.`, { hint: 'Wait until "vmkit stack list" no longer shows it.' });
      if (cur && sameSpec(cur.spec, spec)) return { stack: spec.name, changed: false, changes: [] };
      await this.check(spec);
      const changes = planChanges(cur?.spec, spec);
      // Networks first (undone when a later one fails), then the row: the loop does the rest.
      const undo = new Revert((msg) => this.deps.log(`stack ${spec.name}: ${msg}`));
      const made: string[] = [];
      try {
        for (const n of spec.networks) {
          if (await this.deps.networks.exists(n.name)) continue;
          await this.deps.networks.create({ name: n.name, mode: n.mode, subnet: n.subnet });
          made.push(n.name);
          undo.add(`network ${n.name}`, () => this.deps.networks.delete(n.name));
        }
        const rec: StackRecord = cur
          ? { ...cur, spec, previous: cur.spec, generation: cur.generation + 1, ownedNetworks: [...new Set([...cur.ownedNetworks, ...made])] }
          : { name: spec.name, spec, generation: 1, ownedNetworks: made, services: {}, updatedAt: '' };
        // A new spec gets a new chance: a roll that failed before is tried again.
        for (const st of Object.values(rec.services)) {
          st.failedTemplate = undefined;
          st.message = undefined;
        }
        await this.controller.save(rec);
      } catch (err) {
        await undo.fail();
        throw err;
      }
      await this.controller.applyRules().catch((err: Error) => this.deps.log(`stack ${spec.name}: rules: ${err.message}`));
      this.deps.log(`stack ${spec.name}: applied generation ${this.controller.record(spec.name)?.generation}: ${changes.join('; ')}`);
      this.controller.kick(spec.name);
      return { stack: spec.name, changed: true, changes };
    });
  }

  /** Back to the spec before the last apply (the current one becomes the one to go back to). */
  rollback(name: string): Promise<StackPlan> {
    return this.controller.withLock(name, async () => {
      const rec = this.load(name);
      if (!rec.previous) {
        throw vmkitError('VMKIT_INVALID_STATE', `Stack "${name}" has no previous spec to return to.`, { hint: 'A rollback needs an earlier "vmkit apply" of this stack.' });
      }
      // The previous spec is checked like a new file: its service address may have been given
      // to a NIC (or another stack) since it was replaced.
      await this.check(rec.previous);
      const changes = planChanges(rec.spec, rec.previous);
      const next: StackRecord = { ...rec, spec: rec.previous, previous: rec.spec, generation: rec.generation + 1 };
      for (const st of Object.values(next.services)) {
        st.failedTemplate = undefined;
        st.message = undefined;
      }
      await this.controller.save(next);
      this.controller.kick(name);
      return { stack: name, changed: changes.length > 0, changes };
    });
  }

  /** Removes the stack: its service addresses, replicas and the networks it made. */
  delete(name: string): Promise<StackPlan> {
    return this.controller.withLock(name, async () => {
      const rec = this.load(name);
      const changes = [
        ...rec.spec.services.map((s) => `- service ${s.name}: remove its ${rec.services[s.name]?.replicas.length ?? 0} replica(s)`),
        ...rec.ownedNetworks.map((n) => `- network ${n}`),
      ];
      rec.deleting = true;
      await this.controller.save(rec);
      await this.controller.deleteNow(rec);
      return { stack: name, changed: true, changes };
    });
  }

  /** The checks against the host: images, networks (declared or existing), ports, addresses. */
  private async check(spec: StackSpec): Promise<void> {
    const cur = this.controller.record(spec.name);
    // In a cluster a stack belongs to the host it was applied on; a second one of the same name
    // elsewhere would fight over the replicas' names.
    const homes = await this.controller.otherHomes(spec.name);
    if (homes.length > 0) {
      throw vmkitError('VMKIT_ALREADY_EXISTS', `A stack named "${spec.name}" runs replicas for cluster host ${homes.join(', ')}, where it was applied.`, {
        hint: `Apply or change it on ${homes[0]}, or give this stack another name.`,
      });
    }
    for (const [i, n] of spec.networks.entries()) {
      if (!(await this.deps.networks.exists(n.name))) continue;
      const have = await this.deps.networks.load(n.name);
      if (have.mode !== n.mode || have.subnet !== n.subnet) {
        throw stackInvalid(
          `networks[${i}]`,
          `network "${n.name}" exists as ${have.mode} ${have.subnet ?? '(no subnet)'}, not ${n.mode} ${n.subnet}`,
          'Use the existing network as it is, or pick another name.',
        );
      }
    }
    const otherPorts = new Map<number, string>();
    for (const other of this.controller.all()) {
      if (other.name === spec.name) continue;
      for (const s of other.spec.services) if (s.port !== undefined) otherPorts.set(s.port, `${other.name}/${s.name}`);
    }
    const ownPorts = new Set((cur?.spec.services ?? []).map((s) => s.port).filter((p) => p !== undefined));
    const instances = await this.deps.instances.list();
    for (const [i, s] of spec.services.entries()) {
      const at = `services[${i}]`;
      try {
        await this.deps.images.get(s.image);
      } catch (err) {
        throw stackInvalid(`${at}.image`, (err as Error).message, '"vmkit image list" shows the images.');
      }
      for (const [j, net] of s.networks.entries()) {
        if (net === 'user' || spec.networks.some((n) => n.name === net) || (await this.deps.networks.exists(net))) continue;
        throw stackInvalid(
          `${at}.networks[${j}]`,
          `network "${net}" is neither declared in the stack nor an existing network`,
          'Declare it under "networks:" or create it ("vmkit network create").',
        );
      }
      const first = s.networks[0];
      const mode = spec.networks.find((n) => n.name === first)?.mode ?? (first && first !== 'user' ? (await this.deps.networks.load(first)).mode : undefined);
      if ((s.port !== undefined || s.address !== undefined) && mode !== 'nat') {
        throw stackInvalid(`${at}.networks[0]`, `a service port or address needs its first network to be a nat network ("${first}" is ${mode})`);
      }
      if (s.port !== undefined) {
        const clash = otherPorts.get(s.port);
        if (clash)
          throw vmkitError('VMKIT_PORT_IN_USE', `${at}.port: port ${s.port} is the port of stack service ${clash}.`, {
            hint: 'Pick another port.',
            details: { path: `${at}.port` },
          });
        const fwd = instances.find((inst) => inst.forwards.some((f) => f.hostPort === s.port && f.proto === 'tcp'));
        if (fwd)
          throw vmkitError('VMKIT_PORT_IN_USE', `${at}.port: port ${s.port} is forwarded to instance "${fwd.name}".`, {
            hint: 'Pick another port.',
            details: { path: `${at}.port` },
          });
        if (!ownPorts.has(s.port)) {
          try {
            await assertHostPortFree({ proto: 'tcp', hostAddress: s.hostAddress ?? '127.0.0.1', hostPort: s.port, guestPort: s.guestPort ?? 80, nic: '' });
          } catch (err) {
            throw vmkitError('VMKIT_PORT_IN_USE', `${at}.port: ${(err as Error).message}`, { hint: 'Pick another port.', details: { path: `${at}.port` } });
          }
        }
      }
      if (s.address !== undefined) {
        const ip = s.address.split(':')[0]!;
        const subnet = spec.networks.find((n) => n.name === first)?.subnet ?? (await this.deps.networks.load(first!)).subnet;
        const c = parseCidr(subnet!);
        const v = ipToInt(ip);
        if (v <= c.first || v > c.last) {
          throw stackInvalid(`${at}.address`, `${ip} is not a usable guest address of ${subnet} (the host holds ${intToIp(c.first)})`);
        }
        const holder = instances.find((inst) => inst.nics.some((n) => n.network === first && n.ipv4 === ip));
        if (holder) throw stackInvalid(`${at}.address`, `${ip} is already the address of instance "${holder.name}"`, 'Pick a free address, e.g. near the top of the subnet.');
        const other = this.controller
          .all()
          .filter((r) => r.name !== spec.name)
          .flatMap((r) => r.spec.services.filter((o) => o.networks[0] === first && o.address?.split(':')[0] === ip).map((o) => `${r.name}/${o.name}`))[0];
        const twice = spec.services.findIndex((o, k) => k < i && o.networks[0] === first && o.address?.split(':')[0] === ip);
        if (other || twice >= 0)
          throw stackInvalid(
            `${at}.address`,
            `${ip} is already the address of stack service ${other ?? `${spec.name}/${spec.services[twice]!.name}`}`,
            'Give each service an address of its own.',
          );
      }
    }
  }
}
