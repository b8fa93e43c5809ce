import net from 'node:net';
import dgram from 'node:dgram';
import { vmkitError } from '../errors.js';
import type { PortForward, Protocol } from '../domain/types.js';

/** What a user asks for; the daemon fills in defaults (address, protocol, NIC). */
export interface ForwardRequest {
  hostPort: number;
  guestPort: number;
  proto?: Protocol;
  hostAddress?: string;
  allowPrivileged?: boolean;
  /** The NIC to forward to (default: the first user-mode NIC, else the first with an address). */
  nic?: string;
  /** The host address follows the instance around the cluster (held by the host it runs on). */
  floating?: boolean;
}

export const DEFAULT_FORWARD_ADDRESS = '127.0.0.1';

function checkPort(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `The ${what} ${JSON.stringify(value)} is not a port number.`, {
      hint: 'Ports are integers from 1 to 65535.',
    });
  }
  return value;
}

/** Validates a request into a forward on `nic`. Pure: no I/O. */
export function normalizeForward(req: ForwardRequest, nic: string): PortForward {
  const hostPort = checkPort(req.hostPort, 'host port');
  const guestPort = checkPort(req.guestPort, 'guest port');
  const proto = req.proto ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp') {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown protocol "${String(proto)}".`, { hint: 'Use tcp or udp.' });
  }
  const hostAddress = req.hostAddress ?? DEFAULT_FORWARD_ADDRESS;
  if (net.isIPv4(hostAddress) === false) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `The host address "${hostAddress}" is not an IPv4 address.`, {
      hint: 'Use 127.0.0.1 (the default, this host only) or 0.0.0.0 (every interface).',
    });
  }
  if (hostPort < 1024 && !req.allowPrivileged) {
    throw vmkitError('VMKIT_PORT_PRIVILEGED', `Host port ${hostPort} is a privileged port (below 1024).`, {
      hint: 'Pick a port of 1024 or more, or pass --allow-privileged if you really mean it.',
    });
  }
  if (req.floating) {
    if (!req.hostAddress || hostAddress === '0.0.0.0' || hostAddress.startsWith('127.')) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'A floating forward needs its own address (not 0.0.0.0 or loopback).', {
        hint: "Give a free address of the hosts' network, e.g. --forward 10.0.0.100:8080:80 --floating.",
      });
    }
    return { proto, hostAddress, hostPort, guestPort, nic, floating: true };
  }
  return { proto, hostAddress, hostPort, guestPort, nic };
}

/** Two forwards collide when they listen on the same protocol and port on overlapping addresses. */
export function forwardsCollide(a: PortForward, b: PortForward): boolean {
  if (a.proto !== b.proto || a.hostPort !== b.hostPort) return false;
  return a.hostAddress === b.hostAddress || a.hostAddress === '0.0.0.0' || b.hostAddress === '0.0.0.0';
}

export function describeForward(f: PortForward): string {
  return `${f.hostAddress}:${f.hostPort}->${f.guestPort}/${f.proto}`;
}

/** Whether something on this host already listens where the forward would. */
export async function assertHostPortFree(f: PortForward): Promise<void> {
  // A floating address is not on this host yet: nothing can listen there.
  if (f.floating) return;
  const free = await new Promise<boolean>((resolve) => {
    if (f.proto === 'udp') {
      const sock = dgram.createSocket('udp4');
      sock.once('error', () => resolve(false));
      sock.bind({ address: f.hostAddress, port: f.hostPort, exclusive: true }, () => sock.close(() => resolve(true)));
    } else {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen({ host: f.hostAddress, port: f.hostPort, exclusive: true }, () => server.close(() => resolve(true)));
    }
  });
  if (!free) {
    throw vmkitError('VMKIT_PORT_IN_USE', `Host port ${f.hostAddress}:${f.hostPort}/${f.proto} is already in use by another program.`, {
      hint: 'Choose another host port ("ss -ltnup" shows who listens where).',
    });
  }
}
