import type { InstanceView } from '../domain/types.js';
import type { ReplicaView, StackServiceView, StackView } from '../wire/stack.js';
import type { HealthState } from './health.js';
import { templateKey } from './spec.js';
import type { ReplicaRecord, StackRecord } from './types.js';

/** What the view reads of the controller's live state. */
export interface ViewSources {
  instance(name: string): InstanceView | undefined;
  health(name: string): HealthState | undefined;
  serving(r: ReplicaRecord): boolean;
  ipOf(name: string, network: string | undefined): string | undefined;
}

/** A stack as the API shows it: per service the phase, the roll, every replica's health. */
export function stackView(rec: StackRecord, seen: ViewSources): StackView {
  const services: StackServiceView[] = rec.spec.services.map((svc) => {
    const st = rec.services[svc.name] ?? { replicas: [], nextIndex: 1 };
    const key = templateKey(svc);
    const members: ReplicaView[] = st.replicas.map((r) => {
      const inst = seen.instance(r.instance);
      const probe = seen.health(r.instance);
      const health: ReplicaView['health'] = !svc.health
        ? inst?.state === 'running'
          ? 'healthy'
          : 'unknown'
        : probe?.healthy
          ? 'healthy'
          : r.everHealthy
            ? 'unhealthy'
            : 'starting';
      return {
        instance: r.instance,
        image: r.image,
        current: r.template === key,
        state: inst?.state ?? (r.created ? 'missing' : 'creating'),
        ipv4: seen.ipOf(r.instance, svc.networks[0]),
        host: r.host,
        endpoint: r.endpoint ? `${r.endpoint.ip}:${r.endpoint.port}` : undefined,
        health,
        serving: seen.serving(r),
        lastError: probe?.lastError,
        createdAt: r.createdAt,
      };
    });
    const ready = members.filter((m) => m.current && m.serving).length;
    const old = members.filter((m) => !m.current);
    const failed = st.failedTemplate === key;
    const phase: StackServiceView['phase'] = failed ? 'failed' : old.length > 0 ? 'rolling' : ready !== svc.replicas || members.length !== svc.replicas ? 'scaling' : 'steady';
    return {
      name: svc.name,
      image: svc.image,
      replicas: svc.replicas,
      ready,
      port: svc.port,
      address: svc.address,
      phase,
      message: st.message,
      roll: old.length > 0 && !failed ? { from: [...new Set(old.map((m) => m.image))], to: svc.image, updated: ready, total: svc.replicas } : undefined,
      members,
    };
  });
  return {
    name: rec.name,
    generation: rec.generation,
    ready: !rec.deleting && services.every((s) => s.phase === 'steady'),
    hasPrevious: rec.previous !== undefined,
    deleting: rec.deleting === true,
    spec: rec.spec,
    services,
    updatedAt: rec.updatedAt,
  };
}
