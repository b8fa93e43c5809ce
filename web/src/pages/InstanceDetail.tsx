import { lazy, Suspense, useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { api } from '../api.js';
import { InstanceActions } from '../components/InstanceActions.js';
import { CloneDialog } from '../components/Clone.js';

import { ErrorBox, Field, StateBadge } from '../components/ui.js';
import { useFeedback, useRequest } from '../feedback.js';
import { addresses, formatForward, formatMemory, formatUptime, timeAgo } from '../lib/format.js';
import type { Instance } from '../lib/types.js';
import { addressProblem, portProblem } from '../lib/validate.js';
import { OperationRow, isActive } from './Operations.js';
import { SnapshotsTab } from './Snapshots.js';
import { GuestAgentTab } from './GuestAgent.js';
import { go, type ConsoleData } from '../store.js';
import { Can, useCan, useRole } from '../role.js';
import { roleAtLeast, type Role } from '../../../src/wire/auth.js';

// xterm.js and noVNC load only when a console is opened: the list pages stay light on phones.
const SerialConsole = lazy(() => import('../components/SerialConsole.js').then((m) => ({ default: m.SerialConsole })));
const VncConsole = lazy(() => import('../components/VncConsole.js').then((m) => ({ default: m.VncConsole })));
const loading = <p className="muted">Loading the console…</p>;

const isUp = (i: Instance) => i.state === 'running' || i.state === 'paused';

/**
 * The tabs of an instance page. Features from other branches (snapshots, networks …) add a
 * tab here: an id for the URL (#/instances/NAME/ID), a title and what it shows.
 */
export const INSTANCE_TABS: Array<{ id: string; title: string; needs?: Role; render: (inst: Instance, data: ConsoleData) => ReactNode }> = [
  { id: 'overview', title: 'Overview', render: (i, d) => <Overview inst={i} data={d} /> },
  { id: 'forwards', title: 'Forwards', render: (i) => <Forwards inst={i} /> },
  { id: 'snapshots', title: 'Snapshots', render: (i, d) => <SnapshotsTab inst={i} data={d} /> },
  {
    id: 'console',
    title: 'Serial console',
    // The consoles are read-write (a shell in the guest): not for viewers.
    needs: 'operator',
    render: (i) => (
      <Suspense fallback={loading}>
        <SerialConsole name={i.name} running={isUp(i)} />
      </Suspense>
    ),
  },
  {
    id: 'screen',
    title: 'Graphical console',
    needs: 'operator',
    render: (i) => (
      <Suspense fallback={loading}>
        <VncConsole name={i.name} running={isUp(i)} />
      </Suspense>
    ),
  },
  // Everyone sees what the agent reports; the Run command box in it is for operators.
  { id: 'agent', title: 'Guest agent', render: (i) => <GuestAgentTab inst={i} /> },
  { id: 'log', title: 'Log', render: (i) => <Log inst={i} /> },
];

export function InstanceDetailPage({ data, name, tab }: { data: ConsoleData; name: string; tab?: string }) {
  const inst = data.instances[name];
  const role = useRole();
  const tabs = INSTANCE_TABS.filter((t) => !t.needs || roleAtLeast(role, t.needs));
  const current = tabs.find((t) => t.id === tab) ?? tabs[0]!;
  const [cloning, setCloning] = useState(false);
  if (!inst) {
    return (
      <section>
        <p className="muted">There is no instance "{name}" (any more).</p>
        <button onClick={() => go('instances')}>Back to the instances</button>
      </section>
    );
  }
  return (
    <section>
      <div className="page-head">
        <h1>
          <a href="#/instances" className="crumb">
            Instances
          </a>{' '}
          / {inst.name} <StateBadge state={inst.state} />
        </h1>
        <div className="actions">
          <InstanceActions inst={inst} onDeleted={() => go('instances')} />
          <Can need="operator">
            <button onClick={() => setCloning(true)} data-action="clone" title="Clone this instance (a stopped one directly, any one from a snapshot)">
              Clone
            </button>
          </Can>
        </div>
      </div>
      {cloning && <CloneDialog inst={inst} data={data} onClose={() => setCloning(false)} />}
      <nav className="tabs" role="tablist">
        {tabs.map((t) => (
          <a
            key={t.id}
            role="tab"
            aria-selected={t.id === current.id}
            className={t.id === current.id ? 'active' : ''}
            href={`#/instances/${encodeURIComponent(inst.name)}/${t.id}`}
            data-tab={t.id}
          >
            {t.title}
          </a>
        ))}
      </nav>
      <div className="tab-body">{current.render(inst, data)}</div>
    </section>
  );
}

/** Seconds since the instance object was read, so uptime counts on between reads. */
function useSecondsSince(stamp: unknown): number {
  const [t0, setT0] = useState(() => Date.now());
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => setT0(Date.now()), [stamp]);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  return Math.max(0, (now - t0) / 1000);
}

function Overview({ inst, data }: { inst: Instance; data: ConsoleData }) {
  const since = useSecondsSince(inst);
  const uptime = inst.runtime?.uptimeSeconds !== undefined && inst.state === 'running' ? inst.runtime.uptimeSeconds + since : inst.runtime?.uptimeSeconds;
  const ops = Object.values(data.operations)
    .filter((o) => o.target === inst.name)
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const rows: Array<[string, ReactNode]> = [
    [
      'State',
      <>
        {inst.state}
        {inst.stateReason ? ` (${inst.stateReason})` : ''}
      </>,
    ],
    ['Image', `${inst.image}${inst.imageVersion ? ` ${inst.imageVersion}` : ''}`],
    ['Type', inst.type ?? 'custom'],
    ['vCPUs', inst.cpus],
    ['Memory', formatMemory(inst.memoryMiB)],
    ['Addresses', addresses(inst).join(', ') || '—'],
    ['NICs', inst.nics.map((n) => `${n.id} ${n.model} ${n.mac} (${n.network})`).join('; ') || '—'],
    ['Forwards', inst.forwards.map(formatForward).join(', ') || '—'],
    ['Host', inst.host ?? '—'],
    ['Process', inst.runtime?.pid ? `pid ${inst.runtime.pid}, ${inst.runtime.accel ?? ''}, QEMU ${inst.runtime.qemuStatus ?? '?'}` : '—'],
    ['Uptime', formatUptime(uptime)],
    ['Snapshot', inst.currentSnapshot ?? '—'],
    ['Created', timeAgo(inst.createdAt)],
  ];
  return (
    <div className="overview">
      <dl className="facts card">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      <div>
        <h2>Operations on {inst.name}</h2>
        {ops.length === 0 ? (
          <p className="muted">None since the daemon started.</p>
        ) : (
          <ul className="ops">
            {ops.slice(0, 8).map((o) => (
              <OperationRow key={o.id} op={o} />
            ))}
          </ul>
        )}
        {ops.some(isActive) && <p className="muted">Progress updates live.</p>}
      </div>
    </div>
  );
}

function Forwards({ inst }: { inst: Instance }) {
  const fb = useFeedback();
  const canEdit = useCan('operator');
  const [hostPort, setHostPort] = useState('');
  const [guestPort, setGuestPort] = useState('80');
  const [proto, setProto] = useState<'tcp' | 'udp'>('tcp');
  const [hostAddress, setHostAddress] = useState('127.0.0.1');
  const [submitted, setSubmitted] = useState(false);
  const { busy, error, setError, send } = useRequest();
  const problems = {
    hostPort: portProblem(hostPort, 'host port'),
    guestPort: portProblem(guestPort, 'guest port'),
    hostAddress: addressProblem(hostAddress),
  };
  const valid = !problems.hostPort && !problems.guestPort && !problems.hostAddress;
  const add = async (e: FormEvent) => {
    e.preventDefault();
    setSubmitted(true);
    setError(null);
    if (!valid) return;
    await send(async () => {
      await api.addForward(inst.name, { hostPort: Number(hostPort), guestPort: Number(guestPort), proto, hostAddress });
      setHostPort('');
      setSubmitted(false);
    });
  };
  return (
    <div>
      {inst.forwards.length === 0 ? (
        <p className="muted">No port forwards.</p>
      ) : (
        <table className="list forwards-table" data-testid="forwards">
          <thead>
            <tr>
              <th>Host address</th>
              <th>Host port</th>
              <th>Guest port</th>
              <th>Protocol</th>
              <th>NIC</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {inst.forwards.map((f) => (
              <tr key={`${f.proto}:${f.hostAddress}:${f.hostPort}`} data-forward={f.hostPort}>
                <td data-label="Host address">{f.hostAddress}</td>
                <td data-label="Host port">{f.hostPort}</td>
                <td data-label="Guest port">{f.guestPort}</td>
                <td data-label="Protocol">{f.proto}</td>
                <td data-label="NIC">{f.nic ?? '—'}</td>
                <td className="row-actions">
                  <Can need="operator">
                    <button className="danger small" onClick={() => api.removeForward(inst.name, f).catch(fb.error)} data-action="remove-forward">
                      Remove
                    </button>
                  </Can>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canEdit && (
        <form className="card row add-forward" onSubmit={add} noValidate data-testid="forward-form">
          <Field label="Host port" problem={submitted ? problems.hostPort : null}>
            <input name="hostPort" inputMode="numeric" value={hostPort} onChange={(e) => setHostPort(e.target.value)} />
          </Field>
          <Field label="Guest port" problem={submitted ? problems.guestPort : null}>
            <input name="guestPort" inputMode="numeric" value={guestPort} onChange={(e) => setGuestPort(e.target.value)} />
          </Field>
          <Field label="Protocol">
            <select name="proto" value={proto} onChange={(e) => setProto(e.target.value as 'tcp' | 'udp')}>
              <option>tcp</option>
              <option>udp</option>
            </select>
          </Field>
          <Field label="Host address" problem={submitted ? problems.hostAddress : null}>
            <input name="hostAddress" value={hostAddress} onChange={(e) => setHostAddress(e.target.value)} />
          </Field>
          <button type="submit" className="primary" disabled={busy}>
            Add forward
          </button>
        </form>
      )}
      <ErrorBox error={error} onClose={() => setError(null)} />
      {isUp(inst) && <p className="muted">Changes apply to the running instance at once.</p>}
    </div>
  );
}

function Log({ inst }: { inst: Instance }) {
  const [text, setText] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    api.logs(inst.name).then(setText, setError);
  }, [inst.name, n]);
  return (
    <div>
      <div className="toolbar">
        <button onClick={() => setN(n + 1)}>Refresh</button>
      </div>
      <ErrorBox error={error} />
      <pre className="log" data-testid="log">
        {text ?? 'Loading…'}
      </pre>
    </div>
  );
}
