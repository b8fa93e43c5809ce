import type { FastifyInstance } from 'fastify';
import type { ApiContext } from './context.js';
import { async, sync } from './responses.js';
import { asyncResponse, errorResponse, nameParam, syncResponse } from './schemas.js';
import { RepositoryManager } from '../images/repository.js';
import { registerUploadRoute } from './upload.js';

const asyncReplies = { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse };
const tags = ['images'];

const importSchema = {
  type: 'object',
  required: ['source'],
  additionalProperties: false,
  properties: {
    source: { type: 'string', minLength: 1, description: 'absolute path of a disk image or OVA on the daemon host' },
    name: { type: 'string' },
    format: { type: 'string', enum: ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'ova'] },
    description: { type: 'string', maxLength: 1000 },
  },
} as const;

/**
 * Images, clones and appliances: /1.0/images (list, info, import, export, delete) and the
 * instance → image/instance verbs (clone, publish). Registered by buildApi().
 */
export function registerImageRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.addHook('onClose', async () => {
    await ctx.services.images.stopServing();
  });
  app.get('/1.0/images', { schema: { tags, summary: 'List images', response: { 200: syncResponse({ type: 'array', items: { $ref: 'Image#' } }) } } }, async (_req, reply) =>
    sync(reply, await ctx.images.list()),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/images/:name',
    { schema: { tags, summary: 'One image, with its checksum and users', params: nameParam, response: { 200: syncResponse({ $ref: 'Image#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await ctx.services.images.view(req.params.name)),
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/images/:name',
    { schema: { tags, summary: 'Delete an image (refused while an instance uses it)', params: nameParam, response: { '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await ctx.services.images.delete(req.params.name)),
  );
  app.post<{ Body: { source: string; name?: string; format?: string; description?: string } }>(
    '/1.0/images',
    { schema: { tags, summary: 'Import a disk image (qcow2, raw, vmdk, vdi, vhdx) or an OVA from a path on the daemon host', body: importSchema, response: asyncReplies } },
    async (req, reply) => async(reply, ctx.services.images.importPath(req.body)),
  );

  registerUploadRoute(app, ctx);

  app.post<{ Body: { url: string; sha256: string; name?: string; format?: string; description?: string } }>(
    '/1.0/images/download',
    {
      schema: {
        tags,
        summary: 'Download a disk image over http(s) (resumable, sha256-checked), then import it like a file',
        body: {
          type: 'object',
          required: ['url', 'sha256'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', minLength: 1, maxLength: 4096, description: 'http(s) URL of a disk image' },
            sha256: { type: 'string', description: '64 hex digits (optionally sha256:…) the file must match' },
            name: { type: 'string' },
            format: { type: 'string', enum: ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx'] },
            description: { type: 'string', maxLength: 1000 },
          },
        },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, ctx.services.images.importUrl(req.body)),
  );
  app.post<{ Body: { name: string; release?: string } }>(
    '/1.0/images/build-debian',
    {
      schema: {
        tags,
        summary: "Build a cloud-ready Debian image from the host's Debian mirror (mmdebstrap; cached between builds)",
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: { name: { type: 'string' }, release: { type: 'string', enum: ['bookworm', 'trixie'] } },
        },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, ctx.services.images.buildDebian(req.body)),
  );
  app.patch<{ Params: { name: string }; Body: { nicModel?: 'virtio-net' | 'e1000' | 'rtl8139'; minDiskBytes?: number; firmware?: string; cpus?: number; memoryMiB?: number } }>(
    '/1.0/images/:name',
    {
      schema: {
        tags,
        summary: "Edit an image's defaults for new instances (NIC model, minimum disk, firmware, vCPUs, memory)",
        params: nameParam,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            nicModel: { type: 'string', enum: ['virtio-net', 'e1000', 'rtl8139'] },
            minDiskBytes: { type: 'integer', minimum: 1 },
            firmware: { type: 'string', description: 'bios (the only firmware today)' },
            cpus: { type: 'integer', minimum: 1 },
            memoryMiB: { type: 'integer', minimum: 32 },
          },
        },
        response: { 200: syncResponse({ $ref: 'Image#' }), '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.images.setDefaults(req.params.name, req.body)),
  );
  app.post<{ Params: { name: string }; Body: { path: string; format?: string } }>(
    '/1.0/images/:name/export',
    {
      schema: {
        tags,
        summary: 'Export an image to a path on the daemon host: OVA (OVF 1.0 + stream-optimized VMDK) or a qcow2/vmdk/vdi/vhdx/raw disk',
        params: nameParam,
        body: {
          type: 'object',
          required: ['path'],
          additionalProperties: false,
          properties: { path: { type: 'string', minLength: 1 }, format: { type: 'string', enum: ['ova', 'qcow2', 'vmdk', 'vdi', 'vhdx', 'raw'] } },
        },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.export(req.params.name, req.body)),
  );
  app.post<{ Params: { name: string }; Body: { name: string; full?: boolean; fromSnapshot?: string } }>(
    '/1.0/instances/:name/clone',
    {
      schema: {
        tags: ['instances'],
        summary: 'Clone an instance: a stopped one, or any one from a snapshot; linked (default) or full (independent copy)',
        params: nameParam,
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: { name: { type: 'string' }, full: { type: 'boolean' }, fromSnapshot: { type: 'string' } },
        },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.instances.clone(req.params.name, req.body)),
  );
  app.post<{ Params: { name: string }; Body: { name: string; description?: string; version?: string } }>(
    '/1.0/instances/:name/publish',
    {
      schema: {
        tags: ['images'],
        summary: 'Publish a stopped instance as a new image (disk flattened)',
        params: nameParam,
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: { name: { type: 'string' }, description: { type: 'string', maxLength: 1000 }, version: { type: 'string', maxLength: 64 } },
        },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.publish(req.params.name, req.body)),
  );

  // ---- repositories
  const repoTags = ['repositories'];
  const repoNameParam = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } as const;
  app.get('/1.0/repos', { schema: { tags: repoTags, summary: 'List the remote repositories this daemon knows' } }, async (_req, reply) =>
    sync(reply, (await ctx.services.images.repos.remotes()).map(RepositoryManager.redact)),
  );
  app.post<{ Body: { name: string; url: string; token?: string } }>(
    '/1.0/repos',
    {
      schema: {
        tags: repoTags,
        summary: 'Add a remote repository (its index is fetched to check it)',
        body: {
          type: 'object',
          required: ['name', 'url'],
          additionalProperties: false,
          properties: { name: { type: 'string' }, url: { type: 'string' }, token: { type: 'string' } },
        },
      },
    },
    async (req, reply) => sync(reply, RepositoryManager.redact(await ctx.services.images.repos.addRemote(req.body)), 201),
  );
  app.delete<{ Params: { name: string } }>('/1.0/repos/:name', { schema: { tags: repoTags, summary: 'Forget a remote repository', params: repoNameParam } }, async (req, reply) => {
    await ctx.services.images.repos.removeRemote(req.params.name);
    return sync(reply, { removed: req.params.name });
  });
  app.get<{ Params: { name: string } }>(
    '/1.0/repos/:name/images',
    { schema: { tags: repoTags, summary: 'Images a remote repository offers', params: repoNameParam } },
    async (req, reply) => sync(reply, await ctx.services.images.repos.remoteImages(req.params.name)),
  );
  app.get('/1.0/repo/serve', { schema: { tags: repoTags, summary: 'Whether this daemon serves its images as a repository' } }, async (_req, reply) =>
    sync(reply, ctx.services.images.repos.status()),
  );
  app.put<{ Body: { listen: string; token?: string } }>(
    '/1.0/repo/serve',
    {
      schema: {
        tags: repoTags,
        summary: "Serve this daemon's images as an HTTP repository (read-only; with a token also writable by push)",
        body: { type: 'object', required: ['listen'], additionalProperties: false, properties: { listen: { type: 'string' }, token: { type: 'string', minLength: 8 } } },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.images.repos.serve(req.body.listen, req.body.token)),
  );
  app.delete('/1.0/repo/serve', { schema: { tags: repoTags, summary: 'Stop serving the repository' } }, async (_req, reply) => {
    await ctx.services.images.repos.stopServing();
    return sync(reply, ctx.services.images.repos.status());
  });
  app.post<{ Body: { repo: string; image: string; name?: string } }>(
    '/1.0/images/pull',
    {
      schema: {
        tags,
        summary: 'Download an image from a repository (resumable, sha256 verified before it appears)',
        body: {
          type: 'object',
          required: ['repo', 'image'],
          additionalProperties: false,
          properties: { repo: { type: 'string' }, image: { type: 'string' }, name: { type: 'string' } },
        },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.pull(req.body)),
  );
  app.post<{ Params: { name: string }; Body: { repo: string } }>(
    '/1.0/images/:name/push',
    {
      schema: {
        tags,
        summary: 'Upload an image to a writable repository',
        params: nameParam,
        body: { type: 'object', required: ['repo'], additionalProperties: false, properties: { repo: { type: 'string' } } },
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.push(req.params.name, req.body.repo)),
  );
}
