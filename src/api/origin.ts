import type { FastifyInstance, FastifyRequest } from 'fastify';
import { vmkitError } from '../errors.js';

/**
 * Where a request came from: `local` = the daemon's unix socket (root on this host, or
 * whoever may open the socket), `remote` = a TCP listener (the API's --listen, the cluster
 * peer listener). Set once per request by buildApi() from the listener it serves; route
 * handlers read it with `originOf(req)`. Only a local caller may name a path on the daemon
 * host (import from / export to a file); a remote caller uploads and downloads instead.
 */
export type RequestOrigin = 'local' | 'remote';

declare module 'fastify' {
  interface FastifyRequest {
    vmkitOrigin: RequestOrigin;
  }
}

export function registerOrigin(app: FastifyInstance, origin: RequestOrigin): void {
  // The default is the safe one: a request the hook has not seen counts as remote.
  app.decorateRequest('vmkitOrigin', 'remote');
  app.addHook('onRequest', async (req) => {
    req.vmkitOrigin = origin;
  });
}

export function originOf(req: FastifyRequest): RequestOrigin {
  return req.vmkitOrigin === 'local' ? 'local' : 'remote';
}

/** Refuses a remote caller: `what` is the refused action, `instead` says what to do. */
export function requireLocal(req: FastifyRequest, what: string, instead: string): void {
  if (originOf(req) === 'local') return;
  throw vmkitError('VMKIT_FORBIDDEN', `${what} is only for callers on the daemon's host (its unix socket); this request came over TCP.`, { hint: instead });
}
