import type { Forward, Instance } from './types.js';

export function formatMemory(mib: number): string {
  return mib >= 1024 && mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`;
}

export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatForward(f: Pick<Forward, 'proto' | 'hostAddress' | 'hostPort' | 'guestPort'>): string {
  return `${f.hostAddress}:${f.hostPort}→${f.guestPort}/${f.proto}`;
}

export function addresses(inst: Instance): string[] {
  return inst.nics.map((n) => n.ipv4).filter((a): a is string => !!a);
}

export function formatUptime(seconds: number | undefined): string {
  if (seconds === undefined) return '—';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

export function timeAgo(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const d = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (d < 60) return `${d}s ago`;
  if (d < 3600) return `${Math.floor(d / 60)}m ago`;
  if (d < 86400) return `${Math.floor(d / 3600)}h ago`;
  return `${Math.floor(d / 86400)}d ago`;
}

export type SortKey = 'name' | 'state' | 'image' | 'cpus' | 'memoryMiB' | 'host';

/** Filter by free text (name, image, state, address, host) and a state, then sort. */
export function filterAndSort(list: readonly Instance[], opts: { text?: string; state?: string; sort: SortKey; desc?: boolean }): Instance[] {
  const q = (opts.text ?? '').trim().toLowerCase();
  const out = list.filter((i) => {
    if (opts.state && i.state !== opts.state) return false;
    if (!q) return true;
    const hay = [i.name, i.image, i.state, i.host ?? '', ...addresses(i), ...i.forwards.map((f) => String(f.hostPort))].join(' ').toLowerCase();
    return q.split(/\s+/).every((w) => hay.includes(w));
  });
  const dir = opts.desc ? -1 : 1;
  out.sort((a, b) => {
    const x = a[opts.sort] ?? '';
    const y = b[opts.sort] ?? '';
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return c !== 0 ? c * dir : a.name.localeCompare(b.name);
  });
  return out;
}

export type Verb = 'start' | 'stop' | 'force-stop' | 'restart' | 'pause' | 'suspend' | 'resume';

/** Which verbs make sense in a state (the server still decides). Start resumes a suspended one. */
export function actionsFor(state: Instance['state']): Verb[] {
  switch (state) {
    case 'stopped':
    case 'error':
    case 'suspended':
      return ['start'];
    case 'running':
      return ['stop', 'force-stop', 'restart', 'pause', 'suspend'];
    case 'paused':
      return ['resume', 'suspend', 'force-stop'];
    case 'starting':
    case 'stopping':
      return ['force-stop'];
    default:
      return [];
  }
}

/** A duration in ms for people: 840 ms, 2.4 s, 1m 5s. */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  return formatUptime(ms / 1000);
}
