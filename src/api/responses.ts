import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { Operation } from '../domain/types.js';
import type { VmkitError } from '../errors.js';
import type { RelayedAnswer } from '../cluster/forwarding.js';

/** The three answer shapes of the API (Incus-style): sync, async (an operation), error. */
export function sync(reply: FastifyReply, metadata: unknown, status = 200): FastifyReply {
  return reply.code(status).send({ type: 'sync', status_code: status, metadata });
}

export function async(reply: FastifyReply, op: Operation): FastifyReply {
  return reply
    .code(202)
    .header('Location', `/1.0/operations/${op.id}`)
    .send({
      type: 'async',
      status_code: 202,
      operation: `/1.0/operations/${op.id}`,
      metadata: op,
    });
}

export function errorBody(err: VmkitError): { type: 'error'; status_code: number; error: ReturnType<VmkitError['toJSON']> } {
  return { type: 'error', status_code: err.status, error: err.toJSON() };
}

/** Another host's answer, sent on as it came (forwarding in a cluster). */
export function relayed(reply: FastifyReply, answer: RelayedAnswer): FastifyReply {
  const body = Buffer.isBuffer(answer.body) ? answer.body : Readable.from(answer.body);
  return reply.code(answer.status).header('content-type', answer.contentType).header('x-vmkit-host', answer.host).send(body);
}
