import { Type } from '@sinclair/typebox';
import { StringEnum } from './enum.js';
import { INSTANCE_STATES, NicSchema, PortForwardSchema } from './instance.js';

/**
 * The payloads of the host-to-host migration routes (/1.0/internal/migrations…), validated
 * like public requests: a peer is trusted with a migration, not with the target's files.
 * Everything that becomes a path on the target is constrained here (ids, names, disk files)
 * and checked again where the path is made (src/util/confine.ts).
 */

/** An instance id or a migration id: one path segment (the daemon makes 12 hex digits and UUIDs). */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$';
/** The instance name grammar (src/domain/name-rule.ts; wire/ imports nothing outside itself). */
export const INSTANCE_NAME_PATTERN = '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$';
/** A disk's file: a plain file name in the instance folder, or an absolute path on shared storage (confined by the target). */
export const DISK_FILE_PATTERN = '^(/[^\\u0000]{1,4095}|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$';
export const DISK_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$';

const MODES = ['cold', 'suspend', 'live', 'live-copy'] as const;

export const MigrationIdParamsSchema = Type.Object({ id: Type.String({ pattern: ID_PATTERN }) }, { additionalProperties: false });
export const MigrationDiskParamsSchema = Type.Object(
  { id: Type.String({ pattern: ID_PATTERN }), disk: Type.String({ pattern: DISK_NAME_PATTERN }) },
  { additionalProperties: false },
);

export const PeerDiskRefSchema = Type.Object(
  {
    name: Type.String({ pattern: DISK_NAME_PATTERN }),
    file: Type.String({ pattern: DISK_FILE_PATTERN }),
    format: StringEnum(['qcow2', 'raw']),
  },
  { additionalProperties: false },
);

/** An instance as a peer sends it: the stored Instance with its path-making fields constrained (other fields pass, so a newer peer's additions do not break a migration). */
export const PeerInstanceSchema = Type.Object({
  id: Type.String({ pattern: ID_PATTERN }),
  name: Type.String({ pattern: INSTANCE_NAME_PATTERN }),
  image: Type.String({ pattern: INSTANCE_NAME_PATTERN }),
  imageVersion: Type.String({ maxLength: 256 }),
  cpus: Type.Integer({ minimum: 1, maximum: 1024 }),
  memoryMiB: Type.Integer({ minimum: 1 }),
  state: StringEnum(INSTANCE_STATES),
  host: Type.String({ maxLength: 253 }),
  nics: Type.Array(NicSchema, { maxItems: 64 }),
  forwards: Type.Array(PortForwardSchema, { maxItems: 1024 }),
  disks: Type.Array(PeerDiskRefSchema, { minItems: 1, maxItems: 64 }),
  linkedFrom: Type.Optional(Type.String({ pattern: INSTANCE_NAME_PATTERN })),
});

export const CheckRequestSchema = Type.Object(
  {
    instance: PeerInstanceSchema,
    mode: StringEnum(MODES),
    sharedDisks: Type.Boolean(),
    source: Type.String({ minLength: 1, maxLength: 253 }),
    imageChecksum: Type.Optional(Type.String({ maxLength: 128 })),
  },
  { additionalProperties: false },
);

export const PrepareRequestSchema = Type.Object(
  {
    id: Type.String({ pattern: ID_PATTERN }),
    mode: StringEnum(MODES),
    instance: PeerInstanceSchema,
    snapshots: Type.Array(Type.Object({ key: Type.String({ maxLength: 200 }), value: Type.Unknown() }, { additionalProperties: false }), { maxItems: 1000 }),
    source: Type.String({ minLength: 1, maxLength: 253 }),
    sourceIp: Type.String({ minLength: 1, maxLength: 64 }),
    sharedDisks: Type.Boolean(),
    disks: Type.Array(Type.Object({ name: Type.String({ pattern: DISK_NAME_PATTERN }), virtualSize: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }), {
      maxItems: 64,
    }),
    imageChecksum: Type.Optional(Type.String({ maxLength: 128 })),
    wasRunning: Type.Boolean(),
    // A UEFI instance's NVRAM, gzip + base64 (at most 4 MiB once unpacked).
    nvram: Type.Optional(Type.String({ maxLength: 800_000 })),
  },
  { additionalProperties: false },
);

export const FinishRequestSchema = Type.Object({ ownerRevision: Type.Integer({ minimum: 0 }), start: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
