import { vmkitError, type VmkitError } from '../errors.js';

/**
 * The one persistence interface. Objects are JSON documents addressed by (kind, key) with a
 * revision, so the same interface maps onto SQLite (one host) and etcd (a cluster, where the
 * revision becomes etcd's mod_revision and `expectRevision` a compare-and-swap transaction).
 */
export type StoreKind =
  | 'instances'
  | 'images'
  | 'operations'
  | 'networks'
  | 'snapshots'
  | 'hosts'
  | 'meta'
  | 'owners'
  | 'alive'
  | 'migrations'
  | 'cluster'
  | 'tokens'
  | 'joins'
  | 'stacks'
  | 'revoked'
  | 'certs';

export interface Versioned<T> {
  key: string;
  value: T;
  revision: number;
}

export interface PutOptions {
  /** 0 = the key must not exist yet; n = the current revision must be n (compare-and-swap). */
  expectRevision?: number;
}

export interface Store {
  get<T>(kind: StoreKind, key: string): Promise<Versioned<T> | undefined>;
  list<T>(kind: StoreKind): Promise<Array<Versioned<T>>>;
  /** Returns the new revision. Throws VMKIT_ALREADY_EXISTS / VMKIT_INVALID_STATE on a failed compare. */
  put<T>(kind: StoreKind, key: string, value: T, options?: PutOptions): Promise<number>;
  delete(kind: StoreKind, key: string, options?: PutOptions): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * The error every store throws when `expectRevision` does not hold: VMKIT_ALREADY_EXISTS for
 * 0 (the key exists), VMKIT_INVALID_STATE for n (the key changed, or is gone).
 */
export function compareFailed(kind: StoreKind, key: string, expectRevision: number): VmkitError {
  const what = kind.replace(/s$/, '');
  if (expectRevision === 0) {
    return vmkitError('VMKIT_ALREADY_EXISTS', `${what} "${key}" already exists.`, {
      hint: 'Choose another name, or delete the existing one first.',
    });
  }
  return vmkitError('VMKIT_INVALID_STATE', `${what} "${key}" was changed concurrently.`, { hint: 'Retry the request.' });
}
