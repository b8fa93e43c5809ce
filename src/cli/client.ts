import { join } from 'node:path';
import { ApiClient } from '../client/client.js';
import { nodeHttpTransport, unixTransport } from '../client/transport.js';
import { VmkitError } from '../errors.js';

// The envelope and operation helpers live with the one client; the CLI's commands import them from here.
export { isFinished, operationError, parseAnswer, toVmkitError, type ApiAnswer } from '../client/envelope.js';
export type { RawResponse } from '../client/transport.js';

/** Where the daemon is when neither --dir nor VMKIT_DIR says otherwise (same as src/paths.ts). */
export const DEFAULT_DIR = '/var/lib/vmkit';

/** The hint for every "cannot reach the daemon" failure: the first thing a new user hits. */
export const UNREACHABLE_HINT = 'Start the daemon with "vmkit daemon" (or systemctl start vmkitd), or set VMKIT_DIR / --remote.';

export interface ClientOptions {
  /** Data folder holding vmkit.sock (ignored when `remote` is set). */
  dir?: string;
  /** http(s)://HOST:PORT of a daemon started with --listen. */
  remote?: string;
  /** Bearer token for `remote`. */
  token?: string;
}

/**
 * The CLI's client: the shared API client (src/client/) pointed at the daemon that --dir,
 * --remote and --token (or VMKIT_DIR, VMKIT_REMOTE, VMKIT_TOKEN) name, with the CLI's
 * words for a daemon it cannot reach.
 */
export class VmkitClient extends ApiClient {
  readonly dir: string;
  readonly remote?: URL;
  private readonly token?: string;

  constructor(options: ClientOptions = {}) {
    const dir = options.dir || process.env.VMKIT_DIR || DEFAULT_DIR;
    const remote = parseRemote(options.remote || process.env.VMKIT_REMOTE || undefined);
    const token = options.token || process.env.VMKIT_TOKEN || undefined;
    const transport = remote ? nodeHttpTransport(remote) : unixTransport(join(dir, 'vmkit.sock'));
    super({ transport, headers: token ? { authorization: `Bearer ${token}` } : {}, unreachable: (err) => connectionError(transport.target, err) });
    this.dir = dir;
    this.remote = remote;
    this.token = token;
  }

  /** The unix socket the daemon listens on in the data folder. */
  get socketPath(): string {
    return join(this.dir, 'vmkit.sock');
  }

  /** Headers every request (and the console WebSocket) sends. */
  authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** The console WebSocket URL: `ws+unix:` over the socket, ws(s) over TCP. */
  websocketUrl(path: string): string {
    if (!this.remote) return `ws+unix://${this.socketPath}:${path}`;
    const base = new URL(this.remote.href);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    return new URL(path, base).href;
  }

  /** A socket-level failure (refused, missing socket, DNS …) as the error users should see. */
  connectionError(err: Error & { code?: string }): VmkitError {
    return connectionError(this.target, err);
  }
}

function parseRemote(remote: string | undefined): URL | undefined {
  if (!remote) return undefined;
  let url: URL;
  try {
    url = new URL(remote);
  } catch {
    url = new URL('invalid:');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new VmkitError('VMKIT_INVALID_ARGUMENT', `The remote ${JSON.stringify(remote)} is not an http(s) URL.`, {
      hint: "Use --remote http://HOST:PORT or https://HOST:PORT (the daemon's --listen address).",
    });
  }
  return url;
}

function connectionError(where: string, failure: Error & { code?: string }): VmkitError {
  // A transport on fetch would report "fetch failed" and keep the socket's error as its cause.
  const err: Error & { code?: string } = failure.code === undefined && failure.cause instanceof Error ? failure.cause : failure;
  switch (err.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
    case 'EAI_AGAIN':
      return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Cannot reach the vmkit daemon at ${where} (${err.code}).`, {
        hint: UNREACHABLE_HINT,
        cause: err,
      });
    case 'EACCES':
    case 'EPERM':
      return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Permission denied on the vmkit socket ${where}.`, {
        hint: 'Run as a member of the group that owns the socket (or with sudo), or use --remote.',
        cause: err,
      });
    default:
      return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Talking to the vmkit daemon at ${where} failed: ${err.message}`, {
        hint: UNREACHABLE_HINT,
        cause: err,
      });
  }
}
