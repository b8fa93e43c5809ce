import { createHash } from 'node:crypto';
import { Command } from 'commander';
import type { InstanceView } from '../domain/types.js';
import { clientFor, globals, instancePath, print } from './common.js';
import { formatDuration, formatForward, formatMiB, renderInfo, type Field } from './output.js';

/** The readable view of one instance, runtime included. */
export function instanceFields(i: InstanceView): Field[] {
  const rt = i.runtime ?? {};
  return [
    ['Name', i.name],
    ['ID', i.id],
    ['State', i.stateReason ? `${i.state} (${i.stateReason})` : i.state],
    ['Image', i.imageVersion ? `${i.image} (${i.imageVersion})` : i.image],
    ['Type', i.type],
    ['CPUs', i.cpus],
    ['Memory', formatMiB(i.memoryMiB)],
    ['Firmware', i.firmware === 'uefi' ? 'UEFI (OVMF, own NVRAM)' : 'BIOS (SeaBIOS)'],
    ['Host', i.host],
    ['Created', i.createdAt],
    ['Last started', i.lastStartedAt],
    ['Snapshot', i.currentSnapshot],
    ['PID', rt.pid],
    // The uid its QEMU runs as (the process's own when running, else the one allocated) and its cgroup.
    ['UID', rt.uid ?? i.uid],
    ['Cgroup', rt.cgroup],
    ['Accelerator', rt.accel],
    ['QEMU status', rt.qemuStatus],
    ['Uptime', formatDuration(rt.uptimeSeconds)],
    ['NICs', (i.nics ?? []).map((n) => [n.id, n.model, n.mac, n.network, n.ipv4 ? `${n.ipv4}${n.ipv4Source ? ` (${n.ipv4Source})` : ''}` : ''].join('  ').trimEnd())],
    // What the guest agent reports (every interface, including those vmkit did not make).
    ['Guest agent', rt.agent ? (rt.agent.available ? 'answers' : `none (${rt.agent.reason ?? 'no answer'})`) : undefined],
    ['Guest', rt.agent?.available ? [rt.agent.hostname, rt.agent.os, rt.agent.kernel].filter((x) => x).join(', ') || undefined : undefined],
    ['Guest addresses', rt.agent?.interfaces?.filter((f) => f.name !== 'lo').map((f) => `${f.name}  ${f.mac ?? ''}  ${[...f.ipv4, ...f.ipv6].join(' ')}`.replace(/\s+$/, ''))],
    ['Forwards', (i.forwards ?? []).map((f) => `${formatForward(f)}${f.nic ? `  (${f.nic})` : ''}`)],
    ['Disks', (i.disks ?? []).map((d) => `${d.name}  ${d.file}  ${d.format}`)],
    ...cloudInitFields(i),
  ];
}

/** User-data by size and hash (the full text is in --format json/yaml), keys by type and comment. */
export function cloudInitFields(i: InstanceView): Field[] {
  const ci = i.cloudInit;
  if (!ci) return [];
  const ud = ci.userData;
  const firstLine = ud?.split('\n', 1)[0]?.trim();
  return [
    ['User-data', ud ? `${Buffer.byteLength(ud)} bytes, ${firstLine}, sha256 ${createHash('sha256').update(ud).digest('hex').slice(0, 16)}…` : undefined],
    [
      'SSH keys',
      (ci.sshKeys ?? []).map(
        (k) =>
          k
            .split(' ')
            .filter((_, n) => n !== 1)
            .join(' ') || k.slice(0, 20),
      ),
    ],
    ['Meta-data', Object.entries(ci.meta ?? {}).map(([k, v]) => `${k}=${v}`)],
    ['Cloud-init id', ci.generation ? `${i.id}-g${ci.generation} (NICs or user-data changed ${ci.generation} time(s))` : undefined],
  ];
}

/** `vmkit info NAME`: the full state of one instance. */
export function infoCommand(): Command {
  return new Command('info')
    .alias('show')
    .description('Show an instance in full, including its runtime (pid, accelerator, uptime)')
    .argument('<name>', 'instance name')
    .action(async (name: string, _opts: unknown, self: Command) => {
      const instance = await clientFor(self).get<InstanceView>(instancePath(name));
      print(renderInfo(instance, globals(self).format, () => instanceFields(instance)));
    })
    .addHelpText(
      'after',
      `
Examples:
  vmkit info web1
  vmkit info web1 --format yaml`,
    );
}
