import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import { Command } from 'commander';
import type { FidelityEntry, Image, ImageView, Operation } from '../domain/types.js';
import { VmkitError } from '../errors.js';
import { clientFor, globals, mutate, print } from './common.js';
import { formatMiB, renderData, renderInfo, renderList, type Field } from './output.js';
import { downloadFile, refuseExisting } from './transfer.js';
import { parseDiskSize, parseFirmwareFlag } from './launch.js';

function size(bytes: number | undefined): string {
  if (bytes === undefined) return '';
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)}GiB`;
  return `${Math.round(bytes / 2 ** 20)}MiB`;
}

interface BuildCacheList {
  entries: Array<{ key: string; bytes: number; lastUsed: string; step?: string; image?: string; inUse: boolean }>;
  bytes: number;
  limits: { maxBytes: number; maxEntries: number };
}

/** `90s`, `30m`, `12h`, `7d`, `2w` (or bare seconds) → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhdw]?)$/i.exec(text.trim());
  if (!m) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `"${text}" is not a duration.`, { hint: 'Write a number with s, m, h, d or w, e.g. 7d or 12h.' });
  return Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]!.toLowerCase() as '' | 's' | 'm' | 'h' | 'd' | 'w'];
}

const EXPORT_FORMATS = ['ova', 'qcow2', 'vmdk', 'vdi', 'vhdx', 'raw'];

/** The export format a file name asks for (as the daemon's export decides it). */
function exportFormatOf(file: string, declared?: string): string {
  const ext = extname(file).toLowerCase().slice(1);
  const format = declared ?? (ext === 'img' ? 'raw' : ext);
  if (!EXPORT_FORMATS.includes(format))
    throw new VmkitError('VMKIT_IMAGE_FORMAT', `Cannot tell which format to export ${file} as.`, {
      hint: `Name it .ova, .qcow2, .vmdk, .vdi, .vhdx or .raw, or pass --disk-format (${EXPORT_FORMATS.join(', ')}).`,
    });
  return format;
}

/**
 * \`image export\` against a remote daemon: the daemon may not write a path on its host for a
 * TCP caller, so the file is downloaded (GET /1.0/images/NAME/export?format=F) and written
 * here, under a temporary name renamed into place once complete.
 */
async function downloadExport(self: Command, name: string, file: string, format: string): Promise<void> {
  const dest = resolve(file);
  await refuseExisting(dest, 'Choose another destination or remove the file first.');
  const bytes = await downloadFile(clientFor(self), `/1.0/images/${encodeURIComponent(name)}/export?format=${format}`, dest, `export ${name}`);
  if (globals(self).format === 'json' || globals(self).format === 'yaml') print(JSON.stringify({ path: dest, format, size: bytes }));
  else print(`Image ${name} downloaded to ${dest} (${format}, ${size(bytes)}).`);
}

/** The readable view of one image. */
export function imageFields(i: Image | ImageView): Field[] {
  const users = 'users' in i ? i.users : undefined;
  return [
    ['Name', i.name],
    ['Version', i.version],
    ['Description', i.description],
    ['Architecture', i.arch],
    ['Source', i.source],
    ['Origin', i.origin],
    ['Created', i.createdAt],
    ['Checksum', i.checksum],
    ['Default CPUs', i.defaults?.cpus],
    ['Default memory', formatMiB(i.defaults?.memoryMiB)],
    ['NIC models', (i.nicModels ?? []).join(', ')],
    ['Minimum disk', i.minDiskBytes !== undefined ? size(i.minDiskBytes) : undefined],
    ['Boot', i.boot ? `kernel ${i.boot.kernel}${i.boot.initrd ? `, initrd ${i.boot.initrd}` : ''}` : 'firmware (disk)'],
    ['Firmware', i.firmware === 'uefi' ? 'UEFI (OVMF)' : 'BIOS (SeaBIOS)'],
    [
      'Disks',
      (i.disks ?? []).map((d) =>
        [d.name, d.file, d.format, d.virtualSize !== undefined ? `virtual ${size(d.virtualSize)}` : '', d.actualSize !== undefined ? `actual ${size(d.actualSize)}` : '']
          .join('  ')
          .trimEnd(),
      ),
    ],
    ['Used by', users ? users.instances : undefined],
    [
      'Build',
      i.build
        ? [
            `on ${i.build.base} in ${i.build.seconds.toFixed(1)} s (recipe and log: vmkit image info ${i.name} --recipe / --log)`,
            ...i.build.steps.map((st) => `${st.index}. ${st.step}  ${st.cached ? 'cached' : `${st.seconds.toFixed(1)} s`}`),
          ]
        : undefined,
    ],
    [
      'Fidelity',
      i.fidelity
        ? renderFidelity(i.fidelity)
            .split('\n')
            .slice(1)
            .map((l) => l.trim())
        : undefined,
    ],
  ];
}

/** The fidelity report of an import/export: what mapped, what was defaulted, what was dropped. */
export function renderFidelity(entries: FidelityEntry[]): string {
  const lines = ['Fidelity report:'];
  for (const e of entries) {
    const mark = e.status === 'mapped' ? 'mapped   ' : e.status === 'defaulted' ? 'defaulted' : 'DROPPED  ';
    lines.push(`  ${mark}  ${e.item}${e.value ? `: ${e.value}` : ''}${e.reason ? ` (${e.reason})` : ''}`);
  }
  return lines.join('\n');
}

function resultOf<T>(op: unknown): T {
  return ((op as Operation).result ?? op) as T;
}

/** `vmkit image …`: the images instances are created from. */
export function imageCommand(): Command {
  const cmd = new Command('image').description('Images: list, inspect, import, export, delete');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit image list
  vmkit image info appliance
  vmkit image build -f recipe.yaml          # → NAME:N (see doc/images.md)
  vmkit image info web:2 --log
  vmkit image import ./disk.vmdk --name legacy-app
  vmkit image import ./appliance.ova
  vmkit image export legacy-app ./out.ova
  vmkit image export legacy-app ./out.qcow2
  vmkit image export legacy-app ./disk.img --disk-format raw
  vmkit image delete legacy-app
  vmkit image list lab:
  vmkit image pull lab:app-v2
  vmkit image push app-v2 lab:`,
  );
  cmd
    .command('list')
    .alias('ls')
    .description('List images (of this host, or of a repository with "REPO:")')
    .argument('[repo]', 'a repository as "NAME:" (see "vmkit repo list")')
    .action(async (repo: string | undefined, _opts: unknown, self: Command) => {
      const images = repo
        ? await clientFor(self).get<Image[]>(`/1.0/repos/${encodeURIComponent(repo.replace(/:$/, ''))}/images`)
        : await clientFor(self).get<Image[]>('/1.0/images');
      // Built images are NAME:N; the newest of each is what NAME alone names.
      const newest = new Map<string, number>();
      for (const i of images) {
        const m = /^(.+):([0-9]+)$/.exec(i.name);
        if (m) newest.set(m[1]!, Math.max(newest.get(m[1]!) ?? 0, Number(m[2])));
      }
      const isNewest = (name: string) => {
        const m = /^(.+):([0-9]+)$/.exec(name);
        return !!m && newest.get(m[1]!) === Number(m[2]) && !images.some((i) => i.name === m[1]);
      };
      print(
        renderList(images, globals(self).format, [
          { header: 'NAME', value: (i) => i.name },
          { header: 'VERSION', value: (i) => (!repo && isNewest(i.name) ? `${i.version} (${i.name.replace(/:[0-9]+$/, '')})` : i.version) },
          { header: 'SOURCE', value: (i) => i.source ?? repo },
          { header: 'CPUS', value: (i) => i.defaults?.cpus },
          { header: 'MEMORY', value: (i) => formatMiB(i.defaults?.memoryMiB) },
          { header: 'DESCRIPTION', value: (i) => i.description },
        ]),
      );
    });
  cmd
    .command('info')
    .alias('show')
    .description('Show one image: disks (format, virtual and actual size), checksum, metadata, users')
    .argument('<name>', 'image name (NAME:N for one version of a built image; NAME alone is its newest)')
    .option('--recipe', 'print the recipe the image was built from (built images)')
    .option('--log', 'print the build log (built images)')
    .action(async (name: string, o: { recipe?: boolean; log?: boolean }, self: Command) => {
      if (o.recipe || o.log) {
        const r = await clientFor(self).get<{ recipe: string; log: string }>(`/1.0/images/${encodeURIComponent(name)}/build`);
        print([o.recipe ? r.recipe.trimEnd() : undefined, o.log ? r.log.trimEnd() : undefined].filter((x) => x !== undefined).join('\n\n'));
        return;
      }
      const image = await clientFor(self).get<ImageView>(`/1.0/images/${encodeURIComponent(name)}`);
      print(renderInfo(image, globals(self).format, () => imageFields(image)));
    });
  cmd
    .command('build')
    .description(
      'Build an image from a recipe (YAML: name, base, steps of copy/run/cloud-init) in a build VM; publishes NAME:N, NAME pointing at the newest. Unchanged steps come from the cache',
    )
    .requiredOption('-f, --file <recipe>', 'the recipe file (copy steps read files relative to its folder)')
    .option('--keep-on-failure', 'leave the build VM running when a step fails, to look at it (vmkit console)')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (o: { file: string; keepOnFailure?: boolean; wait: boolean }, self: Command) => {
      const file = resolve(o.file);
      const recipe = await readFile(file, 'utf8').catch((err: Error) => {
        throw new VmkitError('VMKIT_FILE_NOT_FOUND', `Cannot read the recipe ${file}: ${err.message}`, { hint: 'Give the path of a recipe file with -f.' });
      });
      // A remote daemon cannot read this host's files: the recipe goes as text, without its folder
      // (the daemon then refuses copy steps with VMKIT_RECIPE_INVALID).
      const body: Record<string, unknown> = { recipe, ...(clientFor(self).remote ? {} : { dir: dirname(file) }), ...(o.keepOnFailure ? { keepOnFailure: true } : {}) };
      await mutate(self, 'POST', '/1.0/images/build', body, {
        wait: o.wait,
        done: (r) => {
          const res = resultOf<{ image: Image; steps: Array<{ index: number; step: string; cached: boolean; seconds: number }>; seconds: number }>(r);
          const lines = res.steps.map((st) => `  ${st.index}. ${st.step.padEnd(50)} ${st.cached ? 'cached' : `${st.seconds.toFixed(1)} s`}`);
          return [`Image ${res.image.name} built in ${res.seconds.toFixed(1)} s:`, ...lines].join('\n');
        },
      });
    });
  const cache = cmd.command('build-cache').description('The step cache of "vmkit image build": list its entries, prune them (see doc/images.md, "The step cache")');
  cache
    .command('list')
    .alias('ls')
    .description('List the step cache: each entry (a step result), its size, when a build last used it, least recently used first')
    .action(async (_o: unknown, self: Command) => {
      const r = await clientFor(self).get<BuildCacheList>('/1.0/images/build/cache');
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') {
        print(renderData(r, format));
        return;
      }
      print(
        renderList(r.entries, format, [
          { header: 'KEY', value: (e) => e.key.slice(0, 12) },
          { header: 'IMAGE', value: (e) => e.image ?? '' },
          { header: 'STEP', value: (e) => (e.step ?? '').slice(0, 50) },
          { header: 'SIZE', value: (e) => size(e.bytes) },
          { header: 'LAST USED', value: (e) => e.lastUsed.replace(/\.\d+Z$/, 'Z') },
          { header: 'IN USE', value: (e) => (e.inUse ? 'yes' : '') },
        ]),
      );
      const limit = [r.limits.maxBytes ? `${size(r.limits.maxBytes)}` : '', r.limits.maxEntries ? `${r.limits.maxEntries} entries` : ''].filter(Boolean).join(', ') || 'none';
      print(`${r.entries.length} entries, ${size(r.bytes) || '0MiB'}; kept after each build: ${limit}`);
    });
  cache
    .command('prune')
    .description('Remove step cache entries no build uses (each with the entries linked on it): the next build runs those steps again')
    .option('--all', 'every entry not in use')
    .option('--older-than <duration>', 'entries no build used for this long: 90s, 30m, 12h, 7d, 2w')
    .action(async (o: { all?: boolean; olderThan?: string }, self: Command) => {
      if (!o.all && o.olderThan === undefined) throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Say what to prune.', { hint: 'Give --all or --older-than DURATION (e.g. 7d).' });
      const body: Record<string, unknown> = {};
      if (o.all) body.all = true;
      if (o.olderThan !== undefined) body.olderThanSeconds = parseDuration(o.olderThan);
      await mutate(self, 'POST', '/1.0/images/build/cache/prune', body, {
        done: (res) => {
          const r = res as { removed: Array<{ key: string; bytes: number; step?: string }>; freedBytes: number; kept: number; keptBytes: number };
          return [
            `Removed ${r.removed.length} cache entr${r.removed.length === 1 ? 'y' : 'ies'} (${size(r.freedBytes) || '0MiB'}); ${r.kept} kept (${size(r.keptBytes) || '0MiB'}).`,
            ...r.removed.map((e) => `  ${e.key.slice(0, 12)}  ${e.step ?? ''}`),
          ].join('\n');
        },
      });
    });
  cmd
    .command('import')
    .description('Import a disk image (.qcow2 .raw/.img .vmdk .vdi .vhdx) or an .ova as a new image; or download one (https://… --sha256 …)')
    .argument('<file>', 'path of the file (on the daemon host; with --remote a file here, uploaded; relative paths are made absolute here), or an http(s) URL')
    .option('--sha256 <hex>', 'for a URL: the sha256 the download must match (required)')
    .option('-n, --name <name>', 'image name (default: from the file name)')
    .option('-F, --disk-format <format>', 'declare the file format instead of the extension (qcow2, raw, vmdk, vdi, vhdx, ova); --format stays the output format')
    .option('-d, --description <text>', 'description')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (file: string, opts: { name?: string; diskFormat?: string; description?: string; sha256?: string; wait: boolean }, self: Command) => {
      if (/^https?:\/\//i.test(file)) {
        if (!opts.sha256) throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'A download needs --sha256.', { hint: "Take it from the publisher's SHA256SUMS file." });
        const dl: Record<string, unknown> = { url: file, sha256: opts.sha256 };
        if (opts.name) dl.name = opts.name;
        if (opts.diskFormat) dl.format = opts.diskFormat;
        if (opts.description) dl.description = opts.description;
        await mutate(self, 'POST', '/1.0/images/download', dl, {
          wait: opts.wait,
          done: (op) => {
            const r = resultOf<{ image: Image; fidelity: FidelityEntry[] }>(op);
            return `Image ${r.image.name} downloaded (sha256 checked) and imported.\n${renderFidelity(r.fidelity)}`;
          },
        });
        return;
      }
      // Against a remote daemon the file is on this machine: it is uploaded (streamed).
      const upload = clientFor(self).remote
        ? async (client: ReturnType<typeof clientFor>) => {
            const local = resolve(file);
            const bytes = (await stat(local)).size;
            const q = new URLSearchParams({ filename: basename(local) });
            if (opts.name) q.set('name', opts.name);
            if (opts.diskFormat) q.set('diskFormat', opts.diskFormat);
            if (opts.description) q.set('description', opts.description);
            const res = await client.sendRaw('POST', `/1.0/images/upload?${q}`, createReadStream(local), {
              'content-type': 'application/octet-stream',
              'content-length': String(bytes),
            });
            return client.parse(res);
          }
        : undefined;
      const body: Record<string, unknown> = { source: resolve(file) };
      if (opts.name) body.name = opts.name;
      if (opts.diskFormat) body.format = opts.diskFormat;
      if (opts.description) body.description = opts.description;
      await mutate(self, 'POST', '/1.0/images', body, {
        send: upload,
        wait: opts.wait,
        done: (op) => {
          const r = resultOf<{ image: Image; fidelity: FidelityEntry[] }>(op);
          return `Image ${r.image.name} imported.\n${renderFidelity(r.fidelity)}`;
        },
      });
    });
  cmd
    .command('set')
    .description("Edit an image's defaults for instances created from now on")
    .argument('<name>', 'image name')
    .option('--nic-model <model>', 'default NIC model: virtio-net, e1000 or rtl8139')
    .option('--min-disk <size>', 'minimum root disk, e.g. 10G (instances are grown to it)')
    .option('--firmware <firmware>', 'bios (SeaBIOS) or uefi (OVMF; needs the ovmf package on the host)')
    .option('-c, --cpus <n>', 'default vCPUs')
    .option('-m, --memory <MiB>', 'default memory in MiB')
    .action(async (name: string, o: { nicModel?: string; minDisk?: string; firmware?: string; cpus?: string; memory?: string }, self: Command) => {
      const body: Record<string, unknown> = {};
      if (o.nicModel) body.nicModel = o.nicModel;
      if (o.minDisk) body.minDiskBytes = parseDiskSize(o.minDisk);
      if (o.firmware) body.firmware = parseFirmwareFlag(o.firmware);
      if (o.cpus) body.cpus = Number(o.cpus);
      if (o.memory) body.memoryMiB = Number(o.memory);
      if (Object.keys(body).length === 0)
        throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Nothing to change.', { hint: 'Give --nic-model, --min-disk, --firmware, --cpus or --memory.' });
      await mutate(self, 'PATCH', `/1.0/images/${encodeURIComponent(name)}`, body, { done: `Image ${name} updated.` });
    });
  cmd
    .command('build-debian')
    .description("Build a cloud-ready Debian image (cloud kernel, cloud-init, openssh-server, qemu-guest-agent) from the host's Debian mirror; the daemon must run as root")
    .argument('<name>', 'image name')
    .option('--release <release>', 'bookworm (default) or trixie')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (name: string, o: { release?: string; wait: boolean }, self: Command) => {
      await mutate(
        self,
        'POST',
        '/1.0/images/build-debian',
        { name, ...(o.release ? { release: o.release } : {}) },
        {
          wait: o.wait,
          done: `Image ${name} built (log in with --ssh-key; user "debian").`,
        },
      );
    });
  cmd
    .command('export')
    .description('Export an image: .ova (OVF 1.0 + stream-optimized VMDK, for VirtualBox/VMware) or one disk (.qcow2 .vmdk .vdi .vhdx .raw)')
    .argument('<name>', 'image name')
    .argument('<file>', 'destination path (on the daemon host; with --remote a file here, downloaded; relative paths are made absolute here); must not exist')
    .option('-F, --disk-format <format>', 'ova, qcow2, vmdk, vdi, vhdx or raw (default: from the extension); --format stays the output format')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (name: string, file: string, opts: { diskFormat?: string; wait: boolean }, self: Command) => {
      // A remote daemon never writes a path on its host for us: the file is downloaded here.
      if (clientFor(self).remote) return downloadExport(self, name, file, exportFormatOf(file, opts.diskFormat));
      const body: Record<string, unknown> = { path: resolve(file) };
      if (opts.diskFormat) body.format = opts.diskFormat;
      await mutate(self, 'POST', `/1.0/images/${encodeURIComponent(name)}/export`, body, {
        wait: opts.wait,
        done: (op) => {
          const r = resultOf<{ path: string; format: string; size: number; fidelity: FidelityEntry[] }>(op);
          return `Image ${name} exported to ${r.path} (${r.format}, ${size(r.size)}).\n${renderFidelity(r.fidelity)}`;
        },
      });
    });
  cmd
    .command('pull')
    .description('Download an image from a repository: resumable, sha256-verified before it appears')
    .argument('<ref>', 'REPO:IMAGE')
    .option('-n, --name <name>', 'local image name (default: the remote name)')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (ref: string, opts: { name?: string; wait: boolean }, self: Command) => {
      const m = /^([^:]+):(.+)$/.exec(ref);
      if (!m) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `"${ref}" is not REPO:IMAGE.`, { hint: 'Example: vmkit image pull lab:app-v2' });
      const body: Record<string, unknown> = { repo: m[1], image: m[2] };
      if (opts.name) body.name = opts.name;
      await mutate(self, 'POST', '/1.0/images/pull', body, { wait: opts.wait, done: `Image ${opts.name ?? m[2]} pulled from ${m[1]}.` });
    });
  cmd
    .command('push')
    .description('Upload an image to a writable repository (added with a token)')
    .argument('<name>', 'image name')
    .argument('<repo>', 'REPO: (see "vmkit repo list")')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (name: string, repo: string, opts: { wait: boolean }, self: Command) => {
      const r = repo.replace(/:$/, '');
      await mutate(self, 'POST', `/1.0/images/${encodeURIComponent(name)}/push`, { repo: r }, { wait: opts.wait, done: `Image ${name} pushed to ${r}.` });
    });
  cmd
    .command('delete')
    .alias('rm')
    .description('Delete an image (refused while an instance uses it)')
    .argument('<name>', 'image name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      await mutate(self, 'DELETE', `/1.0/images/${encodeURIComponent(name)}`, undefined, { done: `Image ${name} deleted.` });
    });
  return cmd;
}
