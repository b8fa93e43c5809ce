import { vmkitError, VmkitError } from '../../errors.js';
import type { Instance, InstanceState } from '../../domain/types.js';
import type { MigrationMode, MigrationPlan } from '../types.js';

export interface MigrateOptions {
  to: string;
  mode?: MigrationMode;
  /** QEMU's downtime limit (ms) and bandwidth cap (MiB/s) for live modes. */
  downtimeMs?: number;
  bandwidthMiBs?: number;
}

export interface MigrateResult {
  instance: string;
  from: string;
  to: string;
  mode: MigrationMode;
  totalTimeMs: number;
  downtimeMs?: number;
  transferredBytes?: number;
}

/** What the source sends the target when a migration begins. */
export interface PrepareRequest {
  id: string;
  mode: MigrationMode;
  instance: Instance;
  snapshots: Array<{ key: string; value: unknown }>;
  source: string;
  /** The source host's cluster IP: the only address the migration ports accept. */
  sourceIp: string;
  sharedDisks: boolean;
  /** Per disk: its virtual size (a live copy creates an empty disk of that size). */
  disks: Array<{ name: string; virtualSize: number }>;
  /** Checksum of the instance's image here: the target must hold the very same image. */
  imageChecksum?: string;
  /** The source's runstate: the target resumes only a running guest. */
  wasRunning: boolean;
  /** A UEFI instance's NVRAM file, gzip + base64 (src/qemu/firmware.ts packNvram). */
  nvram?: string;
}

export interface PrepareReply {
  migrationPort?: number;
  nbdPort?: number;
  targetIp: string;
}

/** The target side of the pre-flight (POST /1.0/internal/migrations/check). */
export interface CheckRequest {
  instance: Instance;
  mode: MigrationMode;
  sharedDisks: boolean;
  source: string;
  imageChecksum?: string;
}

/** POST /1.0/internal/migrations/:id/finish: the source is done, the target takes over. */
export interface FinishRequest {
  ownerRevision: number;
  start?: boolean;
}

/** A migration this host takes part in, persisted so a restarted daemon can finish or undo it. */
export interface MigrationRecord {
  id: string;
  role: 'source' | 'target';
  instance: string;
  peer: string;
  mode: MigrationMode;
  phase: string;
  ports?: number[];
  wasRunning?: boolean;
  /** Target: the id of the incoming instance (so an abort never touches another of that name). */
  instanceId?: string;
  /** The instance's state on the source when it left (stopped or suspended for the copy modes). */
  sourceState?: InstanceState;
  startedAt: string;
}

/** The local store's collection of MigrationRecords. */
export const RECORDS = 'migrations';

export const DEFAULT_DOWNTIME_MS = 50;
/** Memory a target keeps free beyond the guest's (QEMU's own overhead). */
export const MEMORY_MARGIN_MIB = 64;

export function isLive(mode: MigrationMode): boolean {
  return mode === 'live' || mode === 'live-copy';
}

/** How long a silent peer is tolerated during a migration (ms). */
export function peerTimeoutMs(): number {
  const n = Number(process.env.VMKIT_MIGRATION_PEER_TIMEOUT_MS ?? '');
  return Number.isFinite(n) && n > 0 ? n : 5_000;
}

export function blocked(plan: MigrationPlan): VmkitError {
  return vmkitError('VMKIT_MIGRATION_BLOCKED', `"${plan.instance}" cannot move to ${plan.to} (${plan.mode}): ${plan.blockers.map((b) => b.message).join(' ')}`, {
    hint: `"vmkit migrate ${plan.instance} --to ${plan.to} --check" lists the blockers.`,
    details: { blockers: plan.blockers, mode: plan.mode },
  });
}

export function cancelled(): VmkitError {
  return vmkitError('VMKIT_OPERATION_CANCELLED', 'The migration was cancelled; the instance keeps running on its host.', { hint: 'Start it again when ready.' });
}
