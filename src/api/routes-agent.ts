import type { FastifyInstance } from 'fastify';
import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { vmkitError } from '../errors.js';
import type { ApiContext } from './context.js';
import { sync } from './responses.js';
import { errorResponse, nameParam, syncResponse } from './schemas.js';
import { ExecRequestSchema, type ExecRequestBody } from '../wire/requests.js';
import { ExecResultSchema } from '../wire/instance.js';

const fileQuery = Type.Object(
  {
    path: Type.String({ minLength: 1, maxLength: 4096, pattern: '^/', description: 'absolute path in the guest' }),
  },
  { additionalProperties: false },
);
const pushQuery = Type.Object(
  {
    path: Type.String({ minLength: 1, maxLength: 4096, pattern: '^/', description: 'absolute path in the guest' }),
    overwrite: Type.Optional(Type.Boolean({ description: 'replace an existing file (default: refuse)' })),
    mode: Type.Optional(Type.String({ pattern: '^0?[0-7]{3,4}$', description: 'octal permissions set after writing (chmod through the agent)' })),
  },
  { additionalProperties: false },
);

/**
 * The guest agent's verbs (src/instances/agent.ts): exec and file transfer. Remote callers
 * send and receive bytes only — no host path is ever named. Registered by server.ts.
 */
export function registerAgentRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const tags = ['guest agent'];
  app.post<{ Params: { name: string }; Body: ExecRequestBody }>(
    '/1.0/instances/:name/exec',
    {
      schema: {
        tags,
        summary: 'Run a command in the guest through its agent (guest-exec); output is returned when it ends',
        params: nameParam,
        body: ExecRequestSchema,
        response: { 200: syncResponse(ExecResultSchema), '4xx': errorResponse, '5xx': errorResponse },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const r = await ctx.instances.agent.exec(req.params.name, {
        command: b.command,
        env: b.env,
        cwd: b.cwd,
        timeoutS: b.timeout,
        input: b.stdin ? Buffer.from(b.stdin, 'base64') : undefined,
      });
      return sync(reply, { ...r, stdout: r.stdout.toString('base64'), stderr: r.stderr.toString('base64') });
    },
  );
  app.get<{ Params: { name: string }; Querystring: { path: string } }>(
    '/1.0/instances/:name/files',
    {
      schema: {
        tags,
        summary: 'Read a file of the guest (guest-file-read, streamed as application/octet-stream)',
        params: nameParam,
        querystring: fileQuery,
      },
    },
    async (req, reply) => {
      const chunks = await ctx.instances.agent.pull(req.params.name, req.query.path);
      return reply.type('application/octet-stream').send(Readable.from(chunks));
    },
  );
  // Scoped: only this route takes a raw body, passed on as a stream.
  void app.register(async (scope) => {
    scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    scope.put<{ Params: { name: string }; Querystring: { path: string; overwrite?: boolean; mode?: string } }>(
      '/1.0/instances/:name/files',
      {
        schema: {
          tags,
          summary: 'Write a file in the guest from the raw request body (application/octet-stream; guest-file-write in 64 KiB chunks)',
          params: nameParam,
          querystring: pushQuery,
          response: { 200: syncResponse(Type.Object({ bytes: Type.Integer(), path: Type.String() })), '4xx': errorResponse, '5xx': errorResponse },
        },
      },
      async (req, reply) => {
        const body = req.body;
        if (!(body instanceof Readable)) throw vmkitError('VMKIT_BAD_REQUEST', 'The file must be the request body, as application/octet-stream.');
        const r = await ctx.instances.agent.push(req.params.name, req.query.path, body as AsyncIterable<Buffer>, {
          overwrite: req.query.overwrite,
          mode: req.query.mode !== undefined ? parseInt(req.query.mode, 8) : undefined,
        });
        return sync(reply, r);
      },
    );
  });
}
