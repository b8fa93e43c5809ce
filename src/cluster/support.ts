import { vmkitError } from '../errors.js';
import type { ClusterManager } from './cluster.js';

/** The cluster manager, or VMKIT_CLUSTER_NOT_JOINED: routes and services share one refusal. */
export function clusterSupport<C extends Pick<ClusterManager, 'requireJoined'>>(cluster: C | undefined): C {
  if (!cluster) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'This daemon has no cluster support.', { hint: 'Update vmkit.' });
  return cluster;
}

/** The cluster manager of a host that has joined a cluster; refused otherwise. */
export function joinedCluster<C extends Pick<ClusterManager, 'requireJoined'>>(cluster: C | undefined): C {
  const c = clusterSupport(cluster);
  c.requireJoined();
  return c;
}
