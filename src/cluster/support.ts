import { vmkitError } from '../errors.js';
import type { ClusterManager } from './cluster.js';

/** The cluster manager, or VMKIT_CLUSTER_NOT_JOINED: routes and services share one refusal. */
export function clusterSupport(cluster: ClusterManager | undefined): ClusterManager {
  if (!cluster) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'This daemon has no cluster support.', { hint: 'Update vmkit.' });
  return cluster;
}

/** The cluster manager of a host that has joined a cluster; refused otherwise. */
export function joinedCluster(cluster: ClusterManager | undefined): ClusterManager {
  const c = clusterSupport(cluster);
  c.requireJoined();
  return c;
}
