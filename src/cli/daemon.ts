import { Command } from 'commander';
import { VmkitError } from '../errors.js';
import { DEFAULT_DIR } from './client.js';
import { globals } from './common.js';

/** `vmkit daemon`: runs vmkitd in the foreground (what the systemd unit starts). */
export function daemonCommand(): Command {
  return new Command('daemon')
    .description('Run the vmkit daemon in the foreground')
    .option('--listen <addr:port>', 'also serve the API on TCP: HTTPS with a certificate made on first start (or --tls-cert/--tls-key)')
    .option('--token-file <file>', 'a file holding a bootstrap admin token for --listen, at least 32 characters (env VMKIT_TOKEN_FILE)')
    .option('--tls-cert <file>', 'the HTTPS certificate (PEM) for --listen, with --tls-key')
    .option('--tls-key <file>', 'the key (PEM) of --tls-cert')
    .option('--insecure-http', 'serve plain HTTP on --listen (only allowed on a loopback address)')
    .option('--shared-dir <path>', 'storage every cluster host mounts at this same path (a NAS): new disks go there, live migration moves memory only')
    .option('--guest-memory <MiB>', 'the most memory this host gives guests (default: all of it)')
    .action(
      async (opts: { listen?: string; tokenFile?: string; tlsCert?: string; tlsKey?: string; insecureHttp?: boolean; sharedDir?: string; guestMemory?: string }, self: Command) => {
        const g = globals(self);
        if (opts.listen !== undefined && !/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(opts.listen)) {
          throw new VmkitError('VMKIT_INVALID_ARGUMENT', `--listen ${JSON.stringify(opts.listen)} is not ADDRESS:PORT.`, {
            hint: 'For example: --listen 127.0.0.1:8443 or --listen 0.0.0.0:8443',
          });
        }
        // A token on the command line is visible to every user in /proc/PID/cmdline.
        if (g.token || process.env.VMKIT_TOKEN) {
          throw new VmkitError('VMKIT_INVALID_ARGUMENT', 'The daemon does not take its token from --token or VMKIT_TOKEN (other users can read them).', {
            hint: 'Write the token to a file only you can read and pass it: (umask 077; openssl rand -hex 32 > /etc/vmkit/token); vmkit daemon --token-file /etc/vmkit/token',
          });
        }
        // Loaded lazily so every other command starts fast without fastify, sqlite and QEMU code.
        const { runDaemon } = await import('../daemon.js');
        await runDaemon({
          dir: g.dir || process.env.VMKIT_DIR || DEFAULT_DIR,
          listen: opts.listen,
          tokenFile: opts.tokenFile || g.tokenFile || process.env.VMKIT_TOKEN_FILE || undefined,
          tlsCert: opts.tlsCert,
          tlsKey: opts.tlsKey,
          insecureHttp: opts.insecureHttp,
          sharedDir: opts.sharedDir,
          guestMemoryMiB: opts.guestMemory ? Number(opts.guestMemory) : undefined,
        });
      },
    )
    .addHelpText(
      'after',
      `
Environment: VMKIT_CONSOLE_LOG_MAX_BYTES caps each instance's serial console log
(console.log + console.log.1, default 8388608 = 8 MiB, rotated while the guest runs).

Examples:
  sudo vmkit daemon
  vmkit daemon --dir ~/.local/share/vmkit
  (umask 077; openssl rand -hex 32 > /etc/vmkit/token)
  vmkit daemon --listen 0.0.0.0:8443 --token-file /etc/vmkit/token
  vmkit token create ci --role operator --expires 30d      # on the host, over the socket
  vmkit remote add lab https://host:8443 --token-file ci.token   # on a client: pins the certificate
  vmkit --remote lab list`,
    );
}
