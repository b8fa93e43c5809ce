import type { StackServiceSpec, StackSpec } from '../wire/stack.js';

/** One replica as the stack's row remembers it (its instance is `<stack>-<service>-<index>`). */
export interface ReplicaRecord {
  instance: string;
  index: number;
  /** templateKey() of the spec it was made from. */
  template: string;
  image: string;
  createdAt: string;
  /** The instance exists (written after the create returned: a row without it is not ours to delete). */
  created: boolean;
  /** Passed a health check since it was made (only then does a failing check replace it). */
  everHealthy: boolean;
  /** In the service address (kept in the row so a restarted daemon rewrites the same rules). */
  serving: boolean;
  /** In a cluster: the host it runs on (absent: made before, or alone — this host). */
  host?: string;
  /**
   * A replica on another host: the port forward there (that host's cluster address and a free
   * port) which the service rules and the health check reach it through. Absent: on this host,
   * reached on its own address.
   */
  endpoint?: { ip: string; port: number };
}

export interface ServiceState {
  replicas: ReplicaRecord[];
  nextIndex: number;
  /** The last template that had every replica healthy: what a stopped roll keeps running. */
  stable?: StackServiceSpec;
  /** A template whose replica never became healthy: the roll to it stopped. */
  failedTemplate?: string;
  message?: string;
}

/** The stored row of a stack (store kind "stacks"): the wanted spec and what was made for it. */
export interface StackRecord {
  name: string;
  spec: StackSpec;
  /** The spec before the last apply (`vmkit stack rollback` returns to it). */
  previous?: StackSpec;
  generation: number;
  /** Networks this stack made (removed with it); networks that existed before are only used. */
  ownedNetworks: string[];
  services: Record<string, ServiceState>;
  /** `stack delete` began: a restarted daemon finishes it. */
  deleting?: boolean;
  updatedAt: string;
}

/** The meta-data key that marks an instance as a stack's replica (`stack/service`). */
export const REPLICA_META_KEY = 'vmkit-stack';

/** The meta-data key naming the replica's home host (cluster): only that host's controller deletes it. */
export const REPLICA_HOME_META_KEY = 'vmkit-stack-home';
