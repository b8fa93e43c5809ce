import { asVmkitError } from '../errors.js';
import type { OwnerRecord } from './types.js';

/**
 * Who runs a guest after a live migration's switch-over, decided in etcd and nowhere else.
 * The rule these functions keep: a guest never runs on two hosts. The target `cont`s only
 * after its compare-and-swap of the owner record succeeded; the source resumes only after it
 * fenced the target out (a compare-and-swap onto itself, after which the target's swap, made
 * on the old revision, can never succeed). While etcd does not answer, nobody resumes.
 */
export interface OwnershipStore {
  readonly name: string | undefined;
  owner(name: string): Promise<{ record: OwnerRecord; revision: number } | undefined>;
  transfer(name: string, from: string, to: string, revision: number, summary: Partial<OwnerRecord>): Promise<boolean>;
}

export type Holder = 'source' | 'target' | 'unknown';

export type StepLog = (msg: string) => void;

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Source side, after the target's answer to "take over" was lost: 'target' if it took the
 * instance, 'source' once fenced, 'unknown' while etcd does not answer (`attempts` reads,
 * `retryMs` apart).
 */
export async function settleOwnership(
  store: OwnershipStore,
  instance: string,
  target: string,
  revision: number,
  log: StepLog,
  opts: { attempts?: number; retryMs?: number } = {},
): Promise<Holder> {
  const me = store.name;
  const attempts = opts.attempts ?? 10;
  for (let i = 0; i < attempts; i++) {
    try {
      const now = await store.owner(instance);
      if (now?.record.host === target) return 'target';
      if (me && now?.record.host === me) {
        // A newer revision means the fence is already up: the target's swap cannot succeed.
        if (now.revision !== revision || (await store.transfer(instance, me, me, revision, {}))) {
          log('ownership fenced: the target can no longer take over');
          return 'source';
        }
        continue;
      }
      log(`unexpected owner of ${instance}: ${now?.record.host ?? 'none'}`);
      return 'unknown';
    } catch (err) {
      log(`etcd: ${asVmkitError(err).message}`);
      if (i < attempts - 1) await pause(opts.retryMs ?? 1_000);
    }
  }
  return 'unknown';
}

/**
 * Target side: compare-and-swap of the owner record to this host. When etcd's answer is
 * lost, the record itself tells whether the swap happened (a guest must neither stay paused
 * on the host that owns it nor run on one that does not); still unknown, it throws.
 */
export async function takeOwnership(
  store: OwnershipStore,
  instance: string,
  from: string,
  revision: number,
  summary: Partial<OwnerRecord>,
  log: StepLog,
  opts: { attempts?: number; retryMs?: number } = {},
): Promise<boolean> {
  const me = store.name!;
  try {
    return await store.transfer(instance, from, me, revision, summary);
  } catch (err) {
    log(`etcd: ${asVmkitError(err).message}; reading the owner back`);
    for (let i = 0; i < (opts.attempts ?? 10); i++) {
      // Unreadable now: read again until the attempts run out (then the transfer's error is thrown).
      const now = await store.owner(instance).catch(() => undefined);
      if (now) return now.record.host === me;
      await pause(opts.retryMs ?? 500);
    }
    throw err;
  }
}

/** Timestamped steps of one migration on one host, so a failed switch-over explains itself. */
export function stepLogger(id: string, role: 'source' | 'target', instance: string, write: (line: string) => void = (l) => console.error(l)): StepLog {
  const t0 = Date.now();
  return (msg: string) => write(`vmkitd: ${new Date().toISOString()} migration ${id.slice(0, 8)} ${role} ${instance} +${Date.now() - t0}ms: ${msg}`);
}
