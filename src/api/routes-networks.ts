import type { FastifyInstance } from 'fastify';
import { vmkitError } from '../errors.js';
import type { NetworkManager } from '../network/manager.js';
import type { CreateNetworkRequest } from '../network/network.js';
import type { ApiContext } from './context.js';
import { checkForward } from '../network/check.js';
import type { NicRequest } from '../instances/manager.js';
import { sync } from './responses.js';
import { errorResponse, nameParam, networkSchema, syncResponse } from './schemas.js';

export const createNetworkSchema = {
  type: 'object',
  required: ['name', 'mode'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    mode: { type: 'string', enum: ['nat', 'host-only', 'internal', 'bridged'] },
    subnet: { type: 'string' },
    dhcpRange: { type: 'string' },
    dhcp: { type: 'boolean' },
    dns: { type: 'boolean' },
    uplink: { type: 'string' },
  },
} as const;

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
  app.post<{ Body: CreateNetworkRequest }>(
    '/1.0/networks',
    {
      schema: {
        tags,
        summary: 'Create a network (bridge, DHCP/DNS, rules)',
        body: createNetworkSchema,
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
        params: { type: 'object', properties: { name: { type: 'string' }, port: { type: 'integer' } }, required: ['name', 'port'] },
        querystring: { type: 'object', properties: { proto: { type: 'string', enum: ['tcp', 'udp'] } } },
      },
    },
    async (req, reply) => sync(reply, await checkForward(await ctx.instances.get(req.params.name), req.params.port, req.query.proto)),
  );
  app.post<{ Params: { name: string }; Body: NicRequest }>(
    '/1.0/instances/:name/nics',
    {
      schema: {
        tags: ['nics'],
        summary: 'Add a NIC (hot-plugged when running)',
        params: nameParam,
        body: {
          type: 'object',
          required: ['network'],
          additionalProperties: false,
          properties: { network: { type: 'string' }, model: { type: 'string', enum: ['virtio-net', 'e1000', 'rtl8139'] }, ipv4: { type: 'string' } },
        },
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
        params: { type: 'object', properties: { name: { type: 'string' }, nic: { type: 'string' } }, required: ['name', 'nic'] },
        querystring: { type: 'object', properties: { force: { type: 'boolean', description: 'also remove the port forwards to this NIC' } } },
      },
    },
    async (req, reply) => sync(reply, await ctx.instances.removeNic(req.params.name, req.params.nic, { force: req.query.force })),
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
