import YAML from 'yaml';
import type { Operation, OperationProgress, PortForward } from '../domain/types.js';

/** What --format accepts. json/yaml print the API's metadata untouched so scripts can rely on it. */
export const FORMATS = ['table', 'json', 'yaml'] as const;
export type Format = (typeof FORMATS)[number];

/** One table column: an uppercase header and how to get the cell out of a row. */
export interface Column<T> {
  header: string;
  value: (row: T) => string | number | undefined | null;
}

type Cell = string | number | undefined | null;

function cell(v: Cell): string {
  return v === undefined || v === null || v === '' ? '-' : String(v);
}

/**
 * An aligned plain-text table (two spaces between columns, no trailing blanks), the default
 * for every listing; headers are uppercased so they stand out from data.
 */
export function renderTable(headers: string[], rows: Cell[][]): string {
  const all = [headers.map((h) => h.toUpperCase()), ...rows.map((r) => headers.map((_, i) => cell(r[i])))];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return (
    all
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i])))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** The machine formats: exactly the data given (the API's metadata), as JSON or YAML. */
export function renderData(data: unknown, format: 'json' | 'yaml'): string {
  return format === 'json' ? JSON.stringify(data ?? null, null, 2) + '\n' : YAML.stringify(data ?? null);
}

/** A listing in the chosen format: a table by default, the raw metadata for json/yaml. */
export function renderList<T>(items: T[], format: Format | undefined, columns: Column<T>[]): string {
  if (format === 'json' || format === 'yaml') return renderData(items, format);
  return renderTable(
    columns.map((c) => c.header),
    items.map((item) => columns.map((c) => c.value(item))),
  );
}

/** A label and either a value or a section of indented lines (undefined values are skipped). */
export type Field = [label: string, value: string | number | undefined | null | string[]];

/**
 * The readable "Label: value" view used by info commands: labels aligned, list-valued
 * fields printed as an indented section (or "none").
 */
export function renderFields(fields: Field[]): string {
  const shown = fields.filter(([, v]) => v !== undefined && v !== null && v !== '');
  const width = Math.max(0, ...shown.filter(([, v]) => !Array.isArray(v)).map(([l]) => l.length + 1));
  const out: string[] = [];
  for (const [label, value] of shown) {
    if (Array.isArray(value)) {
      out.push(value.length === 0 ? `${`${label}:`.padEnd(width)} none` : `${label}:`);
      for (const line of value) out.push(`  ${line}`);
    } else {
      out.push(`${`${label}:`.padEnd(width)} ${value}`);
    }
  }
  return out.join('\n') + '\n';
}

/** Info output: the Label: value view by default (or --format table), else the raw metadata. */
export function renderInfo(data: unknown, format: Format | undefined, fields: () => Field[]): string {
  if (format === 'json' || format === 'yaml') return renderData(data, format);
  return renderFields(fields());
}

/** A forward the way users write it: 127.0.0.1:8080->80/tcp. */
export function formatForward(f: Pick<PortForward, 'hostAddress' | 'hostPort' | 'guestPort' | 'proto'>): string {
  const addr = f.hostAddress ? (f.hostAddress.includes(':') ? `[${f.hostAddress}]:` : `${f.hostAddress}:`) : '';
  return `${addr}${f.hostPort}->${f.guestPort}/${f.proto ?? 'tcp'}`;
}

/** 256 → "256MiB", 2048 → "2GiB": short enough for a table column. */
export function formatMiB(mib: number | undefined): string {
  if (mib === undefined) return '';
  return mib >= 1024 && mib % 1024 === 0 ? `${mib / 1024}GiB` : `${mib}MiB`;
}

/** 3725.4 → "1h2m5s": uptime as people read it. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined) return '';
  let s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  s %= 86400;
  const h = Math.floor(s / 3600);
  s %= 3600;
  const m = Math.floor(s / 60);
  s %= 60;
  return `${d ? `${d}d` : ''}${d || h ? `${h}h` : ''}${d || h || m ? `${m}m` : ''}${s}s`;
}

/** Progress as one short phrase: "booting 50%". */
export function describeProgress(p: OperationProgress | undefined): string {
  if (!p) return '';
  const pct = p.percent !== undefined ? ` ${Math.round(p.percent)}%` : '';
  return `${p.phase}${pct}`;
}

/** One progress line: "Starting web1 [#####-----] 50% booting". */
export function progressLine(op: Operation, barWidth = 20): string {
  const p = op.progress;
  if (p?.percent === undefined) return `${op.description}: ${p?.phase ?? op.status}`;
  const pct = Math.max(0, Math.min(100, p.percent));
  const filled = Math.round((pct / 100) * barWidth);
  const bytes = p.bytesTotal ? ` (${formatBytes(p.bytesDone ?? 0)}/${formatBytes(p.bytesTotal)})` : '';
  return `${op.description} [${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}] ${String(Math.round(pct)).padStart(3)}% ${p.phase}${bytes}`;
}

/** 1536 → "1.5KiB" (with `sep` ' ': "1.5 KiB"), in binary units (image and transfer sizes). */
export function formatBytes(n: number, sep = ''): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)}${sep}${units[i]}`;
}

/**
 * Draws the progress of long operations on one stderr line with `\r` redraws — only on a
 * TTY, so logs and pipes never get control characters.
 */
export class ProgressLine {
  private drawn = false;
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  update(op: Operation): void {
    if (!this.stream.isTTY) return;
    const width = (this.stream.columns || 80) - 1;
    this.stream.write(`\r\x1b[K${progressLine(op).slice(0, width)}`);
    this.drawn = true;
  }

  clear(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
