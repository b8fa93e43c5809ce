import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import { bridgeConsole, consoleEnds } from './console-bridge.js';
import { asVmkitError, vmkitError } from '../errors.js';
import { INSTANCE_TYPES } from '../domain/instance-types.js';
import { Type } from '@sinclair/typebox';
import {
  CreateInstanceRequestSchema,
  CreateSnapshotRequestSchema,
  ForwardRequestSchema,
  StateChangeRequestSchema,
  type CreateInstanceRequestBody,
  type CreateSnapshotRequestBody,
  type ForwardRequestBody,
  type StateChangeRequest,
  CloudInitRequestSchema,
  ResizeDiskRequestSchema,
  type CloudInitRequest,
  type ResizeDiskRequest,
} from '../wire/requests.js';
import type { ApiContext } from './context.js';
import { registerNetworkRoutes } from './routes-networks.js';
import { registerStackRoutes } from './routes-stacks.js';
import { registerClusterRoutes } from './routes-cluster.js';
import { FORWARD_PREFIX } from '../cluster/peer.js';
import { async, errorBody, sync } from './responses.js';
import { registerImageRoutes } from './routes-images.js';
import { registerAgentRoutes } from './routes-agent.js';
import { registerOrigin, type RequestOrigin } from './origin.js';
import { isPublicPath, registerWebRoutes, WebSessions } from './routes-web.js';
import { Authenticator, installAuth, registerAuthRoutes } from './auth.js';
import type { AuthThrottle } from '../auth/throttle.js';
import {
  asyncResponse,
  errorResponse,
  imageSchema,
  instanceSchema,
  nameParam,
  operationSchema,
  portParams,
  protoField,
  snapshotParams,
  snapshotSchema,
  syncResponse,
} from './schemas.js';
import { typeboxValidatorCompiler } from './validation.js';

export const API_VERSION = '1.0';

declare module 'fastify' {
  interface FastifyInstance {
    /** The routes this API registered (method, Fastify pattern). */
    vmkitRoutes: ReadonlyArray<{ method: string; url: string }>;
  }
}

/** Set on a request that came in under FORWARD_PREFIX (peer listener). */
const FORWARDED = Symbol('vmkit-forwarded');
type Marked = IncomingMessage & { [FORWARDED]?: boolean };

function peerServerOptions(peer: NonNullable<ApiOptions['peer']>) {
  return {
    https: { key: peer.key, cert: peer.cert, ca: peer.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' as const },
    rewriteUrl(raw: IncomingMessage): string {
      const url = raw.url ?? '/';
      if (!url.startsWith(`${FORWARD_PREFIX}/`)) return url;
      (raw as Marked)[FORWARDED] = true;
      // Served here as it is: never forwarded on (no loops between hosts).
      raw.headers['x-vmkit-forwarded-by'] ??= 'peer';
      return url.slice(FORWARD_PREFIX.length);
    },
  };
}

export interface ApiOptions {
  /**
   * An admin token every request may carry as `Authorization: Bearer <token>` (the daemon's
   * bootstrap token, from --token-file). Setting it requires
   * authentication, like `authenticate`.
   */
  token?: string;
  /** Require authentication (a TCP listener) even without `token`: scoped tokens (ctx.tokens) only. */
  authenticate?: boolean;
  /** Serve HTTPS with this certificate and key (PEM). */
  https?: { cert: Buffer; key: Buffer };
  /** The listener is HTTPS: the session cookie is marked Secure. */
  secure?: boolean;
  /** Failed-authentication throttle (default: 10 a minute per address). */
  throttle?: AuthThrottle;
  /** Where failed authentications are logged. */
  log?: (line: string) => void;
  logger?: boolean;
  /** The listener: `local` (the unix socket) or `remote` (TCP). Default: remote when authentication is required. */
  origin?: RequestOrigin;
  /**
   * The cluster's peer listener: HTTPS with this host's certificate (`cert` = the chain, host
   * then CA), client certificates checked against the cluster CA (`ca`). A client whose
   * certificate the CA did not sign gets 403 everywhere but the join route; a peer reaches
   * `/1.0/internal/…` only (public routes it forwards come under FORWARD_PREFIX). `revoked`
   * says whether a CA-signed certificate was revoked since (by CN and issue time): 403 too.
   */
  peer?: { key: Buffer; cert: Buffer; ca: Buffer; revoked?: (commonName: string, notBefore: Date) => boolean };
}

const asyncReplies = { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse };

export async function buildApi(ctx: ApiContext, options: ApiOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    ...((options.peer ? peerServerOptions(options.peer) : options.https ? { https: { ...options.https, minVersion: 'TLSv1.2' } } : {}) as object),
    logger: options.logger ?? false,
    bodyLimit: 1024 * 1024,
    forceCloseConnections: true,
    // Unknown fields are an error, not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
  });
  // Every route registered, for roles.test.ts (each must have a rule in roles.ts).
  const routes: Array<{ method: string; url: string }> = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url });
  });
  app.decorate('vmkitRoutes', routes);
  // Response schemas document the API; answers are serialized as they are.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  // Requests are checked against their TypeBox schemas (src/wire/requests.ts) by TypeBox.
  app.setValidatorCompiler(typeboxValidatorCompiler);
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
  registerOrigin(app, options.origin ?? (options.token !== undefined || options.authenticate === true ? 'remote' : 'local'));

  const sessions = new WebSessions();
  // Who may call what: the bearer token or a browser's session cookie (routes-web.ts), then
  // the route's role (roles.ts). The unix socket needs neither: it is admin.
  const auth = new Authenticator({
    required: options.token !== undefined || options.authenticate === true,
    adminTokens: () => [{ name: 'bootstrap (--token-file)', token: options.token }],
    tokens: () => ctx.tokens,
    throttle: options.throttle,
    log: options.log,
  });
  installAuth(app, auth, {
    isPublic: isPublicPath,
    session: async (req) => {
      const identity = sessions.identityOf(req);
      return identity && (await auth.stillValid(identity)) ? identity : undefined;
    },
  });

  if (options.peer) {
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?')[0]!;
      if ((req.raw.socket as TLSSocket).authorized !== true) {
        if (req.method === 'POST' && path === '/1.0/internal/join') return;
        const err = vmkitError('VMKIT_FORBIDDEN', 'This listener serves the hosts of the cluster only: present a host certificate signed by the cluster CA.', {
          hint: 'Clients use the API listener (--listen); a new host joins with "vmkit cluster join TOKEN".',
        });
        return reply.code(403).send(errorBody(err));
      }
      const peerCert = (req.raw.socket as TLSSocket).getPeerCertificate();
      if (peerCert && options.peer!.revoked?.(String(peerCert.subject?.CN ?? ''), new Date(peerCert.valid_from))) {
        const err = vmkitError('VMKIT_FORBIDDEN', `The certificate of host "${String(peerCert.subject?.CN ?? '')}" was revoked (the host left, was forgotten or revoked).`, {
          hint: 'A host comes back with a new certificate: "vmkit cluster add HOST" on a member, then "vmkit cluster join TOKEN" on it.',
        });
        return reply.code(403).send(errorBody(err));
      }
      if (!(req.raw as Marked)[FORWARDED] && !path.startsWith('/1.0/internal/')) {
        const err = vmkitError('VMKIT_NOT_FOUND', `No such endpoint for peers: ${req.method} ${path}`, { hint: 'Peers call /1.0/internal/… only.' });
        return reply.code(404).send(errorBody(err));
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
  registerClusterRoutes(app, ctx, options.peer !== undefined);

  // ---- images, clones, appliances (routes-images.ts)
  registerImageRoutes(app, ctx);
  registerAgentRoutes(app, ctx);

  // ---- instances
  app.get<{ Querystring: { local?: boolean } }>(
    '/1.0/instances',
    {
      schema: {
        tags: tags('instances'),
        summary: "List instances (in a cluster: every host's, with its host; local=true: this host's only)",
        querystring: Type.Object({ local: Type.Optional(Type.Boolean()) }),
        response: { 200: syncResponse({ type: 'array', items: { $ref: 'Instance#' } }) },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.listing.list({ local: req.query.local })),
  );
  app.post<{ Body: CreateInstanceRequestBody }>(
    '/1.0/instances',
    { schema: { tags: tags('instances'), summary: 'Create (and optionally start) an instance', body: CreateInstanceRequestSchema, response: asyncReplies } },
    async (req, reply) => async(reply, await ctx.services.instances.launch(req.body)),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name',
    { schema: { tags: tags('instances'), summary: 'One instance', params: nameParam, response: { 200: syncResponse({ $ref: 'Instance#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await ctx.instances.info(req.params.name)),
  );
  app.put<{ Params: { name: string }; Body: StateChangeRequest }>(
    '/1.0/instances/:name/state',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Change the state: start, stop, restart, pause, resume, suspend',
        params: nameParam,
        body: StateChangeRequestSchema,
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
        querystring: Type.Object({ force: Type.Optional(Type.Boolean()) }),
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
  app.post<{ Params: { name: string }; Body: ForwardRequestBody }>(
    '/1.0/instances/:name/forwards',
    { schema: { tags: tags('forwards'), summary: 'Add a port forward (applied live)', params: nameParam, body: ForwardRequestSchema } },
    async (req, reply) => sync(reply, await ctx.instances.addForward(req.params.name, req.body), 201),
  );
  app.delete<{ Params: { name: string; port: number }; Querystring: { proto?: 'tcp' | 'udp'; address?: string } }>(
    '/1.0/instances/:name/forwards/:port',
    {
      schema: {
        tags: tags('forwards'),
        summary: 'Remove a port forward (applied live)',
        params: portParams,
        querystring: Type.Object({ proto: Type.Optional(protoField), address: Type.Optional(Type.String()) }),
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.removeForward(req.params.name, req.params.port, req.query.proto, req.query.address)),
  );
  app.put<{ Params: { name: string }; Body: CloudInitRequest }>(
    '/1.0/instances/:name/cloud-init',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Replace user-data, SSH keys or meta-data (fields given replace, others stay); applied at the next boot with a new cloud-init instance-id',
        params: nameParam,
        body: CloudInitRequestSchema,
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.setCloudInit(req.params.name, req.body)),
  );
  app.put<{ Params: { name: string; disk: string }; Body: ResizeDiskRequest }>(
    '/1.0/instances/:name/disks/:disk',
    {
      schema: {
        tags: tags('instances'),
        summary: 'Grow a disk: QMP block_resize while running, qemu-img resize when stopped; never shrinks',
        params: Type.Object({ name: Type.String(), disk: Type.String() }),
        body: ResizeDiskRequestSchema,
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
        querystring: Type.Object({ tail: Type.Optional(Type.Integer({ minimum: 1, description: 'only the last N lines' })) }),
      },
    },
    async (req, reply) => reply.type('text/plain; charset=utf-8').send(await ctx.instances.logs(req.params.name, req.query.tail)),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name/console',
    { websocket: true, schema: { tags: tags('instances'), summary: 'Serial console (WebSocket, binary frames)', params: nameParam } },
    (socket, req: FastifyRequest<{ Params: { name: string } }>) => {
      const name = req.params.name;
      bridgeConsole(
        socket,
        consoleEnds(ctx, req, name, () => ctx.instances.serialSocket(name), { closed: 'console closed', unavailable: 'console unavailable' }),
      );
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
  app.post<{ Params: { name: string }; Body: CreateSnapshotRequestBody }>(
    '/1.0/instances/:name/snapshots',
    {
      schema: {
        tags: tags('snapshots'),
        summary: 'Take a snapshot: disk + memory of a running/paused instance (memory=false: disk only), disk of a stopped one',
        params: nameParam,
        body: CreateSnapshotRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.snapshots.create(req.params.name, req.body)),
  );
  app.get<{ Params: { name: string; snapshot: string } }>(
    '/1.0/instances/:name/snapshots/:snapshot',
    { schema: { tags: tags('snapshots'), summary: 'One snapshot', params: snapshotParams, response: { 200: syncResponse({ $ref: 'Snapshot#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await ctx.services.snapshots.get(req.params.name, req.params.snapshot)),
  );
  app.delete<{ Params: { name: string; snapshot: string } }>(
    '/1.0/instances/:name/snapshots/:snapshot',
    { schema: { tags: tags('snapshots'), summary: 'Delete a snapshot (its space is reclaimed; the others stay valid)', params: snapshotParams, response: asyncReplies } },
    async (req, reply) => async(reply, await ctx.services.snapshots.delete(req.params.name, req.params.snapshot)),
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
    async (req, reply) => async(reply, await ctx.services.snapshots.restore(req.params.name, req.params.snapshot)),
  );

  registerWebRoutes(app, ctx, { auth, sessions, secureCookie: options.secure });
  registerAuthRoutes(app, () => ctx.tokens);

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
        querystring: Type.Object({ timeout: Type.Optional(Type.Number({ minimum: 0, maximum: 3600 })) }),
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
    { schema: { tags: tags('events'), summary: 'Event stream (text/event-stream)', querystring: Type.Object({ type: Type.Optional(Type.String()) }) } },
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
  registerStackRoutes(app, ctx);

  return app;
}
