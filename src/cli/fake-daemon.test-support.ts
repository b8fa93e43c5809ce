import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

/** What a fake route answers: JSON (an API envelope), plain text, or raw SSE lines. */
export type FakeAnswer = { status?: number; json?: unknown; text?: string; sse?: string[] };

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

/**
 * A tiny stand-in for vmkitd used by the CLI tests: routes are `"METHOD /path?query"`
 * keys (or a function for dynamic answers); every request is recorded. Not a test file
 * itself (its name does not match node --test's patterns).
 */
export class FakeDaemon {
  readonly dir = mkdtempSync(join(tmpdir(), 'vmkit-cli-'));
  readonly seen: SeenRequest[] = [];
  readonly routes = new Map<string, FakeAnswer | ((req: SeenRequest) => FakeAnswer)>();
  /** Called for console WebSocket connections (path /1.0/instances/NAME/console). */
  onConsole?: (ws: WebSocket, url: string) => void;
  private readonly server: http.Server;
  private readonly wss = new WebSocketServer({ noServer: true });

  constructor() {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const seen: SeenRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body: raw ? JSON.parse(raw) : undefined };
        this.seen.push(seen);
        const route = this.routes.get(`${seen.method} ${seen.url}`);
        const answer: FakeAnswer =
          typeof route === 'function'
            ? route(seen)
            : (route ?? {
                status: 404,
                json: { type: 'error', status_code: 404, error: { code: 'VMKIT_NOT_FOUND', message: `No route ${seen.method} ${seen.url}` } },
              });
        if (answer.sse) {
          res.writeHead(answer.status ?? 200, { 'content-type': 'text/event-stream' });
          for (const line of answer.sse) res.write(line);
          res.end();
        } else if (answer.text !== undefined) {
          res.writeHead(answer.status ?? 200, { 'content-type': 'text/plain' });
          res.end(answer.text);
        } else {
          res.writeHead(answer.status ?? 200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(answer.json));
        }
      });
    });
    this.server.on('upgrade', (req, socket, head) => {
      if (!this.onConsole) {
        socket.end(
          'HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\n\r\n' +
            JSON.stringify({ type: 'error', status_code: 409, error: { code: 'VMKIT_INVALID_STATE', message: 'not running', hint: 'start it' } }),
        );
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.onConsole?.(ws, req.url ?? ''));
    });
  }

  get socketPath(): string {
    return join(this.dir, 'vmkit.sock');
  }

  /** Listens on `<dir>/vmkit.sock`, or on 127.0.0.1:random when `tcp`; returns the URL for TCP. */
  async listen(tcp = false): Promise<string> {
    await new Promise<void>((resolve) => (tcp ? this.server.listen(0, '127.0.0.1', resolve) : this.server.listen(this.socketPath, resolve)));
    return tcp ? `http://127.0.0.1:${(this.server.address() as AddressInfo).port}` : this.socketPath;
  }

  /** A sync answer. */
  sync(key: string, metadata: unknown): void {
    this.routes.set(key, { json: { type: 'sync', status_code: 200, metadata } });
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs `fn` against a fake daemon listening for the call, closed afterwards whatever happens. */
export async function withDaemon(fn: (d: FakeDaemon) => Promise<void>): Promise<void> {
  const d = new FakeDaemon();
  await d.listen();
  try {
    await fn(d);
  } finally {
    await d.close();
  }
}
