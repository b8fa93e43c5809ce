import { join } from 'node:path';
import { ApiClient } from '../client/client.js';
import { nodeHttpTransport, unixTransport, type Transport } from '../client/transport.js';
import { PinnedAgent, pinnedTransport } from '../client/pinning.js';
import { findRemote, readTokenFile } from './remotes.js';
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
  /** A remote's name (vmkit remote add) or the http(s)://HOST:PORT of a daemon started with --listen. */
  remote?: string;
  /** Bearer token for `remote` (default: the remote's own, from remote add). */
  token?: string;
  /** A file holding the token. */
  tokenFile?: string;
  /** A remote given whole (remote add tries one before saving it). */
  entry?: { name: string; url: string; fingerprint?: string; token?: string };
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
    const given = options.remote || process.env.VMKIT_REMOTE || undefined;
    // A name from "vmkit remote add" (with its pinned certificate and token), or a URL.
    const named = options.entry ?? (given && !given.includes('://') ? { name: given, ...findRemote(given) } : undefined);
    const remote = parseRemote(named ? named.url : given);
    const tokenFile = options.tokenFile || process.env.VMKIT_TOKEN_FILE || undefined;
    const token = options.token || (tokenFile ? readTokenFile(tokenFile) : undefined) || process.env.VMKIT_TOKEN || named?.token || undefined;
    let transport: Transport;
    let agent: PinnedAgent | undefined;
    if (remote && named?.fingerprint && remote.protocol === 'https:') {
      transport = pinnedTransport(remote, named.fingerprint, named.name);
      agent = new PinnedAgent(named.fingerprint, named.name);
    } else {
      transport = remote ? nodeHttpTransport(remote) : unixTransport(join(dir, 'vmkit.sock'));
    }
    super({ transport, headers: token ? { authorization: `Bearer ${token}` } : {}, unreachable: (err) => connectionError(transport.target, err) });
    this.dir = dir;
    this.remote = remote;
    this.token = token;
    this.agent = agent;
  }

  /** The pinned-certificate agent of a named https remote (the console's WebSocket uses it too). */
  readonly agent?: PinnedAgent;

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
      hint: 'Use --remote NAME (vmkit remote add NAME https://HOST:PORT) or --remote https://HOST:PORT.',
    });
  }
  return url;
}

function connectionError(where: string, failure: Error & { code?: string }): VmkitError {
  // Already ours (a changed certificate): as it is.
  if (failure instanceof VmkitError) return failure;
  // A transport on fetch would report "fetch failed" and keep the socket's error as its cause.
  const err: Error & { code?: string } = failure.code === undefined && failure.cause instanceof Error ? failure.cause : failure;
  switch (err.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
    case 'EAI_AGAIN':
      return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `Cannot reach the vmkit daemon at ${where} (${err.code}).`, {
        hint: UNREACHABLE_HINT,
        cause: err,
      });
    case 'ECONNRESET':
      return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `The vmkit daemon at ${where} closed the connection (ECONNRESET).`, {
        hint: where.startsWith('http:')
          ? 'A daemon listening with --listen speaks HTTPS unless started with --insecure-http: use https://… (vmkit remote add NAME https://HOST:PORT).'
          : UNREACHABLE_HINT,
        cause: err,
      });
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return new VmkitError('VMKIT_DAEMON_UNREACHABLE', `The HTTPS certificate of ${where} is not one this machine trusts (${err.code}).`, {
        hint: `A daemon makes its own certificate: pin it once with "vmkit remote add NAME ${where} --token-file FILE", then use --remote NAME.`,
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
