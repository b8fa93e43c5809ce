import { useEffect, useRef, type ReactNode } from 'react';
import { describeError } from '../lib/errors.js';
import type { InstanceState } from '../lib/types.js';

export function StateBadge({ state }: { state: InstanceState }) {
  return (
    <span className={`badge state-${state}`} data-testid="state">
      {state}
    </span>
  );
}

export function ErrorBox({ error, onClose }: { error: unknown; onClose?: () => void }) {
  if (!error) return null;
  const e = describeError(error);
  return (
    <div className="error-box" role="alert" data-testid="error">
      <strong>{e.title}.</strong> {e.message}
      {e.hint && <div className="hint">{e.hint}</div>}
      <div className="code">{e.code}</div>
      {onClose && (
        <button className="link close" onClick={onClose} aria-label="Dismiss">
          ×
        </button>
      )}
    </div>
  );
}

export function ProgressBar({ percent, status }: { percent?: number; status: string }) {
  const p = status === 'success' || status === 'failure' ? 100 : Math.max(0, Math.min(100, percent ?? 0));
  const indeterminate = percent === undefined && (status === 'running' || status === 'pending');
  return (
    <div
      className={`progress ${indeterminate ? 'indeterminate' : ''} status-${status}`}
      role="progressbar"
      aria-valuenow={indeterminate ? undefined : p}
      aria-valuemin={0}
      aria-valuemax={100}
    >
      <div style={{ width: indeterminate ? undefined : `${p}%` }} />
    </div>
  );
}

/** A modal question; Enter confirms, Escape cancels. */
export function Confirm(props: { title: string; children: ReactNode; confirmLabel: string; danger?: boolean; onConfirm: () => void; onCancel: () => void }) {
  const ref = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    ref.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') props.onCancel();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [props]);
  return (
    <div className="modal-backdrop" onClick={props.onCancel}>
      <div className="modal" role="dialog" aria-modal="true" aria-labelledby="modal-title" onClick={(e) => e.stopPropagation()}>
        <h2 id="modal-title">{props.title}</h2>
        <div className="modal-body">{props.children}</div>
        <div className="modal-actions">
          <button onClick={props.onCancel}>Cancel</button>
          <button ref={ref} className={props.danger ? 'danger' : 'primary'} onClick={props.onConfirm} data-testid="confirm">
            {props.confirmLabel}
          </button>
        </div>
      </div>
    </div>
  );
}

export function Field(props: { label: string; problem?: string | null; children: ReactNode; help?: string }) {
  return (
    <label className={`field ${props.problem ? 'invalid' : ''}`}>
      <span className="label">{props.label}</span>
      {props.children}
      {props.problem ? <span className="problem">{props.problem}</span> : props.help ? <span className="help">{props.help}</span> : null}
    </label>
  );
}
