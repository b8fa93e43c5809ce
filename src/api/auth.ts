import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { vmkitError, type VmkitError } from '../errors.js';
import { sameSecret, type Identity, type TokenManager } from '../auth/tokens.js';
import { AuthThrottle } from '../auth/throttle.js';
import { roleAtLeast, CreateTokenSchema, type CreateToken, type Role } from '../wire/auth.js';
import { errorBody, sync } from './responses.js';
import { ruleFor } from './roles.js';
import { nameParam } from './schemas.js';

/**
 * Authentication and authorisation of one listener.
 *
 * The unix socket (root, file permissions) is admin without a token. A TCP listener takes a
 * bearer token — the daemon's bootstrap token (--token-file), the cluster's token (peers),
 * or a stored scoped token (`vmkit token create`) — or a browser session cookie made from one
 * of those (routes-web.ts). Then ROUTE_ROLES (roles.ts) says whether its role may call the
 * route: 403 VMKIT_FORBIDDEN names the role needed.
 *
 * Wrong tokens are counted per client address (AuthThrottle): past 10 a minute the address
 * gets 429 with Retry-After, with a lockout that doubles each time. Each failure is logged.
 */
export interface AuthOptions {
  /** Require authentication (TCP listeners). False: everything is admin (the unix socket). */
  required: boolean;
  /** Admin tokens given to the daemon (the bootstrap token, the cluster token). */
  adminTokens: () => Array<{ name: string; token: string | undefined }>;
  /** The stored scoped tokens (read when used). */
  tokens?: () => TokenManager | undefined;
  throttle?: AuthThrottle;
  log?: (line: string) => void;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who sent the request (set by the auth hook; the unix socket is admin). */
    vmkitIdentity?: Identity;
  }
}

export const LOCAL_IDENTITY: Identity = { name: 'root (unix socket)', role: 'admin', method: 'unix-socket' };

export class Authenticator {
  readonly throttle: AuthThrottle;

  constructor(readonly options: AuthOptions) {
    this.throttle = options.throttle ?? new AuthThrottle();
  }

  get required(): boolean {
    return this.options.required;
  }

  /** The identity of a presented token; undefined when wrong, `expired` when it expired. */
  async identify(token: string): Promise<Identity | 'expired' | undefined> {
    for (const t of this.options.adminTokens()) {
      if (t.token && sameSecret(token, t.token)) return { name: t.name, role: 'admin', method: 'bearer' };
    }
    return this.options.tokens?.()?.authenticate(token);
  }

  /** Whether an identity made earlier (a session's) still holds: its token not revoked nor expired. */
  async stillValid(identity: Identity): Promise<boolean> {
    if (identity.tokenHash === undefined) return true;
    return (await this.options.tokens?.()?.stillValid(identity.tokenHash)) ?? false;
  }

  /** 429 when the address is locked out, else undefined. */
  throttled(address: string): VmkitError | undefined {
    const wait = this.throttle.retryAfter(address);
    if (wait === 0) return undefined;
    return vmkitError('VMKIT_TOO_MANY_REQUESTS', `Too many failed authentications from ${address}; try again in ${wait} s.`, {
      hint: 'Check the token (vmkit token list shows which exist); the lockout doubles each time it is hit.',
      details: { retryAfter: wait },
    });
  }

  /** Counts and logs a failed authentication. */
  failed(address: string, why: string): void {
    const locked = this.throttle.fail(address);
    this.options.log?.(`auth: failed authentication from ${address}: ${why}`);
    if (locked) this.options.log?.(`auth: ${address} locked out for ${locked} s after ${this.throttle.limit} failures`);
  }
}

export function sendError(reply: FastifyReply, err: VmkitError): FastifyReply {
  const wait = err.details?.retryAfter;
  if (typeof wait === 'number') void reply.header('retry-after', String(wait));
  return reply.code(err.status).send(errorBody(err));
}

function bearerOf(req: FastifyRequest): string | undefined {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  return m?.[1];
}

export function forbidden(identity: Identity, needed: Role, method: string, url: string): VmkitError {
  return vmkitError('VMKIT_FORBIDDEN', `${method} ${url} needs the ${needed} role; "${identity.name}" is ${identity.role}.`, {
    hint: `Use a token with the ${needed} role (an admin makes one: vmkit token create NAME --role ${needed}).`,
    details: { needed, role: identity.role },
  });
}

/**
 * The onRequest hook: who is calling (or 401/429), then whether the route allows its role
 * (or 403). `session` resolves a browser's session cookie (routes-web.ts).
 */
export function installAuth(
  app: FastifyInstance,
  auth: Authenticator,
  web: { session: (req: FastifyRequest) => Promise<Identity | undefined>; isPublic: (method: string, url: string) => boolean },
): void {
  app.addHook('onRequest', async (req, reply) => {
    const routeUrl = req.routeOptions.url;
    const rule = routeUrl === undefined ? undefined : ruleFor(req.method, routeUrl);
    if (!auth.required) {
      req.vmkitIdentity = LOCAL_IDENTITY;
      return;
    }
    // Public in the table and in the web console's own allow-list of spellings.
    if (rule === 'public' && web.isPublic(req.method, req.url)) return;
    const address = req.ip;
    const locked = auth.throttled(address);
    if (locked) return sendError(reply, locked);
    let identity: Identity | undefined;
    const bearer = bearerOf(req);
    if (bearer !== undefined) {
      const found = await auth.identify(bearer);
      if (found === undefined || found === 'expired') {
        auth.failed(address, found === 'expired' ? 'expired token' : 'unknown token');
        const err =
          found === 'expired'
            ? vmkitError('VMKIT_UNAUTHORIZED', 'This API token has expired.', { hint: 'Ask an admin for a new one: vmkit token create NAME --role ROLE --expires 30d' })
            : vmkitError('VMKIT_UNAUTHORIZED', 'Wrong or revoked API token.', { hint: 'Check the token (vmkit remote add … --token-file FILE, or VMKIT_TOKEN).' });
        return sendError(reply, err);
      }
      identity = found;
    } else {
      identity = await web.session(req);
    }
    if (!identity) {
      return sendError(
        reply,
        vmkitError('VMKIT_UNAUTHORIZED', 'Missing API token.', {
          hint: 'Send "Authorization: Bearer <token>" (vmkit --remote NAME, with a token from "vmkit token create"); a browser signs in at /ui/.',
        }),
      );
    }
    req.vmkitIdentity = identity;
    // No rule: an unknown path (404 after this) needs only a valid token; a route missing from
    // the table needs admin (roles.test.ts fails on it anyway).
    const needed: Role = rule === undefined ? (routeUrl === undefined ? 'viewer' : 'admin') : rule === 'public' ? 'viewer' : rule;
    if (!roleAtLeast(identity.role, needed)) return sendError(reply, forbidden(identity, needed, req.method, routeUrl ?? req.url));
  });
}

/** Who am I, and the token routes (admin only, per roles.ts). */
export function registerAuthRoutes(app: FastifyInstance, tokenManager: () => TokenManager | undefined): void {
  const noTokens = (): never => {
    throw vmkitError('VMKIT_INVALID_STATE', 'This daemon keeps no scoped tokens.', {
      hint: 'Tokens are made on a daemon (vmkit token create) through its socket or an admin token.',
    });
  };
  app.get('/1.0/auth/whoami', { schema: { tags: ['auth'], summary: 'Who this request is authenticated as: token name and role' } }, async (req, reply) => {
    const id = req.vmkitIdentity ?? LOCAL_IDENTITY;
    return sync(reply, { name: id.name, role: id.role, method: id.method, ...(id.expiresAt ? { expiresAt: id.expiresAt } : {}) });
  });
  app.get('/1.0/tokens', { schema: { tags: ['auth'], summary: 'List API tokens: name, role, created, expires, last used (never the secret)' } }, async (_req, reply) => {
    return sync(reply, await (tokenManager() ?? noTokens()).list());
  });
  app.post<{ Body: CreateToken }>(
    '/1.0/tokens',
    { schema: { tags: ['auth'], summary: 'Create a token with a role (viewer, operator, admin); the answer shows the secret once', body: CreateTokenSchema } },
    async (req, reply) => {
      return sync(reply, await (tokenManager() ?? noTokens()).create(req.body), 201);
    },
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/tokens/:name',
    {
      schema: {
        tags: ['auth'],
        summary: 'Revoke a token: it (and browser sessions made with it) stops working at once',
        params: nameParam,
      },
    },
    async (req, reply) => {
      await (tokenManager() ?? noTokens()).revoke(req.params.name);
      return sync(reply, { revoked: req.params.name });
    },
  );
}
