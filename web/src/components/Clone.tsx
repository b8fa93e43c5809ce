import { useState, type FormEvent } from 'react';
import { api } from '../api.js';
import { useFeedback, useRequest } from '../feedback.js';
import type { Instance, Operation } from '../lib/types.js';
import { nameProblem } from '../lib/validate.js';
import { OperationRow } from '../pages/Operations.js';
import type { ConsoleData } from '../store.js';
import { ErrorBox, Field } from './ui.js';

/**
 * "Clone" (POST /1.0/instances/NAME/clone): a new name checked with the instance-name
 * grammar (and not one already taken), "full copy", and — from the Snapshots tab — the
 * snapshot to start from. Once sent, the dialog follows the clone operation's progress.
 */
export function CloneDialog({ inst, data, fromSnapshot, onClose }: { inst: Instance; data: ConsoleData; fromSnapshot?: string; onClose: () => void }) {
  const fb = useFeedback();
  const [name, setName] = useState(`${inst.name}-clone`.slice(0, 63));
  const [full, setFull] = useState(false);
  const [submitted, setSubmitted] = useState(false);
  const { busy, error, setError, send } = useRequest();
  const [opId, setOpId] = useState<string | null>(null);
  const problem = nameProblem(name, 'the clone') ?? (data.instances[name] && !opId ? `There is already an instance "${name}".` : null);
  const op: Operation | undefined = opId ? data.operations[opId] : undefined;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setSubmitted(true);
    setError(null);
    if (problem) return;
    await send(async () => {
      const started = await api.clone(inst.name, { name, ...(full ? { full } : {}), ...(fromSnapshot ? { fromSnapshot } : {}) });
      fb.watch(started);
      setOpId(started.id);
    });
  };
  const stopped = inst.state === 'stopped';
  return (
    <div className="modal-backdrop" onClick={onClose}>
      <form
        className="modal"
        role="dialog"
        aria-modal="true"
        aria-labelledby="clone-title"
        onClick={(e) => e.stopPropagation()}
        onSubmit={submit}
        noValidate
        data-testid="clone-form"
      >
        <h2 id="clone-title">
          Clone {inst.name}
          {fromSnapshot ? ` from snapshot ${fromSnapshot}` : ''}
        </h2>
        <div className="modal-body">
          <Field label="Name of the new instance" problem={submitted || name ? problem : null}>
            <input name="cloneName" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" disabled={!!opId} autoFocus />
          </Field>
          <label className="check">
            <input type="checkbox" name="full" checked={full} onChange={(e) => setFull(e.target.checked)} disabled={!!opId} />
            <span>Full copy — an independent disk. Without: a linked clone, quick and small, that keeps using {inst.name}'s image.</span>
          </label>
          {!fromSnapshot && !stopped && (
            <p className="help">
              {inst.name} is {inst.state}: only a stopped instance is cloned directly. Stop it first, or clone from one of its snapshots (Snapshots tab).
            </p>
          )}
          <ErrorBox error={error} onClose={() => setError(null)} />
          {op && (
            <ul className="ops" data-testid="clone-op">
              <OperationRow op={op} />
            </ul>
          )}
          {op?.status === 'success' && (
            <p className="notice" data-testid="clone-done">
              Cloned: <a href={`#/instances/${encodeURIComponent(name)}`}>{name}</a>
            </p>
          )}
        </div>
        <div className="modal-actions">
          <button type="button" onClick={onClose} data-testid="clone-close">
            {opId ? 'Close' : 'Cancel'}
          </button>
          {!opId && (
            <button type="submit" className="primary" disabled={busy} data-testid="clone-submit">
              Clone
            </button>
          )}
        </div>
      </form>
    </div>
  );
}
