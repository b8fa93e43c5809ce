import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, pipeline } from 'node:stream';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Image } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import type { ImageStore } from './image-store.js';
import { inspectUntrusted, maxImageBytes } from './safety.js';
import { readCapped, repoRequest, tooLarge } from './repo-http.js';
import { RepoServer } from './repo-serve.js';
import { splitVersion } from './build/versions.js';
import {
  INDEX_FORMAT,
  maxIndexBytes,
  imageFiles,
  repoError,
  validateRepoImage,
  type Remote,
  type RepoFile,
  type RepoImage,
  type RepoIndex,
  type ServeStatus,
} from './repository-index.js';

export { INDEX_FORMAT, imageFiles, validateRepoImage, type Remote, type RepoFile, type RepoImage, type RepoIndex, type ServeStatus };

/**
 * Appliance repositories over plain HTTP. A repository is an index (`/index.json`: images
 * with their metadata and files, each with size and sha256) plus content-addressed blobs
 * (`/blobs/<sha256>`, Range requests honoured so downloads resume). Any vmkit daemon can
 * serve its own images as one (`vmkit repo serve`); with a token it also accepts pushes.
 * Everything that comes from a repository is untrusted: sha256 verified before an image
 * appears, disks inspected like an import.
 */

export class RepositoryManager {
  private readonly server: RepoServer;

  constructor(
    private readonly images: ImageStore,
    private readonly dataDir: string,
  ) {
    this.server = new RepoServer(images, dataDir, (entry, tmp, origin) => this.finishImage(entry, tmp, 'pull', origin));
  }

  private get remotesFile(): string {
    return join(this.dataDir, 'repos.json');
  }
  private get downloads(): string {
    return join(this.dataDir, 'downloads');
  }

  // ---- remotes --------------------------------------------------------------------------

  async remotes(): Promise<Remote[]> {
    try {
      return JSON.parse(await readFile(this.remotesFile, 'utf8')) as Remote[];
    } catch {
      return [];
    }
  }

  private async saveRemotes(list: Remote[]): Promise<void> {
    const tmp = `${this.remotesFile}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(list, null, 2), { mode: 0o600 });
    await rename(tmp, this.remotesFile);
  }

  async addRemote(r: Remote): Promise<Remote> {
    validateName(r.name, 'repository name');
    let url: URL;
    try {
      url = new URL(r.url);
    } catch {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${r.url}" is not a URL.`, { hint: 'Example: vmkit repo add lab http://127.0.0.1:8444' });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A repository URL is http:// or https://.', { hint: 'Example: http://127.0.0.1:8444' });
    const list = await this.remotes();
    if (list.some((x) => x.name === r.name))
      throw vmkitError('VMKIT_ALREADY_EXISTS', `A repository named "${r.name}" exists.`, { hint: `Remove it first ("vmkit repo remove ${r.name}").` });
    const remote: Remote = { name: r.name, url: url.toString().replace(/\/$/, ''), ...(r.token ? { token: r.token } : {}), ...(r.allowPrivate ? { allowPrivate: true } : {}) };
    await this.fetchIndex(remote);
    list.push(remote);
    await this.saveRemotes(list);
    return remote;
  }

  async removeRemote(name: string): Promise<void> {
    const list = await this.remotes();
    if (!list.some((x) => x.name === name)) this.notFound(name);
    await this.saveRemotes(list.filter((x) => x.name !== name));
  }

  private notFound(name: string): never {
    throw vmkitError('VMKIT_REPO_NOT_FOUND', `There is no repository "${name}".`, { hint: '"vmkit repo list" shows them; "vmkit repo add NAME URL" adds one.' });
  }

  async remote(name: string): Promise<Remote> {
    return (await this.remotes()).find((x) => x.name === name) ?? this.notFound(name);
  }

  /** Public view: never the token. */
  static redact(r: Remote): { name: string; url: string; token: boolean; allowPrivate: boolean } {
    return { name: r.name, url: r.url, token: !!r.token, allowPrivate: !!r.allowPrivate };
  }

  /** Options of every request to a remote: its token (a private repository wants it for pulls too) and its address rule. */
  private static reach(remote: Remote, extra: { signal?: AbortSignal; headers?: Record<string, string> } = {}) {
    return { allowPrivate: !!remote.allowPrivate, signal: extra.signal, headers: { ...(remote.token ? { authorization: `Bearer ${remote.token}` } : {}), ...extra.headers } };
  }

  async fetchIndex(remote: Remote): Promise<RepoIndex> {
    let text: string;
    try {
      const res = await repoRequest(`${remote.url}/index.json`, RepositoryManager.reach(remote, { signal: AbortSignal.timeout(15_000) }));
      if (res.statusCode === 401) {
        res.resume();
        throw vmkitError('VMKIT_UNAUTHORIZED', `Repository ${remote.url} answered 401: it is private and wants its token.`, {
          hint: 'Add it with its token: vmkit repo add NAME URL --push-token TOKEN.',
        });
      }
      if ((res.statusCode ?? 0) !== 200) {
        res.resume();
        repoError(`Repository ${remote.url} answered ${res.statusCode} for its index.`);
      }
      // Streamed under the cap: an oversized index is dropped at the cap, never held whole.
      text = (await readCapped(res, maxIndexBytes(), `The index of ${remote.url}`)).toString('utf8');
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('VMKIT_')) throw err;
      repoError(`Repository ${remote.url} cannot be reached: ${(err as Error).message}`, 'Is the repository running ("vmkit repo serve" on that host)?');
    }
    let index: RepoIndex;
    try {
      index = JSON.parse(text) as RepoIndex;
    } catch {
      repoError(`Repository ${remote.url} sent an index that is not JSON.`);
    }
    if (index.format !== INDEX_FORMAT || !Array.isArray(index.images)) repoError(`Repository ${remote.url} does not speak ${INDEX_FORMAT}.`);
    return index;
  }

  async remoteImages(name: string): Promise<RepoImage[]> {
    return (await this.fetchIndex(await this.remote(name))).images;
  }

  // ---- serving (repo-serve.ts) -----------------------------------------------------------

  async index(): Promise<{ index: RepoIndex; blobs: Map<string, string> }> {
    return this.server.index();
  }
  status(): ServeStatus {
    return this.server.status();
  }
  async serve(listen: string, token?: string, opts: { private?: boolean; maxBlobBytes?: number } = {}): Promise<ServeStatus> {
    return this.server.serve(listen, token, opts);
  }
  /** Stops serving; connections still open (a stalled push or pull) are cut. */
  async stopServing(): Promise<void> {
    return this.server.stop();
  }

  /** Inspects the disks of a downloaded/uploaded image like an import, then registers it. */
  private async finishImage(entry: RepoImage, tmp: string, source: Image['source'], origin: string, name = entry.name): Promise<Image> {
    for (const d of entry.disks) {
      const inspected = await inspectUntrusted(join(tmp, d.file), 'qcow2');
      d.virtualSize = inspected.info.virtualSize;
    }
    const image: Image = {
      name,
      version: String(entry.version ?? ''),
      description: String(entry.description ?? ''),
      arch: 'x86_64',
      boot: entry.boot ? { kernel: entry.boot.kernel, initrd: entry.boot.initrd, cmdline: String(entry.boot.cmdline ?? '') } : undefined,
      defaults: { cpus: Number(entry.defaults?.cpus) || 1, memoryMiB: Number(entry.defaults?.memoryMiB) || 512 },
      nicModels: (entry.nicModels ?? []).filter((m) => ['virtio-net', 'e1000', 'rtl8139'].includes(m)),
      disks: entry.disks.map((d) => ({ name: d.name, file: d.file, format: 'qcow2', virtualSize: d.virtualSize })),
      source,
      origin,
      createdAt: new Date().toISOString(),
    };
    return this.images.commit(image, tmp);
  }

  // ---- pull / push ----------------------------------------------------------------------

  /**
   * Downloads an image: each file into `<data>/downloads/<sha256>.part` (resumed with a
   * Range request after a dropped connection or an interrupted pull), verified against the
   * index sha256, then the image is inspected and registered. A mismatch or a cancel
   * removes the partial files; the image never appears.
   */
  async pull(repoName: string, imageName: string, localName: string | undefined, ctx?: OperationContext): Promise<Image> {
    const remote = await this.remote(repoName);
    const entry = (await this.fetchIndex(remote)).images.find((i) => i.name === imageName);
    if (!entry) throw vmkitError('VMKIT_REPO_NOT_FOUND', `Repository ${repoName} has no image "${imageName}".`, { hint: `"vmkit image list ${repoName}:" shows its images.` });
    validateRepoImage(entry);
    const cap = maxImageBytes();
    for (const f of entry.files) if (f.size > cap) tooLarge(`${f.file} of ${repoName}:${imageName} (${f.size} bytes listed)`, cap);
    const name = validateName(localName ?? imageName, 'image name');
    const release = await this.images.reserve(name);
    try {
      return await this.pullAs(remote, repoName, imageName, entry, name, ctx);
    } finally {
      release();
    }
  }

  private async pullAs(remote: Remote, repoName: string, imageName: string, entry: RepoImage, name: string, ctx?: OperationContext): Promise<Image> {
    await mkdir(this.downloads, { recursive: true });
    const total = entry.files.reduce((s, f) => s + f.size, 0);
    let before = 0;
    const tmp = await this.images.tempDir(`pull-${name}`);
    try {
      for (const f of entry.files) {
        const part = join(this.downloads, `${f.sha256}.part`);
        await this.download(
          remote,
          f,
          part,
          (n) =>
            ctx?.progress({
              phase: `downloading ${f.file}`,
              percent: Math.min(99, Math.round(((before + n) / Math.max(1, total)) * 100)),
              bytesDone: before + n,
              bytesTotal: total,
            }),
          ctx,
        );
        before += f.size;
        ctx?.progress({ phase: `verifying ${f.file}`, percent: Math.min(99, Math.round((before / Math.max(1, total)) * 100)), bytesDone: before, bytesTotal: total });
        const h = createHash('sha256');
        for await (const c of createReadStream(part, { highWaterMark: 1024 * 1024, signal: ctx?.signal })) h.update(c as Buffer);
        if (h.digest('hex') !== f.sha256) {
          await rm(part, { force: true });
          throw vmkitError('VMKIT_CHECKSUM_MISMATCH', `${f.file} from ${repoName} does not match the sha256 in the repository index.`, {
            hint: 'The download was corrupted or the repository is wrong; nothing was kept. Try again or ask the repository owner.',
          });
        }
        await rename(part, join(tmp, f.file));
      }
      ctx?.checkCancelled();
      ctx?.progress({ phase: 'inspecting', percent: 99, bytesDone: total, bytesTotal: total });
      return await this.finishImage(structuredClone(entry), tmp, 'pull', `${repoName}:${imageName}`, name);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      if (ctx?.signal.aborted) for (const f of entry.files) await rm(join(this.downloads, `${f.sha256}.part`), { force: true });
      throw err;
    }
  }

  private async download(remote: Remote, f: RepoFile, part: string, onBytes: (n: number) => void, ctx?: OperationContext): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      ctx?.checkCancelled();
      const have = await stat(part).then(
        (s) => s.size,
        () => 0,
      );
      if (have > f.size) await rm(part, { force: true });
      if (have === f.size) return;
      const from = have > f.size ? 0 : have;
      onBytes(from);
      try {
        const res = await repoRequest(
          `${remote.url}/blobs/${f.sha256}`,
          RepositoryManager.reach(remote, { signal: ctx?.signal, headers: from ? { range: `bytes=${from}-` } : {} }),
        );
        const status = res.statusCode ?? 0;
        if (status !== 200 && status !== 206) {
          res.resume();
          repoError(`Repository ${remote.name} answered ${status} for ${f.file}.`);
        }
        const resumed = status === 206;
        let n = resumed ? from : 0;
        // Each chunk is on disk before the next is read: a connection cut mid-way leaves every
        // byte received in the part file, and the next attempt asks for the rest (Range).
        const out = await open(part, resumed ? 'a' : 'w');
        try {
          for await (const c of res as AsyncIterable<Buffer>) {
            n += c.length;
            if (n > f.size) throw new Error('more bytes than the index says');
            await out.write(c);
            onBytes(n);
          }
        } finally {
          await out.close();
        }
        if (n === f.size) return;
        lastError = new Error(`connection ended after ${n} of ${f.size} bytes`);
      } catch (err) {
        if (ctx?.signal.aborted) throw vmkitError('VMKIT_OPERATION_CANCELLED', 'The pull was cancelled; partial downloads were removed.');
        if (['VMKIT_REPO_FAILED', 'VMKIT_REPO_ADDRESS_FORBIDDEN', 'VMKIT_REPO_TOO_LARGE'].includes((err as { code?: string }).code ?? '')) throw err;
        lastError = err;
      }
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
    }
    repoError(`Downloading ${f.file} from ${remote.name} failed: ${(lastError as Error)?.message ?? 'unknown error'}`, 'Run the pull again: it resumes where it stopped.');
  }

  /** Uploads an image's files (content-addressed) and then its metadata to a writable repository. */
  async push(imageName: string, repoName: string, ctx?: OperationContext): Promise<{ repo: string; image: string }> {
    const remote = await this.remote(repoName);
    if (!remote.token)
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `Repository ${repoName} has no token; pushing needs one.`, {
        hint: `Re-add it with "vmkit repo add ${repoName} URL --token TOKEN".`,
      });
    const image = await this.images.get(imageName);
    if (splitVersion(image.name)) {
      // A repository's index holds plain names; versions of built images stay local for now.
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `${image.name} is a built image's version: repositories hold plain image names.`, {
        hint: `Publish a plain-named copy first: "vmkit create ${image.name} tmp && vmkit publish tmp --name NAME && vmkit delete tmp", then push NAME.`,
      });
    }
    const files: RepoFile[] = [];
    for (const f of imageFiles(image)) {
      const path = this.images.file(image, f);
      files.push({ file: f, size: (await stat(path)).size, sha256: await this.server.sha256Of(path) });
    }
    const total = files.reduce((s, f) => s + f.size, 0);
    let done = 0;
    for (const f of files) {
      ctx?.checkCancelled();
      const start = done;
      // Progress is counted as bytes pass, not with a 'data' listener on the file: that would
      // start the stream flowing at once, and with Expect: 100-continue (the body waits for the
      // server's go) every byte read before the go would be lost — the upload then stalls.
      // pipeline: a body destroyed early (the server refused before the go) closes the file too.
      const body = pipeline(
        createReadStream(this.images.file(image, f.file), { highWaterMark: 1024 * 1024 }),
        new Transform({
          transform: (c: Buffer, _e, cb) => {
            done += c.length;
            ctx?.progress({ phase: `uploading ${f.file}`, percent: Math.min(99, Math.round((done / Math.max(1, total)) * 100)), bytesDone: done, bytesTotal: total });
            cb(null, c);
          },
        }),
        () => undefined, // the upload's own error handling reports failures
      );
      const res = await repoRequest(`${remote.url}/blobs/${f.sha256}`, {
        ...RepositoryManager.reach(remote, {
          signal: ctx?.signal,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(f.size), expect: '100-continue' },
        }),
        method: 'PUT',
        body,
        timeoutMs: 0,
      }).catch((err: unknown) => {
        if (ctx?.signal.aborted) throw vmkitError('VMKIT_OPERATION_CANCELLED', 'The push was cancelled.');
        if ((err as { code?: string }).code?.startsWith('VMKIT_')) throw err;
        repoError(`Upload to ${remote.name} failed: ${(err as Error).message}`);
      });
      const answer = (await readCapped(res, 64 * 1024, 'The answer').catch(() => Buffer.alloc(0))).toString('utf8');
      if (res.statusCode === 401) throw vmkitError('VMKIT_UNAUTHORIZED', `Repository ${repoName} refused the token.`, { hint: 'Check the token given to "vmkit repo add".' });
      if (res.statusCode === 413)
        throw vmkitError('VMKIT_REPO_TOO_LARGE', `Repository ${repoName} refused ${f.file} (${f.size} bytes): larger than the blobs it accepts.`, {
          hint: 'Its owner sets the cap with "vmkit repo serve --max-blob-gib N".',
        });
      if ((res.statusCode ?? 0) >= 300) repoError(`Repository ${repoName} refused ${f.file}: ${res.statusCode} ${answer}`);
      done = start + f.size;
    }
    const { source: _s, fidelity: _f, origin: _o, checksum: _c, ...meta } = image;
    const res = await repoRequest(`${remote.url}/images/${encodeURIComponent(image.name)}`, {
      ...RepositoryManager.reach(remote, { signal: ctx?.signal, headers: { 'content-type': 'application/json' } }),
      method: 'PUT',
      body: JSON.stringify({ ...meta, files }),
    });
    const answer = (await readCapped(res, 64 * 1024, 'The answer').catch(() => Buffer.alloc(0))).toString('utf8');
    if ((res.statusCode ?? 0) >= 300)
      repoError(`Repository ${repoName} refused image ${image.name}: ${res.statusCode} ${answer}`, 'An image of that name may already exist there.');
    return { repo: repoName, image: image.name };
  }
}
