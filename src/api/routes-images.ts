import type { FastifyInstance } from 'fastify';
import { validateName } from '../domain/names.js';
import type { ApiContext } from './server.js';
import type { ImageView } from '../domain/types.js';
import { vmkitError } from '../errors.js';
import { async, sync } from './responses.js';
import { asyncResponse, errorResponse, nameParam, syncResponse } from './schemas.js';
import { assertAbsolute, importDisk } from '../images/import.js';
import { publishInstance } from '../images/publish.js';
import { exportImage, importOva } from '../images/ova.js';
import { RepositoryManager } from '../images/repository.js';
import { registerUploadRoute } from './upload.js';

/** One repository manager per daemon (buildApi runs once per listener with the same context). */
const repoManagers = new WeakMap<ApiContext, RepositoryManager>();
function reposOf(ctx: ApiContext): RepositoryManager {
  let r = repoManagers.get(ctx);
  if (!r) {
    r = new RepositoryManager(ctx.images, ctx.dataDir);
    repoManagers.set(ctx, r);
  }
  return r;
}

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

/** An image with its checksum and what depends on it. */
async function imageView(ctx: ApiContext, name: string): Promise<ImageView> {
  await ctx.images.checksum(name);
  const image = await ctx.images.get(name);
  const instances = (await ctx.instances.list()).filter((i) => i.image === name).map((i) => i.name);
  return { ...image, users: { instances } };
}

/**
 * Images, clones and appliances: /1.0/images (list, info, import, export, delete) and the
 * instance → image/instance verbs (clone, publish). Registered by buildApi().
 */
export function registerImageRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.addHook('onClose', async () => {
    await repoManagers.get(ctx)?.stopServing();
  });
  app.get('/1.0/images', { schema: { tags, summary: 'List images', response: { 200: syncResponse({ type: 'array', items: { $ref: 'Image#' } }) } } }, async (_req, reply) =>
    sync(reply, await ctx.images.list()),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/images/:name',
    { schema: { tags, summary: 'One image, with its checksum and users', params: nameParam, response: { 200: syncResponse({ $ref: 'Image#' }), '4xx': errorResponse } } },
    async (req, reply) => sync(reply, await imageView(ctx, req.params.name)),
  );
  app.delete<{ Params: { name: string } }>(
    '/1.0/images/:name',
    { schema: { tags, summary: 'Delete an image (refused while an instance uses it)', params: nameParam, response: { '4xx': errorResponse } } },
    async (req, reply) => {
      const { name } = req.params;
      const view = await imageView(ctx, name);
      if (view.users.instances.length > 0) {
        throw vmkitError('VMKIT_IMAGE_IN_USE', `Image "${name}" is used by instance(s) ${view.users.instances.join(', ')}.`, {
          hint: 'Delete those instances first (a full clone or a published image keeps their data).',
        });
      }
      await ctx.images.remove(name);
      ctx.events.lifecycle('image-deleted', name);
      return sync(reply, { deleted: name });
    },
  );
  app.post<{ Body: { source: string; name?: string; format?: string; description?: string } }>(
    '/1.0/images',
    { schema: { tags, summary: 'Import a disk image (qcow2, raw, vmdk, vdi, vhdx) or an OVA from a path on the daemon host', body: importSchema, response: asyncReplies } },
    async (req, reply) => {
      const body = req.body;
      assertAbsolute(body.source, 'source');
      const op = ctx.operations.start({
        kind: 'image.import',
        description: `Importing ${body.source}`,
        target: body.name,
        mayCancel: true,
        run: async (opCtx) => {
          const isOva = body.format === 'ova' || (!body.format && /\.ova$/i.test(body.source));
          const r = isOva ? await importOva(ctx.images, body, opCtx) : await importDisk(ctx.images, body, opCtx);
          ctx.events.lifecycle('image-created', r.image.name);
          return r;
        },
      });
      return async(reply, op);
    },
  );

  registerUploadRoute(app, ctx);

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
    async (req, reply) => {
      const { name } = req.params;
      assertAbsolute(req.body.path, 'path');
      await ctx.images.get(name);
      const op = ctx.operations.start({
        kind: 'image.export',
        description: `Exporting ${name} to ${req.body.path}`,
        target: name,
        mayCancel: true,
        run: (opCtx) => exportImage(ctx.images, name, req.body, opCtx),
      });
      return async(reply, op);
    },
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
    async (req, reply) => {
      const source = req.params.name;
      const { name, full, fromSnapshot } = req.body;
      validateName(name, 'instance name');
      if (fromSnapshot !== undefined) validateName(fromSnapshot, 'snapshot name');
      await ctx.instances.get(source);
      const op = ctx.operations.start({
        kind: 'instance.clone',
        description: `Cloning ${source}${fromSnapshot ? ` at snapshot ${fromSnapshot}` : ''} to ${name}${full ? ' (full copy)' : ''}`,
        target: name,
        mayCancel: true,
        run: (opCtx) => ctx.instances.clone(source, name, { full, fromSnapshot }, opCtx),
      });
      return async(reply, op);
    },
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
    async (req, reply) => {
      const source = req.params.name;
      await ctx.instances.get(source);
      await ctx.images.assertFree(req.body.name);
      const op = ctx.operations.start({
        kind: 'image.publish',
        description: `Publishing ${source} as image ${req.body.name}`,
        target: req.body.name,
        mayCancel: true,
        run: async (opCtx) => {
          const image = await publishInstance(ctx.images, ctx.instances, source, req.body, opCtx);
          ctx.events.lifecycle('image-created', image.name);
          return image;
        },
      });
      return async(reply, op);
    },
  );

  // ---- repositories
  const repoTags = ['repositories'];
  const repoNameParam = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } as const;
  app.get('/1.0/repos', { schema: { tags: repoTags, summary: 'List the remote repositories this daemon knows' } }, async (_req, reply) =>
    sync(reply, (await reposOf(ctx).remotes()).map(RepositoryManager.redact)),
  );
  app.post<{ Body: { name: string; url: string; token?: string } }>(
    '/1.0/repos',
    {
      schema: {
        tags: repoTags,
        summary: 'Add a remote repository (its index is fetched to check it)',
        body: { type: 'object', required: ['name', 'url'], additionalProperties: false, properties: { name: { type: 'string' }, url: { type: 'string' }, token: { type: 'string' } } },
      },
    },
    async (req, reply) => sync(reply, RepositoryManager.redact(await reposOf(ctx).addRemote(req.body)), 201),
  );
  app.delete<{ Params: { name: string } }>('/1.0/repos/:name', { schema: { tags: repoTags, summary: 'Forget a remote repository', params: repoNameParam } }, async (req, reply) => {
    await reposOf(ctx).removeRemote(req.params.name);
    return sync(reply, { removed: req.params.name });
  });
  app.get<{ Params: { name: string } }>('/1.0/repos/:name/images', { schema: { tags: repoTags, summary: 'Images a remote repository offers', params: repoNameParam } }, async (req, reply) =>
    sync(reply, await reposOf(ctx).remoteImages(req.params.name)),
  );
  app.get('/1.0/repo/serve', { schema: { tags: repoTags, summary: 'Whether this daemon serves its images as a repository' } }, async (_req, reply) => sync(reply, reposOf(ctx).status()));
  app.put<{ Body: { listen: string; token?: string } }>(
    '/1.0/repo/serve',
    {
      schema: {
        tags: repoTags,
        summary: 'Serve this daemon\'s images as an HTTP repository (read-only; with a token also writable by push)',
        body: { type: 'object', required: ['listen'], additionalProperties: false, properties: { listen: { type: 'string' }, token: { type: 'string', minLength: 8 } } },
      },
    },
    async (req, reply) => sync(reply, await reposOf(ctx).serve(req.body.listen, req.body.token)),
  );
  app.delete('/1.0/repo/serve', { schema: { tags: repoTags, summary: 'Stop serving the repository' } }, async (_req, reply) => {
    await reposOf(ctx).stopServing();
    return sync(reply, reposOf(ctx).status());
  });
  app.post<{ Body: { repo: string; image: string; name?: string } }>(
    '/1.0/images/pull',
    {
      schema: {
        tags,
        summary: 'Download an image from a repository (resumable, sha256 verified before it appears)',
        body: { type: 'object', required: ['repo', 'image'], additionalProperties: false, properties: { repo: { type: 'string' }, image: { type: 'string' }, name: { type: 'string' } } },
        response: asyncReplies,
      },
    },
    async (req, reply) => {
      const { repo, image, name } = req.body;
      await reposOf(ctx).remote(repo);
      await ctx.images.assertFree(name ?? image);
      const op = ctx.operations.start({
        kind: 'image.pull',
        description: `Pulling ${repo}:${image}`,
        target: name ?? image,
        mayCancel: true,
        run: async (opCtx) => {
          const pulled = await reposOf(ctx).pull(repo, image, name, opCtx);
          ctx.events.lifecycle('image-created', pulled.name);
          return pulled;
        },
      });
      return async(reply, op);
    },
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
    async (req, reply) => {
      const { name } = req.params;
      await ctx.images.get(name);
      await reposOf(ctx).remote(req.body.repo);
      const op = ctx.operations.start({
        kind: 'image.push',
        description: `Pushing ${name} to ${req.body.repo}`,
        target: name,
        mayCancel: true,
        run: (opCtx) => reposOf(ctx).push(name, req.body.repo, opCtx),
      });
      return async(reply, op);
    },
  );
}
