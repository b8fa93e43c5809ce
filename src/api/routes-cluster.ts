import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Readable } from 'node:stream';
import type { ClusterManager } from '../cluster/cluster.js';
import type { IncomingRequest } from '../cluster/forwarding.js';
import { clusterSupport, joinedCluster } from '../cluster/support.js';
import type { ApiContext } from './context.js';
import { async, relayed, sync } from './responses.js';
import { asyncResponse, errorResponse, nameParam } from './schemas.js';
import type { MigrationMode } from '../cluster/types.js';
import {
  ClusterJoinRequestSchema,
  EtcdCertificateRequestSchema,
  JoinTokenRequestSchema,
  MigrateRequestSchema,
  PeerJoinRequestSchema,
  type ClusterJoinRequest,
  type EtcdCertificateRequest,
  type JoinTokenRequest,
  type MigrateRequest,
  type PeerJoinRequest,
} from '../wire/requests.js';
import { CheckRequestSchema, FinishRequestSchema, MigrationDiskParamsSchema, MigrationIdParamsSchema, PrepareRequestSchema } from '../wire/migration.js';

const asyncReplies = { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse };
const tags = (t: string) => [t];

function clusterOf(ctx: ApiContext): ClusterManager {
  return clusterSupport(ctx.cluster);
}

function requireCluster(ctx: ApiContext): ClusterManager {
  return joinedCluster(ctx.cluster);
}

/** What forwarding needs of a request. */
function incoming(req: FastifyRequest): IncomingRequest {
  const by = req.headers['x-vmkit-forwarded-by'];
  const length = req.headers['content-length'];
  return {
    method: req.method,
    url: req.url,
    body: req.body,
    forwardedBy: Array.isArray(by) ? by[0] : by,
    contentType: req.headers['content-type'],
    ...(length !== undefined ? { contentLength: String(length) } : {}),
  };
}

/** `peer`: the cluster's mutual-TLS listener, which alone serves the host-to-host routes. */
export function registerClusterRoutes(app: FastifyInstance, ctx: ApiContext, peer = false): void {
  // ---- forwarding: any host acts on any instance -----------------------------------------
  app.addHook('preHandler', async (req, reply) => {
    // Console WebSockets bridge to the owning host themselves (console-bridge.ts).
    if (String(req.headers.upgrade ?? '').toLowerCase() === 'websocket') return;
    const answer = await ctx.services.forwarding.route(incoming(req));
    if (answer) return relayed(reply, answer);
  });

  // ---- cluster membership ------------------------------------------------------------------
  app.get('/1.0/cluster', { schema: { tags: tags('cluster'), summary: "This host's cluster membership" } }, async (_req, reply) => {
    const c = ctx.cluster;
    return sync(reply, c?.joined ? { joined: true, name: c.name, address: c.address, etcd: c.etcd, clusterId: c.clusterId } : { joined: false });
  });
  app.post<{ Body: ClusterJoinRequest }>(
    '/1.0/cluster',
    {
      schema: {
        tags: tags('cluster'),
        summary: 'Create the cluster (create=true: etcd, name, address; makes the cluster CA) or join one (token from "cluster add", address)',
        body: ClusterJoinRequestSchema,
      },
    },
    async (req, reply) => {
      const b = req.body;
      const cfg = await clusterOf(ctx).join({
        etcd: b.etcd,
        name: b.name,
        address: b.address,
        create: b.create ?? !b.token,
        token: b.token,
        insecureEtcd: b.insecureEtcd,
        ca: b.caCert && b.caKey ? { cert: b.caCert, key: b.caKey } : undefined,
      });
      return sync(reply, { joined: true, name: cfg.name, address: cfg.address, etcd: cfg.etcd, clusterId: cfg.clusterId });
    },
  );
  app.post<{ Body: JoinTokenRequest }>(
    '/1.0/cluster/tokens',
    { schema: { tags: tags('cluster'), summary: 'A one-time join token for a new host (shown once; etcd keeps only its hash)', body: JoinTokenRequestSchema } },
    async (req, reply) => sync(reply, await requireCluster(ctx).createJoinToken(req.body.name, req.body.expiresSeconds), 201),
  );
  app.post<{ Body: EtcdCertificateRequest }>(
    '/1.0/cluster/etcd-certificate',
    {
      schema: {
        tags: tags('cluster'),
        summary: "etcd's server/peer certificate and key, signed by the cluster CA (made first if this host has none)",
        body: EtcdCertificateRequestSchema,
      },
    },
    async (req, reply) => sync(reply, await clusterOf(ctx).etcdCertificate(req.body.names), 201),
  );
  app.delete('/1.0/cluster', { schema: { tags: tags('cluster'), summary: 'Leave the cluster (a host that owns no instance)' } }, async (_req, reply) => {
    await requireCluster(ctx).leave();
    return sync(reply, { joined: false });
  });
  app.get('/1.0/cluster/hosts', { schema: { tags: tags('cluster'), summary: 'Hosts: address, state (lease alive or dead), CPUs, memory, instances, QEMU' } }, async (_req, reply) =>
    sync(reply, await requireCluster(ctx).listHosts()),
  );
  app.delete<{ Params: { host: string } }>('/1.0/cluster/hosts/:host', { schema: { tags: tags('cluster'), summary: 'Forget a dead host' } }, async (req, reply) => {
    await requireCluster(ctx).forget(req.params.host);
    return sync(reply, { forgotten: req.params.host });
  });
  app.get<{ Querystring: { days?: number } }>(
    '/1.0/cluster/crl',
    {
      schema: {
        tags: tags('cluster'),
        summary: "A CRL (PEM) signed by the cluster CA listing the revoked host certificates, for etcd's --client-crl-file",
        querystring: Type.Object({ days: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650, description: 'validity of the CRL (30)' })) }),
      },
    },
    async (req, reply) => sync(reply, await requireCluster(ctx).crl(req.query.days)),
  );
  app.post<{ Params: { host: string } }>(
    '/1.0/cluster/hosts/:host/revoke',
    { schema: { tags: tags('cluster'), summary: 'Revoke every certificate issued for a host until now (peer listeners refuse them); a live host must leave first' } },
    async (req, reply) => sync(reply, { host: req.params.host, ...(await requireCluster(ctx).revoke(req.params.host)) }),
  );
  app.post<{ Params: { host: string }; Body: { mode?: MigrationMode } | null }>(
    '/1.0/cluster/hosts/:host/evacuate',
    { schema: { tags: tags('cluster'), summary: 'Move every instance of a host to the others (maintenance)', response: asyncReplies } },
    async (req, reply) => {
      const r = await ctx.services.evacuation.evacuate(req.params.host, req.body?.mode, incoming(req));
      return 'operation' in r ? async(reply, r.operation) : relayed(reply, r.forwarded);
    },
  );

  // ---- migration ------------------------------------------------------------------------
  app.post<{ Params: { name: string }; Body: MigrateRequest }>(
    '/1.0/instances/:name/migrate',
    {
      schema: {
        tags: tags('cluster'),
        summary: 'Move an instance to another host (check=true: pre-flight only, lists every blocker and moves nothing)',
        params: nameParam,
        body: MigrateRequestSchema,
      },
    },
    async (req, reply) => {
      const r = await ctx.services.migrations.start(req.params.name, req.body);
      return 'plan' in r ? sync(reply, r.plan) : async(reply, r.operation);
    },
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/instances/:name/migrate',
    { schema: { tags: tags('cluster'), summary: 'Cancel the running migration: the source keeps running, the target is cleaned up', params: nameParam } },
    async (req, reply) => sync(reply, ctx.services.migrations.cancel(req.params.name)),
  );

  // ---- host to host (the peer listener only: mutual TLS with the cluster CA's certificates) ---
  if (!peer) return;
  app.post<{ Body: PeerJoinRequest }>('/1.0/internal/join', { schema: { hide: true, body: PeerJoinRequestSchema } }, async (req, reply) =>
    sync(reply, await requireCluster(ctx).acceptJoin(req.body, req.ip), 201),
  );
  app.register(async (scope) => {
    scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    // Peer payloads are validated like public requests (src/wire/migration.ts): ids are one
    // folder name, disk files plain names or shared-storage paths the target confines.
    scope.addHook('preHandler', async () => {
      requireCluster(ctx);
    });
    const hide = { hide: true };
    const idParams = { hide: true, params: MigrationIdParamsSchema };
    scope.post<{ Body: Parameters<NonNullable<ApiContext['migrations']>['checkIncoming']>[0] }>(
      '/1.0/internal/migrations/check',
      { schema: { ...hide, body: CheckRequestSchema } },
      async (req, reply) => sync(reply, await ctx.migrations!.checkIncoming(req.body)),
    );
    scope.post<{ Body: Parameters<NonNullable<ApiContext['migrations']>['prepareIncoming']>[0] }>(
      '/1.0/internal/migrations',
      { schema: { ...hide, body: PrepareRequestSchema } },
      async (req, reply) => sync(reply, await ctx.migrations!.prepareIncoming(req.body), 201),
    );
    scope.get<{ Params: { id: string } }>('/1.0/internal/migrations/:id', { schema: idParams }, async (req, reply) => sync(reply, ctx.migrations!.status(req.params.id)));
    scope.put<{ Params: { id: string; disk: string } }>(
      '/1.0/internal/migrations/:id/disks/:disk',
      { schema: { ...hide, params: MigrationDiskParamsSchema }, bodyLimit: 1024 ** 4 },
      async (req, reply) => {
        await ctx.migrations!.receiveDisk(req.params.id, req.params.disk, req.body as Readable);
        return sync(reply, { received: req.params.disk });
      },
    );
    scope.post<{ Params: { id: string }; Body: { ownerRevision: number; start?: boolean } }>(
      '/1.0/internal/migrations/:id/finish',
      { schema: { ...idParams, body: FinishRequestSchema } },
      async (req, reply) => sync(reply, await ctx.migrations!.finishIncoming(req.params.id, req.body)),
    );
    scope.delete<{ Params: { id: string } }>('/1.0/internal/migrations/:id', { schema: idParams }, async (req, reply) => {
      await ctx.migrations!.abortIncoming(req.params.id);
      return sync(reply, { aborted: req.params.id });
    });
  });
}
