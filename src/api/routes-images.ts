import type { FastifyInstance } from 'fastify';
import type { ApiContext } from './context.js';
import { async, sync } from './responses.js';
import { asyncResponse, errorResponse, nameParam, syncResponse } from './schemas.js';
import {
  AddRepoRequestSchema,
  CloneRequestSchema,
  ExportImageRequestSchema,
  ImportImageRequestSchema,
  PublishRequestSchema,
  PullRequestSchema,
  PushRequestSchema,
  ServeRepoRequestSchema,
  DownloadImageQuerySchema,
  type AddRepoRequest,
  type DownloadImageQuery,
  type CloneRequest,
  type ExportImageRequest,
  type ImportImageRequest,
  type PublishRequest,
  type PullRequest,
  type PushRequest,
  type ServeRepoRequest,
  BuildDebianRequestSchema,
  BuildImageRequestSchema,
  type BuildImageRequest,
  PruneBuildCacheRequestSchema,
  type PruneBuildCacheRequest,
  DownloadImageRequestSchema,
  ImageDefaultsRequestSchema,
  type BuildDebianRequest,
  type DownloadImageRequest,
  type ImageDefaultsRequest,
} from '../wire/requests.js';
import { RepositoryManager } from '../images/repository.js';
import { registerUploadRoute } from './upload.js';
import { createReadStream } from 'node:fs';
import { requireLocal } from './origin.js';

const asyncReplies = { 202: asyncResponse, '4xx': errorResponse, '5xx': errorResponse };
const tags = ['images'];

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
  app.post<{ Body: ImportImageRequest }>(
    '/1.0/images',
    {
      schema: {
        tags,
        summary: 'Import a disk image (qcow2, raw, vmdk, vdi, vhdx) or an OVA from a path on the daemon host (local callers on the unix socket only)',
        body: ImportImageRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => {
      requireLocal(req, 'Importing from a path on the daemon host', 'Upload the file instead: POST /1.0/images/upload (vmkit image import FILE does that with --remote).');
      return async(reply, ctx.services.images.importPath(req.body));
    },
  );

  registerUploadRoute(app, ctx);

  app.post<{ Body: DownloadImageRequest }>(
    '/1.0/images/download',
    {
      schema: {
        tags,
        summary: 'Download a disk image over http(s) (resumable, sha256-checked), then import it like a file',
        body: DownloadImageRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, ctx.services.images.importUrl(req.body)),
  );
  app.post<{ Body: BuildImageRequest }>(
    '/1.0/images/build',
    {
      schema: {
        tags,
        summary: 'Build an image from a recipe (YAML): steps run in a build VM, cached by key; publishes NAME:N (see doc/images.md)',
        body: BuildImageRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => {
      if (req.body.dir !== undefined) requireLocal(req, "Naming the recipe's folder on the daemon host", 'Leave out dir: a recipe without copy steps builds remotely.');
      return async(reply, ctx.services.builds.build(req.body));
    },
  );
  app.get(
    '/1.0/images/build/cache',
    {
      schema: {
        tags,
        summary: 'The image build step cache: entries (key, step, image, bytes, last used, in use), total bytes and limits',
        response: { 200: syncResponse({ type: 'object' }), '4xx': errorResponse },
      },
    },
    async (_req, reply) => sync(reply, await ctx.services.builds.cacheList()),
  );
  app.post<{ Body: PruneBuildCacheRequest }>(
    '/1.0/images/build/cache/prune',
    {
      schema: {
        tags,
        summary: 'Remove image build step cache entries (all, or not used for olderThanSeconds), each with the entries linked on it; never one a build uses',
        body: PruneBuildCacheRequestSchema,
        response: { 200: syncResponse({ type: 'object' }), '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.builds.cachePrune(req.body)),
  );
  app.get<{ Params: { name: string } }>(
    '/1.0/images/:name/build',
    {
      schema: {
        tags,
        summary: 'The recipe and build log of an image built from a recipe',
        params: nameParam,
        response: { 200: syncResponse({ type: 'object' }), '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.builds.record(req.params.name)),
  );
  app.post<{ Body: BuildDebianRequest }>(
    '/1.0/images/build-debian',
    {
      schema: {
        tags,
        summary: "Build a cloud-ready Debian image from the host's Debian mirror (mmdebstrap; cached between builds)",
        body: BuildDebianRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, ctx.services.images.buildDebian(req.body)),
  );
  app.patch<{ Params: { name: string }; Body: ImageDefaultsRequest }>(
    '/1.0/images/:name',
    {
      schema: {
        tags,
        summary: "Edit an image's defaults for new instances (NIC model, minimum disk, firmware, vCPUs, memory)",
        params: nameParam,
        body: ImageDefaultsRequestSchema,
        response: { 200: syncResponse({ $ref: 'Image#' }), '4xx': errorResponse },
      },
    },
    async (req, reply) => sync(reply, await ctx.services.images.setDefaults(req.params.name, req.body)),
  );
  app.post<{ Params: { name: string }; Body: ExportImageRequest }>(
    '/1.0/images/:name/export',
    {
      schema: {
        tags,
        summary: 'Export an image to a path on the daemon host (local callers on the unix socket only): OVA (OVF 1.0 + stream-optimized VMDK) or a qcow2/vmdk/vdi/vhdx/raw disk',
        params: nameParam,
        body: ExportImageRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => {
      requireLocal(
        req,
        'Exporting to a path on the daemon host',
        `Download it instead: GET /1.0/images/${req.params.name}/export?format=ova (vmkit image export NAME FILE does that with --remote).`,
      );
      return async(reply, await ctx.services.images.export(req.params.name, req.body));
    },
  );
  app.get<{ Params: { name: string }; Querystring: DownloadImageQuery }>(
    '/1.0/images/:name/export',
    {
      schema: {
        tags,
        summary:
          'Download an image as a file (any caller): OVA (default) or one qcow2/vmdk/vdi/vhdx/raw disk, streamed as application/octet-stream once converted; nothing stays on the daemon host',
        params: nameParam,
        querystring: DownloadImageQuerySchema,
      },
    },
    async (req, reply) => {
      // The client going away ends the conversion; the temporary file goes once the answer ends.
      const gone = new AbortController();
      let cleanup: (() => void) | undefined;
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) gone.abort();
        cleanup?.();
      });
      const out = await ctx.services.images.exportForDownload(req.params.name, req.query.format, gone.signal);
      const stream = createReadStream(out.file);
      cleanup = () => {
        cleanup = undefined;
        stream.destroy();
        void out.cleanup();
      };
      if (gone.signal.aborted) cleanup();
      stream.on('error', () => cleanup?.());
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-length', String(out.size))
        .header('content-disposition', `attachment; filename="${out.filename}"`)
        .send(stream);
    },
  );
  app.post<{ Params: { name: string }; Body: CloneRequest }>(
    '/1.0/instances/:name/clone',
    {
      schema: {
        tags: ['instances'],
        summary: 'Clone an instance: a stopped one, or any one from a snapshot; linked (default) or full (independent copy)',
        params: nameParam,
        body: CloneRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.instances.clone(req.params.name, req.body)),
  );
  app.post<{ Params: { name: string }; Body: PublishRequest }>(
    '/1.0/instances/:name/publish',
    {
      schema: {
        tags: ['images'],
        summary: 'Publish a stopped instance as a new image (disk flattened)',
        params: nameParam,
        body: PublishRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.publish(req.params.name, req.body)),
  );

  // ---- repositories
  const repoTags = ['repositories'];
  const repoNameParam = nameParam;
  app.get('/1.0/repos', { schema: { tags: repoTags, summary: 'List the remote repositories this daemon knows' } }, async (_req, reply) =>
    sync(reply, (await ctx.services.images.repos.remotes()).map(RepositoryManager.redact)),
  );
  app.post<{ Body: AddRepoRequest }>(
    '/1.0/repos',
    {
      schema: {
        tags: repoTags,
        summary:
          'Add a remote repository (its index is fetched under a size cap to check it); loopback, link-local and private addresses only with allowPrivate, redirects only within its origin',
        body: AddRepoRequestSchema,
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
  app.put<{ Body: ServeRepoRequest }>(
    '/1.0/repo/serve',
    {
      schema: {
        tags: repoTags,
        summary: "Serve this daemon's images as an HTTP repository (read-only; with a token also writable by push, blobs capped at maxBlobGiB; private: pulls need the token too)",
        body: ServeRepoRequestSchema,
      },
    },
    async (req, reply) => {
      const { listen, token, maxBlobGiB } = req.body;
      const maxBlobBytes = maxBlobGiB === undefined ? undefined : Math.floor(maxBlobGiB * 1024 ** 3);
      return sync(reply, await ctx.services.images.repos.serve(listen, token, { private: req.body.private, maxBlobBytes }));
    },
  );
  app.delete('/1.0/repo/serve', { schema: { tags: repoTags, summary: 'Stop serving the repository' } }, async (_req, reply) => {
    await ctx.services.images.repos.stopServing();
    return sync(reply, ctx.services.images.repos.status());
  });
  app.post<{ Body: PullRequest }>(
    '/1.0/images/pull',
    {
      schema: {
        tags,
        summary: 'Download an image from a repository (resumable, sha256 verified before it appears)',
        body: PullRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.pull(req.body)),
  );
  app.post<{ Params: { name: string }; Body: PushRequest }>(
    '/1.0/images/:name/push',
    {
      schema: {
        tags,
        summary: 'Upload an image to a writable repository',
        params: nameParam,
        body: PushRequestSchema,
        response: asyncReplies,
      },
    },
    async (req, reply) => async(reply, await ctx.services.images.push(req.params.name, req.body.repo)),
  );
}
