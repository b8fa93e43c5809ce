/**
 * Failed authentications, per client address. Up to `limit` failures within `windowMs` are
 * answered 401; past that the address is locked out — every request from it, right token or
 * not, answers 429 with Retry-After — for `lockMs`, doubled at each new lockout of the same
 * address (capped at `maxLockMs`). A success does not reset the count: someone holding a
 * viewer token must not be able to keep guessing admin tokens in between.
 *
 * Memory is bounded: at most `maxClients` addresses are remembered (the oldest go first).
 */
export interface ThrottleOptions {
  limit?: number;
  windowMs?: number;
  lockMs?: number;
  maxLockMs?: number;
  maxClients?: number;
  now?: () => number;
}

interface Client {
  failures: number[];
  lockedUntil: number;
  lockouts: number;
  lastSeen: number;
}

export class AuthThrottle {
  readonly limit: number;
  private readonly windowMs: number;
  private readonly lockMs: number;
  private readonly maxLockMs: number;
  private readonly maxClients: number;
  private readonly now: () => number;
  private readonly clients = new Map<string, Client>();

  constructor(options: ThrottleOptions = {}) {
    this.limit = options.limit ?? 10;
    this.windowMs = options.windowMs ?? 60_000;
    this.lockMs = options.lockMs ?? 60_000;
    this.maxLockMs = options.maxLockMs ?? 3_600_000;
    this.maxClients = options.maxClients ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Seconds the address must still wait, or 0 when it may try. */
  retryAfter(address: string): number {
    const c = this.clients.get(address);
    const left = c ? c.lockedUntil - this.now() : 0;
    return left > 0 ? Math.ceil(left / 1000) : 0;
  }

  /** Records a failure; returns the lockout in seconds when this one locked the address out. */
  fail(address: string): number {
    const now = this.now();
    let c = this.clients.get(address);
    if (c) this.clients.delete(address); // re-inserted below: Map order = least recently seen first
    c ??= { failures: [], lockedUntil: 0, lockouts: 0, lastSeen: now };
    c.lastSeen = now;
    c.failures = c.failures.filter((t) => now - t < this.windowMs);
    c.failures.push(now);
    let locked = 0;
    if (c.failures.length >= this.limit) {
      const ms = Math.min(this.maxLockMs, this.lockMs * 2 ** c.lockouts);
      c.lockouts++;
      c.lockedUntil = now + ms;
      c.failures = [];
      locked = Math.ceil(ms / 1000);
    }
    this.clients.set(address, c);
    this.prune(now);
    return locked;
  }

  private prune(now: number): void {
    // Oldest first; stop at the first one worth keeping.
    for (const [a, c] of this.clients) {
      const stale = now - c.lastSeen > this.maxLockMs * 2 && c.lockedUntil <= now;
      if (this.clients.size > this.maxClients || stale) this.clients.delete(a);
      else break;
    }
  }
}
