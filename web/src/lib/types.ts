/**
 * The wire types the console reads (see doc/api.md), from the one definition the daemon
 * and the CLI use (src/wire/): the console names them by what its pages show.
 */
import type { ImageView, InstanceView, NetworkView, PortForward, Snapshot } from '../../../src/wire/types.js';

export type { ExecResult, InstanceState, InstanceType, NetworkMode, Nic, Operation, Snapshot, VmkitEvent } from '../../../src/wire/types.js';

/** GET /1.0/instances[/{name}]: an instance with its runtime. */
export type Instance = InstanceView;
/** GET /1.0/images: an image with its users. */
export type Image = ImageView;
/** GET /1.0/networks[/{name}]: a network with its NICs, leases and forwards. */
export type Network = NetworkView;
export type Forward = PortForward;
/** GET /1.0/stacks: a stack with its services and their replicas. */
export type { StackView as Stack, StackServiceView as StackService, ReplicaView as Replica } from '../../../src/wire/stack.js';

/** The result of a snapshot.create operation. */
export interface SnapshotCreateResult {
  snapshot: Snapshot;
  durationMs: number;
}
