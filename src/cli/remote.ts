import { createInterface } from 'node:readline/promises';
import { Command } from 'commander';
import { VmkitError } from '../errors.js';
import type { Whoami } from '../wire/auth.js';
import { presentedCertificate } from '../client/pinning.js';
import { VmkitClient } from './client.js';
import { globals, print } from './common.js';
import { renderData, renderList } from './output.js';
import { readRemotes, readTokenFile, remotesFile, writeRemotes, type RemoteEntry } from './remotes.js';

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

/** `vmkit remote …`: daemons this CLI talks to over HTTPS, each with its pinned certificate. */
export function remoteCommand(): Command {
  const cmd = new Command('remote').description('Remote daemons: add (pins the HTTPS certificate on first use), list, remove');
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit remote add lab https://10.0.0.5:8443 --token-file lab.token
  vmkit remote add lab https://10.0.0.5:8443 --token-file lab.token --accept-certificate   # scripts
  vmkit --remote lab list          (or VMKIT_REMOTE=lab)
  vmkit remote list
  vmkit remote remove lab

The fingerprint shown at "remote add" must match the one the daemon logs at start
("API certificate SHA-256 fingerprint: …"). Afterwards a different certificate is refused.`,
  );
  cmd
    .command('add')
    .description("Add a remote: connect, show and pin its certificate's SHA-256 fingerprint, check the token")
    .argument('<name>', 'a short name for --remote NAME')
    .argument('<url>', 'https://HOST:PORT of a daemon started with --listen')
    .option('--token-file <file>', 'a file holding the token to use with it (kept in the remotes file, mode 0600)')
    .option('--accept-certificate', 'pin the presented certificate without asking (scripts: check the fingerprint another way)')
    .action(async (name: string, urlText: string, opts: { tokenFile?: string; acceptCertificate?: boolean }, self: Command) => {
      if (name.includes('://') || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) {
        throw new VmkitError('VMKIT_NAME_INVALID', `"${name}" is not a remote name.`, { hint: 'Use letters, digits, ".", "_" and "-" (e.g. lab).' });
      }
      const remotes = readRemotes();
      if (remotes[name]) {
        throw new VmkitError('VMKIT_ALREADY_EXISTS', `A remote named "${name}" exists (${remotes[name].url}).`, { hint: `Remove it first: vmkit remote remove ${name}` });
      }
      let url: URL;
      try {
        url = new URL(urlText);
      } catch {
        throw new VmkitError('VMKIT_INVALID_ARGUMENT', `"${urlText}" is not a URL.`, { hint: 'Example: https://10.0.0.5:8443' });
      }
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
        throw new VmkitError('VMKIT_INVALID_ARGUMENT', `A remote is reached over https:// (plain http only on loopback), not ${url.protocol}//.`, {
          hint: `Use https://${url.host}`,
        });
      }
      // --token-file is also a global option: commander may hand it to either.
      const tokenFile = opts.tokenFile ?? globals(self).tokenFile;
      const token = tokenFile ? readTokenFile(tokenFile) : undefined;
      const entry: RemoteEntry = { url: url.origin, ...(token ? { token } : {}), addedAt: new Date().toISOString() };
      if (url.protocol === 'https:') {
        let cert;
        try {
          cert = await presentedCertificate(url);
        } catch (err) {
          throw new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Cannot open a TLS connection to ${url.origin}: ${(err as Error).message}`, {
            hint: 'Check the address and that the daemon runs with --listen (HTTPS).',
          });
        }
        process.stderr.write(`Certificate of ${url.origin}:\n  subject ${cert.subject}\n  expires ${cert.validTo}\n  SHA-256 fingerprint ${cert.fingerprint}\n`);
        if (!opts.acceptCertificate) {
          if (!process.stdin.isTTY) {
            throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Not pinning an unconfirmed certificate: no terminal to ask on.', {
              hint: 'Compare the fingerprint above with the one the daemon logged at start, then re-run with --accept-certificate.',
            });
          }
          if (!(await confirm('Does it match the fingerprint the daemon logged at start? Pin it? [y/N] '))) {
            throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'Certificate not accepted; the remote was not added.', {
              hint: "Check the address, or ask the daemon's admin for its fingerprint.",
            });
          }
        }
        entry.fingerprint = cert.fingerprint;
      }
      // Try it before keeping it: the certificate just pinned, and the token.
      const g = globals(self);
      const client = new VmkitClient({ dir: g.dir, entry: { name, ...entry } });
      let who: Whoami | undefined;
      if (token) who = await client.get<Whoami>('/1.0/auth/whoami');
      remotes[name] = entry;
      writeRemotes(remotes);
      print(`Remote ${name} added (${url.origin}${who ? `, token "${who.name}" with role ${who.role}` : ', no token: pass one with --token-file or VMKIT_TOKEN'}).`);
    });
  cmd
    .command('list')
    .alias('ls')
    .description('List the remotes (their tokens are not shown)')
    .action((_opts: unknown, self: Command) => {
      const rows = Object.entries(readRemotes()).map(([name, r]) => ({ name, url: r.url, fingerprint: r.fingerprint, token: !!r.token, addedAt: r.addedAt }));
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') return print(renderData(rows, format));
      print(
        renderList(rows, format, [
          { header: 'NAME', value: (r) => r.name },
          { header: 'URL', value: (r) => r.url },
          { header: 'FINGERPRINT', value: (r) => (r.fingerprint ? `${r.fingerprint.slice(0, 23)}…` : 'none (http)') },
          { header: 'TOKEN', value: (r) => (r.token ? 'yes' : 'no') },
        ]),
      );
    });
  cmd
    .command('remove')
    .alias('rm')
    .description('Forget a remote (its pinned certificate and token)')
    .argument('<name>', 'remote name')
    .action((name: string) => {
      const remotes = readRemotes();
      if (!remotes[name]) throw new VmkitError('VMKIT_NOT_FOUND', `No remote named "${name}" in ${remotesFile()}.`, { hint: '"vmkit remote list" shows them.' });
      delete remotes[name];
      writeRemotes(remotes);
      print(`Remote ${name} removed.`);
    });
  return cmd;
}
