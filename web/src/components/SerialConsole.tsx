import { useEffect, useRef, useState } from 'react';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { api, wsUrl } from '../api.js';

type Status = 'connecting' | 'connected' | 'closed';

/** The instance's serial console: xterm.js over the console WebSocket (binary frames both ways). */
export function SerialConsole({ name, running }: { name: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [reason, setReason] = useState('');
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (!running || !box.current) return;
    const term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontSize: 14,
      scrollback: 5000,
      fontFamily: 'ui-monospace, Menlo, Consolas, monospace',
      theme: { background: '#0b1020' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current);
    fit.fit();
    setStatus('connecting');
    setReason('');
    let ws: WebSocket | null = null;
    let disposed = false;
    const enc = new TextEncoder();
    const wire = (ws: WebSocket) => {
      ws.binaryType = 'arraybuffer';
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
    };
    const connect = () => {
      if (disposed) return;
      ws = new WebSocket(wsUrl(`/1.0/instances/${encodeURIComponent(name)}/console`));
      wire(ws);
    };
    // What the guest printed before: the tail of its console log, then the live console.
    api
      .logs(name, 8192)
      .then((text) => {
        const nl = text.length >= 8192 ? text.indexOf('\n') : -1;
        const tail = text.slice(nl + 1);
        if (tail && !disposed) term.write(`\x1b[2m${tail.replace(/\r?\n/g, '\r\n')}\x1b[0m\r\n\x1b[2m--- live ---\x1b[0m\r\n`);
      })
      .catch(() => undefined)
      .finally(connect);
    const sub = term.onData((d) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const onResize = () => fit.fit();
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      disposed = true;
      sub.dispose();
      ws?.close();
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
