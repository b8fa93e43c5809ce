import type { StackServiceSpec, StackSpec } from '../wire/stack.js';
import { templateKey } from './spec.js';

function describeService(s: StackServiceSpec): string {
  const size = s.type ?? (s.cpus || s.memoryMiB ? `${s.cpus ?? '?'} vCPU ${s.memoryMiB ?? '?'} MiB` : 'image defaults');
  const where = [s.port !== undefined ? `port ${s.hostAddress ?? '127.0.0.1'}:${s.port} → ${s.guestPort}` : '', s.address ? `address ${s.address} → ${s.guestPort}` : '']
    .filter(Boolean)
    .join(', ');
  return `${s.replicas} replica(s) of ${s.image} (${size})${s.networks.length ? ` on ${s.networks.join(', ')}` : ''}${where ? `, ${where}` : ''}`;
}

/**
 * What applying `next` over `current` changes, one line per change ("+" new, "-" removed,
 * "~" changed); none when the two mean the same. Pure: `vmkit stack diff` prints it, apply
 * answers with it.
 */
export function planChanges(current: StackSpec | undefined, next: StackSpec): string[] {
  const out: string[] = [];
  const oldNets = new Map((current?.networks ?? []).map((n) => [n.name, n]));
  for (const n of next.networks) {
    const o = oldNets.get(n.name);
    if (!o) out.push(`+ network ${n.name} (${n.mode} ${n.subnet})`);
    else if (o.mode !== n.mode || o.subnet !== n.subnet) out.push(`~ network ${n.name}: ${o.mode} ${o.subnet} → ${n.mode} ${n.subnet} (refused: delete the stack first)`);
  }
  for (const o of current?.networks ?? []) if (!next.networks.some((n) => n.name === o.name)) out.push(`- network ${o.name} (once no replica uses it)`);
  const oldSvcs = new Map((current?.services ?? []).map((s) => [s.name, s]));
  for (const s of next.services) {
    const o = oldSvcs.get(s.name);
    if (!o) {
      out.push(`+ service ${s.name}: ${describeService(s)}`);
      continue;
    }
    if (templateKey(o) !== templateKey(s)) {
      const what = o.image !== s.image ? `${o.image} → ${s.image}` : 'new size, networks or user-data';
      out.push(`~ service ${s.name}: roll ${s.replicas} replica(s) ${what} (maxSurge ${s.update.maxSurge}, maxUnavailable ${s.update.maxUnavailable})`);
    }
    if (o.replicas !== s.replicas) out.push(`~ service ${s.name}: scale ${o.replicas} → ${s.replicas}${s.replicas < o.replicas ? ' (newest removed first)' : ''}`);
    for (const f of ['port', 'hostAddress', 'address', 'guestPort'] as const) {
      if (o[f] !== s[f]) out.push(`~ service ${s.name}: ${f} ${o[f] ?? '(none)'} → ${s[f] ?? '(none)'}`);
    }
    if (JSON.stringify(o.health) !== JSON.stringify(s.health))
      out.push(`~ service ${s.name}: health check ${s.health ? `GET ${s.health.http} every ${s.health.intervalMs} ms, ${s.health.failures} failures` : '(none)'}`);
    if (JSON.stringify(o.update) !== JSON.stringify(s.update)) out.push(`~ service ${s.name}: update maxSurge ${s.update.maxSurge}, maxUnavailable ${s.update.maxUnavailable}`);
  }
  for (const o of current?.services ?? []) if (!next.services.some((s) => s.name === o.name)) out.push(`- service ${o.name}: remove its ${o.replicas} replica(s)`);
  return out;
}
