import { useEffect, useRef, useState } from 'react';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { wsUrl } from '../api.js';

type Status = 'connecting' | 'connected' | 'closed';

/** The instance's serial console: xterm.js over the console WebSocket (binary frames both ways). */
export function SerialConsole({ name, running }: { name: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [reason, setReason] = useState('');
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (!running || !box.current) return;
    const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000, fontFamily: 'ui-monospace, Menlo, Consolas, monospace', theme: { background: '#0b1020' } });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current);
    fit.fit();
    setStatus('connecting');
    setReason('');
    const ws = new WebSocket(wsUrl(`/1.0/instances/${encodeURIComponent(name)}/console`));
    ws.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    ws.onopen = () => {
      setStatus('connected');
      term.focus();
      // Wake the prompt up so the user sees where they are.
      ws.send(enc.encode('\r'));
    };
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        try {
          const e = JSON.parse(m.data) as { error?: { message?: string } };
          setReason(e.error?.message ?? m.data);
        } catch {
          term.write(m.data);
        }
        return;
      }
      term.write(new Uint8Array(m.data as ArrayBuffer));
    };
    ws.onclose = (e) => {
      setStatus('closed');
      setReason((r) => r || e.reason || (e.code === 1006 ? 'The connection was refused or lost.' : ''));
    };
    const sub = term.onData((d) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const onResize = () => fit.fit();
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      sub.dispose();
      ws.close();
      term.dispose();
    };
  }, [name, running, attempt]);

  if (!running) return <p className="muted">The serial console is available while the instance runs.</p>;
  return (
    <div className="console">
      <div className="console-bar">
        <span className={`dot ${status}`} /> <span data-testid="serial-status">{status}</span>
        {reason && <span className="muted"> — {reason}</span>}
        {status === 'closed' && (
          <button className="small" onClick={() => setAttempt((a) => a + 1)}>
            Reconnect
          </button>
        )}
      </div>
      <div className="terminal" ref={box} data-testid="serial-console" />
    </div>
  );
}
