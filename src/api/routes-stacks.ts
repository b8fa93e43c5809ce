import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { vmkitError } from '../errors.js';
import type { StackService } from '../stacks/service.js';
import { ApplyStackRequestSchema, type ApplyStackRequest } from '../wire/requests.js';
import { StackPlanSchema, StackViewSchema } from '../wire/stack.js';
import type { ApiContext } from './context.js';
import { sync } from './responses.js';
import { errorResponse, nameParam, syncResponse } from './schemas.js';

function stacksOf(ctx: ApiContext): StackService {
  if (!ctx.stacks) throw vmkitError('VMKIT_NOT_FOUND', 'This daemon has no stack support.', { hint: 'Stacks need vmkit networks.' });
  return ctx.stacks;
}

/** /1.0/stacks: declared services with replicas (src/stacks/, doc/stacks.md). */
export function registerStackRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const tags = ['stacks'];
  const plan = { 200: syncResponse(StackPlanSchema), '4xx': errorResponse, '5xx': errorResponse };
  app.get(
    '/1.0/stacks',
    { schema: { tags, summary: 'List stacks: services, replicas, health, rolls', response: { 200: syncResponse(Type.Array(StackViewSchema)) } } },
    async (_req, reply) => sync(reply, await stacksOf(ctx).list()),
  );
  app.post<{ Body: ApplyStackRequest }>(
    '/1.0/stacks',
    { schema: { tags, summary: 'Apply a stack file (idempotent: the same file again changes nothing)', body: ApplyStackRequestSchema, response: plan } },
    async (req, reply) => sync(reply, await stacksOf(ctx).apply(req.body.file)),
  );
  app.post<{ Body: ApplyStackRequest }>(
    '/1.0/stacks/diff',
    { schema: { tags, summary: 'What applying a stack file would change (nothing is changed)', body: ApplyStackRequestSchema, response: plan } },
    async (req, reply) => sync(reply, await stacksOf(ctx).diff(req.body.file)),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/stacks/:name',
    { schema: { tags, summary: 'One stack', params: nameParam, response: { 200: syncResponse(StackViewSchema), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await stacksOf(ctx).get(req.params.name)),
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/stacks/:name',
    { schema: { tags, summary: 'Delete a stack: its service addresses, replicas and the networks it made', params: nameParam, response: plan } },
    async (req, reply) => sync(reply, await stacksOf(ctx).delete(req.params.name)),
  );
  app.post<{ Params: { name: string } }>(
    '/1.0/stacks/:name/rollback',
    { schema: { tags, summary: 'Return a stack to its spec before the last apply', params: nameParam, response: plan } },
    async (req, reply) => sync(reply, await stacksOf(ctx).rollback(req.params.name)),
  );
}
