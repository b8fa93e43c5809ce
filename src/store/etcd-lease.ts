import type { Lease } from 'etcd3';
import { vmkitError, type VmkitError } from '../errors.js';
import type { EtcdLease } from './etcd.js';
import type { PutOptions, StoreKind } from './store.js';

/** What a lease needs of the store that granted it (EtcdStore). */
export interface LeaseOwner {
  unavailable(message: string, cause?: unknown, details?: Record<string, unknown>): VmkitError;
  putWith<T>(kind: StoreKind, key: string, value: T, options: PutOptions, lease: EtcdLeaseImpl | undefined): Promise<number>;
  revokeLease(lease: Lease, id: string): Promise<void>;
  forgetLease(lease: EtcdLeaseImpl): void;
}

/** A lease with keepalive; it knows it is lost once no keepalive was answered for a TTL. */
export class EtcdLeaseImpl implements EtcdLease {
  lost = false;
  private revoked = false;
  private readonly callbacks = new Set<(err: VmkitError) => void>();
  /** Send times of keepalives not answered yet, oldest first (answers come in order on a stream). */
  private pending: number[] = [];
  /** The earliest moment etcd may expire the lease, as far as the answers received tell. */
  private expiresAt: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly store: LeaseOwner,
    private readonly lease: Lease,
    readonly id: string,
    readonly ttlSeconds: number,
    grantSentAt: number,
  ) {
    this.expiresAt = grantSentAt + ttlSeconds * 1000;
    lease.on('keepaliveEstablished', () => (this.pending = []));
    lease.on('keepaliveFailed', () => (this.pending = []));
    lease.on('keepaliveFired', () => this.pending.push(Date.now()));
    lease.on('keepaliveSucceeded', (res) => {
      const sentAt = this.pending.shift();
      if (sentAt !== undefined && Number(res.TTL) > 0) this.expiresAt = Math.max(this.expiresAt, sentAt + Number(res.TTL) * 1000);
    });
    lease.on('lost', (err) => this.markLost(this.store.unavailable(`Lease ${id} was lost: ${err.message}`, err, { leaseLost: true })));
    this.timer = setInterval(
      () => {
        if (Date.now() >= this.expiresAt) {
          this.markLost(this.store.unavailable(`Lease ${id} may have expired: no keepalive was answered for ${ttlSeconds} s.`, undefined, { leaseLost: true }));
        }
      },
      Math.min(250, (ttlSeconds * 1000) / 8),
    );
    this.timer.unref();
  }

  assertUsable(): void {
    if (this.revoked) throw vmkitError('VMKIT_INVALID_STATE', `Lease ${this.id} was revoked.`);
    if (this.lost) throw this.store.unavailable(`Lease ${this.id} was lost.`, undefined, { leaseLost: true });
  }

  async put<T>(kind: StoreKind, key: string, value: T, options: PutOptions = {}): Promise<number> {
    this.assertUsable();
    return this.store.putWith(kind, key, value, options, this);
  }

  async revoke(): Promise<void> {
    if (this.revoked) return;
    this.revoked = true;
    this.stop();
    if (this.lost) return; // already gone (or going) in etcd
    await this.store.revokeLease(this.lease, this.id);
  }

  onLost(cb: (err: VmkitError) => void): () => void {
    if (this.lost) {
      queueMicrotask(() => cb(this.store.unavailable(`Lease ${this.id} was lost.`, undefined, { leaseLost: true })));
      return () => undefined;
    }
    this.callbacks.add(cb);
    return () => this.callbacks.delete(cb);
  }

  markLost(err: VmkitError): void {
    if (this.lost || this.revoked) return;
    this.lost = true;
    this.stop();
    this.lease.release(); // no more keepalives: whatever etcd still has expires on its own
    for (const cb of this.callbacks) {
      try {
        cb(err);
      } catch (e) {
        console.error(`vmkit: a lease-lost callback threw:`, e);
      }
    }
    this.callbacks.clear();
  }

  /** Stops keepalives without telling etcd (store closing). */
  release(): void {
    this.stop();
    this.revoked = true;
    this.lease.release();
  }

  private stop(): void {
    clearInterval(this.timer);
    this.store.forgetLease(this);
  }
}
