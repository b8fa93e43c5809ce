import { useEffect, useMemo, useState, type FormEvent } from 'react';
import { api } from '../api.js';
import { Confirm, ErrorBox, Field } from '../components/ui.js';
import { CloneDialog } from '../components/Clone.js';
import { useFeedback, useOperationStarter, useRequest } from '../feedback.js';
import { formatBytes, formatDuration, timeAgo } from '../lib/format.js';
import type { Instance, Operation, Snapshot, SnapshotCreateResult } from '../lib/types.js';
import { snapshotNameProblem } from '../lib/validate.js';
import type { ConsoleData } from '../store.js';
import { OperationRow, isActive } from './Operations.js';
import { Can } from '../role.js';

const isUp = (i: Instance) => i.state === 'running' || i.state === 'paused';

/**
 * The instance's snapshots (GET /1.0/instances/NAME/snapshots): take, restore, delete. Each is
 * an operation; its progress shows below the list like everywhere else, and the list is read
 * again whenever one of them ends.
 */
export function SnapshotsTab({ inst, data }: { inst: Instance; data: ConsoleData }) {
  const fb = useFeedback();
  const [list, setList] = useState<Snapshot[] | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [asking, setAsking] = useState<null | { what: 'restore' | 'delete'; snap: Snapshot }>(null);
  const { busy, run } = useOperationStarter();
  const [cloneFrom, setCloneFrom] = useState<string | null>(null);

  const ops = useMemo(
    () =>
      Object.values(data.operations)
        .filter((o) => o.target === inst.name && o.kind.startsWith('snapshot.'))
        .sort((a, b) => b.createdAt.localeCompare(a.createdAt)),
    [data.operations, inst.name],
  );
  // Re-read the list when a snapshot operation starts or ends, and after a restart of the stream.
  const opsKey = ops.map((o) => `${o.id}:${o.status}`).join(',');
  useEffect(() => {
    let stale = false;
    api.snapshots(inst.name).then(
      (l) => {
        if (stale) return;
        setList(l);
        setLoadError(null);
      },
      (err) => !stale && setLoadError(err),
    );
    return () => {
      stale = true;
    };
  }, [inst.name, opsKey, inst.currentSnapshot, data.live]);

  const lastCreate = ops.find((o) => o.kind === 'snapshot.create' && o.status === 'success');
  const created = lastCreate?.result as SnapshotCreateResult | undefined;
  const working = ops.some(isActive);

  return (
    <div>
      <Can need="operator">
        <TakeSnapshot inst={inst} taken={(list ?? []).map((s) => s.name)} onTaken={(op) => fb.watch(op)} />
      </Can>
      {created?.snapshot && (
        <p className="notice" data-testid="snapshot-result">
          Snapshot <strong>{created.snapshot.name}</strong> taken {created.snapshot.withMemory ? 'with memory' : 'of the disk only'}: the guest was paused for{' '}
          <strong data-testid="paused-time">{formatDuration(created.snapshot.pausedMs)}</strong>
          {created.snapshot.withMemory ? '' : ' (its disk I/O held)'}; the operation took {formatDuration(created.durationMs)}.
        </p>
      )}
      <h2>Snapshots</h2>
      <ErrorBox error={loadError} />
      {list === null && !loadError ? (
        <p className="muted">Loading…</p>
      ) : list && list.length === 0 ? (
        <p className="muted" data-testid="no-snapshots">
          No snapshots yet.
        </p>
      ) : list ? (
        <table className="list snapshots" data-testid="snapshots">
          <thead>
            <tr>
              <th>Name</th>
              <th>Parent</th>
              <th>Created</th>
              <th>Memory</th>
              <th>Size</th>
              <th>Paused</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {list.map((s) => (
              <tr key={s.name} data-snapshot={s.name}>
                <td data-label="Name" className="name">
                  {s.name}
                  {inst.currentSnapshot === s.name && (
                    <span className="badge current" title="The instance descends from this snapshot">
                      current
                    </span>
                  )}
                  {s.description && <div className="muted small-text">{s.description}</div>}
                </td>
                <td data-label="Parent">{s.parent ?? '—'}</td>
                <td data-label="Created" title={s.createdAt}>
                  {timeAgo(s.createdAt)}
                </td>
                <td data-label="Memory">{s.withMemory ? `yes (${s.vmState ?? 'running'})` : 'no, disk only'}</td>
                <td data-label="Size">{s.withMemory ? formatBytes(s.size) : '—'}</td>
                <td data-label="Paused">{formatDuration(s.pausedMs)}</td>
                <td className="row-actions">
                  <Can need="operator">
                    <div className="actions compact">
                      <button disabled={busy || working} onClick={() => setAsking({ what: 'restore', snap: s })} data-action="restore-snapshot">
                        Restore
                      </button>
                      <button disabled={busy || working} onClick={() => setCloneFrom(s.name)} data-action="clone-snapshot" title="A new instance from this snapshot">
                        Clone from this snapshot
                      </button>
                      <button className="danger" disabled={busy || working} onClick={() => setAsking({ what: 'delete', snap: s })} data-action="delete-snapshot">
                        Delete
                      </button>
                    </div>
                  </Can>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {ops.length > 0 && (
        <>
          <h2>Snapshot operations</h2>
          <ul className="ops">
            {ops.slice(0, 6).map((o) => (
              <OperationRow key={o.id} op={o} />
            ))}
          </ul>
        </>
      )}
      {cloneFrom && <CloneDialog inst={inst} data={data} fromSnapshot={cloneFrom} onClose={() => setCloneFrom(null)} />}
      {asking?.what === 'restore' && (
        <Confirm
          title={`Restore ${inst.name} to ${asking.snap.name}?`}
          confirmLabel="Restore"
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            const snap = asking.snap.name;
            setAsking(null);
            void run(() => api.restoreSnapshot(inst.name, snap));
          }}
        >
          {asking.snap.withMemory ? (
            <p>
              The instance goes back to the instant of the snapshot, disk and memory, and ends {asking.snap.vmState === 'paused' ? 'paused' : 'running'}.{' '}
              <strong>What happened in it since is lost</strong> (take another snapshot first to keep it).
            </p>
          ) : (
            <p>
              The disk goes back to the snapshot; the next start is a cold boot from it. <strong>Changes on the disk since are lost.</strong>
              {isUp(inst) && <strong> A disk-only snapshot needs a stopped instance: stop {inst.name} first.</strong>}
            </p>
          )}
        </Confirm>
      )}
      {asking?.what === 'delete' && (
        <Confirm
          title={`Delete snapshot ${asking.snap.name}?`}
          confirmLabel="Delete snapshot"
          danger
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            const snap = asking.snap.name;
            setAsking(null);
            void run(() => api.deleteSnapshot(inst.name, snap));
          }}
        >
          <p>Its space is reclaimed; the other snapshots stay valid (its children now descend from its parent). The instance itself does not change.</p>
        </Confirm>
      )}
    </div>
  );
}

function TakeSnapshot({ inst, taken, onTaken }: { inst: Instance; taken: string[]; onTaken: (op: Operation) => void }) {
  const up = isUp(inst);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [memory, setMemory] = useState(up);
  const [submitted, setSubmitted] = useState(false);
  const { busy, error, setError, send } = useRequest();
  // Memory is on by default while the instance runs; a stopped one has only its disk.
  useEffect(() => setMemory(up), [up]);
  const problem = snapshotNameProblem(name, taken);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setSubmitted(true);
    setError(null);
    if (problem) return;
    await send(async () => {
      const body = { name, ...(description ? { description } : {}), ...(up ? { memory } : {}) };
      onTaken(await api.createSnapshot(inst.name, body));
      setName('');
      setDescription('');
      setSubmitted(false);
    });
  };
  return (
    <form className="card take-snapshot" onSubmit={submit} noValidate data-testid="snapshot-form">
      <div className="row">
        <Field label="Snapshot name" problem={submitted || name ? problem : null}>
          <input name="snapshotName" value={name} onChange={(e) => setName(e.target.value)} placeholder="before-upgrade" autoComplete="off" />
        </Field>
        <Field label="Description (optional)">
          <input name="snapshotDescription" value={description} onChange={(e) => setDescription(e.target.value)} maxLength={1024} />
        </Field>
        <button type="submit" className="primary" disabled={busy} data-testid="snapshot-submit">
          Take snapshot
        </button>
      </div>
      {up ? (
        <label className="check">
          <input type="checkbox" name="memory" checked={memory} onChange={(e) => setMemory(e.target.checked)} />
          <span>With memory — the exact instant, disk and RAM (the guest pauses briefly). Without: disk only, crash-consistent.</span>
        </label>
      ) : (
        <p className="help">The instance is {inst.state}: the snapshot holds its disk.</p>
      )}
      <ErrorBox error={error} onClose={() => setError(null)} />
    </form>
  );
}
