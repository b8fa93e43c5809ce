import type { Answer } from '../../src/wire/types.js';
import type {
  CloneRequest,
  CreateInstanceRequestBody,
  ExecRequestBody,
  CreateNetworkRequestBody,
  CreateSnapshotRequestBody,
  ForwardRequestBody,
  PullRequest,
} from '../../src/wire/requests.js';
import type { Whoami } from '../../src/wire/auth.js';
import type { ExecResult, Forward, Image, Instance, InstanceType, Network, Operation, Snapshot, Stack, VmkitEvent } from './lib/types.js';

/**
 * The daemon's REST API from the browser. Signed-in browsers carry the session cookie
 * (HttpOnly, set by POST /1.0/auth/session) on every request, the event stream and the
 * console WebSockets; the token typed at sign-in is also sent as `Authorization: Bearer`
 * on fetches for as long as the page lives.
 */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
    readonly hint?: string,
  ) {
    super(message);
  }
}

let bearer: string | null = null;
let onUnauthorized: (() => void) | null = null;

export function setBearer(token: string | null): void {
  bearer = token;
}

export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

// The answer envelope is the daemon's own type (src/wire/envelope.ts).
type Envelope = Answer;

// The error an answer carries, if it is an error answer.
const errorIn = (env: Envelope | undefined) => (env?.type === 'error' ? env.error : undefined);

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  } catch (err) {
    throw new ApiError('VMKIT_NETWORK', `The daemon did not answer: ${(err as Error).message}`, 0, 'Is the daemon running? Reload the page when it is back.');
  }
  const text = await res.text();
  let env: Envelope | undefined;
  try {
    env = JSON.parse(text) as Envelope;
  } catch {
    /* not JSON */
  }
  if (!res.ok || env?.type === 'error') {
    const e = errorIn(env) ?? { code: 'VMKIT_INTERNAL', message: `${res.status} ${res.statusText}` };
    // A wrong token at sign-in is the form's business; any other 401 means signed out.
    if (res.status === 401 && !(method === 'POST' && path === '/1.0/auth/session')) onUnauthorized?.();
    throw new ApiError(e.code, e.message, res.status, e.hint);
  }
  return (env?.metadata ?? text) as T;
}

/**
 * After the daemon restarted, the session cookie is unknown to it while the token this page
 * was signed in with still works: trade it for a new cookie so the event stream and the
 * consoles (which only carry cookies) work again. Without a token in memory (the page was
 * reloaded) the 401 that follows shows the sign-in page.
 */
export async function renewSession(): Promise<void> {
  const s = await request<{ method: string }>('GET', '/1.0/auth/session');
  if (s.method === 'bearer' && bearer) await request('POST', '/1.0/auth/session', { token: bearer });
}

export const api = {
  signIn: (token: string) => request<{ authenticated: boolean; required: boolean }>('POST', '/1.0/auth/session', { token }),
  signOut: () => request<unknown>('DELETE', '/1.0/auth/session'),
  session: () => request<{ authenticated: boolean; required: boolean; method: string }>('GET', '/1.0/auth/session'),
  whoami: () => request<Whoami>('GET', '/1.0/auth/whoami'),
  server: () => request<{ version: string; hostName: string; accel: string }>('GET', '/1.0'),
  instances: () => request<Instance[]>('GET', '/1.0/instances'),
  instance: (name: string) => request<Instance>('GET', `/1.0/instances/${encodeURIComponent(name)}`),
  images: () => request<Image[]>('GET', '/1.0/images'),
  types: () => request<InstanceType[]>('GET', '/1.0/types'),
  operations: () => request<Operation[]>('GET', '/1.0/operations'),
  // Request bodies: the daemon's own schemas (src/wire/requests.ts).
  create: (body: CreateInstanceRequestBody) => request<Operation>('POST', '/1.0/instances', body),
  changeState: (name: string, action: 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'suspend', force?: boolean) =>
    request<Operation>('PUT', `/1.0/instances/${encodeURIComponent(name)}/state`, force === undefined ? { action } : { action, force }),
  remove: (name: string, force: boolean) => request<Operation>('DELETE', `/1.0/instances/${encodeURIComponent(name)}${force ? '?force=true' : ''}`),
  addForward: (name: string, f: ForwardRequestBody) => request<Forward>('POST', `/1.0/instances/${encodeURIComponent(name)}/forwards`, f),
  removeForward: (name: string, f: Forward) =>
    request<unknown>('DELETE', `/1.0/instances/${encodeURIComponent(name)}/forwards/${f.hostPort}?proto=${f.proto}&address=${encodeURIComponent(f.hostAddress)}`),
  logs: (name: string, tail = 1000) => request<string>('GET', `/1.0/instances/${encodeURIComponent(name)}/logs?tail=${tail}`),
  cancel: (id: string) => request<Operation>('DELETE', `/1.0/operations/${encodeURIComponent(id)}`),
  snapshots: (name: string) => request<Snapshot[]>('GET', `/1.0/instances/${encodeURIComponent(name)}/snapshots`),
  createSnapshot: (name: string, body: CreateSnapshotRequestBody) => request<Operation>('POST', `/1.0/instances/${encodeURIComponent(name)}/snapshots`, body),
  restoreSnapshot: (name: string, snap: string) => request<Operation>('POST', `/1.0/instances/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snap)}/restore`),
  deleteSnapshot: (name: string, snap: string) => request<Operation>('DELETE', `/1.0/instances/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snap)}`),
  networks: () => request<Network[]>('GET', '/1.0/networks'),
  stacks: () => request<Stack[]>('GET', '/1.0/stacks'),
  rollbackStack: (name: string) => request<unknown>('POST', `/1.0/stacks/${encodeURIComponent(name)}/rollback`),
  deleteStack: (name: string) => request<unknown>('DELETE', `/1.0/stacks/${encodeURIComponent(name)}`),
  createNetwork: (body: CreateNetworkRequestBody) => request<Network>('POST', '/1.0/networks', body),
  deleteNetwork: (name: string) => request<unknown>('DELETE', `/1.0/networks/${encodeURIComponent(name)}`),
  network: (name: string) => request<Network>('GET', `/1.0/networks/${encodeURIComponent(name)}`),
  clone: (name: string, body: CloneRequest) => request<Operation>('POST', `/1.0/instances/${encodeURIComponent(name)}/clone`, body),
  repos: () => request<Repository[]>('GET', '/1.0/repos'),
  repoImages: (repo: string) => request<RepoImage[]>('GET', `/1.0/repos/${encodeURIComponent(repo)}/images`),
  pull: (body: PullRequest) => request<Operation>('POST', '/1.0/images/pull', body),
  // The guest agent runs a command (operator): the answer comes when it ends (doc/guest-agent.md).
  exec: (name: string, body: ExecRequestBody) => request<ExecResult>('POST', `/1.0/instances/${encodeURIComponent(name)}/exec`, body),
  wait: (id: string, timeoutSeconds = 120) => request<Operation>('GET', `/1.0/operations/${encodeURIComponent(id)}/wait?timeout=${timeoutSeconds}`),
};

export interface Repository {
  name: string;
  url: string;
  token: boolean;
}

export interface RepoImage {
  name: string;
  version?: string;
  description?: string;
  arch?: string;
  files?: Array<{ name?: string; size?: number; sha256?: string }>;
}

/**
 * POST /1.0/images/upload: the file is the raw body, sent with XMLHttpRequest because fetch()
 * reports no upload progress. `onProgress` gets the fraction sent (0–1). Resolves with the
 * import operation the daemon started once the file is all there.
 */
export function uploadImage(
  file: Blob,
  query: { name: string; diskFormat?: string; filename?: string },
  onProgress: (fraction: number) => void,
  signal?: AbortSignal,
): Promise<Operation> {
  return new Promise((resolve, reject) => {
    const q = new URLSearchParams();
    q.set('name', query.name);
    if (query.diskFormat) q.set('diskFormat', query.diskFormat);
    if (query.filename) q.set('filename', query.filename);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/1.0/images/upload?${q.toString()}`);
    xhr.withCredentials = true;
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    if (bearer) xhr.setRequestHeader('authorization', `Bearer ${bearer}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / Math.max(1, e.total));
    };
    xhr.onerror = () => reject(new ApiError('VMKIT_NETWORK', 'The upload did not reach the daemon.', 0, 'Is the daemon running?'));
    xhr.onabort = () => reject(new ApiError('VMKIT_CANCELLED', 'The upload was cancelled.', 0));
    xhr.onload = () => {
      let env: Envelope | undefined;
      try {
        env = JSON.parse(xhr.responseText) as Envelope;
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 400 || env?.type === 'error' || !env) {
        const e = errorIn(env) ?? { code: 'VMKIT_INTERNAL', message: `${xhr.status} ${xhr.statusText}` };
        if (xhr.status === 401) onUnauthorized?.();
        reject(new ApiError(e.code, e.message, xhr.status, e.hint));
        return;
      }
      resolve(env.metadata as Operation);
    };
    signal?.addEventListener('abort', () => xhr.abort());
    xhr.send(file);
  });
}

/** ws(s)://this-host/PATH: WebSockets carry the session cookie (same origin). */
export function wsUrl(path: string): string {
  const { protocol, host } = window.location;
  return `${protocol === 'https:' ? 'wss' : 'ws'}://${host}${path}`;
}

/**
 * The event stream; `onOpen` runs on every (re)connect so the caller can catch up. The browser
 * retries a dropped stream by itself, but gives up when the daemon answered with an error
 * (401 after a daemon restart, 5xx): then a fresh stream is opened a few seconds later.
 */
export function subscribeEvents(handlers: { onEvent: (e: VmkitEvent) => void; onOpen: () => void; onDown: () => void }): () => void {
  let es: EventSource | null = null;
  let retry: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const open = () => {
    es = new EventSource('/1.0/events', { withCredentials: true });
    es.onopen = () => handlers.onOpen();
    es.onmessage = (m) => {
      try {
        handlers.onEvent(JSON.parse(m.data as string) as VmkitEvent);
      } catch {
        /* a comment or a broken line */
      }
    };
    es.onerror = () => {
      handlers.onDown();
      if (es?.readyState === EventSource.CLOSED && !stopped) {
        es.close();
        retry = setTimeout(open, 3000);
      }
    };
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(retry);
    es?.close();
  };
}
