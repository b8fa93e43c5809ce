import net from 'node:net';
import type { InstanceView, PortForward } from '../domain/types.js';
import { vmkitError } from '../errors.js';
import { describeForward } from './forwards.js';

export interface ForwardCheck {
  forward: PortForward;
  /** How the forward is implemented: QEMU user-mode hostfwd or nftables DNAT. */
  via: 'hostfwd' | 'dnat';
  guestAddress?: string;
  /** host → forward → guest port */
  reachable: boolean;
  /** host → guest port directly (DNAT forwards only): tells a broken forward from a closed port. */
  guestReachable?: boolean;
  millis: number;
  error?: string;
}

function tcpConnect(host: string, port: number, timeoutMs: number): Promise<{ ok: boolean; ms: number; error?: string }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean, error?: string) => {
      s.destroy();
      resolve({ ok, ms: Date.now() - t0, error });
    };
    s.setTimeout(timeoutMs, () => done(false, `no answer within ${timeoutMs} ms`));
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
  });
}

/** Connects to the forward's host side (and for DNAT to the guest directly) and says what answers. */
export async function checkForward(inst: InstanceView, hostPort: number, proto: 'tcp' | 'udp' = 'tcp', timeoutMs = 3000): Promise<ForwardCheck> {
  const f = inst.forwards.find((x) => x.hostPort === hostPort && x.proto === proto);
  if (!f) {
    throw vmkitError('VMKIT_FORWARD_NOT_FOUND', `Instance "${inst.name}" has no ${proto} forward from host port ${hostPort}.`, {
      hint: `"vmkit forward list ${inst.name}" shows its forwards.`,
    });
  }
  if (proto !== 'tcp') {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Only TCP forwards can be checked (${describeForward(f)} is UDP: there is no connection to observe).`, {
      hint: 'Test a UDP service with a client of its own protocol.',
    });
  }
  if (inst.state !== 'running') {
    throw vmkitError('VMKIT_INVALID_STATE', `Instance "${inst.name}" is ${inst.state}; a forward can only be checked while it runs.`, {
      hint: `Start it with "vmkit start ${inst.name}".`,
    });
  }
  const nic = inst.nics.find((n) => n.id === f.nic);
  const via = nic?.network === 'user' ? 'hostfwd' : 'dnat';
  const target = f.hostAddress === '0.0.0.0' ? '127.0.0.1' : f.hostAddress;
  const r = await tcpConnect(target, f.hostPort, timeoutMs);
  const out: ForwardCheck = { forward: f, via, reachable: r.ok, millis: r.ms, ...(r.error ? { error: r.error } : {}) };
  if (via === 'dnat' && nic?.ipv4) {
    out.guestAddress = nic.ipv4;
    out.guestReachable = (await tcpConnect(nic.ipv4, f.guestPort, timeoutMs)).ok;
  }
  return out;
}
