import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance } from 'fastify';
import { validateName } from '../domain/names.js';
import { vmkitError } from '../errors.js';
import { defaultImageName, importDisk } from '../images/import.js';
import { importOva } from '../images/ova.js';
import { formatFromExtension, maxImageBytes } from '../images/safety.js';
import type { ApiContext } from './server.js';
import { async } from './responses.js';
import { asyncResponse, errorResponse } from './schemas.js';

export const UPLOAD_FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'ova'] as const;

/** A pass-through that fails once more than `cap` bytes went by. */
function capped(cap: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > cap) {
        done(
          vmkitError('VMKIT_IMAGE_TOO_LARGE', `The upload is larger than the ${cap / 1024 ** 3} GiB quota.`, {
            hint: 'Raise VMKIT_MAX_IMAGE_GIB for the daemon if this size is genuine.',
          }),
        );
        return;
      }
      done(null, chunk);
    },
  });
}

/**
 * `POST /1.0/images/upload?name=NAME&diskFormat=FMT&filename=FILE`: the request body is the raw file
 * (application/octet-stream). It is streamed — never held in memory — into
 * `<dataDir>/images/.upload-<random>` with a size cap of VMKIT_MAX_IMAGE_GIB, then imported
 * exactly as `POST /1.0/images` imports a path (same untrusted-file checks) in an operation;
 * the temporary file is removed afterwards whatever happens. Registered by routes-images.ts.
 */
export function registerUploadRoute(app: FastifyInstance, ctx: ApiContext): void {
  // Scoped to this plugin: only the upload route takes a raw body, passed on as a stream.
  void app.register(async (scope) => {
    scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    scope.post<{ Querystring: { name?: string; diskFormat?: (typeof UPLOAD_FORMATS)[number]; filename?: string; description?: string } }>(
      '/1.0/images/upload',
      {
        schema: {
          tags: ['images'],
          summary: 'Upload a disk image (qcow2, raw, vmdk, vdi, vhdx) or an OVA as the raw request body (application/octet-stream) and import it',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              name: { type: 'string', minLength: 1, description: 'name of the new image (default: from filename)' },
              diskFormat: { type: 'string', enum: [...UPLOAD_FORMATS], description: 'declared format of the file, as --format of image import (checked against its header); default: from the filename extension' },
              filename: { type: 'string', maxLength: 255, description: 'the file\'s name on the client; its extension declares the format when diskFormat is absent, as for image import' },
              description: { type: 'string', maxLength: 1000 },
            },
          },
          response: { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse },
        },
      },
      async (req, reply) => {
        const { diskFormat, filename, description } = req.query;
        const name = validateName(req.query.name ?? defaultImageName(filename ?? 'upload'), 'image name');
        // The temporary file keeps the client's extension (a known one only): the import then
        // decides the format exactly as for a path, declared format or extension.
        const ext = filename && formatFromExtension(filename) ? extname(filename).toLowerCase() : filename && /\.ova$/i.test(filename) ? '.ova' : '';
        await ctx.images.assertFree(name);
        const body = req.body as Readable | undefined;
        if (!body || typeof (body as Readable).pipe !== 'function') {
          throw vmkitError('VMKIT_INVALID_ARGUMENT', 'The upload needs the file as the request body with Content-Type: application/octet-stream.');
        }
        const cap = maxImageBytes();
        const declared = Number(req.headers['content-length'] ?? NaN);
        if (Number.isFinite(declared) && declared > cap) {
          body.resume();
          throw vmkitError('VMKIT_IMAGE_TOO_LARGE', `The upload (${declared} bytes) is larger than the ${cap / 1024 ** 3} GiB quota.`, {
            hint: 'Raise VMKIT_MAX_IMAGE_GIB for the daemon if this size is genuine.',
          });
        }
        const dir = join(ctx.dataDir, 'images');
        await mkdir(dir, { recursive: true });
        const tmp = join(dir, `.upload-${randomBytes(12).toString('hex')}${ext}`);
        const cleanup = () => rm(tmp, { force: true, recursive: true }).catch(() => undefined);
        try {
          await pipeline(body, capped(cap), createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
        } catch (err) {
          await cleanup();
          body.resume();
          throw err;
        }
        let op;
        try {
          op = ctx.operations.start({
            kind: 'image.import',
            description: `Importing the uploaded ${filename ?? diskFormat ?? 'file'} as ${name}`,
            target: name,
            mayCancel: true,
            run: async (opCtx) => {
              try {
                const r0 = { source: tmp, name, ...(diskFormat ? { format: diskFormat } : {}), description: description ?? `Uploaded ${filename ?? `${diskFormat ?? 'disk'} file`}` };
                const isOva = diskFormat === 'ova' || (!diskFormat && ext === '.ova');
                const r = isOva ? await importOva(ctx.images, r0, opCtx) : await importDisk(ctx.images, r0, opCtx);
                ctx.events.lifecycle('image-created', r.image.name);
                return r;
              } finally {
                await cleanup();
              }
            },
          });
        } catch (err) {
          await cleanup();
          throw err;
        }
        return async(reply, op);
      },
    );
  });
}
