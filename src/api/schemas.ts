/** JSON schemas of the wire types: they validate requests and generate doc/openapi.json. */

const errorObject = {
  type: 'object',
  properties: {
    code: { type: 'string' },
    message: { type: 'string' },
    hint: { type: 'string' },
    details: { type: 'object', additionalProperties: true },
  },
  required: ['code', 'message'],
} as const;

export const operationSchema = {
  $id: 'Operation',
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string' },
    description: { type: 'string' },
    target: { type: 'string' },
    status: { type: 'string', enum: ['pending', 'running', 'success', 'failure', 'cancelled'] },
    progress: {
      type: 'object',
      properties: {
        phase: { type: 'string' },
        percent: { type: 'number' },
        bytesDone: { type: 'number' },
        bytesTotal: { type: 'number' },
        dirtyRatePagesPerSec: { type: 'number' },
        expectedDowntimeMs: { type: 'number' },
        downtimeMs: { type: 'number' },
      },
    },
    mayCancel: { type: 'boolean' },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    result: {},
    error: errorObject,
  },
} as const;

const forwardSchema = {
  type: 'object',
  properties: {
    proto: { type: 'string', enum: ['tcp', 'udp'] },
    hostAddress: { type: 'string' },
    hostPort: { type: 'integer' },
    guestPort: { type: 'integer' },
    nic: { type: 'string' },
    floating: { type: 'boolean' },
  },
} as const;

export const instanceSchema = {
  $id: 'Instance',
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    image: { type: 'string' },
    imageVersion: { type: 'string' },
    type: { type: 'string' },
    cpus: { type: 'integer' },
    memoryMiB: { type: 'integer' },
    state: {
      type: 'string',
      enum: ['stopped', 'starting', 'running', 'paused', 'stopping', 'suspended', 'migrating', 'error', 'deleting'],
    },
    stateReason: { type: 'string' },
    host: { type: 'string' },
    nics: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          model: { type: 'string', enum: ['virtio-net', 'e1000', 'rtl8139'] },
          mac: { type: 'string' },
          network: { type: 'string' },
          ipv4: { type: 'string' },
          dhcp: { type: 'boolean' },
        },
      },
    },
    forwards: { type: 'array', items: forwardSchema },
    disks: {
      type: 'array',
      items: { type: 'object', properties: { name: { type: 'string' }, file: { type: 'string' }, format: { type: 'string' } } },
    },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    lastStartedAt: { type: 'string' },
    currentSnapshot: { type: 'string', description: 'the snapshot the instance descends from (parent of the next one)' },
    runtime: {
      type: 'object',
      properties: {
        pid: { type: 'integer' },
        accel: { type: 'string', enum: ['kvm', 'tcg'] },
        qemuStatus: { type: 'string' },
        uptimeSeconds: { type: 'number' },
      },
    },
  },
} as const;

export const imageSchema = {
  $id: 'Image',
  type: 'object',
  properties: {
    name: { type: 'string' },
    version: { type: 'string' },
    description: { type: 'string' },
    arch: { type: 'string' },
    boot: { type: 'object', properties: { kernel: { type: 'string' }, initrd: { type: 'string' }, cmdline: { type: 'string' } } },
    defaults: { type: 'object', properties: { cpus: { type: 'integer' }, memoryMiB: { type: 'integer' } } },
    display: { type: 'string', enum: ['vga', 'none'] },
    nicModels: { type: 'array', items: { type: 'string' } },
    disks: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          file: { type: 'string' },
          format: { type: 'string' },
          virtualSize: { type: 'integer' },
          actualSize: { type: 'integer' },
        },
      },
    },
    source: { type: 'string' },
    createdAt: { type: 'string' },
    checksum: { type: 'string' },
    origin: { type: 'string' },
    fidelity: {
      type: 'array',
      items: { type: 'object', properties: { item: { type: 'string' }, value: { type: 'string' }, status: { type: 'string' }, reason: { type: 'string' } } },
    },
    users: { type: 'object', properties: { instances: { type: 'array', items: { type: 'string' } } } },
  },
} as const;

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
  return {
    type: 'object',
    properties: { type: { type: 'string', enum: ['sync'] }, status_code: { type: 'integer' }, metadata },
  };
}

export const asyncResponse = {
  type: 'object',
  properties: {
    type: { type: 'string', enum: ['async'] },
    status_code: { type: 'integer' },
    operation: { type: 'string' },
    metadata: { $ref: 'Operation#' },
  },
} as const;

export const errorResponse = {
  type: 'object',
  properties: {
    type: { type: 'string', enum: ['error'] },
    status_code: { type: 'integer' },
    error: errorObject,
  },
} as const;

export const nameParam = {
  type: 'object',
  properties: { name: { type: 'string' } },
  required: ['name'],
} as const;

export const snapshotSchema = {
  $id: 'Snapshot',
  type: 'object',
  properties: {
    instance: { type: 'string' },
    instanceId: { type: 'string' },
    name: { type: 'string' },
    description: { type: 'string' },
    parent: { type: 'string' },
    createdAt: { type: 'string' },
    withMemory: { type: 'boolean' },
    vmState: { type: 'string', enum: ['running', 'paused'], nullable: true },
    pausedMs: { type: 'number' },
    size: { type: 'integer' },
  },
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
