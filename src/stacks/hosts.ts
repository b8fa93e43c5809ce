import { isIP } from 'node:net';
import { VmkitError, vmkitError, type ErrorCode } from '../errors.js';
import type { InstanceView } from '../domain/types.js';
import type { Operation } from '../wire/operation.js';
import type { CreateInstanceRequestBody } from '../wire/requests.js';
import type { ClusterManager } from '../cluster/cluster.js';
import { splitAddress } from '../cluster/peer.js';
import { InstanceListing } from '../cluster/listing.js';

/** A host a replica may go to, as placement sees it. */
export interface StackHost {
  name: string;
  /** The IP of the host's cluster address: remote replicas' forwards listen there. */
  ip: string;
  /** Names of the host's networks with their mode. */
  networks: Array<{ name: string; mode: string }>;
  self: boolean;
}

/** What the cluster looks like to the stacks' controller in one pass. */
export interface StackSurvey {
  /** Every host's instances, each with its host. */
  instances: InstanceView[];
  /** Host name → alive or dead (the host's lease in etcd, not one failed request). */
  hosts: Map<string, 'alive' | 'dead'>;
  /** Alive hosts whose instance list did not come in this time: their replicas are left as they were. */
  silent: Set<string>;
}

/**
 * What the stacks' controller needs of a cluster (ClusterStackHosts; unit tests pass a fake).
 * Alone, `self()` is undefined and the controller never calls the rest.
 */
export interface StackCluster {
  /** This host's cluster name; undefined when alone or before the cluster is started. */
  self(): string | undefined;
  survey(): Promise<StackSurvey>;
  /** Live hosts with the image and room for the memory, the emptiest first (cluster placement). */
  candidates(image: string, memoryMiB: number): Promise<StackHost[]>;
  /** Launches (creates and starts) an instance on another host and returns it. */
  launch(host: string, req: CreateInstanceRequestBody): Promise<InstanceView>;
  /** Deletes an instance on another host (force: a running one too). */
  delete(host: string, name: string): Promise<void>;
}

const PEER_TIMEOUT_MS = 15_000;
const WAIT_SECONDS = 20;
/** A remote create or delete that takes longer than this is given up (the next pass sorts it out). */
const OPERATION_DEADLINE_MS = 300_000;

/** The cluster side of stacks, over the ClusterManager (placement, peers) and the cluster-wide listing. */
export class ClusterStackHosts implements StackCluster {
  constructor(
    private readonly cluster: () => ClusterManager | undefined,
    private readonly local: { list(): Promise<InstanceView[]> },
  ) {}

  self(): string | undefined {
    const c = this.cluster();
    return c?.joined ? c.name : undefined;
  }

  private joined(): ClusterManager {
    const c = this.cluster();
    if (!c?.joined) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'This host is not in a cluster.');
    return c;
  }

  async survey(): Promise<StackSurvey> {
    const c = this.joined();
    const listing = new InstanceListing({ cluster: c, instances: this.local });
    const hosts = new Map((await c.listHosts()).map((h) => [h.name, h.state] as const));
    const instances = await listing.list();
    // The listing shows an alive host's instances as "unknown" when that host did not answer.
    const silent = new Set(instances.filter((i) => i.state === ('unknown' as InstanceView['state']) && i.host && hosts.get(i.host) === 'alive').map((i) => i.host!));
    return { instances, hosts, silent };
  }

  async candidates(image: string, memoryMiB: number): Promise<StackHost[]> {
    const c = this.joined();
    return (await c.candidates(image, memoryMiB))
      .map((h) => ({ name: h.name, ip: splitAddress(h.address)[0], networks: h.networks.map((n) => ({ name: n.name, mode: n.mode })), self: h.self }))
      .filter((h) => h.self || isIP(h.ip) === 4);
  }

  async launch(host: string, req: CreateInstanceRequestBody): Promise<InstanceView> {
    const peer = await this.joined().peer(host);
    const op = await peer.request<Operation>('POST', '/1.0/instances', { ...req, start: true }, PEER_TIMEOUT_MS);
    await this.wait(host, op);
    return peer.request<InstanceView>('GET', `/1.0/instances/${encodeURIComponent(req.name)}`, undefined, PEER_TIMEOUT_MS);
  }

  async delete(host: string, name: string): Promise<void> {
    const peer = await this.joined().peer(host);
    const op = await peer.request<Operation>('DELETE', `/1.0/instances/${encodeURIComponent(name)}?force=true`, undefined, PEER_TIMEOUT_MS);
    await this.wait(host, op);
  }

  /** Waits for another host's operation (its own wait route, in short calls). */
  private async wait(host: string, first: Operation): Promise<Operation> {
    let op = first;
    const deadline = Date.now() + OPERATION_DEADLINE_MS;
    while (op.status === 'pending' || op.status === 'running') {
      if (Date.now() > deadline) {
        throw vmkitError('VMKIT_TIMEOUT', `${op.description} on host ${host} did not finish in ${OPERATION_DEADLINE_MS / 1000} s.`, {
          hint: `"vmkit operation show ${op.id}" on ${host} tells how it went.`,
        });
      }
      const peer = await this.joined().peer(host);
      op = await peer.request<Operation>('GET', `/1.0/operations/${encodeURIComponent(op.id)}/wait?timeout=${WAIT_SECONDS}`, undefined, (WAIT_SECONDS + 10) * 1000);
    }
    if (op.status !== 'success') {
      const e = op.error;
      throw new VmkitError((e?.code ?? 'VMKIT_OPERATION_CANCELLED') as ErrorCode, `host ${host}: ${e?.message ?? `${op.description} was ${op.status}`}`, {
        hint: e?.hint,
        status: 500,
      });
    }
    return op;
  }
}
