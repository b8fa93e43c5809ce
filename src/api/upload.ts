import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { StringEnum } from '../wire/enum.js';
import { IMPORT_FORMATS } from '../wire/requests.js';
import type { ApiContext } from './context.js';
import { async } from './responses.js';
import { asyncResponse, errorResponse } from './schemas.js';

export const UPLOAD_FORMATS = IMPORT_FORMATS;

/**
 * `POST /1.0/images/upload?name=NAME&diskFormat=FMT&filename=FILE`: the request body is the raw file
 * (application/octet-stream). It is streamed — never held in memory — into
 * `<dataDir>/images/.upload-<random>` with a size cap of VMKIT_MAX_IMAGE_GIB, then imported
 * exactly as `POST /1.0/images` imports a path (same untrusted-file checks) in an operation;
 * the temporary file is removed afterwards whatever happens (ImageService.importUpload).
 * Registered by routes-images.ts.
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
          querystring: Type.Object(
            {
              name: Type.Optional(Type.String({ minLength: 1, description: 'name of the new image (default: from filename)' })),
              diskFormat: Type.Optional(
                StringEnum(UPLOAD_FORMATS, {
                  description: 'declared format of the file, as --format of image import (checked against its header); default: from the filename extension',
                }),
              ),
              filename: Type.Optional(
                Type.String({
                  maxLength: 255,
                  description: "the file's name on the client; its extension declares the format when diskFormat is absent, as for image import",
                }),
              ),
              description: Type.Optional(Type.String({ maxLength: 1000 })),
            },
            { additionalProperties: false },
          ),
          response: { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse },
        },
      },
      async (req, reply) => {
        const declared = Number(req.headers['content-length'] ?? NaN);
        const op = await ctx.services.images.importUpload(req.body, { ...req.query, declaredBytes: Number.isFinite(declared) ? declared : undefined });
        return async(reply, op);
      },
    );
  });
}
