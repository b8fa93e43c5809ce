import { useCallback, useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { api } from '../api.js';
import { Confirm, ErrorBox, Field } from '../components/ui.js';
import { useFeedback, useRequest } from '../feedback.js';
import { timeAgo } from '../lib/format.js';
import type { Network } from '../lib/types.js';
import { networkProblems, type NetworkModeDraft } from '../lib/validate.js';
import { go, type ConsoleData } from '../store.js';
import { Can } from '../role.js';

/** Reads `load` now, whenever `key` changes, and every 15 s while shown. */
function usePolled<T>(load: () => Promise<T>, key: unknown): { value: T | null; error: unknown; refresh: () => void } {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    let stale = false;
    const read = () =>
      load().then(
        (v) => {
          if (stale) return;
          setValue(v);
          setError(null);
        },
        (err) => !stale && setError(err),
      );
    void read();
    const t = setInterval(read, 15_000);
    return () => {
      stale = true;
      clearInterval(t);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, n]);
  return { value, error, refresh: useCallback(() => setN((x) => x + 1), []) };
}

/** A change of any instance's NICs or state may change a network's NICs, leases and forwards. */
const instancesKey = (d: ConsoleData) =>
  Object.values(d.instances)
    .map((i) => `${i.name}:${i.state}:${i.nics.map((n) => `${n.network}/${n.ipv4 ?? ''}`).join('+')}:${i.forwards.length}`)
    .join(',');

export function NetworksPage({ data, name }: { data: ConsoleData; name?: string }) {
  return name ? <NetworkDetail data={data} name={name} /> : <NetworkList data={data} />;
}

const dhcpText = (n: Network) => (n.dhcp ? (n.dhcpRange ? `${n.dhcpRange.start} – ${n.dhcpRange.end}` : 'on') : 'off');
const noSupport = (err: unknown) => (err as { code?: string })?.code === 'VMKIT_NOT_FOUND';

function NetworkList({ data }: { data: ConsoleData }) {
  const { value: list, error, refresh } = usePolled(api.networks, `${instancesKey(data)}|${data.live}`);
  const [creating, setCreating] = useState(false);
  return (
    <section>
      <div className="page-head">
        <h1>Networks</h1>
        <div className="actions">
          <button onClick={refresh}>Refresh</button>
          {!creating && !noSupport(error) && (
            <Can need="admin">
              <button className="primary" onClick={() => setCreating(true)} data-testid="new-network">
                New network
              </button>
            </Can>
          )}
        </div>
      </div>
      {creating && (
        <CreateNetwork
          taken={(list ?? []).map((n) => n.name)}
          onCancel={() => setCreating(false)}
          onCreated={(n) => {
            setCreating(false);
            refresh();
            go(`networks/${encodeURIComponent(n.name)}`);
          }}
        />
      )}
      {error && noSupport(error) ? <p className="muted">This daemon has no network support: instances have user-mode NICs only.</p> : <ErrorBox error={error} />}
      {list === null ? (
        !error && <p className="muted">Loading…</p>
      ) : list.length === 0 ? (
        <div className="card empty" data-testid="no-networks">
          <p>There are no networks. Instances use user-mode networking (NAT by QEMU, port forwards on the host).</p>
          <p className="muted">
            Create one with <code>vmkit network create NAME --mode nat</code> or the New network button (doc/network.md); bridges, taps and firewall rules need a daemon running as
            root.
          </p>
        </div>
      ) : (
        <table className="list networks" data-testid="networks">
          <thead>
            <tr>
              <th>Name</th>
              <th>Mode</th>
              <th>Subnet</th>
              <th>Bridge</th>
              <th>DHCP</th>
              <th>NICs</th>
            </tr>
          </thead>
          <tbody>
            {list.map((n) => (
              <tr key={n.name} data-network={n.name}>
                <td data-label="Name">
                  <a className="name" href={`#/networks/${encodeURIComponent(n.name)}`}>
                    {n.name}
                  </a>
                </td>
                <td data-label="Mode">
                  <span className="badge">{n.mode}</span>
                </td>
                <td data-label="Subnet">{n.subnet ?? '—'}</td>
                <td data-label="Bridge" className="mono">
                  {n.bridge}
                  {n.uplink ? ` (uplink ${n.uplink})` : ''}
                </td>
                <td data-label="DHCP">{dhcpText(n)}</td>
                <td data-label="NICs">{n.nics.length}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function CreateNetwork({ taken, onCancel, onCreated }: { taken: string[]; onCancel: () => void; onCreated: (n: Network) => void }) {
  const [name, setName] = useState('');
  const [mode, setMode] = useState<NetworkModeDraft>('nat');
  const [subnet, setSubnet] = useState('');
  const [dhcpRange, setDhcpRange] = useState('');
  const [uplink, setUplink] = useState('');
  const [dhcp, setDhcp] = useState(false);
  const [dns, setDns] = useState(true);
  const [submitted, setSubmitted] = useState(false);
  const { busy, error, setError, send } = useRequest();
  const p = networkProblems({ name, mode, subnet, dhcpRange, uplink });
  const nameProblem = p.name ?? (taken.includes(name) ? 'A network of that name exists.' : null);
  const valid = !nameProblem && !p.subnet && !p.uplink;
  const bridged = mode === 'bridged';
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setSubmitted(true);
    setError(null);
    if (!valid) return;
    const body: Parameters<typeof api.createNetwork>[0] = { name, mode };
    if (bridged) body.uplink = uplink.trim();
    else if (subnet.trim()) {
      body.subnet = subnet.trim();
      if (dhcpRange.trim()) body.dhcpRange = dhcpRange.trim();
      if (mode === 'internal') body.dhcp = dhcp || !!dhcpRange.trim();
      body.dns = dns;
    }
    await send(async () => onCreated(await api.createNetwork(body)));
  };
  const show = (s: string | null) => (submitted ? s : null);
  return (
    <form className="card create-network" onSubmit={submit} noValidate data-testid="network-form">
      <div className="row">
        <Field label="Name" problem={show(nameProblem)}>
          <input name="networkName" value={name} onChange={(e) => setName(e.target.value)} placeholder="lan" autoComplete="off" />
        </Field>
        <Field label="Mode" help={MODE_HELP[mode]}>
          <select name="mode" value={mode} onChange={(e) => setMode(e.target.value as NetworkModeDraft)}>
            <option value="nat">nat</option>
            <option value="host-only">host-only</option>
            <option value="internal">internal</option>
            <option value="bridged">bridged</option>
          </select>
        </Field>
      </div>
      {bridged ? (
        <Field label="Uplink (host interface)" problem={show(p.uplink)}>
          <input name="uplink" value={uplink} onChange={(e) => setUplink(e.target.value)} placeholder="eth1" />
        </Field>
      ) : (
        <div className="row">
          <Field label={mode === 'internal' ? 'Subnet (optional)' : 'Subnet'} problem={show(p.subnet)}>
            <input name="subnet" value={subnet} onChange={(e) => setSubnet(e.target.value)} placeholder="10.80.0.0/24" />
          </Field>
          <Field label="DHCP range (optional)" help="e.g. .100-.200; the whole subnet otherwise">
            <input name="dhcpRange" value={dhcpRange} onChange={(e) => setDhcpRange(e.target.value)} disabled={!subnet.trim()} />
          </Field>
        </div>
      )}
      {!bridged && subnet.trim() && (
        <div className="segmented">
          {mode === 'internal' && (
            <label className="check">
              <input type="checkbox" checked={dhcp} onChange={(e) => setDhcp(e.target.checked)} name="dhcp" /> DHCP
            </label>
          )}
          <label className="check">
            <input type="checkbox" checked={dns} onChange={(e) => setDns(e.target.checked)} name="dns" /> DNS (guests resolve each other's names)
          </label>
        </div>
      )}
      <ErrorBox error={error} onClose={() => setError(null)} />
      <div className="form-actions">
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" className="primary" disabled={busy} data-testid="network-submit">
          {busy ? 'Creating…' : 'Create network'}
        </button>
      </div>
    </form>
  );
}

const MODE_HELP: Record<NetworkModeDraft, string> = {
  nat: 'Guests reach out through the host (masquerade); port forwards possible.',
  'host-only': 'Guests and the host talk; nothing is routed further.',
  internal: 'Guests talk among themselves only.',
  bridged: 'Guests sit on the LAN of a host interface.',
};

function NetworkDetail({ data, name }: { data: ConsoleData; name: string }) {
  const fb = useFeedback();
  const { value: n, error, refresh } = usePolled(() => api.network(name), `${name}|${instancesKey(data)}|${data.live}`);
  const [asking, setAsking] = useState(false);
  const head = (
    <div className="page-head">
      <h1>
        <a href="#/networks" className="crumb">
          Networks
        </a>{' '}
        / {name} {n && <span className="badge">{n.mode}</span>}
      </h1>
      <div className="actions">
        <button onClick={refresh}>Refresh</button>
        {n && (
          <Can need="admin">
            <button className="danger" onClick={() => setAsking(true)} data-action="delete-network">
              Delete
            </button>
          </Can>
        )}
      </div>
      {asking && (
        <Confirm
          title={`Delete network ${name}?`}
          confirmLabel="Delete network"
          danger
          onCancel={() => setAsking(false)}
          onConfirm={() => {
            setAsking(false);
            api.deleteNetwork(name).then(() => go('networks'), fb.error);
          }}
        >
          <p>Its bridge, DHCP/DNS server and rules are removed. The daemon refuses while instances have NICs on it.</p>
        </Confirm>
      )}
    </div>
  );
  if (!n) {
    return (
      <section>
        {head}
        {error ? <ErrorBox error={error} /> : <p className="muted">Loading…</p>}
      </section>
    );
  }
  const facts: Array<[string, ReactNode]> = [
    ['Mode', n.mode],
    ['Bridge', n.bridge],
    ['Subnet', n.subnet ?? '—'],
    ['Host address', n.hostAddress ?? '—'],
    ['DHCP', dhcpText(n)],
    ['DNS', n.dns ? 'on' : 'off'],
    ...(n.uplink ? ([['Uplink', n.uplink]] as Array<[string, ReactNode]>) : []),
    ['Created', timeAgo(n.createdAt)],
  ];
  return (
    <section data-testid="network-detail">
      {head}
      <ErrorBox error={error} />
      <dl className="facts card">
        {facts.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>

      <h2>Attached NICs ({n.nics.length})</h2>
      {n.nics.length === 0 ? (
        <p className="muted">No instance has a NIC on this network.</p>
      ) : (
        <table className="list" data-testid="network-nics">
          <thead>
            <tr>
              <th>Instance</th>
              <th>NIC</th>
              <th>MAC</th>
              <th>Model</th>
              <th>IPv4</th>
              <th>Tap</th>
              <th>State</th>
            </tr>
          </thead>
          <tbody>
            {n.nics.map((x) => (
              <tr key={`${x.instance}/${x.nic}`}>
                <td data-label="Instance">
                  <a className="name" href={`#/instances/${encodeURIComponent(x.instance)}`}>
                    {x.instance}
                  </a>
                </td>
                <td data-label="NIC">{x.nic}</td>
                <td data-label="MAC" className="mono">
                  {x.mac}
                </td>
                <td data-label="Model">{x.model}</td>
                <td data-label="IPv4">{x.ipv4 ?? '—'}</td>
                <td data-label="Tap" className="mono">
                  {x.tap}
                </td>
                <td data-label="State">{x.state}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>DHCP leases ({n.leases.length})</h2>
      {n.leases.length === 0 ? (
        <p className="muted">{n.dhcp ? 'No leases handed out.' : 'DHCP is off on this network.'}</p>
      ) : (
        <table className="list" data-testid="network-leases">
          <thead>
            <tr>
              <th>IPv4</th>
              <th>MAC</th>
              <th>Hostname</th>
              <th>Expires</th>
            </tr>
          </thead>
          <tbody>
            {n.leases.map((l) => (
              <tr key={`${l.mac}/${l.ipv4}`}>
                <td data-label="IPv4">{l.ipv4}</td>
                <td data-label="MAC" className="mono">
                  {l.mac}
                </td>
                <td data-label="Hostname">{l.hostname || '—'}</td>
                <td data-label="Expires">{l.expires ? new Date(l.expires * 1000).toLocaleString() : 'never'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>Port forwards ({n.forwards.length})</h2>
      {n.forwards.length === 0 ? (
        <p className="muted">{n.mode === 'nat' ? 'No forwards to NICs on this network.' : `Forwards go to NICs on nat networks; this one is ${n.mode}.`}</p>
      ) : (
        <table className="list" data-testid="network-forwards">
          <thead>
            <tr>
              <th>Host</th>
              <th>Guest</th>
              <th>Protocol</th>
              <th>Instance</th>
            </tr>
          </thead>
          <tbody>
            {n.forwards.map((f) => (
              <tr key={`${f.proto}:${f.hostAddress}:${f.hostPort}`}>
                <td data-label="Host" className="mono">
                  {f.hostAddress}:{f.hostPort}
                </td>
                <td data-label="Guest" className="mono">
                  {f.guestIp ?? '?'}:{f.guestPort}
                </td>
                <td data-label="Protocol">{f.proto}</td>
                <td data-label="Instance">
                  <a href={`#/instances/${encodeURIComponent(f.instance)}/forwards`}>{f.instance}</a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
