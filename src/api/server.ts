import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import { asVmkitError, vmkitError } from '../errors.js';
import { INSTANCE_TYPES } from '../domain/instance-types.js';
import type { CreateSnapshotRequest } from '../snapshots/snapshots.js';
import type { LaunchRequest, StateChange } from '../instances/service.js';
import type { ForwardRequest } from '../network/forwards.js';
import type { ApiContext } from './context.js';
import { registerNetworkRoutes } from './routes-networks.js';
import { registerClusterRoutes } from './routes-cluster.js';
import { async, errorBody, sync } from './responses.js';
import { registerImageRoutes } from './routes-images.js';
import { isPublicPath, registerWebRoutes, WebSessions } from './routes-web.js';
import {
  asyncResponse,
  createInstanceSchema,
  errorResponse,
  forwardRequestSchema,
  imageSchema,
  instanceSchema,
  nameParam,
  operationSchema,
  createSnapshotSchema,
  snapshotParams,
  snapshotSchema,
  stateChangeSchema,
  syncResponse,
} from './schemas.js';

export const API_VERSION = '1.0';

export interface ApiOptions {
  /** When set, every request must carry `Authorization: Bearer <token>` (TCP listeners). */
  token?: string;
  /** Other tokens accepted too (the cluster token peers use). */
  extraTokens?: () => Array<string | undefined>;
  logger?: boolean;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

const asyncReplies = { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse };

export async function buildApi(ctx: ApiContext, options: ApiOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: 1024 * 1024,
    forceCloseConnections: true,
    // Unknown fields are an error, not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
  });
  // Response schemas document the API; answers are serialized as they are.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.addSchema(operationSchema);
  app.addSchema(instanceSchema);
  app.addSchema(imageSchema);
  app.addSchema(snapshotSchema);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'vmkit API',
        version: API_VERSION,
        description: 'The REST API of the vmkit daemon. Long work answers 202 with an operation; errors carry a stable code.',
      },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      },
      security: [{ bearer: [] }],
    },
  });
  await app.register(websocket);

  const sessions = new WebSessions();
  if (options.token) {
    const token = options.token;
    app.addHook('onRequest', async (req, reply) => {
      // The bearer token, or a browser's session cookie (routes-web.ts); the web console's
      // static files and its sign-in need neither.
      const extra = options.extraTokens?.() ?? [];
      if (
        !tokenMatches(req.headers.authorization, token) &&
        !extra.some((t) => t && tokenMatches(req.headers.authorization, t)) &&
        !sessions.accepts(req) &&
        !isPublicPath(req.method, req.url)
      ) {
        const err = vmkitError('VMKIT_UNAUTHORIZED', 'Missing or wrong API token.', {
          hint: 'Send "Authorization: Bearer <token>" (vmkit --remote URL --token TOKEN); a browser signs in at /ui/.',
        });
        return reply.code(401).send(errorBody(err));
      }
    });
  }

  app.setErrorHandler((error, _req, reply) => {
    const fe = error as { validation?: unknown; statusCode?: number; code?: string; message: string };
    let err;
    if (fe.validation) {
      err = vmkitError('VMKIT_INVALID_ARGUMENT', `Invalid request: ${fe.message}`, { hint: 'See doc/api.md for the request body.' });
    } else if (fe.code?.startsWith('FST_') && (fe.statusCode ?? 500) < 500) {
      err = vmkitError('VMKIT_BAD_REQUEST', `Bad request: ${fe.message}`, { hint: 'Send a valid JSON body with Content-Type: application/json.' });
    } else {
      err = asVmkitError(error);
    }
    void reply.code(err.status).send(errorBody(err));
  });
  app.setNotFoundHandler((req, reply) => {
    const err = vmkitError('VMKIT_NOT_FOUND', `No such endpoint: ${req.method} ${req.url}`, { hint: 'The API lives under /1.0/ (see doc/api.md).' });
    void reply.code(404).send(errorBody(err));
  });

  const tags = (t: string) => [t];

  app.get('/1.0', { schema: { tags: tags('server'), summary: 'Server information' } }, async (_req, reply) =>
    sync(reply, {
      apiVersion: API_VERSION,
      version: ctx.version,
      hostName: ctx.hostName,
      dataDir: ctx.dataDir,
      accel: await ctx.accel(),
      pid: process.pid,
    }),
  );
  app.get('/1.0/openapi.json', { schema: { hide: true } }, async (_req, reply) => reply.send(app.swagger()));
  app.get('/1.0/doctor', { schema: { tags: tags('server'), summary: 'Host checks' } }, async (_req, reply) => sync(reply, await ctx.doctor()));
  app.get('/1.0/types', { schema: { tags: tags('server'), summary: 'Instance types' } }, async (_req, reply) => sync(reply, INSTANCE_TYPES));

  // ---- cluster: forwarding to the owning host, membership, migration (routes-cluster.ts)
  registerClusterRoutes(app, ctx);

  // ---- images, clones, appliances (routes-images.ts)
  registerImageRoutes(app, ctx);

  // ---- instances
  app.get<{ Querystring: { local?: boolean } }>(
    '/1.0/instances',
    {
      schema: {
        tags: tags('instances'),
        summary: "List instances (in a cluster: every host's, with its host; local=true: this host's only)",
        querystring: { type: 'object', properties: { local: { type: 'boolean' } } },
        response: { 200: syncResponse({ type: 'array', items: { $ref: 'Instance#' } }) },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.listing.list({ local: req.query.local })),
  );
  app.post<{ Body: LaunchRequest }>(
    '/1.0/instances',
    { schema: { tags: tags('instances'), summary: 'Create (and optionally start) an instance', body: createInstanceSchema, response: asyncReplies } },
    async (req, reply) => async(reply, await ctx.services.instances.launch(req.body)),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name',
    { schema: { tags: tags('instances'), summary: 'One instance', params: nameParam, response: { 200: syncResponse({ $ref: 'Instance#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await ctx.instances.get(req.params.name)),
  );
  app.put<{ Params: { name: string }; Body: StateChange }>(
    '/1.0/instances/:name/state',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Change the state: start, stop, restart, pause, resume, suspend',
        params: nameParam,
        body: stateChangeSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.instances.changeState(req.params.name, req.body)),
  );
  app.delete<{ Params: { name: string }; Querystring: { force?: boolean } }>(
    '/1.0/instances/:name',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Delete an instance (a running one only with force=true)',
        params: nameParam,
        querystring: { type: 'object', properties: { force: { type: 'boolean' } } },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.instances.delete(req.params.name, { force: req.query.force })),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name/forwards',
    { schema: { tags: tags('forwards'), summary: 'Port forwards of an instance', params: nameParam } },
    async (req, reply) => sync(reply, await ctx.instances.listForwards(req.params.name)),
  );
  app.post<{ Params: { name: string }; Body: ForwardRequest }>(
    '/1.0/instances/:name/forwards',
    { schema: { tags: tags('forwards'), summary: 'Add a port forward (applied live)', params: nameParam, body: forwardRequestSchema } },
    async (req, reply) => sync(reply, await ctx.instances.addForward(req.params.name, req.body), 201),
  );
  app.delete<{ Params: { name: string; port: number }; Querystring: { proto?: 'tcp' | 'udp'; address?: string } }>(
    '/1.0/instances/:name/forwards/:port',
    {
      schema: {
        tags: tags('forwards'),
        summary: 'Remove a port forward (applied live)',
        params: { type: 'object', properties: { name: { type: 'string' }, port: { type: 'integer' } }, required: ['name', 'port'] },
        querystring: { type: 'object', properties: { proto: { type: 'string', enum: ['tcp', 'udp'] }, address: { type: 'string' } } },
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.removeForward(req.params.name, req.params.port, req.query.proto, req.query.address)),
  );
  app.put<{ Params: { name: string }; Body: { userData?: string; sshKeys?: string[]; meta?: Record<string, string> } }>(
    '/1.0/instances/:name/cloud-init',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Replace user-data, SSH keys or meta-data (fields given replace, others stay); applied at the next boot with a new cloud-init instance-id',
        params: nameParam,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            userData: createInstanceSchema.properties.userData,
            sshKeys: createInstanceSchema.properties.sshKeys,
            meta: createInstanceSchema.properties.meta,
          },
        },
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.setCloudInit(req.params.name, req.body)),
  );
  app.put<{ Params: { name: string; disk: string }; Body: { size: number | string } }>(
    '/1.0/instances/:name/disks/:disk',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Grow a disk: QMP block_resize while running, qemu-img resize when stopped; never shrinks',
        params: { type: 'object', properties: { name: { type: 'string' }, disk: { type: 'string' } }, required: ['name', 'disk'] },
        body: {
          type: 'object',
          required: ['size'],
          additionalProperties: false,
          properties: {
            size: {
              anyOf: [
                { type: 'integer', minimum: 1 },
                { type: 'string', maxLength: 32 },
              ],
              description: 'bytes, or a size like 40G',
            },
          },
        },
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.resizeDisk(req.params.name, req.body.size, req.params.disk)),
  );
  app.get<{ Params: { name: string }; Querystring: { tail?: number } }>(
    '/1.0/instances/:name/logs',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Serial console output (text)',
        params: nameParam,
        querystring: { type: 'object', properties: { tail: { type: 'integer', minimum: 1, description: 'only the last N lines' } } },
      },
    },
    async (req, reply) => reply.type('text/plain; charset=utf-8').send(await ctx.instances.logs(req.params.name, req.query.tail)),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name/console',
    { websocket: true, schema: { tags: tags('instances'), summary: 'Serial console (WebSocket, binary frames)', params: nameParam } },
    (socket, req: FastifyRequest<{ Params: { name: string } }>) => {
      ctx.instances
        .serialSocket(req.params.name)
        .then((path) => {
          const serial = net.connect(path);
          serial.on('data', (d) => socket.send(d));
          serial.on('close', () => socket.close(1000, 'console closed'));
          serial.on('error', () => socket.close(1011, 'console unavailable'));
          socket.on('message', (d: Buffer) => serial.write(d));
          socket.on('close', () => serial.destroy());
        })
        .catch((err: unknown) => {
          const e = asVmkitError(err);
          socket.send(JSON.stringify(errorBody(e)));
          socket.close(1008, e.code);
        });
    },
  );

  // ---- snapshots
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name/snapshots',
    {
      schema: {
        tags: tags('snapshots'),
        summary: 'Snapshots of an instance (oldest first)',
        params: nameParam,
        response: { 200: syncResponse({ type: 'array', items: { $ref: 'Snapshot#' } }), '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await ctx.snapshots.list(req.params.name)),
  );
  app.post<{ Params: { name: string }; Body: CreateSnapshotRequest }>(
    '/1.0/instances/:name/snapshots',
    {
      schema: {
        tags: tags('snapshots'),
        summary: 'Take a snapshot: disk + memory of a running/paused instance (memory=false: disk only), disk of a stopped one',
        params: nameParam,
        body: createSnapshotSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => {
      const { name } = req.params;
      await ctx.snapshots.precheck(name, req.body.name, false);
      const op = ctx.operations.start({
        kind: 'snapshot.create',
        description: `Snapshotting ${name} as ${req.body.name}`,
        target: name,
        run: (opCtx) => ctx.snapshots.create(name, req.body, opCtx),
      });
      return async(reply, op);
    },
  );
  app.get<{ Params: { name: string; snapshot: string } }>(
    '/1.0/instances/:name/snapshots/:snapshot',
    { schema: { tags: tags('snapshots'), summary: 'One snapshot', params: snapshotParams, response: { 200: syncResponse({ $ref: 'Snapshot#' }), '4xx': errorResponse } } },
    async (req, reply) => {
      await ctx.snapshots.precheck(req.params.name, req.params.snapshot);
      return sync(reply, await ctx.snapshots.get(req.params.name, req.params.snapshot));
    },
  );
  app.delete<{ Params: { name: string; snapshot: string } }>(
    '/1.0/instances/:name/snapshots/:snapshot',
    { schema: { tags: tags('snapshots'), summary: 'Delete a snapshot (its space is reclaimed; the others stay valid)', params: snapshotParams, response: asyncReplies } },
    async (req, reply) => {
      const { name, snapshot } = req.params;
      await ctx.snapshots.precheck(name, snapshot, true);
      const op = ctx.operations.start({
        kind: 'snapshot.delete',
        description: `Deleting snapshot ${snapshot} of ${name}`,
        target: name,
        run: (opCtx) => ctx.snapshots.delete(name, snapshot, opCtx),
      });
      return async(reply, op);
    },
  );
  app.post<{ Params: { name: string; snapshot: string } }>(
    '/1.0/instances/:name/snapshots/:snapshot/restore',
    {
      schema: {
        tags: tags('snapshots'),
        summary: 'Restore a snapshot: with memory the instance is back at that instant (running or paused as it was); disk-only needs a stopped instance',
        params: snapshotParams,
        response: asyncReplies,
      },
    },
    async (req, reply) => {
      const { name, snapshot } = req.params;
      await ctx.snapshots.precheck(name, snapshot, true);
      const op = ctx.operations.start({
        kind: 'snapshot.restore',
        description: `Restoring ${name} to snapshot ${snapshot}`,
        target: name,
        run: (opCtx) => ctx.snapshots.restore(name, snapshot, opCtx),
      });
      return async(reply, op);
    },
  );

  registerWebRoutes(app, ctx, { token: options.token, sessions });

  // ---- operations
  app.get(
    '/1.0/operations',
    { schema: { tags: tags('operations'), summary: 'List operations', response: { 200: syncResponse({ type: 'array', items: { $ref: 'Operation#' } }) } } },
    async (_req, reply) => sync(reply, ctx.operations.list()),
  );
  app.get<{ Params: { id: string } }>(
    '/1.0/operations/:id',
    { schema: { tags: tags('operations'), summary: 'One operation', response: { 200: syncResponse({ $ref: 'Operation#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, ctx.operations.get(req.params.id)),
  );
  app.get<{ Params: { id: string }; Querystring: { timeout?: number } }>(
    '/1.0/operations/:id/wait',
    {
      schema: {
        tags: tags('operations'),
        summary: 'Wait for an operation to end (or the timeout, seconds)',
        querystring: { type: 'object', properties: { timeout: { type: 'number', minimum: 0, maximum: 3600 } } },
        response: { 200: syncResponse({ $ref: 'Operation#' }), '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await ctx.operations.wait(req.params.id, (req.query.timeout ?? 60) * 1000)),
  );
  app.delete<{ Params: { id: string } }>('/1.0/operations/:id', { schema: { tags: tags('operations'), summary: 'Cancel an operation' } }, async (req, reply) =>
    sync(reply, ctx.operations.cancel(req.params.id)),
  );

  // ---- events (Server-Sent Events)
  app.get<{ Querystring: { type?: string } }>(
    '/1.0/events',
    { schema: { tags: tags('events'), summary: 'Event stream (text/event-stream)', querystring: { type: 'object', properties: { type: { type: 'string' } } } } },
    (req, reply) => {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      res.write(': vmkit events\n\n');
      const filter = req.query.type;
      const unsubscribe = ctx.events.subscribe((e) => {
        if (!filter || e.type === filter) res.write(`data: ${JSON.stringify(e)}\n\n`);
      });
      const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
      res.on('close', () => {
        clearInterval(ping);
        unsubscribe();
      });
    },
  );

  registerNetworkRoutes(app, ctx);

  return app;
}
