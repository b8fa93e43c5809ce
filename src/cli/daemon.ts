import { Command } from 'commander';
import { VmkitError } from '../errors.js';
import { DEFAULT_DIR } from './client.js';
import { globals } from './common.js';

/** `vmkit daemon`: runs vmkitd in the foreground (what the systemd unit starts). */
export function daemonCommand(): Command {
  return new Command('daemon')
    .description('Run the vmkit daemon in the foreground')
    .option('--listen <addr:port>', 'also serve the API on TCP (needs --token or VMKIT_TOKEN)')
    .option('--shared-dir <path>', 'storage every cluster host mounts at this same path (a NAS): new disks go there, live migration moves memory only')
    .option('--guest-memory <MiB>', 'the most memory this host gives guests (default: all of it)')
    .action(async (opts: { listen?: string; sharedDir?: string; guestMemory?: string }, self: Command) => {
      const g = globals(self);
      if (opts.listen !== undefined && !/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(opts.listen)) {
        throw new VmkitError('VMKIT_INVALID_ARGUMENT', `--listen ${JSON.stringify(opts.listen)} is not ADDRESS:PORT.`, {
          hint: 'For example: --listen 127.0.0.1:8443 or --listen 0.0.0.0:8443',
        });
      }
      // Loaded lazily so every other command starts fast without fastify, sqlite and QEMU code.
      const { runDaemon } = await import('../daemon.js');
      await runDaemon({
        dir: g.dir || process.env.VMKIT_DIR || DEFAULT_DIR,
        listen: opts.listen,
        sharedDir: opts.sharedDir,
        guestMemoryMiB: opts.guestMemory ? Number(opts.guestMemory) : undefined,
        token: g.token || process.env.VMKIT_TOKEN || undefined,
      });
    })
    .addHelpText(
      'after',
      `
Environment: VMKIT_CONSOLE_LOG_MAX_BYTES caps each instance's serial console log
(console.log + console.log.1, default 8388608 = 8 MiB, rotated while the guest runs).

Examples:
  sudo vmkit daemon
  vmkit daemon --dir ~/.local/share/vmkit
  VMKIT_TOKEN=s3cret vmkit daemon --listen 0.0.0.0:8443
  vmkit --remote http://host:8443 --token s3cret list`,
    );
}
