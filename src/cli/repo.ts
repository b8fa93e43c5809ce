import { Command } from 'commander';
import { clientFor, globals, mutate, print } from './common.js';
import { renderData, renderList } from './output.js';

interface RemoteView {
  name: string;
  url: string;
  token: boolean;
  allowPrivate?: boolean;
}

interface ServeStatus {
  serving: boolean;
  url?: string;
  writable?: boolean;
  private?: boolean;
  maxBlobBytes?: number;
}

/** `vmkit repo …`: appliance repositories (serve this daemon's images; remotes to pull from). */
export function repoCommand(): Command {
  const cmd = new Command('repo').description("Appliance repositories: serve this host's images over HTTP, add remote ones");
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit repo serve --listen 127.0.0.1:8444            # read-only
  vmkit repo serve --listen 0.0.0.0:8444 --push-token S3CRET-TOKEN   # also accepts pushes (blobs up to 20 GiB)
  vmkit repo serve --listen 0.0.0.0:8444 --push-token S3CRET-TOKEN --private --max-blob-gib 4
  vmkit repo add hub https://repo.example.org
  vmkit repo add lab http://127.0.0.1:8444 --allow-private   # loopback/private addresses need the flag
  vmkit repo list
  vmkit image list lab:
  vmkit image pull lab:app-v2`,
  );
  cmd
    .command('serve')
    .description("Serve this daemon's images as an HTTP repository (index.json + blobs with sha256) until the daemon stops")
    .option('-l, --listen <addr:port>', 'address to listen on', '127.0.0.1:8444')
    .option('--push-token <token>', 'accept pushes from clients presenting this token (at least 8 characters)')
    .option('--private', 'pulls (index and blobs) need the token too')
    .option('--max-blob-gib <n>', 'largest file a push may upload, GiB (default: VMKIT_MAX_IMAGE_GIB of the daemon, 20)', Number)
    .option('--stop', 'stop serving')
    .option('--status', 'show whether and where it serves')
    .action(async (opts: { listen: string; pushToken?: string; private?: boolean; maxBlobGib?: number; stop?: boolean; status?: boolean }, self: Command) => {
      const client = clientFor(self);
      let st: ServeStatus;
      if (opts.status) st = await client.get<ServeStatus>('/1.0/repo/serve');
      else if (opts.stop) st = (await client.request('DELETE', '/1.0/repo/serve')).metadata as ServeStatus;
      else {
        const body: Record<string, unknown> = { listen: opts.listen };
        if (opts.pushToken) body.token = opts.pushToken;
        if (opts.private) body.private = true;
        if (opts.maxBlobGib !== undefined) body.maxBlobGiB = opts.maxBlobGib;
        st = (await client.request('PUT', '/1.0/repo/serve', body)).metadata as ServeStatus;
      }
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') print(renderData(st, format));
      else
        print(
          st.serving
            ? `Serving images at ${st.url} (${st.writable ? 'read-write with token' : 'read-only'}${st.private ? ', private: pulls need the token' : ''}${st.writable && st.maxBlobBytes ? `, blobs up to ${Math.round((st.maxBlobBytes / 1024 ** 3) * 10) / 10} GiB` : ''}).`
            : 'Not serving.',
        );
    });
  cmd
    .command('add')
    .description('Add a remote repository')
    .argument('<name>', 'a short name, used as NAME: in image references')
    .argument('<url>', 'http(s)://HOST:PORT of the repository')
    .option('--push-token <token>', 'its token: for pushing, and for pulling from a private repository')
    .option('--allow-private', 'allow a loopback, link-local or private address (a repository on this machine or the LAN)')
    .action(async (name: string, url: string, opts: { pushToken?: string; allowPrivate?: boolean }, self: Command) => {
      const body: Record<string, unknown> = { name, url };
      if (opts.pushToken) body.token = opts.pushToken;
      if (opts.allowPrivate) body.allowPrivate = true;
      await mutate(self, 'POST', '/1.0/repos', body, { done: `Repository ${name} added (${url}).` });
    });
  cmd
    .command('list')
    .alias('ls')
    .description('List remote repositories')
    .action(async (_opts: unknown, self: Command) => {
      const repos = await clientFor(self).get<RemoteView[]>('/1.0/repos');
      print(
        renderList(repos, globals(self).format, [
          { header: 'NAME', value: (r) => r.name },
          { header: 'URL', value: (r) => r.url },
          { header: 'PUSH', value: (r) => (r.token ? 'yes' : 'no') },
          { header: 'PRIVATE', value: (r) => (r.allowPrivate ? 'allowed' : 'no') },
        ]),
      );
    });
  cmd
    .command('remove')
    .alias('rm')
    .description('Forget a remote repository')
    .argument('<name>', 'repository name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      await mutate(self, 'DELETE', `/1.0/repos/${encodeURIComponent(name)}`, undefined, { done: `Repository ${name} removed.` });
    });
  return cmd;
}
