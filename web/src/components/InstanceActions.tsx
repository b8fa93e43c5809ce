import { useState } from 'react';
import { api } from '../api.js';
import { actionsFor } from '../lib/format.js';
import type { Instance } from '../lib/types.js';
import { Confirm } from './ui.js';
import { useOperationStarter } from '../feedback.js';
import { useCan } from '../role.js';

const TITLES: Partial<Record<keyof typeof LABELS, string>> = {
  pause: 'Stop the vCPUs; the guest stays in memory',
  suspend: 'Save the memory and devices to disk and end QEMU; Start resumes from there',
};
const LABELS = { start: 'Start', stop: 'Stop', 'force-stop': 'Force stop', restart: 'Restart', pause: 'Pause', suspend: 'Suspend', resume: 'Resume' } as const;

/** The verbs an instance's state allows, and delete behind a confirmation. */
export function InstanceActions({ inst, onDeleted, compact }: { inst: Instance; onDeleted?: () => void; compact?: boolean }) {
  const [asking, setAsking] = useState<null | 'delete' | 'force-stop'>(null);
  const { busy, run } = useOperationStarter();
  const allowed = useCan('operator');
  const act = (a: keyof typeof LABELS) => {
    if (a === 'force-stop') return setAsking('force-stop');
    void run(() => api.changeState(inst.name, a));
  };
  const running = inst.state !== 'stopped' && inst.state !== 'error' && inst.state !== 'suspended';
  if (!allowed) return null;
  return (
    <div className={`actions ${compact ? 'compact' : ''}`}>
      {actionsFor(inst.state).map((a) => (
        <button
          key={a}
          disabled={busy}
          onClick={() => act(a)}
          data-action={a}
          title={a === 'start' && inst.state === 'suspended' ? 'Resume from the saved state' : TITLES[a]}
          className={a === 'force-stop' ? 'warn' : ''}
        >
          {LABELS[a]}
        </button>
      ))}
      <button className="danger" disabled={busy || inst.state === 'deleting'} onClick={() => setAsking('delete')} data-action="delete">
        Delete
      </button>
      {asking === 'delete' && (
        <Confirm
          title={`Delete ${inst.name}?`}
          confirmLabel={running ? 'Stop and delete' : 'Delete'}
          danger
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            setAsking(null);
            void run(async () => {
              const op = await api.remove(inst.name, running);
              onDeleted?.();
              return op;
            });
          }}
        >
          <p>Its disks and settings are removed for good. {running && <strong>It is {inst.state}: it will be stopped at once, without a clean shutdown.</strong>}</p>
        </Confirm>
      )}
      {asking === 'force-stop' && (
        <Confirm
          title={`Force stop ${inst.name}?`}
          confirmLabel="Force stop"
          danger
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            setAsking(null);
            void run(() => api.changeState(inst.name, 'stop', true));
          }}
        >
          <p>Like pulling the power cord: the guest does not get to shut down, unsaved data in it is lost.</p>
        </Confirm>
      )}
    </div>
  );
}
