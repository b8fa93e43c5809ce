import { useState } from 'react';
import { api } from '../api.js';
import { ErrorBox, ProgressBar } from '../components/ui.js';
import { useFeedback } from '../feedback.js';
import { timeAgo } from '../lib/format.js';
import type { Operation } from '../lib/types.js';
import type { ConsoleData } from '../store.js';
import { Can } from '../role.js';

export const isActive = (o: Operation) => o.status === 'pending' || o.status === 'running';

export function OperationRow({ op }: { op: Operation }) {
  const fb = useFeedback();
  const [open, setOpen] = useState(false);
  const pct = op.progress?.percent;
  return (
    <li className={`op status-${op.status}`} data-operation={op.id} data-kind={op.kind}>
      <div className="op-head">
        <span className="op-desc">{op.description}</span>
        <span className={`badge op-${op.status}`}>{op.status}</span>
      </div>
      <ProgressBar percent={pct} status={op.status} />
      <div className="op-meta">
        <span>{op.kind}</span>
        {op.progress?.phase && <span>{op.progress.phase}</span>}
        {pct !== undefined && <span>{Math.round(pct)}%</span>}
        <span title={op.createdAt}>{timeAgo(op.createdAt)}</span>
        {isActive(op) && op.mayCancel && (
          <Can need="operator">
            <button className="warn small" onClick={() => api.cancel(op.id).catch(fb.error)} data-action="cancel">
              Cancel
            </button>
          </Can>
        )}
        {op.error && (
          <button className="link small" onClick={() => setOpen(!open)}>
            {open ? 'Hide error' : 'Why?'}
          </button>
        )}
      </div>
      {op.error && open && <ErrorBox error={op.error} />}
    </li>
  );
}

export function OperationsPage({ data }: { data: ConsoleData }) {
  const ops = Object.values(data.operations).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const active = ops.filter(isActive);
  const done = ops.filter((o) => !isActive(o));
  return (
    <section>
      <div className="page-head">
        <h1>Operations</h1>
      </div>
      <h2>Running ({active.length})</h2>
      {active.length === 0 ? (
        <p className="muted">Nothing is running.</p>
      ) : (
        <ul className="ops">
          {active.map((o) => (
            <OperationRow key={o.id} op={o} />
          ))}
        </ul>
      )}
      <h2>Finished</h2>
      {done.length === 0 ? (
        <p className="muted">No finished operations since the daemon started.</p>
      ) : (
        <ul className="ops">
          {done.slice(0, 100).map((o) => (
            <OperationRow key={o.id} op={o} />
          ))}
        </ul>
      )}
    </section>
  );
}
