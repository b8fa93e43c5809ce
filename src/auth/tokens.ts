import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Store } from '../store/store.js';
import { ROLES, type CreatedToken, type Role, type TokenInfo } from '../wire/auth.js';

/**
 * Scoped API tokens: `vmkit token create NAME --role viewer|operator|admin [--expires 30d]`.
 *
 * A token is `vmkit_` + 32 random bytes (base64url), shown once. Only its SHA-256 is stored:
 * the token is 256 bits of randomness, so nobody can search for a preimage of the hash and a
 * slow password hash (scrypt, bcrypt) would only cost time on every request. A leaked store
 * does not leak working tokens. The hash is also the lookup key (an in-memory map, loaded once:
 * one daemon owns its store).
 *
 * Tokens live in this host's store: in a cluster, a token works on the host that made it.
 */
export interface StoredToken extends TokenInfo {
  /** sha256 of the token, hex. */
  hash: string;
}

/** Who a request is, once authenticated. */
export interface Identity {
  name: string;
  role: Role;
  method: 'unix-socket' | 'bearer' | 'cookie';
  /** Set for stored tokens: re-checked on each use, so a revoked or expired token stops at once (sessions too). */
  tokenHash?: string;
  expiresAt?: string;
}

export const TOKEN_PREFIX = 'vmkit_';
/** Tokens given to the daemon (the bootstrap token file) must be at least this long. */
export const MIN_TOKEN_LENGTH = 32;
/** lastUsedAt is written at most this often per token (not on every request). */
const LAST_USED_EVERY_MS = 60_000;

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** "30s", "90m", "12h", "30d", "8w" in milliseconds. */
export function parseDuration(text: string): number {
  const m = /^([1-9][0-9]{0,5})([smhdw])$/.exec(text);
  if (!m) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${text}" is not a duration.`, { hint: 'Use a number and a unit: 90m, 12h, 30d or 8w.' });
  }
  return Number(m[1]) * UNITS[m[2]!]!;
}

/** Constant-time comparison of two strings (the bootstrap token). */
export function sameSecret(a: string, b: string): boolean {
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y);
}

export class TokenManager {
  private readonly byHash = new Map<string, StoredToken>();
  private loaded?: Promise<void>;

  constructor(
    private readonly store: Store,
    private readonly now: () => number = Date.now,
  ) {}

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      for (const t of await this.store.list<StoredToken>('tokens')) this.byHash.set(t.value.hash, t.value);
    })();
    return this.loaded;
  }

  async list(): Promise<TokenInfo[]> {
    await this.load();
    return [...this.byHash.values()].sort((a, b) => a.name.localeCompare(b.name)).map(info);
  }

  async create(req: { name: string; role: Role; expires?: string }): Promise<CreatedToken> {
    await this.load();
    const name = validateName(req.name, 'token name');
    if (!ROLES.includes(req.role)) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${String(req.role)}" is not a role.`, { hint: `Use one of: ${ROLES.join(', ')}.` });
    }
    const now = this.now();
    const expiresAt = req.expires ? new Date(now + parseDuration(req.expires)).toISOString() : undefined;
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const stored: StoredToken = { name, role: req.role, createdAt: new Date(now).toISOString(), ...(expiresAt ? { expiresAt } : {}), hash: hashToken(token) };
    try {
      await this.store.put('tokens', name, stored, { expectRevision: 0 });
    } catch (err) {
      if ((err as { code?: string }).code === 'VMKIT_ALREADY_EXISTS') {
        throw vmkitError('VMKIT_ALREADY_EXISTS', `A token named "${name}" already exists.`, { hint: `Choose another name, or revoke it first: vmkit token revoke ${name}` });
      }
      throw err;
    }
    this.byHash.set(stored.hash, stored);
    return { ...info(stored), token };
  }

  async revoke(name: string): Promise<void> {
    await this.load();
    const found = [...this.byHash.values()].find((t) => t.name === name);
    if (!found) throw vmkitError('VMKIT_NOT_FOUND', `No token named "${name}".`, { hint: '"vmkit token list" shows the tokens.' });
    await this.store.delete('tokens', name);
    this.byHash.delete(found.hash);
  }

  /**
   * The identity a presented token stands for; undefined when unknown, `expired` when it was
   * valid once. Marks it used (at most once a minute in the store).
   */
  async authenticate(token: string): Promise<Identity | 'expired' | undefined> {
    await this.load();
    return this.check(hashToken(token), true);
  }

  /** Whether the token behind a session is still valid (revoked or expired: no). */
  async stillValid(hash: string): Promise<boolean> {
    await this.load();
    const r = this.check(hash, false);
    return r !== undefined && r !== 'expired';
  }

  private check(hash: string, touch: boolean): Identity | 'expired' | undefined {
    const t = this.byHash.get(hash);
    if (!t) return undefined;
    const now = this.now();
    if (t.expiresAt && Date.parse(t.expiresAt) <= now) return 'expired';
    if (touch && (!t.lastUsedAt || now - Date.parse(t.lastUsedAt) >= LAST_USED_EVERY_MS)) {
      t.lastUsedAt = new Date(now).toISOString();
      // Best effort: a failed write of the "last used" time must not fail the request.
      this.store.put('tokens', t.name, t).catch(() => undefined);
    }
    return { name: t.name, role: t.role, method: 'bearer', tokenHash: hash, ...(t.expiresAt ? { expiresAt: t.expiresAt } : {}) };
  }
}

function info(t: StoredToken): TokenInfo {
  return { name: t.name, role: t.role, createdAt: t.createdAt, ...(t.expiresAt ? { expiresAt: t.expiresAt } : {}), ...(t.lastUsedAt ? { lastUsedAt: t.lastUsedAt } : {}) };
}
