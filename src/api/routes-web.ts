import { SessionRequestSchema, type SessionRequest } from '../wire/requests.js';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bridgeConsole, consoleEnds } from './console-bridge.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { vmkitError } from '../errors.js';
import { errorBody, sync } from './responses.js';
import { nameParam } from './schemas.js';
import type { ApiContext } from './context.js';
import type { Identity } from '../auth/tokens.js';
import { sendError, type Authenticator } from './auth.js';

/**
 * The web console: the built single-page app (dist-web/, `npm run build:web`) served at
 * /ui/, the graphical console WebSocket (VNC) and the browser sign-in.
 *
 * Browsers cannot put an `Authorization` header on an EventSource or a WebSocket, so a
 * browser signs in once with a token (`POST /1.0/auth/session`) and gets a session cookie
 * (HttpOnly, SameSite=Strict, Path=/1.0, and Secure on an HTTPS listener) that the daemon
 * accepts like that token, with its role; revoking the token ends its sessions. The static
 * files load without a token: they hold no data.
 */

export const SESSION_COOKIE = 'vmkit_session';
const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_WEB_ROOT = join(PACKAGE_ROOT, 'dist-web');

export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** Browser sessions of one listener, in memory: a daemon restart signs browsers out. */
export class WebSessions {
  private readonly sessions = new Map<string, { expires: number; identity: Identity }>();

  create(now = Date.now(), identity: Identity = { name: 'session', role: 'admin', method: 'cookie' }): string {
    for (const [id, s] of this.sessions) if (s.expires <= now) this.sessions.delete(id);
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, { expires: now + SESSION_TTL_MS, identity: { ...identity, method: 'cookie' } });
    return id;
  }

  delete(id: string | undefined): void {
    if (id) this.sessions.delete(id);
  }

  valid(id: string | undefined, now = Date.now()): boolean {
    return this.identity(id, now) !== undefined;
  }

  identity(id: string | undefined, now = Date.now()): Identity | undefined {
    if (!id) return undefined;
    const s = this.sessions.get(id);
    return s !== undefined && s.expires > now ? s.identity : undefined;
  }

  /**
   * True when the request carries a live session cookie. A request that names an Origin
   * (browsers do on WebSockets and cross-origin fetches) must come from this very host, so a
   * page elsewhere cannot ride on the cookie.
   */
  accepts(req: FastifyRequest): boolean {
    return this.identityOf(req) !== undefined;
  }

  /** The identity of the request's live session cookie (see accepts). */
  identityOf(req: FastifyRequest): Identity | undefined {
    const identity = this.identity(cookieValue(req.headers.cookie, SESSION_COOKIE));
    if (!identity) return undefined;
    const origin = req.headers.origin;
    if (origin === undefined) return identity;
    try {
      const o = new URL(origin);
      return o.host === new URL(`${o.protocol}//${req.headers.host ?? ''}`).host ? identity : undefined;
    } catch {
      return undefined;
    }
  }
}

/**
 * Paths anyone may load on a TCP listener: the app's files (`/`, `/ui`, `/ui/…`, served only
 * from the web root) and the sign-in itself. An allow-list, so no spelling of an API path
 * (`//1.0/…`, `/1.0%2F…`) slips through.
 */
export function isPublicPath(method: string, url: string): boolean {
  const path = url.split('?')[0]!;
  if (path === '/1.0/auth/session') return method === 'POST' || method === 'DELETE';
  if (method !== 'GET' && method !== 'HEAD') return false;
  return path === '/' || path === '/ui' || path.startsWith('/ui/');
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/** The file under root a URL path names, or undefined when it would leave root. */
export function resolveStatic(root: string, urlPath: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return undefined;
  const base = resolve(root);
  const file = resolve(base, '.' + (decoded.startsWith('/') ? decoded : `/${decoded}`));
  if (file !== base && !file.startsWith(base + sep)) return undefined;
  return file;
}

export interface WebRouteOptions {
  /** The listener's authentication (not required on the unix socket). */
  auth: Authenticator;
  sessions: WebSessions;
  /** Mark the cookie Secure (HTTPS listeners; browsers drop Secure cookies on plain HTTP). */
  secureCookie?: boolean;
  webRoot?: string;
}

export function registerWebRoutes(app: FastifyInstance, ctx: ApiContext, options: WebRouteOptions): void {
  const webRoot = options.webRoot ?? process.env.VMKIT_WEB_ROOT ?? DEFAULT_WEB_ROOT;
  const { sessions } = options;

  // ---- sign-in for browsers
  app.post<{ Body: SessionRequest }>(
    '/1.0/auth/session',
    {
      schema: {
        tags: ['auth'],
        summary: 'Browser sign-in: trade the API token for a session cookie (HttpOnly, SameSite=Strict)',
        security: [],
        body: SessionRequestSchema,
      },
    },
    async (req, reply) => {
      const { auth } = options;
      if (!auth.required) return sync(reply, { authenticated: true, required: false, name: 'root (unix socket)', role: 'admin' });
      const locked = auth.throttled(req.ip);
      if (locked) return sendError(reply, locked);
      const identity = await auth.identify(req.body.token);
      if (identity === undefined || identity === 'expired') {
        auth.failed(req.ip, `browser sign-in with ${identity === 'expired' ? 'an expired' : 'a wrong'} token`);
        // A pause per wrong guess slows down anyone trying tokens through the browser sign-in.
        await new Promise((r) => setTimeout(r, 300));
        const err = vmkitError('VMKIT_UNAUTHORIZED', identity === 'expired' ? 'This API token has expired.' : 'Wrong or revoked API token.', {
          hint: 'Use a token from "vmkit token create NAME --role ROLE" (or the daemon\'s --token-file).',
        });
        return reply.code(401).send(errorBody(err));
      }
      const id = sessions.create(Date.now(), identity);
      const secure = options.secureCookie ? '; Secure' : '';
      void reply.header('set-cookie', `${SESSION_COOKIE}=${id}; Path=/1.0; HttpOnly; SameSite=Strict${secure}; Max-Age=${SESSION_TTL_MS / 1000}`);
      return sync(reply, { authenticated: true, required: true, name: identity.name, role: identity.role, expiresInSeconds: SESSION_TTL_MS / 1000 });
    },
  );
  app.delete('/1.0/auth/session', { schema: { tags: ['auth'], summary: 'Browser sign-out: forget the session cookie', security: [] } }, async (req, reply) => {
    sessions.delete(cookieValue(req.headers.cookie, SESSION_COOKIE));
    void reply.header('set-cookie', `${SESSION_COOKIE}=; Path=/1.0; HttpOnly; SameSite=Strict${options.secureCookie ? '; Secure' : ''}; Max-Age=0`);
    return sync(reply, { authenticated: false });
  });
  app.get('/1.0/auth/session', { schema: { tags: ['auth'], summary: 'Whether this request is signed in (401 when not)' } }, async (req, reply) =>
    sync(reply, {
      authenticated: true,
      required: options.auth.required,
      method: req.vmkitIdentity?.method ?? 'unix-socket',
      name: req.vmkitIdentity?.name,
      role: req.vmkitIdentity?.role,
    }),
  );

  // ---- graphical console: the instance's VNC socket, bridged to binary WebSocket frames
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name/vnc',
    { websocket: true, schema: { tags: ['instances'], summary: 'Graphical console (WebSocket, binary RFB frames to the VNC server)', params: nameParam } },
    (socket, req: FastifyRequest<{ Params: { name: string } }>) => {
      const name = req.params.name;
      bridgeConsole(
        socket,
        consoleEnds(ctx, req, name, () => ctx.instances.vncSocket(name), { closed: 'display closed', unavailable: 'display unavailable' }),
      );
    },
  );

  // ---- the app's files
  const serve = async (urlPath: string, reply: FastifyReply) => {
    if (!existsSync(join(webRoot, 'index.html'))) {
      return reply.code(404).type('text/plain; charset=utf-8').send('The web console is not built. Run "npm run build:web" (or "npm run setup") and reload.\n');
    }
    const file = resolveStatic(webRoot, urlPath);
    if (!file) return reply.code(404).type('text/plain; charset=utf-8').send('Not found\n');
    const st = await stat(file).catch(() => undefined);
    if (st?.isFile()) {
      const immutable = urlPath.startsWith('/assets/');
      return reply
        .type(CONTENT_TYPES[extname(file)] ?? 'application/octet-stream')
        .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .send(await readFile(file));
    }
    // A missing file with an extension is a 404; any other path is a page of the app.
    if (extname(urlPath)) return reply.code(404).type('text/plain; charset=utf-8').send('Not found\n');
    return (
      reply
        .type(CONTENT_TYPES['.html']!)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .header('x-frame-options', 'DENY')
        // Scripts only from here; xterm.js injects <style> elements, noVNC draws on canvases.
        .header(
          'content-security-policy',
          "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        .send(await readFile(join(webRoot, 'index.html')))
    );
  };
  app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'));
  app.get('/ui', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'));
  app.get<{ Params: { '*': string } }>('/ui/*', { schema: { hide: true } }, async (req, reply) => serve(`/${req.params['*']}`, reply));
}
