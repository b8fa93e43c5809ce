import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { vmkitError } from '../errors.js';
import type { InstanceView } from '../domain/types.js';
import type { ApiContext } from './server.js';
import { async, sync } from './responses.js';
import { asyncResponse, clusterJoinSchema, errorResponse, migrateSchema, nameParam } from './schemas.js';
import type { MigrationMode } from '../cluster/types.js';

const asyncReplies = { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse };
const tags = (t: string) => [t];

/** Operation id → the host that runs it (operations of forwarded requests). */
const remoteOperations = new Map<string, string>();

function clusterOf(ctx: ApiContext): NonNullable<ApiContext['cluster']> {
  if (!ctx.cluster) throw vmkitError('VMKIT_CLUSTER_NOT_JOINED', 'This daemon has no cluster support.', { hint: 'Update vmkit.' });
  return ctx.cluster;
}

function requireCluster(ctx: ApiContext): NonNullable<ApiContext['cluster']> {
  const cluster = clusterOf(ctx);
  cluster.requireJoined();
  return cluster;
}

/** Sends the request as it came to another host and relays the answer. */
async function proxy(ctx: ApiContext, req: FastifyRequest, reply: FastifyReply, host: string, body?: unknown): Promise<FastifyReply> {
  const peer = await requireCluster(ctx).peer(host);
  // An hour and a bit: operation waits (`/wait?timeout=`) may take up to an hour.
  const res = await peer.send(req.method, req.url, body ?? req.body, 3_700_000, { 'x-vmkit-forwarded-by': ctx.cluster!.name! });
  const text = await res.text();
  try {
    const j = JSON.parse(text) as { type?: string; metadata?: { id?: string } };
    if (j.type === 'async' && j.metadata?.id) remoteOperations.set(j.metadata.id, host);
  } catch {
    /* not JSON (logs) */
  }
  return reply
    .code(res.status)
    .header('content-type', res.headers.get('content-type') ?? 'application/json')
    .header('x-vmkit-host', host)
    .send(text);
}

export function registerClusterRoutes(app: FastifyInstance, ctx: ApiContext): void {
  // ---- forwarding: any host acts on any instance -----------------------------------------
  app.addHook('preHandler', async (req, reply) => {
    const cluster = ctx.cluster;
    if (!cluster?.joined || req.headers['x-vmkit-forwarded-by']) return;
    const path = req.url.split('?')[0]!;
    const inst = /^\/1\.0\/instances\/([^/]+)(\/.*)?$/.exec(path);
    if (inst) {
      const name = decodeURIComponent(inst[1]!);
      if (await ctx.instances.has(name)) return;
      const owner = await cluster.owner(name).catch(() => undefined);
      if (owner && owner.record.host !== cluster.name) return proxy(ctx, req, reply, owner.record.host);
      return;
    }
    if (path === '/1.0/instances' && req.method === 'POST') {
      const body = req.body as { target?: string; image: string; memoryMiB?: number; name: string };
      let target = body.target;
      if (!target) {
        const image = await ctx.images.get(body.image).catch(() => undefined);
        target = await cluster.place(body.image, body.memoryMiB ?? image?.defaults.memoryMiB ?? 256);
      }
      if (target === cluster.name) return;
      const { target: _t, ...rest } = body;
      void _t;
      await cluster.host(target);
      return proxy(ctx, req, reply, target, rest);
    }
    const op = /^\/1\.0\/operations\/([^/]+)(\/wait)?$/.exec(path);
    if (op) {
      const host = remoteOperations.get(op[1]!);
      if (host && !ctx.operations.has(op[1]!)) return proxy(ctx, req, reply, host);
    }
  });

  // ---- cluster membership ------------------------------------------------------------------
  app.get('/1.0/cluster', { schema: { tags: tags('cluster'), summary: 'This host\'s cluster membership' } }, async (_req, reply) => {
    const c = ctx.cluster;
    return sync(reply, c?.joined ? { joined: true, name: c.name, address: c.address, etcd: c.etcd, clusterId: c.clusterId } : { joined: false });
  });
  app.post<{ Body: { etcd: string[]; name: string; address: string; create?: boolean } }>(
    '/1.0/cluster',
    { schema: { tags: tags('cluster'), summary: 'Create (create=true) or join the cluster whose state lives in etcd', body: clusterJoinSchema } },
    async (req, reply) => {
      const cfg = await clusterOf(ctx).join({ ...req.body, create: req.body.create ?? true });
      return sync(reply, { joined: true, name: cfg.name, address: cfg.address, etcd: cfg.etcd, clusterId: cfg.clusterId });
    },
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
  app.post<{ Params: { host: string }; Body: { mode?: MigrationMode } | null }>(
    '/1.0/cluster/hosts/:host/evacuate',
    { schema: { tags: tags('cluster'), summary: 'Move every instance of a host to the others (maintenance)', response: asyncReplies } },
    async (req, reply) => {
      const cluster = requireCluster(ctx);
      const host = req.params.host;
      await cluster.host(host);
      if (host !== cluster.name && !req.headers['x-vmkit-forwarded-by']) return proxy(ctx, req, reply, host, req.body ?? {});
      const op = ctx.operations.start({
        kind: 'cluster.evacuate',
        description: `Evacuating ${host}`,
        target: host,
        mayCancel: true,
        run: async (opCtx) => {
          const moved: Array<{ instance: string; to: string; mode: string }> = [];
          const failed: Array<{ instance: string; error: string }> = [];
          const list = await ctx.instances.list();
          for (const [i, inst] of list.entries()) {
            opCtx.checkCancelled();
            opCtx.progress({ phase: `moving ${inst.name}`, percent: Math.round((i / Math.max(1, list.length)) * 100) });
            try {
              // The first host (emptiest first) the pre-flight check accepts.
              let to: string | undefined;
              const reasons: string[] = [];
              for (const c of await cluster.candidates(inst.image, inst.memoryMiB, host)) {
                const plan = await ctx.migrations!.plan(inst.name, { to: c.name, mode: req.body?.mode });
                if (plan.ok) {
                  to = c.name;
                  break;
                }
                reasons.push(`${c.name}: ${plan.blockers.map((b) => b.message).join(' ')}`);
              }
              if (!to) throw new Error(reasons.length > 0 ? reasons.join('; ') : 'no other live host has room for it');
              const r = await ctx.migrations!.migrate(inst.name, { to, mode: req.body?.mode }, opCtx);
              moved.push({ instance: inst.name, to: r.to, mode: r.mode });
            } catch (err) {
              failed.push({ instance: inst.name, error: (err as Error).message });
            }
          }
          if (failed.length > 0) {
            throw vmkitError('VMKIT_MIGRATION_FAILED', `Evacuation of ${host} left ${failed.map((f) => `${f.instance} (${f.error})`).join('; ')}.`, {
              hint: 'Fix the blockers ("vmkit migrate NAME --to HOST --check") and evacuate again.',
              details: { moved, failed },
            });
          }
          return { host, moved };
        },
      });
      return async(reply, op);
    },
  );

  // ---- migration ------------------------------------------------------------------------
  app.post<{ Params: { name: string }; Body: { to: string; mode?: MigrationMode; check?: boolean; downtimeMs?: number; bandwidthMiBs?: number } }>(
    '/1.0/instances/:name/migrate',
    {
      schema: {
        tags: tags('cluster'),
        summary: 'Move an instance to another host (check=true: pre-flight only, lists every blocker and moves nothing)',
        params: nameParam,
        body: migrateSchema,
      },
    },
    async (req, reply) => {
      requireCluster(ctx);
      const { name } = req.params;
      await ctx.instances.get(name);
      if (req.body.check) return sync(reply, await ctx.migrations!.plan(name, req.body));
      const op = ctx.operations.start({
        kind: 'instance.migrate',
        description: `Migrating ${name} to ${req.body.to}`,
        target: name,
        mayCancel: true,
        run: (opCtx) => ctx.migrations!.migrate(name, req.body, opCtx),
      });
      return async(reply, op);
    },
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/instances/:name/migrate',
    { schema: { tags: tags('cluster'), summary: 'Cancel the running migration: the source keeps running, the target is cleaned up', params: nameParam } },
    async (req, reply) => sync(reply, ctx.migrations!.cancel(req.params.name)),
  );

  // ---- host to host (the cluster token only) ------------------------------------------------
  app.register(async (scope) => {
    scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    const hide = { hide: true };
    scope.post<{ Body: Parameters<NonNullable<ApiContext['migrations']>['checkIncoming']>[0] }>('/1.0/internal/migrations/check', { schema: hide }, async (req, reply) =>
      sync(reply, await ctx.migrations!.checkIncoming(req.body)),
    );
    scope.post<{ Body: Parameters<NonNullable<ApiContext['migrations']>['prepareIncoming']>[0] }>('/1.0/internal/migrations', { schema: hide }, async (req, reply) =>
      sync(reply, await ctx.migrations!.prepareIncoming(req.body), 201),
    );
    scope.get<{ Params: { id: string } }>('/1.0/internal/migrations/:id', { schema: hide }, async (req, reply) => sync(reply, ctx.migrations!.status(req.params.id)));
    scope.put<{ Params: { id: string; disk: string } }>('/1.0/internal/migrations/:id/disks/:disk', { schema: hide, bodyLimit: 1024 ** 4 }, async (req, reply) => {
      await ctx.migrations!.receiveDisk(req.params.id, req.params.disk, req.body as Readable);
      return sync(reply, { received: req.params.disk });
    });
    scope.post<{ Params: { id: string }; Body: { ownerRevision: number; start?: boolean } }>('/1.0/internal/migrations/:id/finish', { schema: hide }, async (req, reply) =>
      sync(reply, await ctx.migrations!.finishIncoming(req.params.id, req.body)),
    );
    scope.delete<{ Params: { id: string } }>('/1.0/internal/migrations/:id', { schema: hide }, async (req, reply) => {
      await ctx.migrations!.abortIncoming(req.params.id);
      return sync(reply, { aborted: req.params.id });
    });
  });
}

/** GET /1.0/instances in a cluster: every host's instances; a dead host's are listed as unknown. */
export async function clusterInstances(ctx: ApiContext): Promise<InstanceView[]> {
  const cluster = ctx.cluster!;
  const mine = await ctx.instances.list();
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
            listed = await (await cluster.peer(h.name)).request<InstanceView[]>('GET', '/1.0/instances?local=true', undefined, 3_000);
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
