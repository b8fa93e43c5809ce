import { Command } from 'commander';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { VmkitError } from '../errors.js';
import type { ExecResult } from '../wire/types.js';
import { clientFor, globals, instancePath, print } from './common.js';
import { runConsole } from './console.js';
import { formatBytes, renderData } from './output.js';
import { downloadFile, progress, refuseExisting } from './transfer.js';

/**
 * The guest agent's verbs: `exec`, `shell`, `file push|pull` (doc/guest-agent.md). Every byte
 * goes through the API (POST …/exec, PUT/GET …/files), so they work the same with --remote:
 * the daemon never reads or writes a path on its own host for them.
 */

const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function execCommand(): Command {
  return new Command('exec')
    .description("Run a command in the guest through its guest agent; its exit code becomes vmkit's (output is printed when it ends)")
    .argument('<name>', 'instance name')
    .argument('<command...>', 'the command and its arguments, after --')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable; replaces the environment, a default PATH is kept)', collect, [])
    .option('--cwd <dir>', 'working directory in the guest')
    .option('--timeout <seconds>', 'stop waiting after this long (default 300; the command keeps running in the guest)', (v) => Number(v))
    .option('--stdin', "send this command's standard input (at most 1 MiB) to the guest command")
    .addHelpText(
      'after',
      `
Examples:
  vmkit exec web1 -- hostname
  vmkit exec web1 --env LANG=C --cwd /tmp -- sh -c 'ls -l; exit 3'; echo $?
  echo hi | vmkit exec web1 --stdin -- cat`,
    )
    .action(async (name: string, command: string[], o: { env: string[]; cwd?: string; timeout?: number; stdin?: boolean }, self: Command) => {
      const body: Record<string, unknown> = { command };
      if (o.env.length) body.env = o.env;
      if (o.cwd) body.cwd = o.cwd;
      if (o.timeout !== undefined) {
        if (!Number.isInteger(o.timeout) || o.timeout < 1) throw new VmkitError('VMKIT_INVALID_ARGUMENT', '--timeout takes whole seconds (≥ 1).');
        body.timeout = o.timeout;
      }
      if (o.stdin) {
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const c of process.stdin) {
          n += (c as Buffer).length;
          if (n > 1024 * 1024) throw new VmkitError('VMKIT_INVALID_ARGUMENT', '--stdin takes at most 1 MiB.', { hint: 'Push larger data with "vmkit file push".' });
          chunks.push(c as Buffer);
        }
        body.stdin = Buffer.concat(chunks).toString('base64');
      }
      const client = clientFor(self);
      const r = await client.post<ExecResult>(instancePath(name, 'exec'), body, { timeoutMs: ((o.timeout ?? 300) + 60) * 1000 });
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') {
        print(renderData({ ...r, stdout: Buffer.from(r.stdout, 'base64').toString('utf8'), stderr: Buffer.from(r.stderr, 'base64').toString('utf8') }, format));
      } else {
        process.stdout.write(Buffer.from(r.stdout, 'base64'));
        process.stderr.write(Buffer.from(r.stderr, 'base64'));
        if (r.truncated) process.stderr.write('vmkit: the guest agent kept only the first 16 MiB of the output\n');
      }
      // The guest command's status is ours; one vmkit's own errors never use (they exit 1-9) is
      // indistinguishable, as with ssh.
      process.exitCode = r.exitCode >= 0 && r.exitCode <= 255 ? r.exitCode : 255;
    });
}

export function shellCommand(): Command {
  return new Command('shell')
    .description('An interactive shell in the guest, over its serial console (Ctrl-] detaches); the guest must offer a shell or login there')
    .argument('<name>', 'instance name')
    .addHelpText(
      'after',
      `
The shell is the serial console (vmkit console NAME): it works without a guest agent and
keeps a real terminal. For one command with its exit code, use "vmkit exec".`,
    )
    .action(async (name: string, _o: unknown, self: Command) => {
      await runConsole(clientFor(self), name, { input: process.stdin, output: process.stdout, status: process.stderr });
    });
}

/** `NAME:/path` → [name, path]. */
export function parseGuestTarget(spec: string): { name: string; path: string } {
  const at = spec.indexOf(':');
  if (at <= 0 || !spec.slice(at + 1).startsWith('/')) {
    throw new VmkitError('VMKIT_INVALID_ARGUMENT', `"${spec}" is not NAME:/absolute/path.`, { hint: 'e.g. vmkit file push ./app.conf web1:/etc/app.conf' });
  }
  return { name: spec.slice(0, at), path: spec.slice(at + 1) };
}

export function fileCommand(): Command {
  const cmd = new Command('file').description('Copy files to and from a guest through its guest agent (guest-file-*, in 64 KiB chunks)');
  cmd
    .command('push')
    .description('Copy a local file into the guest')
    .argument('<local>', "a file here ('-' = standard input)")
    .argument('<target>', 'NAME:/absolute/path in the guest')
    .option('--overwrite', 'replace the file if it exists (default: refuse)')
    .option('--mode <octal>', 'permissions of the file in the guest, e.g. 0644 (default: what the agent creates, 0600 or as umask allows)')
    .action(async (local: string, target: string, o: { overwrite?: boolean; mode?: string }, self: Command) => {
      const { name, path } = parseGuestTarget(target);
      if (o.mode !== undefined && !/^0?[0-7]{3,4}$/.test(o.mode)) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `--mode ${o.mode} is not octal permissions (e.g. 0644).`);
      const client = clientFor(self);
      const q = new URLSearchParams({ path });
      if (o.overwrite) q.set('overwrite', 'true');
      if (o.mode) q.set('mode', o.mode);
      let body: NodeJS.ReadableStream | Buffer;
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (local === '-') {
        // The transport needs a length: standard input is read first (at most 256 MiB).
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const c of process.stdin) {
          n += (c as Buffer).length;
          if (n > 256 * 1024 * 1024) throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Standard input is pushed up to 256 MiB.', { hint: 'Push a file instead.' });
          chunks.push(c as Buffer);
        }
        body = Buffer.concat(chunks);
        headers['content-length'] = String(body.length);
      } else {
        const file = resolve(local);
        const st = await stat(file).catch(() => {
          throw new VmkitError('VMKIT_FILE_NOT_FOUND', `${file} does not exist.`);
        });
        if (!st.isFile()) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `${file} is not a regular file.`);
        headers['content-length'] = String(st.size);
        body = createReadStream(file).pipe(progress(`push ${target}`, st.size));
      }
      const res = await client.sendRaw('PUT', `${instancePath(name, 'files')}?${q}`, body as never, headers, { timeoutMs: 3600_000 });
      const r = client.parse(res).metadata as { bytes: number; path: string };
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') print(renderData(r, format));
      else print(`Pushed ${formatBytes(r.bytes)} to ${name}:${r.path}.`);
    });
  cmd
    .command('pull')
    .description('Copy a file of the guest here')
    .argument('<source>', 'NAME:/absolute/path in the guest')
    .argument('<local>', "where to write it ('-' = standard output)")
    .option('--overwrite', 'replace the local file if it exists (default: refuse)')
    .action(async (source: string, local: string, o: { overwrite?: boolean }, self: Command) => {
      const { name, path } = parseGuestTarget(source);
      const client = clientFor(self);
      const dest = local === '-' ? undefined : resolve(local);
      if (dest && !o.overwrite) await refuseExisting(dest, 'Give --overwrite to replace it.');
      const url = `${instancePath(name, 'files')}?${new URLSearchParams({ path })}`;
      if (!dest) {
        await pipeline(await client.download(url), process.stdout);
        return;
      }
      const bytes = await downloadFile(client, url, dest, `pull ${source}`);
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') print(renderData({ path: dest, bytes }, format));
      else print(`Pulled ${formatBytes(bytes)} from ${name}:${path} to ${dest}.`);
    });
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit file push ./app.conf web1:/etc/app.conf --mode 0644
  vmkit file pull web1:/var/log/messages ./messages.log`,
  );
  return cmd;
}
