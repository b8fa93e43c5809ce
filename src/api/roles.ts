import type { Role } from '../wire/auth.js';

/**
 * THE table of who may call what: every route of the API (Fastify's pattern) with the least
 * role it needs. `public` routes need no token at all (the web console's files and its
 * sign-in). A route missing here needs admin (fail closed), and src/api/roles.test.ts fails:
 * it walks every route of doc/openapi.json and every route the server registers, with each
 * role. HEAD follows GET.
 *
 * viewer: read-only — GETs, the event stream and the serial log; no console (the serial and
 *   graphical consoles are read-write: a viewer typing at a root shell is not read-only).
 * operator: instance lifecycle (create, start/stop…, delete, clone), snapshots, forwards,
 *   NICs, consoles, cancelling operations.
 * admin: everything else — images, networks, cluster and migration, repositories, tokens.
 */
export type RouteRule = Role | 'public';

export const ROUTE_ROLES: Readonly<Record<string, RouteRule>> = {
  // server
  'GET /1.0': 'viewer',
  'GET /1.0/openapi.json': 'viewer',
  'GET /1.0/doctor': 'viewer',
  'GET /1.0/types': 'viewer',
  // auth and tokens
  'POST /1.0/auth/session': 'public',
  'DELETE /1.0/auth/session': 'public',
  'GET /1.0/auth/session': 'viewer',
  'GET /1.0/auth/whoami': 'viewer',
  'GET /1.0/tokens': 'admin',
  'POST /1.0/tokens': 'admin',
  'DELETE /1.0/tokens/:name': 'admin',
  // instances
  'GET /1.0/instances': 'viewer',
  'POST /1.0/instances': 'operator',
  'GET /1.0/instances/:name': 'viewer',
  'DELETE /1.0/instances/:name': 'operator',
  'PUT /1.0/instances/:name/state': 'operator',
  'GET /1.0/instances/:name/logs': 'viewer',
  'GET /1.0/instances/:name/console': 'operator',
  'GET /1.0/instances/:name/vnc': 'operator',
  'POST /1.0/instances/:name/clone': 'operator',
  'POST /1.0/instances/:name/publish': 'admin',
  'GET /1.0/instances/:name/forwards': 'viewer',
  'POST /1.0/instances/:name/forwards': 'operator',
  'DELETE /1.0/instances/:name/forwards/:port': 'operator',
  'POST /1.0/instances/:name/forwards/:port/check': 'operator',
  'POST /1.0/instances/:name/nics': 'operator',
  'DELETE /1.0/instances/:name/nics/:nic': 'operator',
  'PUT /1.0/instances/:name/cloud-init': 'operator',
  'PUT /1.0/instances/:name/disks/:disk': 'operator',
  // guest agent: a root shell in the guest, and its files both ways (reading is not viewer's: secrets)
  'POST /1.0/instances/:name/exec': 'operator',
  'GET /1.0/instances/:name/files': 'operator',
  'PUT /1.0/instances/:name/files': 'operator',
  // snapshots
  'GET /1.0/instances/:name/snapshots': 'viewer',
  'POST /1.0/instances/:name/snapshots': 'operator',
  'GET /1.0/instances/:name/snapshots/:snapshot': 'viewer',
  'DELETE /1.0/instances/:name/snapshots/:snapshot': 'operator',
  'POST /1.0/instances/:name/snapshots/:snapshot/restore': 'operator',
  // operations and events
  'GET /1.0/operations': 'viewer',
  'GET /1.0/operations/:id': 'viewer',
  'GET /1.0/operations/:id/wait': 'viewer',
  'DELETE /1.0/operations/:id': 'operator',
  'GET /1.0/events': 'viewer',
  // images and repositories
  'GET /1.0/images': 'viewer',
  'POST /1.0/images': 'admin',
  'GET /1.0/images/:name': 'viewer',
  'DELETE /1.0/images/:name': 'admin',
  'PATCH /1.0/images/:name': 'admin',
  'POST /1.0/images/download': 'admin',
  'POST /1.0/images/build-debian': 'admin',
  'POST /1.0/images/build': 'admin',
  'GET /1.0/images/:name/build': 'viewer',
  'GET /1.0/images/build/cache': 'viewer',
  'POST /1.0/images/build/cache/prune': 'admin',
  'POST /1.0/images/:name/export': 'admin',
  // A download hands out the image's bytes (published instances' disks): as much as export.
  'GET /1.0/images/:name/export': 'admin',
  'POST /1.0/images/upload': 'admin',
  'POST /1.0/images/pull': 'admin',
  'POST /1.0/images/:name/push': 'admin',
  'GET /1.0/repos': 'viewer',
  'POST /1.0/repos': 'admin',
  'DELETE /1.0/repos/:name': 'admin',
  'GET /1.0/repos/:name/images': 'viewer',
  'GET /1.0/repo/serve': 'viewer',
  'PUT /1.0/repo/serve': 'admin',
  'DELETE /1.0/repo/serve': 'admin',
  // networks
  'GET /1.0/networks': 'viewer',
  'POST /1.0/networks': 'admin',
  'GET /1.0/networks/:name': 'viewer',
  'DELETE /1.0/networks/:name': 'admin',
  'GET /1.0/networks/:name/host-access': 'viewer',
  'PATCH /1.0/networks/:name/host-access': 'admin',
  // stacks (they make networks: admin, like networks)
  'GET /1.0/stacks': 'viewer',
  'POST /1.0/stacks': 'admin',
  // A POST (the file is the body): the same role as apply.
  'POST /1.0/stacks/diff': 'admin',
  'GET /1.0/stacks/:name': 'viewer',
  'DELETE /1.0/stacks/:name': 'admin',
  'POST /1.0/stacks/:name/rollback': 'admin',
  // cluster and migration
  'GET /1.0/cluster': 'viewer',
  'POST /1.0/cluster': 'admin',
  'DELETE /1.0/cluster': 'admin',
  'POST /1.0/cluster/tokens': 'admin',
  // Answers with a private key (etcd's).
  'POST /1.0/cluster/etcd-certificate': 'admin',
  'GET /1.0/cluster/hosts': 'viewer',
  'DELETE /1.0/cluster/hosts/:host': 'admin',
  'POST /1.0/cluster/hosts/:host/revoke': 'admin',
  'GET /1.0/cluster/crl': 'admin',
  'POST /1.0/cluster/hosts/:host/evacuate': 'admin',
  'POST /1.0/instances/:name/migrate': 'admin',
  'DELETE /1.0/instances/:name/migrate': 'admin',
  // Host to host (/1.0/internal/…): not on this listener. Only the cluster's peer listener
  // serves them, to hosts presenting a certificate of the cluster CA (mutual TLS), not tokens.
  // the web console's files
  'GET /': 'public',
  'GET /ui': 'public',
  'GET /ui/*': 'public',
};

/** The rule for a request's route (Fastify's pattern); undefined when the table has none. */
export function ruleFor(method: string, routeUrl: string): RouteRule | undefined {
  return ROUTE_ROLES[`${method === 'HEAD' ? 'GET' : method} ${routeUrl}`];
}

/** An OpenAPI path (`/1.0/instances/{name}`) in Fastify's spelling (`/1.0/instances/:name`). */
export function fromOpenApiPath(path: string): string {
  return path.replace(/\{([^}]+)\}/g, ':$1');
}
