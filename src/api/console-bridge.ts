import net from 'node:net';
import WebSocket from 'ws';
import { asVmkitError, vmkitError } from '../errors.js';
import { errorBody } from './responses.js';
import type { ApiContext } from './context.js';

/** Where a console WebSocket goes: the instance's socket here, or the same route on its host. */
export interface ConsoleEnds {
  /** A WebSocket to the owning host when the instance runs on another host of the cluster. */
  remote(): Promise<{ host: string; socket: WebSocket } | undefined>;
  /** The instance's unix socket here (serial console or VNC). */
  local(): Promise<string>;
  /** Close reasons: the other end closed, the other end failed. */
  closed: string;
  unavailable: string;
}

const frame = (d: WebSocket.RawData): Buffer => (Array.isArray(d) ? Buffer.concat(d) : Buffer.isBuffer(d) ? d : Buffer.from(d));

/** Close codes a peer may not send on the wire (1005 none, 1006 abnormal): reported as 1011. */
function sendable(code: number): number {
  return code === 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999) ? code : 1011;
}

/**
 * Bridges a console WebSocket (binary frames both ways) to its other end. Keys typed before
 * the other end is open are kept and sent once it is. A refusal — no such instance, not
 * running, the owning host unreachable — is a text frame with the error envelope, then close
 * 1008 with the error code as reason: the same whether the instance is here or on another host
 * (that host's own refusal is relayed as it came).
 */
export function bridgeConsole(socket: WebSocket, ends: ConsoleEnds): void {
  const early: Buffer[] = [];
  let send: ((d: Buffer) => void) | undefined;
  let gone = false;
  socket.on('message', (d: WebSocket.RawData) => (send ? send(frame(d)) : early.push(frame(d))));
  socket.on('close', () => (gone = true));
  const refuse = (err: unknown) => {
    const e = asVmkitError(err);
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify(errorBody(e)));
    socket.close(1008, e.code);
  };
  void (async () => {
    const other = await ends.remote();
    if (other) {
      const remote = other.socket;
      await new Promise<void>((resolve, reject) => {
        remote.once('open', resolve);
        remote.once('error', reject);
        remote.once('unexpected-response', (_req, res) => reject(new Error(`it answered HTTP ${res.statusCode} instead of a WebSocket`)));
      }).catch((err: Error) => {
        remote.terminate();
        throw vmkitError('VMKIT_HOST_UNREACHABLE', `The instance runs on cluster host "${other.host}", whose console could not be reached: ${err.message}.`, {
          hint: `Check that ${other.host} is alive ("vmkit cluster list"), or connect to that host directly.`,
        });
      });
      remote.on('error', () => undefined); // ends with its close below
      remote.on('message', (d: WebSocket.RawData, isBinary: boolean) => socket.send(frame(d), { binary: isBinary }));
      remote.on('close', (code: number, reason: Buffer) => socket.close(sendable(code), reason.toString() || ends.closed));
      socket.on('close', () => remote.terminate());
      send = (d) => remote.send(d);
      if (gone) remote.terminate();
    } else {
      const path = await ends.local();
      const unix = net.connect(path);
      unix.on('data', (d) => socket.send(d));
      unix.on('close', () => socket.close(1000, ends.closed));
      unix.on('error', () => socket.close(1011, ends.unavailable));
      socket.on('close', () => unix.destroy());
      send = (d) => unix.write(d);
      if (gone) unix.destroy();
    }
    for (const d of early.splice(0)) send(d);
  })().catch(refuse);
}

/**
 * The ends of a console WebSocket request: the local socket, or — in a cluster, for an
 * instance another host owns — the same WebSocket on that host (a request forwarded here is
 * served here: never forwarded on).
 */
export function consoleEnds(
  ctx: Pick<ApiContext, 'cluster' | 'services'>,
  req: { url: string; headers: Record<string, string | string[] | undefined> },
  name: string,
  local: () => Promise<string>,
  reasons: { closed: string; unavailable: string },
): ConsoleEnds {
  return {
    ...reasons,
    local,
    remote: async () => {
      const cluster = ctx.cluster;
      if (!cluster?.joined || req.headers['x-vmkit-forwarded-by'] !== undefined) return undefined;
      const host = await ctx.services.forwarding.ownerElsewhere(name);
      if (!host) return undefined;
      const peer = await cluster.peer(host);
      return { host, socket: peer.webSocket(req.url, { 'x-vmkit-forwarded-by': cluster.name! }) };
    },
  };
}
