import type { InstanceView } from '../domain/types.js';
import type { ClusterManager } from './cluster.js';

export interface InstanceListingDeps {
  cluster: ClusterManager | undefined;
  instances: { list(): Promise<InstanceView[]> };
}

// A listing waits this long for a peer before showing its instances as unknown.
const PEER_LIST_TIMEOUT_MS = 3_000;

/**
 * GET /1.0/instances: in a cluster every host's instances, each with its host (a dead or
 * silent host's as unknown, from the ownership records); otherwise, or with local=true,
 * this host's only.
 */
export class InstanceListing {
  constructor(private readonly deps: InstanceListingDeps) {}

  async list(opts: { local?: boolean } = {}): Promise<InstanceView[]> {
    const cluster = this.deps.cluster;
    return cluster?.joined && !opts.local ? this.clusterWide(cluster) : this.deps.instances.list();
  }

  private async clusterWide(cluster: ClusterManager): Promise<InstanceView[]> {
    const mine = await this.deps.instances.list();
    const out: InstanceView[] = mine.map((v) => ({ ...v, host: cluster.name! }));
    const hosts = await cluster.listHosts();
    const owners = await cluster.owners();
    await Promise.all(
      hosts
        .filter((h) => !h.self)
        .map(async (h) => {
          const theirs = owners.filter((o) => o.record.host === h.name);
          let listed: InstanceView[] | undefined;
          if (h.state === 'alive') {
            try {
              listed = await (await cluster.peer(h.name)).request<InstanceView[]>('GET', '/1.0/instances?local=true', undefined, PEER_LIST_TIMEOUT_MS);
            } catch {
              listed = undefined;
            }
          }
          if (listed) {
            out.push(...listed.map((v) => ({ ...v, host: h.name })));
          } else {
            for (const o of theirs) {
              out.push({
                id: '',
                name: o.name,
                image: o.record.image ?? '',
                imageVersion: '',
                cpus: o.record.cpus ?? 0,
                memoryMiB: o.record.memoryMiB ?? 0,
                nics: [],
                forwards: [],
                disks: [],
                state: 'unknown' as InstanceView['state'],
                stateReason: `host ${h.name} is ${h.state === 'alive' ? 'not answering' : 'dead'}`,
                createdAt: o.record.since,
                updatedAt: o.record.since,
                host: h.name,
                runtime: {},
              });
            }
          }
        }),
    );
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }
}
