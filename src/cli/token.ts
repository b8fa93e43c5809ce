import { Command, Option } from 'commander';
import { ROLES, type CreatedToken, type TokenInfo } from '../wire/auth.js';
import { clientFor, globals, print } from './common.js';
import { renderData, renderList } from './output.js';

/** `vmkit token …`: scoped API tokens (admin only). */
export function tokenCommand(): Command {
  const cmd = new Command('token').description('API tokens with a role (viewer, operator, admin) for remote clients and the web console');
  cmd.addHelpText(
    'after',
    `
Roles: viewer reads (lists, info, logs, events; no console); operator also runs instances
(create, start/stop, delete, clone, snapshots, forwards, NICs, consoles); admin does
everything (images, networks, cluster, repositories, tokens). Only an admin (or root on the
host's socket) manages tokens. The token is printed once: only its SHA-256 is kept.

Examples:
  vmkit token create ci --role operator --expires 30d > ci.token
  vmkit token list
  vmkit token revoke ci`,
  );
  cmd
    .command('create')
    .description('Create a token and print it once')
    .argument('<name>', 'a name for the token (who or what uses it)')
    .addOption(new Option('--role <role>', 'what it may do').choices(ROLES).makeOptionMandatory())
    .option('--expires <duration>', 'expire after this long: 90m, 12h, 30d, 8w (default: never)')
    .action(async (name: string, opts: { role: (typeof ROLES)[number]; expires?: string }, self: Command) => {
      const made = await clientFor(self).post<CreatedToken>('/1.0/tokens', { name, role: opts.role, ...(opts.expires ? { expires: opts.expires } : {}) });
      const format = globals(self).format;
      if (format === 'json' || format === 'yaml') return print(renderData(made, format));
      // The token alone on stdout (so `> file` keeps just it); the rest on stderr.
      print(made.token);
      process.stderr.write(`Token "${made.name}" (${made.role}${made.expiresAt ? `, expires ${made.expiresAt}` : ', never expires'}) created. It is shown only this once.\n`);
    });
  cmd
    .command('list')
    .alias('ls')
    .description('List tokens: name, role, created, expires, last used')
    .action(async (_opts: unknown, self: Command) => {
      const tokens = await clientFor(self).get<TokenInfo[]>('/1.0/tokens');
      print(
        renderList(tokens, globals(self).format, [
          { header: 'NAME', value: (t) => t.name },
          { header: 'ROLE', value: (t) => t.role },
          { header: 'CREATED', value: (t) => t.createdAt },
          { header: 'EXPIRES', value: (t) => t.expiresAt ?? 'never' },
          { header: 'LAST USED', value: (t) => t.lastUsedAt },
        ]),
      );
    });
  cmd
    .command('revoke')
    .description('Revoke a token: it (and browser sessions made with it) stops working at once')
    .argument('<name>', 'token name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      await clientFor(self).delete(`/1.0/tokens/${encodeURIComponent(name)}`);
      print(`Token ${name} revoked.`);
    });
  return cmd;
}
