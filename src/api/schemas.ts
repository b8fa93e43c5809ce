/** JSON schemas of the wire types: they validate requests and generate doc/openapi.json. */
import { Type, type TSchema } from '@sinclair/typebox';
import { AsyncAnswerSchema, ErrorAnswerSchema, SyncAnswerSchema } from '../wire/envelope.js';
import { ImageViewSchema } from '../wire/image.js';
import { InstanceViewSchema, SnapshotSchema } from '../wire/instance.js';
import { NetworkViewSchema } from '../wire/network.js';
import { OperationSchema } from '../wire/operation.js';

// The resources' schemas come from src/wire/ (their TypeScript types are the same
// definitions); the API registers each once under an $id that routes reference.
export const operationSchema: TSchema = { $id: 'Operation', ...OperationSchema };
export const instanceSchema: TSchema = { $id: 'Instance', ...InstanceViewSchema };
export const imageSchema: TSchema = { $id: 'Image', ...ImageViewSchema };
export const snapshotSchema: TSchema = { $id: 'Snapshot', ...SnapshotSchema };
export const networkSchema: TSchema = { $id: 'Network', ...NetworkViewSchema };

export const forwardRequestSchema = {
  type: 'object',
  required: ['hostPort', 'guestPort'],
  additionalProperties: false,
  properties: {
    hostPort: { type: 'integer' },
    guestPort: { type: 'integer' },
    proto: { type: 'string', enum: ['tcp', 'udp'] },
    hostAddress: { type: 'string' },
    allowPrivileged: { type: 'boolean' },
    nic: { type: 'string' },
    floating: { type: 'boolean' },
  },
} as const;

export const createInstanceSchema = {
  type: 'object',
  required: ['name', 'image'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    image: { type: 'string' },
    type: { type: 'string' },
    cpus: { type: 'integer' },
    memoryMiB: { type: 'integer' },
    nics: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: { network: { type: 'string' }, model: { type: 'string', enum: ['virtio-net', 'e1000', 'rtl8139'] }, ipv4: { type: 'string' } },
      },
    },
    forwards: { type: 'array', items: forwardRequestSchema },
    allowPrivileged: { type: 'boolean' },
    start: { type: 'boolean' },
    /** Cluster: the host to create it on (default: the live host with the most free memory). */
    target: { type: 'string' },
    storage: { type: 'string', enum: ['local', 'shared'] },
    sshKeys: { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 16384 }, description: "OpenSSH public keys for the image's default user (cloud-init)" },
    userData: { type: 'string', maxLength: 524288, description: 'cloud-init user-data: #cloud-config YAML or a script' },
    meta: { type: 'object', additionalProperties: { type: 'string' }, description: 'extra NoCloud meta-data keys' },
    diskBytes: { type: 'integer', minimum: 1, description: 'root disk size in bytes (at least the image size; the guest grows its filesystem)' },
  },
} as const;

export const migrateSchema = {
  type: 'object',
  required: ['to'],
  additionalProperties: false,
  properties: {
    to: { type: 'string' },
    mode: { type: 'string', enum: ['cold', 'suspend', 'live', 'live-copy'] },
    check: { type: 'boolean' },
    downtimeMs: { type: 'integer', minimum: 1, maximum: 60000 },
    bandwidthMiBs: { type: 'integer', minimum: 1, maximum: 100000 },
  },
} as const;

export const clusterJoinSchema = {
  type: 'object',
  required: ['etcd', 'name', 'address'],
  additionalProperties: false,
  properties: {
    etcd: { type: 'array', items: { type: 'string' }, minItems: 1 },
    name: { type: 'string' },
    address: { type: 'string' },
    create: { type: 'boolean' },
  },
} as const;

export const stateChangeSchema = {
  type: 'object',
  required: ['action'],
  additionalProperties: false,
  properties: {
    action: { type: 'string', enum: ['start', 'stop', 'restart', 'pause', 'resume', 'suspend'] },
    force: { type: 'boolean' },
    timeout: { type: 'number', minimum: 0 },
  },
} as const;

export function syncResponse(metadata: object): object {
  return SyncAnswerSchema(Type.Unsafe(metadata));
}

export const asyncResponse = AsyncAnswerSchema(Type.Unsafe({ $ref: 'Operation#' }));

export const errorResponse = ErrorAnswerSchema;

export const nameParam = {
  type: 'object',
  properties: { name: { type: 'string' } },
  required: ['name'],
} as const;

export const createSnapshotSchema = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    description: { type: 'string', maxLength: 1024 },
    memory: { type: 'boolean', description: 'false = disk only (crash-consistent for a running instance); default true' },
  },
} as const;

export const snapshotParams = {
  type: 'object',
  properties: { name: { type: 'string' }, snapshot: { type: 'string' } },
  required: ['name', 'snapshot'],
} as const;
