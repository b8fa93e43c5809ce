import { useEffect, useState, type FormEvent } from 'react';
import { api } from '../api.js';
import { ErrorBox, Field } from '../components/ui.js';
import { formatDuration, timeAgo } from '../lib/format.js';
import type { ExecResult, Instance } from '../lib/types.js';
import { Can } from '../role.js';
import { useRequest } from '../feedback.js';

/** Base64 from the API as text (UTF-8; what is not is shown as U+FFFD). */
function decode(b64: string): string {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * The guest agent tab: whether the guest's agent answers, who the guest says it is and the
 * addresses it reports (GET /1.0/instances/NAME asks the agent), and for operators a command
 * box (POST /1.0/instances/NAME/exec, run through /bin/sh -c). doc/guest-agent.md.
 */
export function GuestAgentTab({ inst }: { inst: Instance }) {
  const running = inst.state === 'running';
  // The instance as last read here (a fresh GET asks the agent); the store's copy until then.
  const [fresh, setFresh] = useState<Instance | null>(null);
  const [n, setN] = useState(0);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (!running) return;
    let gone = false;
    api.instance(inst.name).then(
      (i) => !gone && setFresh(i),
      (e) => !gone && setError(e),
    );
    return () => {
      gone = true;
    };
  }, [inst.name, running, n]);
  const agent = (fresh ?? inst).runtime?.agent;
  const interfaces = (agent?.available ? (agent.interfaces ?? []) : []).filter((f) => f.name !== 'lo');
  let status: string;
  if (!running) status = inst.state === 'paused' ? 'cannot answer while the instance is paused' : 'the instance is not running';
  else if (!agent) status = 'not asked yet';
  else if (agent.available) status = 'answers';
  else status = `no answer (${agent.reason ?? 'none'})`;
  const os = agent?.available ? [agent.os, agent.kernel].filter((x) => x).join(', ') : '';
  return (
    <div className="guest-agent">
      <div className="toolbar">
        <button onClick={() => setN(n + 1)} disabled={!running} data-action="agent-refresh">
          Ask again
        </button>
      </div>
      <ErrorBox error={error} onClose={() => setError(null)} />
      <dl className="facts card" data-testid="agent-facts">
        <div>
          <dt>Agent</dt>
          <dd data-testid="agent-status" data-available={agent?.available && running ? 'yes' : 'no'}>
            {status}
            {running && agent && <span className="muted"> · asked {timeAgo(agent.checkedAt)}</span>}
          </dd>
        </div>
        <div>
          <dt>Host name</dt>
          <dd data-testid="agent-hostname">{(agent?.available && agent.hostname) || '—'}</dd>
        </div>
        <div>
          <dt>OS, kernel</dt>
          <dd data-testid="agent-os">{os || '—'}</dd>
        </div>
      </dl>
      <h2>Addresses the guest reports</h2>
      {interfaces.length === 0 ? (
        <p className="muted">{agent?.available && running ? 'No interface besides loopback.' : 'None known: the agent has not answered.'}</p>
      ) : (
        <table className="list" data-testid="agent-addresses">
          <thead>
            <tr>
              <th>Interface</th>
              <th>MAC</th>
              <th>IPv4</th>
              <th>IPv6</th>
            </tr>
          </thead>
          <tbody>
            {interfaces.map((f) => (
              <tr key={f.name} data-interface={f.name}>
                <td data-label="Interface">{f.name}</td>
                <td data-label="MAC">{f.mac ?? '—'}</td>
                <td data-label="IPv4">{f.ipv4.join(', ') || '—'}</td>
                <td data-label="IPv6">{f.ipv6.join(', ') || '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Can need="operator">
        <RunCommand inst={inst} running={running} />
      </Can>
    </div>
  );
}

/** The command box: one shell command line, its exit code and output when it ends. */
function RunCommand({ inst, running }: { inst: Instance; running: boolean }) {
  const [command, setCommand] = useState('');
  const [timeout, setTimeoutS] = useState('60');
  const { busy, error, setError, send } = useRequest();
  const [result, setResult] = useState<(ExecResult & { command: string }) | null>(null);
  const seconds = Number(timeout);
  const timeoutProblem = Number.isInteger(seconds) && seconds >= 1 && seconds <= 86400 ? null : 'Whole seconds, 1 to 86400.';
  const run = async (e: FormEvent) => {
    e.preventDefault();
    if (!command.trim() || timeoutProblem) return;
    setError(null);
    await send(async () => {
      const r = await api.exec(inst.name, { command: ['/bin/sh', '-c', command], timeout: seconds });
      setResult({ ...r, command });
    });
  };
  return (
    <div className="run-command">
      <h2>Run command</h2>
      <form className="card row" onSubmit={run} noValidate data-testid="exec-form">
        <Field label="Command (run by /bin/sh -c in the guest)">
          <input name="command" value={command} onChange={(e) => setCommand(e.target.value)} placeholder="uname -a" autoComplete="off" spellCheck={false} />
        </Field>
        <Field label="Timeout (s)" problem={timeoutProblem}>
          <input name="timeout" inputMode="numeric" value={timeout} onChange={(e) => setTimeoutS(e.target.value)} />
        </Field>
        <button type="submit" className="primary" disabled={busy || !running || !command.trim() || !!timeoutProblem} data-testid="exec-submit">
          {busy ? 'Running…' : 'Run'}
        </button>
      </form>
      {!running && <p className="muted">The instance must be running.</p>}
      <ErrorBox error={error} onClose={() => setError(null)} />
      {result && (
        <div className="card exec-result" data-testid="exec-result">
          <p>
            <code>{result.command}</code> ended with exit code <strong data-testid="exec-exit-code">{result.exitCode}</strong>
            {result.signal !== undefined ? ` (signal ${result.signal})` : ''} after {formatDuration(result.durationMs)}.
            {result.truncated && ' The agent kept only the first 16 MiB of the output.'}
          </p>
          <h3>Standard output</h3>
          <pre className="log" data-testid="exec-stdout">
            {decode(result.stdout)}
          </pre>
          <h3>Standard error</h3>
          <pre className="log" data-testid="exec-stderr">
            {decode(result.stderr)}
          </pre>
        </div>
      )}
    </div>
  );
}
