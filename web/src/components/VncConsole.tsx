import { useEffect, useRef, useState } from 'react';
import RFB from '@novnc/novnc';
import { wsUrl } from '../api.js';

type Status = 'connecting' | 'connected' | 'closed';

/** The instance's screen: noVNC over the VNC WebSocket (the daemon bridges QEMU's VNC socket). */
export function VncConsole({ name, running }: { name: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [reason, setReason] = useState('');
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (!running || !box.current) return;
    setStatus('connecting');
    setReason('');
    const r = new RFB(box.current, wsUrl(`/1.0/instances/${encodeURIComponent(name)}/vnc`), { shared: true });
    r.scaleViewport = true;
    r.background = '#0b1020';
    r.addEventListener('connect', () => setStatus('connected'));
    r.addEventListener('disconnect', (e) => {
      setStatus('closed');
      const clean = (e as CustomEvent<{ clean: boolean }>).detail?.clean;
      if (!clean) setReason('The connection was refused or lost.');
    });
    r.addEventListener('securityfailure', (e) => setReason(`Security failure: ${(e as CustomEvent<{ reason?: string }>).detail?.reason ?? ''}`));
    rfb.current = r;
    return () => {
      rfb.current = null;
      try {
        r.disconnect();
      } catch {
        /* already closed */
      }
    };
  }, [name, running, attempt]);

  if (!running) return <p className="muted">The graphical console is available while the instance runs.</p>;
  return (
    <div className="console">
      <div className="console-bar">
        <span className={`dot ${status}`} /> <span data-testid="vnc-status">{status}</span>
        {reason && <span className="muted"> — {reason}</span>}
        <span className="spacer" />
        {status === 'connected' && (
          <button className="small" onClick={() => rfb.current?.sendCtrlAltDel()}>
            Ctrl-Alt-Del
          </button>
        )}
        {status === 'closed' && (
          <button className="small" onClick={() => setAttempt((a) => a + 1)}>
            Reconnect
          </button>
        )}
      </div>
      <div className="screen" ref={box} data-testid="vnc-screen" />
    </div>
  );
}
