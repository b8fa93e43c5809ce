import type { FastifyInstance } from 'fastify';
import { vmkitError } from '../errors.js';
import type { NetworkManager } from '../network/manager.js';
import type { ApiContext } from './context.js';
import { checkForward } from '../network/check.js';
import { Type } from '@sinclair/typebox';
import { sync } from './responses.js';
import { errorResponse, nameParam, networkSchema, portParams, protoField, syncResponse } from './schemas.js';
import {
  AddNicRequestSchema,
  CreateNetworkRequestSchema,
  HostAccessRequestSchema,
  type AddNicRequest,
  type CreateNetworkRequestBody,
  type HostAccessRequest,
} from '../wire/requests.js';
import { HostAccessSchema } from '../wire/network.js';

function networksOf(ctx: ApiContext): NetworkManager {
  if (!ctx.networks) {
    throw vmkitError('VMKIT_NOT_FOUND', 'This daemon has no network support.', { hint: 'Only user-mode NICs are available.' });
  }
  return ctx.networks;
}

/** /1.0/networks: virtual networks (bridge + dnsmasq + nftables per network). */
export function registerNetworkRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const tags = ['networks'];
  app.addSchema(networkSchema);
  app.get('/1.0/networks', { schema: { tags, summary: 'List networks', response: { 200: syncResponse({ type: 'array', items: { $ref: 'Network#' } }) } } }, async (_req, reply) =>
    sync(reply, await networksOf(ctx).list()),
  );
  app.post<{ Body: CreateNetworkRequestBody }>(
    '/1.0/networks',
    {
      schema: {
        tags,
        summary: 'Create a network (bridge, DHCP/DNS, rules)',
        body: CreateNetworkRequestSchema,
        response: { 201: syncResponse({ $ref: 'Network#' }), '4xx': errorResponse, '5xx': errorResponse },
      },
    },
    async (req, reply) => {
      const n = networksOf(ctx);
      await n.create(req.body);
      return sync(reply, await n.get(req.body.name), 201);
    },
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/networks/:name',
    { schema: { tags, summary: 'One network: leases, attached NICs, forwards', params: nameParam, response: { 200: syncResponse({ $ref: 'Network#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await networksOf(ctx).get(req.params.name)),
  );
  app.post<{ Params: { name: string; port: number }; Querystring: { proto?: 'tcp' | 'udp' } }>(
    '/1.0/instances/:name/forwards/:port/check',
    {
      schema: {
        tags: ['forwards'],
        summary: 'Reachability check of a forward: host → forward → guest port',
        params: portParams,
        querystring: Type.Object({ proto: Type.Optional(protoField) }),
      },
    },
    async (req, reply) => sync(reply, await checkForward(await ctx.instances.get(req.params.name), req.params.port, req.query.proto)),
  );
  app.post<{ Params: { name: string }; Body: AddNicRequest }>(
    '/1.0/instances/:name/nics',
    {
      schema: {
        tags: ['nics'],
        summary: 'Add a NIC (hot-plugged when running)',
        params: nameParam,
        body: AddNicRequestSchema,
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.addNic(req.params.name, req.body), 201),
  );
  app.delete<{ Params: { name: string; nic: string }; Querystring: { force?: boolean } }>(
    '/1.0/instances/:name/nics/:nic',
    {
      schema: {
        tags: ['nics'],
        summary: 'Remove a NIC (hot-unplugged when running: device_del, DEVICE_DELETED, netdev_del); refused while port forwards use it unless force=true',
        params: Type.Object({ name: Type.String(), nic: Type.String() }),
        querystring: Type.Object({ force: Type.Optional(Type.Boolean({ description: 'also remove the port forwards to this NIC' })) }),
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.removeNic(req.params.name, req.params.nic, { force: req.query.force })),
  );
  // Host services guests may reach (besides DHCP/DNS); "user" = QEMU user-mode NICs.
  const hostAccess = syncResponse(HostAccessSchema);
  app.get<{ Params: { name: string } }>(
    '/1.0/networks/:name/host-access',
    {
      schema: {
        tags,
        summary: 'The host services guests on this network (or "user") may reach besides DHCP/DNS',
        params: nameParam,
        response: { 200: hostAccess, '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await networksOf(ctx).hostAccess(req.params.name)),
  );
  app.patch<{ Params: { name: string }; Body: HostAccessRequest }>(
    '/1.0/networks/:name/host-access',
    {
      schema: {
        tags,
        summary: 'Allow or deny guests a host service (tcp/PORT, udp/PORT, tcp/N-M); applied at once',
        params: nameParam,
        body: HostAccessRequestSchema,
        response: { 200: hostAccess, '4xx': errorResponse, '5xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await networksOf(ctx).setHostAccess(req.params.name, req.body.allow, req.body.deny)),
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/networks/:name',
    { schema: { tags, summary: 'Delete a network (refused while NICs use it)', params: nameParam, response: { '4xx': errorResponse, '5xx': errorResponse } } },
    async (req, reply) => {
      await networksOf(ctx).delete(req.params.name);
      return sync(reply, { deleted: req.params.name });
    },
  );
}
