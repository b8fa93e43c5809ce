import { useMemo, useState } from 'react';
import { InstanceActions } from '../components/InstanceActions.js';
import { StateBadge } from '../components/ui.js';
import { addresses, filterAndSort, formatForward, formatMemory, type SortKey } from '../lib/format.js';
import type { ConsoleData } from '../store.js';
import { Can } from '../role.js';
import { go } from '../store.js';

const COLUMNS: Array<{ key: SortKey | null; label: string }> = [
  { key: 'name', label: 'Name' },
  { key: 'state', label: 'State' },
  { key: 'image', label: 'Image' },
  { key: 'cpus', label: 'vCPUs' },
  { key: 'memoryMiB', label: 'Memory' },
  { key: null, label: 'Addresses' },
  { key: null, label: 'Forwards' },
  { key: 'host', label: 'Host' },
  { key: null, label: '' },
];

export function InstancesPage({ data }: { data: ConsoleData }) {
  const [text, setText] = useState('');
  const [state, setState] = useState('');
  const [sort, setSort] = useState<SortKey>('name');
  const [desc, setDesc] = useState(false);
  const all = Object.values(data.instances);
  const list = useMemo(() => filterAndSort(all, { text, state, sort, desc }), [all, text, state, sort, desc]);
  const states = [...new Set(all.map((i) => i.state))].sort();
  const sortBy = (k: SortKey) => {
    if (k === sort) setDesc(!desc);
    else {
      setSort(k);
      setDesc(false);
    }
  };
  return (
    <section>
      <div className="page-head">
        <h1>Instances</h1>
        <Can need="operator">
          <button className="primary" onClick={() => go('create')} data-testid="new-instance">
            New instance
          </button>
        </Can>
      </div>
      <div className="toolbar">
        <input type="search" placeholder="Filter by name, image, address, port…" value={text} onChange={(e) => setText(e.target.value)} aria-label="Filter" />
        <select value={state} onChange={(e) => setState(e.target.value)} aria-label="State">
          <option value="">All states</option>
          {states.map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <select
          className="sort-mobile"
          value={`${sort}:${desc ? 'desc' : 'asc'}`}
          aria-label="Sort"
          onChange={(e) => {
            const [k, d] = e.target.value.split(':');
            setSort(k as SortKey);
            setDesc(d === 'desc');
          }}
        >
          {COLUMNS.filter((c) => c.key).map((c) => (
            <optgroup key={c.key} label={c.label}>
              <option value={`${c.key}:asc`}>{c.label} ↑</option>
              <option value={`${c.key}:desc`}>{c.label} ↓</option>
            </optgroup>
          ))}
        </select>
      </div>
      {all.length === 0 ? (
        <div className="empty">
          <p>No instances yet.</p>
          <Can need="operator">
            <button className="primary" onClick={() => go('create')}>
              Create one from an image
            </button>
          </Can>
        </div>
      ) : (
        <table className="list instances" data-testid="instances">
          <thead>
            <tr>
              {COLUMNS.map((c) => (
                <th
                  key={c.label}
                  className={c.key ? 'sortable' : ''}
                  onClick={c.key ? () => sortBy(c.key!) : undefined}
                  aria-sort={c.key === sort ? (desc ? 'descending' : 'ascending') : undefined}
                >
                  {c.label}
                  {c.key === sort ? (desc ? ' ▾' : ' ▴') : ''}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {list.map((i) => (
              <tr key={i.name} data-instance={i.name}>
                <td data-label="Name">
                  <a href={`#/instances/${encodeURIComponent(i.name)}`} className="name">
                    {i.name}
                  </a>
                </td>
                <td data-label="State">
                  <StateBadge state={i.state} />
                </td>
                <td data-label="Image">{i.image}</td>
                <td data-label="vCPUs">{i.cpus}</td>
                <td data-label="Memory">{formatMemory(i.memoryMiB)}</td>
                <td data-label="Addresses">{addresses(i).join(', ') || '—'}</td>
                <td data-label="Forwards" className="forwards">
                  {i.forwards.length ? i.forwards.map((f) => <div key={`${f.proto}${f.hostPort}`}>{formatForward(f)}</div>) : '—'}
                </td>
                <td data-label="Host">{i.host ?? '—'}</td>
                <td className="row-actions">
                  <InstanceActions inst={i} compact />
                </td>
              </tr>
            ))}
            {list.length === 0 && (
              <tr>
                <td colSpan={COLUMNS.length} className="empty">
                  Nothing matches the filter.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </section>
  );
}
