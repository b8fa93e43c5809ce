import { SessionRequestSchema, type SessionRequest } from '../wire/requests.js';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { asVmkitError, vmkitError } from '../errors.js';
import { errorBody, sync } from './responses.js';
import { nameParam } from './schemas.js';
import type { ApiContext } from './context.js';

/**
 * The web console: the built single-page app (dist-web/, `npm run build:web`) served at
 * /ui/, the graphical console WebSocket (VNC) and the browser sign-in.
 *
 * Browsers cannot put an `Authorization` header on an EventSource or a WebSocket, so a
 * browser signs in once with the token (`POST /1.0/auth/session`) and gets a session cookie
 * (HttpOnly, SameSite=Strict, Path=/1.0) that the daemon accepts like the bearer token. The
 * static files load without a token: they hold no data.
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

function sameBytes(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Browser sessions of one listener, in memory: a daemon restart signs browsers out. */
export class WebSessions {
  private readonly sessions = new Map<string, number>();

  create(now = Date.now()): string {
    for (const [id, expires] of this.sessions) if (expires <= now) this.sessions.delete(id);
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, now + SESSION_TTL_MS);
    return id;
  }

  delete(id: string | undefined): void {
    if (id) this.sessions.delete(id);
  }

  valid(id: string | undefined, now = Date.now()): boolean {
    if (!id) return false;
    const expires = this.sessions.get(id);
    return expires !== undefined && expires > now;
  }

  /**
   * True when the request carries a live session cookie. A request that names an Origin
   * (browsers do on WebSockets and cross-origin fetches) must come from this very host, so a
   * page elsewhere cannot ride on the cookie.
   */
  accepts(req: FastifyRequest): boolean {
    if (!this.valid(cookieValue(req.headers.cookie, SESSION_COOKIE))) return false;
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    try {
      const o = new URL(origin);
      return o.host === new URL(`${o.protocol}//${req.headers.host ?? ''}`).host;
    } catch {
      return false;
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
  /** The listener's token; undefined on the unix socket (no auth there). */
  token?: string;
  sessions: WebSessions;
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
      if (options.token === undefined) return sync(reply, { authenticated: true, required: false });
      if (!sameBytes(req.body.token, options.token)) {
        // A pause per wrong guess slows down anyone trying tokens through the browser sign-in.
        await new Promise((r) => setTimeout(r, 300));
        const err = vmkitError('VMKIT_UNAUTHORIZED', 'Wrong API token.', { hint: 'Use the token the daemon was started with (--token / VMKIT_TOKEN).' });
        return reply.code(401).send(errorBody(err));
      }
      const id = sessions.create();
      void reply.header('set-cookie', `${SESSION_COOKIE}=${id}; Path=/1.0; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}`);
      return sync(reply, { authenticated: true, required: true, expiresInSeconds: SESSION_TTL_MS / 1000 });
    },
  );
  app.delete('/1.0/auth/session', { schema: { tags: ['auth'], summary: 'Browser sign-out: forget the session cookie', security: [] } }, async (req, reply) => {
    sessions.delete(cookieValue(req.headers.cookie, SESSION_COOKIE));
    void reply.header('set-cookie', `${SESSION_COOKIE}=; Path=/1.0; HttpOnly; SameSite=Strict; Max-Age=0`);
    return sync(reply, { authenticated: false });
  });
  app.get('/1.0/auth/session', { schema: { tags: ['auth'], summary: 'Whether this request is signed in (401 when not)' } }, async (req, reply) =>
    sync(reply, {
      authenticated: true,
      required: options.token !== undefined,
      method: options.token === undefined ? 'unix-socket' : req.headers.authorization ? 'bearer' : 'cookie',
    }),
  );

  // ---- graphical console: the instance's VNC socket, bridged to binary WebSocket frames
  app.get<{ Params: { name: string } }>(
    '/1.0/instances/:name/vnc',
    { websocket: true, schema: { tags: ['instances'], summary: 'Graphical console (WebSocket, binary RFB frames to the VNC server)', params: nameParam } },
    (socket, req: FastifyRequest<{ Params: { name: string } }>) => {
      ctx.instances
        .vncSocket(req.params.name)
        .then((path) => {
          const vnc = net.connect(path);
          vnc.on('data', (d) => socket.send(d));
          vnc.on('close', () => socket.close(1000, 'display closed'));
          vnc.on('error', () => socket.close(1011, 'display unavailable'));
          socket.on('message', (d: Buffer) => vnc.write(d));
          socket.on('close', () => vnc.destroy());
        })
        .catch((err: unknown) => {
          const e = asVmkitError(err);
          socket.send(JSON.stringify(errorBody(e)));
          socket.close(1008, e.code);
        });
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
