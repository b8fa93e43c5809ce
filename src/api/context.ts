import type { InstanceManager } from '../instances/manager.js';
import { InstanceService, type Suspender } from '../instances/service.js';
import type { SnapshotManager } from '../snapshots/snapshots.js';
import type { ImageStore } from '../images/image-store.js';
import { ImageService } from '../images/service.js';
import type { OperationManager } from '../operations/operations.js';
import type { EventBus } from '../operations/events.js';
import type { DoctorReport } from '../host/doctor.js';
import type { NetworkManager } from '../network/manager.js';
import type { ClusterManager } from '../cluster/cluster.js';
import type { MigrationService } from '../cluster/migration.js';
import { ForwardingService } from '../cluster/forwarding.js';
import { EvacuationService } from '../cluster/evacuate.js';
import { InstanceListing } from '../cluster/listing.js';
import { MigrateRequests } from '../cluster/migrate-request.js';
import { ImageBuildService } from '../images/build/service.js';
import { SnapshotService, type SnapshotServiceDeps } from '../snapshots/service.js';
import type { TokenManager } from '../auth/tokens.js';
import type { StackService } from '../stacks/service.js';

/**
 * The services whose calls are more than one manager call (orchestration lives there, not in
 * route handlers). Made once per daemon and shared by every listener: forwarding remembers
 * the operations it forwarded, the image service its repository server.
 */
export interface ApiServices {
  instances: InstanceService;
  images: ImageService;
  /** GET /1.0/instances: this host's, or every cluster host's. */
  listing: InstanceListing;
  forwarding: ForwardingService;
  evacuation: EvacuationService;
  /** Snapshot verbs: checks, then an operation. */
  snapshots: SnapshotService;
  /** POST/DELETE /1.0/instances/{name}/migrate. */
  migrations: MigrateRequests;
  /** POST /1.0/images/build (recipes → NAME:N). */
  builds: ImageBuildService;
}

/** What the HTTP layer may call: it parses requests into these calls and nothing else. */
export interface ApiContext {
  version: string;
  hostName: string;
  dataDir: string;
  accel: () => Promise<string>;
  instances: InstanceManager;
  snapshots: SnapshotManager;
  images: ImageStore;
  operations: OperationManager;
  events: EventBus;
  doctor: () => Promise<DoctorReport>;
  /** Absent = no network support (user-mode NICs only). */
  networks?: NetworkManager;
  /** Cluster membership (etcd) and migration between hosts. */
  cluster?: ClusterManager;
  migrations?: MigrationService;
  /** Scoped API tokens (vmkit token create); absent: only the daemon's own tokens. */
  tokens?: TokenManager;
  /** Stacks (vmkit apply): absent in contexts without networks. */
  stacks?: StackService;
  services: ApiServices;
}

/** The managers the services are made of (a daemon's, or a test's). */
export interface ServiceDeps {
  dataDir: string;
  instances: InstanceManager;
  snapshots: Suspender & SnapshotServiceDeps['snapshots'];
  images: ImageStore;
  operations: OperationManager;
  events: EventBus;
  cluster?: ClusterManager;
  migrations?: MigrationService;
}

/** Wires the services once; daemon.ts and the API tests' context both use this. */
export function createApiServices(deps: ServiceDeps): ApiServices {
  const { dataDir, instances, snapshots, images, operations, events, cluster, migrations } = deps;
  const forwarding = new ForwardingService({ cluster, instances, images, operations });
  return {
    instances: new InstanceService({ instances, images, snapshots, operations }),
    images: new ImageService({ images, instances, operations, events, dataDir }),
    listing: new InstanceListing({ cluster, instances }),
    forwarding,
    evacuation: new EvacuationService({ cluster, migrations, instances, operations, forwarding }),
    snapshots: new SnapshotService({ snapshots, operations }),
    migrations: new MigrateRequests({ cluster, migrations, instances, operations }),
    builds: new ImageBuildService({ images, vms: instances, operations, events, dataDir }),
  };
}
