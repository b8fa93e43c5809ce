import { useEffect, useState } from 'react';
import { api } from '../api.js';
import { Confirm, ErrorBox, ProgressBar } from '../components/ui.js';
import { useFeedback } from '../feedback.js';
import type { Replica, Stack, StackService } from '../lib/types.js';
import type { ConsoleData } from '../store.js';
import { Can } from '../role.js';

/**
 * Stacks (`vmkit apply`): each service with its service address, ready/wanted replicas, the
 * roll in progress, and every replica with its state, health and whether it is in the
 * service address. Re-read on every stack event and every 5 s (health changes often).
 */
export function StacksPage({ data }: { data: ConsoleData }) {
  const [stacks, setStacks] = useState<Stack[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    let stale = false;
    const read = () =>
      api.stacks().then(
        (s) => {
          if (stale) return;
          setStacks(s);
          setError(null);
        },
        (err) => !stale && setError(err),
      );
    void read();
    const t = setInterval(read, 5_000);
    return () => {
      stale = true;
      clearInterval(t);
    };
  }, [data.stacksVersion, n]);
  return (
    <section>
      <div className="page-head">
        <h1>Stacks</h1>
        <div className="actions">
          <button onClick={() => setN((x) => x + 1)}>Refresh</button>
        </div>
      </div>
      <ErrorBox error={error} />
      {stacks === null ? (
        !error && <p className="muted">Loading…</p>
      ) : stacks.length === 0 ? (
        <div className="card empty" data-testid="no-stacks">
          <p>There are no stacks.</p>
          <p className="muted">
            Declare services with replicas in a file and run <code>vmkit apply -f stack.yaml</code> (doc/stacks.md).
          </p>
        </div>
      ) : (
        stacks.map((s) => <StackCard key={s.name} stack={s} onChanged={() => setN((x) => x + 1)} />)
      )}
    </section>
  );
}

function StackCard({ stack, onChanged }: { stack: Stack; onChanged: () => void }) {
  const feedback = useFeedback();
  const [confirm, setConfirm] = useState<'rollback' | 'delete' | null>(null);
  const act = (fn: () => Promise<unknown>) => {
    setConfirm(null);
    fn().then(onChanged, (err) => feedback.error(err));
  };
  return (
    <div className="card" data-stack={stack.name}>
      <div className="page-head">
        <h2>
          {stack.name} <span className="badge">{stack.deleting ? 'deleting' : stack.ready ? 'ready' : 'working'}</span> <span className="muted">generation {stack.generation}</span>
        </h2>
        <Can need="admin">
          <div className="actions">
            {stack.hasPrevious && <button onClick={() => setConfirm('rollback')}>Roll back</button>}
            <button className="danger" onClick={() => setConfirm('delete')}>
              Delete
            </button>
          </div>
        </Can>
      </div>
      {confirm === 'rollback' && (
        <Confirm title={`Roll ${stack.name} back?`} confirmLabel="Roll back" onConfirm={() => act(() => api.rollbackStack(stack.name))} onCancel={() => setConfirm(null)}>
          The spec before the last apply becomes the wanted one again; its replicas are rolled back one by one.
        </Confirm>
      )}
      {confirm === 'delete' && (
        <Confirm title={`Delete ${stack.name}?`} confirmLabel="Delete" danger onConfirm={() => act(() => api.deleteStack(stack.name))} onCancel={() => setConfirm(null)}>
          Its service addresses, all its replicas and the networks it made are removed.
        </Confirm>
      )}
      {stack.services.map((svc) => (
        <ServiceBlock key={svc.name} svc={svc} />
      ))}
    </div>
  );
}

const healthClass = (r: Replica) => (r.health === 'healthy' ? 'state-running' : r.health === 'unhealthy' ? 'state-error' : 'state-starting');

function ServiceBlock({ svc }: { svc: StackService }) {
  const where = [svc.port !== undefined ? `port ${svc.port}` : '', svc.address ? `address ${svc.address}` : ''].filter(Boolean).join(', ');
  return (
    <div className="stack-service" data-service={svc.name}>
      <h3>
        {svc.name} <span className="badge">{svc.phase}</span>{' '}
        <span className="muted">
          {svc.image} · {svc.ready}/{svc.replicas} ready{where ? ` · ${where}` : ''}
        </span>
      </h3>
      {svc.roll && (
        <div data-testid="roll">
          Rolling {svc.roll.from.join(', ')} → {svc.roll.to}: {svc.roll.updated}/{svc.roll.total}
          <ProgressBar percent={Math.round((100 * svc.roll.updated) / Math.max(1, svc.roll.total))} status="running" />
        </div>
      )}
      {svc.message && <p className={svc.phase === 'failed' ? 'error-box' : 'muted'}>{svc.message}</p>}
      <table className="list replicas">
        <thead>
          <tr>
            <th>Replica</th>
            <th>Image</th>
            <th>State</th>
            {svc.members.some((r) => r.host) && <th>Host</th>}
            <th>Address</th>
            <th>Health</th>
            <th>Service address</th>
          </tr>
        </thead>
        <tbody>
          {svc.members.map((r) => (
            <tr key={r.instance} data-replica={r.instance}>
              <td data-label="Replica">
                <a className="name" href={`#/instances/${encodeURIComponent(r.instance)}`}>
                  {r.instance}
                </a>
              </td>
              <td data-label="Image">
                {r.image}
                {r.current ? '' : ' (old)'}
              </td>
              <td data-label="State">{r.state}</td>
              {svc.members.some((m) => m.host) && (
                <td data-label="Host" title={r.endpoint ? `reached through ${r.endpoint}` : undefined}>
                  {r.host ?? '—'}
                </td>
              )}
              <td data-label="Address" className="mono">
                {r.ipv4 ?? '—'}
                {r.endpoint ? <span className="muted"> via {r.endpoint}</span> : null}
              </td>
              <td data-label="Health">
                <span className={`badge ${healthClass(r)}`} title={r.lastError}>
                  {r.health}
                </span>
              </td>
              <td data-label="Service address">{r.serving ? 'serving' : 'out'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
