import {
  CompareResult,
  CompareTarget,
  Etcd3,
  EtcdError,
  EtcdLeaseInvalidError,
  GRPCUnavailableError,
  SortOrder,
  SortTarget,
  isRecoverableError,
  type ICompare,
  type IKeyValue,
  type IRequestOp,
  type Lease,
  type Watcher,
} from 'etcd3';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, isBrokenCircuitError, noop, type IBackoff } from 'cockatiel';
import { VmkitError, asVmkitError, vmkitError } from '../errors.js';
import { compareFailed, type PutOptions, type Store, type StoreKind, type Versioned } from './store.js';
import { EtcdLeaseImpl } from './etcd-lease.js';

/**
 * The cluster store: the same documents as the SQLite store, in etcd. A document lives at
 * `${prefix}${kind}/${key}` as JSON; its revision is etcd's mod_revision, and `expectRevision`
 * becomes a transaction comparing create_revision (0) or mod_revision (n). Beyond `Store` it
 * has what a cluster needs: leases with keepalive (a host's liveness), prefix watches and
 * multi-key compare-and-swap transactions (moving a VM's ownership from one host to another).
 *
 * Every call is bounded by `dialTimeoutMs` (connecting included); when etcd does not answer in
 * that time — not running, unreachable, no quorum — the call throws VMKIT_CLUSTER_UNAVAILABLE.
 * A write that timed out may or may not have been applied: read before retrying it.
 */
export interface EtcdStoreOptions {
  /** Client URLs, e.g. `http://10.0.0.1:2379` (a bare `host:port` means http). */
  endpoints: string[];
  /** Key prefix of every document; default `/vmkit/`. */
  prefix?: string;
  /** How long one call may take, connecting and retries included; default 5000 ms. */
  dialTimeoutMs?: number;
  /**
   * TLS to etcd (https:// endpoints): the CA that signed etcd's certificate, and this client's
   * certificate and key (etcd runs with --client-cert-auth). PEM contents.
   */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

export interface EtcdWatchEvent<T = unknown> {
  type: 'put' | 'delete';
  key: string;
  /** The new value (put only). */
  value?: T;
  /** The revision of the change: the key's new mod_revision, or the revision that deleted it. */
  revision: number;
}

export interface EtcdWatchOptions {
  /** Deliver changes from this store revision on (e.g. listWithRevision().revision + 1); default: from now. */
  startRevision?: number;
  /** Called if the watch fails for good (etcd cancelled it); reconnections are handled inside. */
  onError?: (err: VmkitError) => void;
}

export interface EtcdWatch {
  close(): Promise<void>;
}

/**
 * A lease with automatic keepalive (every ttl/3). Keys put through it disappear when it is
 * revoked or expires. `onLost` fires once when the lease is, or may already be, gone in etcd:
 * etcd said so, or no keepalive was answered for a whole TTL (counted from when the last
 * answered keepalive was sent, so the holder hears it no later than etcd expires the lease).
 * After that the lease is dead for good; grant a new one.
 */
export interface EtcdLease {
  /** The lease id (decimal, as etcd3 returns it; etcdctl shows it in hex). */
  readonly id: string;
  readonly ttlSeconds: number;
  /** True once onLost has fired (or would have). */
  readonly lost: boolean;
  /** A document attached to the lease; returns its new revision. */
  put<T>(kind: StoreKind, key: string, value: T, options?: PutOptions): Promise<number>;
  /** Ends the lease in etcd (its keys are deleted at once); onLost does not fire. */
  revoke(): Promise<void>;
  /** Registers a callback for the loss of the lease; returns a function that unregisters it. */
  onLost(cb: (err: VmkitError) => void): () => void;
}

export interface TxnCompare {
  kind: StoreKind;
  key: string;
  /** 0 = the key must not exist; n = its mod_revision must be n. */
  expectRevision: number;
}

export interface TxnPut {
  kind: StoreKind;
  key: string;
  value: unknown;
  /** Attach the key to this lease. */
  lease?: EtcdLease;
}

export interface TxnDelete {
  kind: StoreKind;
  key: string;
}

const DEFAULT_TIMEOUT_MS = 5000;

/** grpc-js's message when the request never left the client: safe to send again, even a write. */
const NOT_SENT = /No connection established|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|etcdserver: no leader/i;

export class EtcdStore implements Store {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly client: Etcd3;
  private readonly leases = new Set<EtcdLeaseImpl>();
  private readonly watchers = new Set<Watcher>();
  private closed = false;

  constructor(options: EtcdStoreOptions) {
    if (!options.endpoints?.length) throw vmkitError('VMKIT_INVALID_ARGUMENT', 'EtcdStore needs at least one etcd endpoint.');
    this.endpoints = options.endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`));
    const prefix = options.prefix ?? '/vmkit/';
    this.prefix = prefix.endsWith('/') ? prefix : `${prefix}/`;
    this.timeoutMs = options.dialTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.client = new Etcd3({
      hosts: [...this.endpoints],
      ...(options.tls ? { credentials: { rootCertificate: options.tls.ca, certChain: options.tls.cert, privateKey: options.tls.key } } : {}),
      grpcOptions: {
        // Reconnect quickly once etcd is back; notice a dead connection under a watch or keepalive.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
      },
      faultHandling: {
        // Retries are ours (call()), bounded by the call's deadline; a host that keeps failing
        // is skipped for a second so calls go to the other members.
        global: noop,
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
        // etcd3 calls .next() on it itself (its typing predates cockatiel 3's factories).
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }) as unknown as IBackoff<unknown>,
      },
    });
  }

  // ---- Store ----

  async get<T>(kind: StoreKind, key: string): Promise<Versioned<T> | undefined> {
    const res = await this.call(`get ${kind}/${key}`, true, (o) => this.client.kv.range({ key: this.keyOf(kind, key) }, o));
    const kv = res.kvs[0];
    return kv ? this.versioned<T>(kind, kv) : undefined;
  }

  async list<T>(kind: StoreKind): Promise<Array<Versioned<T>>> {
    return (await this.listWithRevision<T>(kind)).items;
  }

  /** The documents of a kind and the store revision they were read at (to watch from revision + 1). */
  async listWithRevision<T>(kind: StoreKind): Promise<{ items: Array<Versioned<T>>; revision: number }> {
    const start = this.kindPrefix(kind);
    const res = await this.call(`list ${kind}`, true, (o) =>
      this.client.kv.range({ key: start, range_end: prefixEnd(start), sort_order: SortOrder.Ascend, sort_target: SortTarget.Key }, o),
    );
    return { items: res.kvs.map((kv) => this.versioned<T>(kind, kv)), revision: Number(res.header.revision) };
  }

  async put<T>(kind: StoreKind, key: string, value: T, options: PutOptions = {}): Promise<number> {
    return this.putWith(kind, key, value, options, undefined);
  }

  async delete(kind: StoreKind, key: string, options: PutOptions = {}): Promise<boolean> {
    const k = this.keyOf(kind, key);
    if (options.expectRevision === undefined) {
      const res = await this.call(`delete ${kind}/${key}`, false, (o) => this.client.kv.deleteRange({ key: k }, o));
      return Number(res.deleted) > 0;
    }
    const expect = options.expectRevision;
    const res = await this.call(`delete ${kind}/${key}`, false, (o) =>
      this.client.kv.txn({ compare: [this.compare(k, expect)], success: [{ request_delete_range: { key: k } }], failure: [] }, o),
    );
    if (!res.succeeded) throw compareFailed(kind, key, expect);
    return Number(res.responses[0]?.response_delete_range?.deleted ?? 0) > 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const lease of this.leases) lease.release();
    this.leases.clear();
    const watchers = [...this.watchers];
    this.watchers.clear();
    // Closing regardless: a watcher that does not cancel within 1 s ends with the client.
    await withTimeout(Promise.allSettled(watchers.map((w) => w.cancel())), 1000).catch(() => undefined);
    this.client.close();
  }

  // ---- cluster extras ----

  /** A new lease of `ttlSeconds` (at least 1; etcd may round small TTLs up), kept alive until revoked or lost. */
  async grantLease(ttlSeconds: number): Promise<EtcdLease> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `A lease TTL must be a whole number of seconds ≥ 1 (got ${ttlSeconds}).`);
    }
    this.assertOpen();
    const sentAt = Date.now();
    const lease = this.client.lease(ttlSeconds, { autoKeepAlive: true, deadline: sentAt + this.timeoutMs });
    // etcd3 emits 'lost' when the grant fails; the rejection of grant() below reports it.
    const onEarlyLoss = () => undefined;
    lease.on('lost', onEarlyLoss);
    let id: string;
    try {
      id = await withTimeout(lease.grant(), this.timeoutMs + 1000);
    } catch (err) {
      lease.release();
      throw this.mapError(err, 'grant a lease', false);
    } finally {
      lease.off('lost', onEarlyLoss);
    }
    const impl = new EtcdLeaseImpl(this, lease, id, ttlSeconds, sentAt);
    this.leases.add(impl);
    return impl;
  }

  /** Calls `onChange` for every put and delete under the kind, in revision order, until closed. */
  async watch<T = unknown>(kind: StoreKind, onChange: (ev: EtcdWatchEvent<T>) => void, options: EtcdWatchOptions = {}): Promise<EtcdWatch> {
    this.assertOpen();
    const start = this.kindPrefix(kind);
    let builder = this.client.watch().prefix(start);
    if (options.startRevision !== undefined) builder = builder.startRevision(String(options.startRevision));
    const watcher = builder.watcher();
    // Nothing thrown here may reach etcd3's stream handling.
    const deliver = (make: () => EtcdWatchEvent<T>) => {
      try {
        onChange(make());
      } catch (err) {
        console.error(`vmkit: watching ${kind}: an event could not be handled:`, err);
      }
    };
    watcher.on('put', (kv) =>
      deliver(() => ({ type: 'put', key: this.keyFrom(kind, kv.key), value: JSON.parse(kv.value.toString('utf8')) as T, revision: Number(kv.mod_revision) })),
    );
    watcher.on('delete', (kv) => deliver(() => ({ type: 'delete', key: this.keyFrom(kind, kv.key), revision: Number(kv.mod_revision) })));
    let connected = false;
    let failed: ((err: unknown) => void) | undefined;
    watcher.on('error', (err) => {
      this.watchers.delete(watcher);
      if (!connected) failed?.(err);
      else options.onError?.(this.mapError(err, `watch ${kind}`, false));
    });
    this.watchers.add(watcher);
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          failed = reject;
          watcher.once('connected', () => {
            connected = true;
            resolve();
          });
        }),
        this.timeoutMs,
      );
    } catch (err) {
      this.watchers.delete(watcher);
      // The watch never connected (reported below): its cancel has nothing to add.
      void watcher.cancel().catch(() => undefined);
      throw this.mapError(err, `watch ${kind}`, false);
    }
    return {
      close: async () => {
        if (!this.watchers.delete(watcher)) return;
        // Already forgotten above: a cancel that fails or hangs leaves nothing of ours behind.
        await withTimeout(watcher.cancel(), this.timeoutMs).catch(() => undefined);
      },
    };
  }

  /**
   * One atomic step: if every compare holds, apply every put and delete and return true;
   * otherwise change nothing and return false. A key may appear once among puts and deletes.
   */
  async txn(compares: TxnCompare[], puts: TxnPut[], deletes: TxnDelete[]): Promise<boolean> {
    const seen = new Set<string>();
    for (const op of [...puts, ...deletes]) {
      const k = `${op.kind}/${op.key}`;
      if (seen.has(k)) throw vmkitError('VMKIT_INVALID_ARGUMENT', `A transaction may change ${op.kind}/${op.key} only once.`);
      seen.add(k);
    }
    for (const p of puts) if (p.lease) (p.lease as EtcdLeaseImpl).assertUsable();
    const success: IRequestOp[] = [
      ...puts.map((p) => ({
        request_put: { key: this.keyOf(p.kind, p.key), value: encode(p.value), ...(p.lease ? { lease: p.lease.id } : {}) },
      })),
      ...deletes.map((d) => ({ request_delete_range: { key: this.keyOf(d.kind, d.key) } })),
    ];
    const res = await this.call('transaction', false, (o) =>
      this.client.kv.txn({ compare: compares.map((c) => this.compare(this.keyOf(c.kind, c.key), c.expectRevision)), success, failure: [] }, o),
    );
    return res.succeeded;
  }

  // ---- internals (also used by EtcdLeaseImpl) ----

  /** @internal */
  async putWith<T>(kind: StoreKind, key: string, value: T, options: PutOptions, lease: EtcdLeaseImpl | undefined): Promise<number> {
    const k = this.keyOf(kind, key);
    const req = { key: k, value: encode(value), ...(lease ? { lease: lease.id } : {}) };
    try {
      if (options.expectRevision === undefined) {
        const res = await this.call(`put ${kind}/${key}`, false, (o) => this.client.kv.put(req, o));
        return Number(res.header.revision);
      }
      const expect = options.expectRevision;
      const res = await this.call(`put ${kind}/${key}`, false, (o) => this.client.kv.txn({ compare: [this.compare(k, expect)], success: [{ request_put: req }], failure: [] }, o));
      if (!res.succeeded) throw compareFailed(kind, key, expect);
      return Number(res.header.revision);
    } catch (err) {
      if (lease && err instanceof VmkitError && err.details?.leaseLost) lease.markLost(err);
      throw err;
    }
  }

  /** @internal */
  async revokeLease(lease: Lease, id: string): Promise<void> {
    await this.call(`revoke lease ${id}`, true, (o) => lease.revoke(o));
  }

  /** @internal */
  forgetLease(lease: EtcdLeaseImpl): void {
    this.leases.delete(lease);
  }

  /** @internal */
  unavailable(message: string, cause?: unknown, details?: Record<string, unknown>): VmkitError {
    return vmkitError('VMKIT_CLUSTER_UNAVAILABLE', message, {
      cause,
      details,
      hint: `Check that etcd at ${this.endpoints.join(', ')} is running and reachable (and has quorum).`,
    });
  }

  private assertOpen(): void {
    if (this.closed) throw vmkitError('VMKIT_INTERNAL', 'The etcd store is closed.');
  }

  /**
   * Runs one etcd request with a deadline of `timeoutMs` for all its attempts. A request is
   * sent again (after a short backoff, while time remains) when it provably did not reach
   * etcd, or when it is a read.
   */
  private async call<R>(what: string, idempotent: boolean, fn: (options: { deadline: number }) => Promise<R>): Promise<R> {
    this.assertOpen();
    const deadline = Date.now() + this.timeoutMs;
    // The most telling error seen: a host's circuit breaker only says that host failed before.
    let telling: unknown;
    const attempts = async (): Promise<R> => {
      let delay = 50;
      for (;;) {
        try {
          return await fn({ deadline });
        } catch (err) {
          if (!isBrokenCircuitError(err)) telling = err;
          const retry = isBrokenCircuitError(err) || (err instanceof GRPCUnavailableError && (idempotent || NOT_SENT.test(err.message)));
          if (!retry || this.closed || Date.now() + delay >= deadline) throw isBrokenCircuitError(err) && telling ? telling : err;
          await sleep(delay);
          delay = Math.min(delay * 2, 500);
        }
      }
    };
    try {
      return await withTimeout(attempts(), this.timeoutMs + 1000);
    } catch (err) {
      throw this.mapError(err, what, !idempotent);
    }
  }

  private mapError(err: unknown, what: string, write: boolean): VmkitError {
    if (err instanceof VmkitError) return err;
    if (err instanceof EtcdLeaseInvalidError) {
      return vmkitError('VMKIT_CLUSTER_UNAVAILABLE', `${what}: the lease has expired or was revoked in etcd.`, {
        cause: err,
        details: { leaseLost: true },
        hint: 'The host lost its lease (etcd did not hear from it in time); grant a new lease.',
      });
    }
    const e = err as Error;
    const connectivity =
      err instanceof TimeoutError ||
      isBrokenCircuitError(err) ||
      (err instanceof Error && isRecoverableError(e)) ||
      (err instanceof EtcdError && /no leader|timed out|leader changed|not capable/i.test(e.message));
    if (connectivity) {
      const notSent = isBrokenCircuitError(err) || (err instanceof GRPCUnavailableError && NOT_SENT.test(e.message));
      const outcome = write && !notSent ? ' (the change may or may not have been applied; read before retrying)' : '';
      const why = isBrokenCircuitError(err) ? 'it failed repeatedly just before (calls to it pause for a second)' : (e?.message ?? String(err));
      return this.unavailable(`etcd did not answer: ${what}${outcome}: ${why}`, err);
    }
    return asVmkitError(err);
  }

  private compare(fullKey: Buffer, expectRevision: number): ICompare {
    return expectRevision === 0
      ? { key: fullKey, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }
      : { key: fullKey, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectRevision };
  }

  private kindPrefix(kind: StoreKind): Buffer {
    return Buffer.from(`${this.prefix}${kind}/`, 'utf8');
  }

  private keyOf(kind: StoreKind, key: string): Buffer {
    return Buffer.from(`${this.prefix}${kind}/${key}`, 'utf8');
  }

  private keyFrom(kind: StoreKind, fullKey: Buffer): string {
    return fullKey.toString('utf8').slice(`${this.prefix}${kind}/`.length);
  }

  private versioned<T>(kind: StoreKind, kv: IKeyValue): Versioned<T> {
    return { key: this.keyFrom(kind, kv.key), value: JSON.parse(kv.value.toString('utf8')) as T, revision: Number(kv.mod_revision) };
  }
}

class TimeoutError extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TimeoutError(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function encode(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** The smallest key after every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}
