import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat, copyFile, constants } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { vmkitError } from '../errors.js';
import type { Image } from '../domain/types.js';
import type { ImageStore } from './image-store.js';
import { maxImageBytes } from './safety.js';
import { INDEX_FORMAT, imageFiles, validateRepoImage, type RepoFile, type RepoImage, type RepoIndex, type ServeStatus } from './repository-index.js';

/**
 * `vmkit repo serve`: this daemon's images as a repository (`/index.json` + `/blobs/<sha256>`,
 * Range honoured); with a token it accepts pushes (blobs checked against their sha256 and the
 * size cap, then the image registered through `finishImage`, which inspects it like an import).
 */
export class RepoServer {
  private server?: http.Server;
  private serveToken?: string;
  private servePrivate = false;
  private maxBlobBytes = maxImageBytes();
  private readonly digests = new Map<string, { key: string; sha256: string }>();

  constructor(
    private readonly images: ImageStore,
    private readonly dataDir: string,
    private readonly finishImage: (entry: RepoImage, tmp: string, origin: string) => Promise<Image>,
  ) {}

  private get uploads(): string {
    return join(this.dataDir, 'uploads');
  }

  async sha256Of(path: string): Promise<string> {
    const st = await stat(path);
    const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
    const cached = this.digests.get(path);
    if (cached?.key === key) return cached.sha256;
    const h = createHash('sha256');
    for await (const c of createReadStream(path, { highWaterMark: 1024 * 1024 })) h.update(c as Buffer);
    const sha256 = h.digest('hex');
    this.digests.set(path, { key, sha256 });
    return sha256;
  }

  async index(): Promise<{ index: RepoIndex; blobs: Map<string, string> }> {
    const blobs = new Map<string, string>();
    const images: RepoImage[] = [];
    for (const image of await this.images.list()) {
      const files: RepoFile[] = [];
      for (const f of imageFiles(image)) {
        const path = this.images.file(image, f);
        const sha256 = await this.sha256Of(path);
        files.push({ file: f, size: (await stat(path)).size, sha256 });
        blobs.set(sha256, path);
      }
      const { source: _s, fidelity: _f, origin: _o, checksum: _c, ...meta } = image;
      images.push({ ...meta, files });
    }
    return { index: { format: INDEX_FORMAT, images }, blobs };
  }

  status(): ServeStatus {
    const addr = this.server?.address() as AddressInfo | null | undefined;
    if (!this.server || !addr) return { serving: false };
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return { serving: true, url: `http://${host}:${addr.port}`, writable: !!this.serveToken, private: this.servePrivate, maxBlobBytes: this.maxBlobBytes };
  }

  async serve(listen: string, token?: string, opts: { private?: boolean; maxBlobBytes?: number } = {}): Promise<ServeStatus> {
    const m = /^(.*):(\d+)$/.exec(listen);
    if (!m || !m[1] || Number(m[2]) > 65535) throw vmkitError('VMKIT_INVALID_ARGUMENT', `--listen "${listen}" is not ADDR:PORT.`, { hint: 'Example: --listen 127.0.0.1:8444' });
    if (opts.private && !token)
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A private repository needs a token (pulls present it).', { hint: 'vmkit repo serve --private --push-token TOKEN' });
    await this.stop();
    await rm(this.uploads, { recursive: true, force: true });
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: (err as Error).message }));
        } else res.destroy();
      });
    });
    // A push announces its size first (Expect: 100-continue): refused before a byte is sent.
    server.on('checkContinue', (req, res) => {
      const declared = Number(req.headers['content-length'] ?? NaN);
      if (req.method === 'PUT' && /^\/blobs\//.test(req.url ?? '') && (!this.authorized(req) || (Number.isFinite(declared) && declared > this.maxBlobBytes))) {
        const status = !this.authorized(req) ? (this.serveToken ? 401 : 405) : 413;
        res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify({ error: status === 413 ? `blob larger than ${this.maxBlobBytes} bytes` : 'token required' }));
        return;
      }
      res.writeContinue();
      server.emit('request', req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' ? vmkitError('VMKIT_PORT_IN_USE', `${listen} is already in use.`, { hint: 'Choose another --listen port.' }) : err),
      );
      server.listen(Number(m[2]), m[1]!.replace(/^\[|\]$/g, ''), () => resolve());
    });
    this.server = server;
    this.serveToken = token;
    this.servePrivate = !!opts.private;
    this.maxBlobBytes = opts.maxBlobBytes ?? maxImageBytes();
    return this.status();
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    const closed = new Promise<void>((r) => s.close(() => r()));
    // close() waits for every open connection: a client that stalls mid-transfer would hold it forever.
    s.closeAllConnections();
    await closed;
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (!this.serveToken) return false;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const a = Buffer.from(m[1]!);
    const b = Buffer.from(this.serveToken);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    // A private repository answers only token holders, pulls included.
    if (this.servePrivate && !this.authorized(req)) {
      req.resume();
      return json(401, { error: 'token required' });
    }
    if (req.method === 'GET' && url.pathname === '/index.json') return json(200, (await this.index()).index);
    const blob = /^\/blobs\/([0-9a-f]{64})$/.exec(url.pathname);
    if (blob && (req.method === 'GET' || req.method === 'HEAD')) {
      const path = (await this.index()).blobs.get(blob[1]!);
      if (!path) return json(404, { error: 'no such blob' });
      const size = (await stat(path)).size;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = range ? Number(range[1]) : 0;
      if (start > size) return json(416, { error: 'range not satisfiable' });
      res.writeHead(range ? 206 : 200, {
        'content-type': 'application/octet-stream',
        'content-length': String(size - start),
        'accept-ranges': 'bytes',
        ...(range ? { 'content-range': `bytes ${start}-${size - 1}/${size}` } : {}),
      });
      if (req.method === 'HEAD' || start === size) return void res.end();
      await pipeline(createReadStream(path, { start }), res);
      return;
    }
    // Pushes: only with the serve token.
    if (req.method === 'PUT' && (blob || url.pathname.startsWith('/images/'))) {
      if (!this.authorized(req)) {
        req.resume();
        return json(this.serveToken ? 401 : 405, { error: this.serveToken ? 'token required' : 'this repository is read-only' });
      }
      if (blob) {
        const cap = this.maxBlobBytes;
        const declared = Number(req.headers['content-length'] ?? NaN);
        if (Number.isFinite(declared) && declared > cap) {
          res.setHeader('connection', 'close');
          json(413, { error: `blob larger than ${cap} bytes` });
          req.destroy();
          return;
        }
        await mkdir(this.uploads, { recursive: true });
        const tmp = join(this.uploads, `${blob[1]}.${randomBytes(4).toString('hex')}`);
        const h = createHash('sha256');
        let n = 0;
        try {
          await pipeline(
            req,
            new Transform({
              transform: (c: Buffer, _e, cb) => {
                n += c.length;
                if (n > cap) return cb(new Error('too large'));
                h.update(c);
                cb(null, c);
              },
            }),
            createWriteStream(tmp, { flags: 'wx' }),
          );
        } catch (err) {
          await rm(tmp, { force: true });
          if (n > cap) {
            res.setHeader('connection', 'close');
            json(413, { error: `blob larger than ${cap} bytes` });
            req.destroy();
            return;
          }
          throw err;
        }
        if (h.digest('hex') !== blob[1]) {
          await rm(tmp, { force: true });
          return json(400, { error: 'sha256 mismatch' });
        }
        await rename(tmp, join(this.uploads, blob[1]!));
        return json(201, { stored: blob[1] });
      }
      const name = decodeURIComponent(url.pathname.slice('/images/'.length));
      let body = '';
      for await (const c of req) {
        body += (c as Buffer).toString('utf8');
        if (body.length > 1024 * 1024) return json(413, { error: 'too large' });
      }
      const entry = JSON.parse(body) as RepoImage;
      if (entry.name !== name) return json(400, { error: 'name mismatch' });
      try {
        validateRepoImage(entry);
        await this.images.assertFree(name);
      } catch (err) {
        return json(409, { error: (err as Error).message });
      }
      const tmp = await this.images.tempDir(`push-${name}`);
      try {
        for (const f of entry.files) {
          const src = join(this.uploads, f.sha256);
          if (
            !(await stat(src).then(
              (s) => s.size === f.size,
              () => false,
            ))
          ) {
            await rm(tmp, { recursive: true, force: true });
            return json(400, { error: `blob ${f.sha256} (${f.file}) was not uploaded` });
          }
          await copyFile(src, join(tmp, f.file), constants.COPYFILE_FICLONE);
        }
        const image = await this.finishImage(entry, tmp, `push from ${req.socket.remoteAddress ?? '?'}`);
        return json(201, { image: image.name });
      } catch (err) {
        await rm(tmp, { recursive: true, force: true });
        return json(400, { error: (err as Error).message });
      }
    }
    json(404, { error: 'not found' });
  }
}
