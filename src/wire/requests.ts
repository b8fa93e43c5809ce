import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from './enum.js';
import { NIC_MODELS } from './instance.js';
import { NETWORK_MODES } from './network.js';

/**
 * The request bodies of the REST API, each defined once: the daemon validates a body with
 * its schema (TypeBox's compiler, src/api/validation.ts), doc/openapi.json documents the same
 * schema, and its static type is what a handler, the CLI and the console send.
 */

const strict = { additionalProperties: false } as const;

export const MIGRATION_MODES = ['cold', 'suspend', 'live', 'live-copy'] as const;
export const IMPORT_FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'ova'] as const;
export const EXPORT_FORMATS = ['ova', 'qcow2', 'vmdk', 'vdi', 'vhdx', 'raw'] as const;
export const STATE_ACTIONS = ['start', 'stop', 'restart', 'pause', 'resume', 'suspend'] as const;

/** POST /1.0/instances/{name}/forwards, and each of `forwards` at create. */
export const ForwardRequestSchema = Type.Object(
  {
    hostPort: Type.Integer(),
    guestPort: Type.Integer(),
    proto: Type.Optional(StringEnum(['tcp', 'udp'])),
    hostAddress: Type.Optional(Type.String()),
    allowPrivileged: Type.Optional(Type.Boolean()),
    nic: Type.Optional(Type.String()),
    floating: Type.Optional(Type.Boolean()),
  },
  strict,
);
export type ForwardRequestBody = Static<typeof ForwardRequestSchema>;

const nicFields = {
  network: Type.Optional(Type.String()),
  model: Type.Optional(StringEnum(NIC_MODELS)),
  ipv4: Type.Optional(Type.String()),
};

/** Each of `nics` at create (no network: user-mode NAT). */
export const NicRequestSchema = Type.Object(nicFields, strict);

/** POST /1.0/instances/{name}/nics. */
export const AddNicRequestSchema = Type.Object({ ...nicFields, network: Type.String() }, strict);
export type AddNicRequest = Static<typeof AddNicRequestSchema>;

/** POST /1.0/instances. */
/** cloud-init settings: at create, and PUT /1.0/instances/{name}/cloud-init. */
const cloudInitFields = {
  sshKeys: Type.Optional(Type.Array(Type.String({ maxLength: 16384 }), { maxItems: 64, description: "OpenSSH public keys for the image's default user (cloud-init)" })),
  userData: Type.Optional(Type.String({ maxLength: 524288, description: 'cloud-init user-data: #cloud-config YAML or a script' })),
  meta: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra NoCloud meta-data keys' })),
};

/** PUT /1.0/instances/{name}/cloud-init. */
export const CloudInitRequestSchema = Type.Object(cloudInitFields, strict);
export type CloudInitRequest = Static<typeof CloudInitRequestSchema>;

/** PUT /1.0/instances/{name}/disks/{disk}. */
export const ResizeDiskRequestSchema = Type.Object(
  { size: Type.Union([Type.Integer({ minimum: 1 }), Type.String({ maxLength: 32 })], { description: 'bytes, or a size like 40G' }) },
  strict,
);
export type ResizeDiskRequest = Static<typeof ResizeDiskRequestSchema>;

export const CreateInstanceRequestSchema = Type.Object(
  {
    name: Type.String(),
    image: Type.String(),
    type: Type.Optional(Type.String()),
    cpus: Type.Optional(Type.Integer()),
    memoryMiB: Type.Optional(Type.Integer()),
    nics: Type.Optional(Type.Array(NicRequestSchema)),
    forwards: Type.Optional(Type.Array(ForwardRequestSchema)),
    allowPrivileged: Type.Optional(Type.Boolean()),
    start: Type.Optional(Type.Boolean()),
    target: Type.Optional(Type.String({ description: 'cluster: the host to create it on (default: the live host with the most free memory)' })),
    storage: Type.Optional(StringEnum(['local', 'shared'])),
    ...cloudInitFields,
    firmware: Type.Optional(StringEnum(['bios', 'uefi'], { description: "bios (SeaBIOS) or uefi (OVMF, with the instance's own NVRAM); default: the image's" })),
    diskBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'root disk size in bytes (at least the image size; the guest grows its filesystem)' })),
  },
  strict,
);
export type CreateInstanceRequestBody = Static<typeof CreateInstanceRequestSchema>;

/** PUT /1.0/instances/{name}/state. */
export const StateChangeRequestSchema = Type.Object(
  {
    action: StringEnum(STATE_ACTIONS),
    force: Type.Optional(Type.Boolean()),
    timeout: Type.Optional(Type.Number({ minimum: 0, description: 'seconds to wait for the guest to power off before forcing' })),
  },
  strict,
);
export type StateChangeRequest = Static<typeof StateChangeRequestSchema>;

/** POST /1.0/instances/{name}/snapshots. */
export const CreateSnapshotRequestSchema = Type.Object(
  {
    name: Type.String(),
    description: Type.Optional(Type.String({ maxLength: 1024 })),
    memory: Type.Optional(Type.Boolean({ description: 'false = disk only (crash-consistent for a running instance); default true' })),
    quiesce: Type.Optional(
      Type.Boolean({
        description:
          "freeze the guest's filesystems (guest agent guest-fsfreeze) around a live snapshot: true = required (fails without an agent), false = never; default: for a disk-only snapshot (memory false) of a running guest when its agent answers",
      }),
    ),
  },
  strict,
);
export type CreateSnapshotRequestBody = Static<typeof CreateSnapshotRequestSchema>;

/** POST /1.0/instances/{name}/clone. */
export const CloneRequestSchema = Type.Object({ name: Type.String(), full: Type.Optional(Type.Boolean()), fromSnapshot: Type.Optional(Type.String()) }, strict);
export type CloneRequest = Static<typeof CloneRequestSchema>;

/** POST /1.0/instances/{name}/publish. */
export const PublishRequestSchema = Type.Object(
  { name: Type.String(), description: Type.Optional(Type.String({ maxLength: 1000 })), version: Type.Optional(Type.String({ maxLength: 64 })) },
  strict,
);
export type PublishRequest = Static<typeof PublishRequestSchema>;

/** POST /1.0/instances/{name}/migrate. */
export const MigrateRequestSchema = Type.Object(
  {
    to: Type.String(),
    mode: Type.Optional(StringEnum(MIGRATION_MODES)),
    check: Type.Optional(Type.Boolean({ description: 'pre-flight only: list every blocker and move nothing' })),
    downtimeMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60000 })),
    bandwidthMiBs: Type.Optional(Type.Integer({ minimum: 1, maximum: 100000 })),
  },
  strict,
);
export type MigrateRequest = Static<typeof MigrateRequestSchema>;

/** POST /1.0/cluster. */
export const ClusterJoinRequestSchema = Type.Object(
  {
    etcd: Type.Optional(Type.Array(Type.String({ maxLength: 512 }), { minItems: 1, maxItems: 16 })),
    name: Type.Optional(Type.String()),
    address: Type.String({ maxLength: 300 }),
    create: Type.Optional(Type.Boolean()),
    /** A join token from `vmkit cluster add` on a member. */
    token: Type.Optional(Type.String({ maxLength: 4096 })),
    insecureEtcd: Type.Optional(Type.Boolean()),
    /** Adopt an existing cluster CA (PEM) at create. */
    caCert: Type.Optional(Type.String({ maxLength: 16384 })),
    caKey: Type.Optional(Type.String({ maxLength: 16384 })),
  },
  strict,
);
export type ClusterJoinRequest = Static<typeof ClusterJoinRequestSchema>;

/** POST /1.0/cluster/tokens: a one-time join token for a new host. */
export const JoinTokenRequestSchema = Type.Object({ name: Type.String(), expiresSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 604800 })) }, strict);
export type JoinTokenRequest = Static<typeof JoinTokenRequestSchema>;

/** POST /1.0/internal/join: a joiner's request to a member (peer listener, no client certificate yet). */
export const PeerJoinRequestSchema = Type.Object(
  {
    name: Type.String({ maxLength: 63 }),
    secret: Type.String({ minLength: 32, maxLength: 128 }),
    csr: Type.String({ maxLength: 8192 }),
    address: Type.String({ maxLength: 300 }),
  },
  strict,
);
export type PeerJoinRequest = Static<typeof PeerJoinRequestSchema>;

/** POST /1.0/cluster/etcd-certificate. */
export const EtcdCertificateRequestSchema = Type.Object({ names: Type.Array(Type.String({ maxLength: 253 }), { minItems: 1, maxItems: 16 }) }, strict);
export type EtcdCertificateRequest = Static<typeof EtcdCertificateRequestSchema>;

/** POST /1.0/networks. */
export const CreateNetworkRequestSchema = Type.Object(
  {
    name: Type.String(),
    mode: StringEnum(NETWORK_MODES),
    subnet: Type.Optional(Type.String()),
    dhcpRange: Type.Optional(Type.String()),
    dhcp: Type.Optional(Type.Boolean()),
    dns: Type.Optional(Type.Boolean()),
    uplink: Type.Optional(Type.String()),
  },
  strict,
);
export type CreateNetworkRequestBody = Static<typeof CreateNetworkRequestSchema>;

/** POST /1.0/images (a path on the daemon host). */
export const ImportImageRequestSchema = Type.Object(
  {
    source: Type.String({
      minLength: 1,
      description: 'absolute path of a disk image or OVA on the daemon host (local callers on the unix socket only; remote callers use POST /1.0/images/upload)',
    }),
    name: Type.Optional(Type.String()),
    format: Type.Optional(StringEnum(IMPORT_FORMATS)),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  strict,
);
export type ImportImageRequest = Static<typeof ImportImageRequestSchema>;

/** POST /1.0/images/{name}/export. */
export const ExportImageRequestSchema = Type.Object({ path: Type.String({ minLength: 1 }), format: Type.Optional(StringEnum(EXPORT_FORMATS)) }, strict);
export type ExportImageRequest = Static<typeof ExportImageRequestSchema>;

/** GET /1.0/images/{name}/export?format=… (a download). */
export const DownloadImageQuerySchema = Type.Object({ format: Type.Optional(StringEnum(EXPORT_FORMATS)) }, strict);
export type DownloadImageQuery = Static<typeof DownloadImageQuerySchema>;

/** PATCH /1.0/networks/{name}/host-access ("user" = QEMU user-mode NICs). */
export const HostAccessRequestSchema = Type.Object(
  { allow: Type.Optional(Type.Array(Type.String(), { maxItems: 64 })), deny: Type.Optional(Type.Array(Type.String(), { maxItems: 64 })) },
  strict,
);
export type HostAccessRequest = Static<typeof HostAccessRequestSchema>;

/** POST /1.0/images/download. */
export const DownloadImageRequestSchema = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 4096, description: 'http(s) URL of a disk image' }),
    sha256: Type.String({ description: '64 hex digits (optionally sha256:…) the file must match' }),
    name: Type.Optional(Type.String()),
    format: Type.Optional(StringEnum(['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx'])),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  strict,
);
export type DownloadImageRequest = Static<typeof DownloadImageRequestSchema>;

/** POST /1.0/images/build: a recipe (YAML text) built into NAME:N. */
export const BuildImageRequestSchema = Type.Object(
  {
    recipe: Type.String({ minLength: 1, maxLength: 1048576, description: 'the recipe, as YAML text (see doc/images.md, "Building images")' }),
    dir: Type.Optional(
      Type.String({
        maxLength: 4096,
        description: "absolute path of the recipe's folder on the daemon host, where copy steps read their files (local callers on the unix socket only)",
      }),
    ),
    keepOnFailure: Type.Optional(Type.Boolean({ description: 'leave the build VM running when a step fails, to look at it' })),
  },
  strict,
);
export type BuildImageRequest = Static<typeof BuildImageRequestSchema>;

/** POST /1.0/images/build/cache/prune: which step cache entries to remove (never one a build uses). */
export const PruneBuildCacheRequestSchema = Type.Object(
  {
    all: Type.Optional(Type.Boolean({ description: 'every entry no running build (or kept build VM) uses' })),
    olderThanSeconds: Type.Optional(Type.Integer({ minimum: 0, description: 'entries no build has used for this long' })),
  },
  strict,
);
export type PruneBuildCacheRequest = Static<typeof PruneBuildCacheRequestSchema>;

/** POST /1.0/images/build-debian. */
export const BuildDebianRequestSchema = Type.Object({ name: Type.String(), release: Type.Optional(StringEnum(['bookworm', 'trixie'])) }, strict);
export type BuildDebianRequest = Static<typeof BuildDebianRequestSchema>;

/** PATCH /1.0/images/{name}: an image's defaults for new instances. */
export const ImageDefaultsRequestSchema = Type.Object(
  {
    nicModel: Type.Optional(StringEnum(NIC_MODELS)),
    minDiskBytes: Type.Optional(Type.Integer({ minimum: 1 })),
    firmware: Type.Optional(Type.String({ description: 'bios (SeaBIOS) or uefi (OVMF)' })),
    cpus: Type.Optional(Type.Integer({ minimum: 1 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 32 })),
  },
  strict,
);
export type ImageDefaultsRequest = Static<typeof ImageDefaultsRequestSchema>;

/** POST /1.0/repos. */
export const AddRepoRequestSchema = Type.Object(
  { name: Type.String(), url: Type.String(), token: Type.Optional(Type.String()), allowPrivate: Type.Optional(Type.Boolean()) },
  strict,
);
export type AddRepoRequest = Static<typeof AddRepoRequestSchema>;

/** PUT /1.0/repo/serve. */
export const ServeRepoRequestSchema = Type.Object(
  {
    listen: Type.String(),
    token: Type.Optional(Type.String({ minLength: 8 })),
    private: Type.Optional(Type.Boolean()),
    maxBlobGiB: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 16384 })),
  },
  strict,
);
export type ServeRepoRequest = Static<typeof ServeRepoRequestSchema>;

/** POST /1.0/images/pull. */
export const PullRequestSchema = Type.Object({ repo: Type.String(), image: Type.String(), name: Type.Optional(Type.String()) }, strict);
export type PullRequest = Static<typeof PullRequestSchema>;

/** POST /1.0/images/{name}/push. */
export const PushRequestSchema = Type.Object({ repo: Type.String() }, strict);
export type PushRequest = Static<typeof PushRequestSchema>;

/** POST /1.0/auth/session (the web console's sign-in). */
export const SessionRequestSchema = Type.Object({ token: Type.String({ minLength: 1, maxLength: 4096 }) }, strict);
export type SessionRequest = Static<typeof SessionRequestSchema>;

/** POST /1.0/instances/{name}/exec: a command run by the guest agent (guest-exec). */
export const ExecRequestSchema = Type.Object(
  {
    command: Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 4096, description: 'the program and its arguments (no shell: give ["sh","-c","…"] for one)' }),
    env: Type.Optional(
      Type.Array(Type.String({ maxLength: 65536, pattern: '^[A-Za-z_][A-Za-z0-9_]*=' }), {
        maxItems: 1024,
        description: 'KEY=VALUE; replaces the environment (vmkit adds a default PATH when none is given)',
      }),
    ),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, pattern: '^/', description: 'working directory in the guest (through /bin/sh)' })),
    timeout: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 86400, description: 'seconds to wait for the command to end (default 300); the guest process keeps running after' }),
    ),
    stdin: Type.Optional(
      Type.String({ maxLength: 1398104, pattern: '^[A-Za-z0-9+/]*={0,2}$', description: 'base64 bytes given to the command as standard input (at most 1 MiB)' }),
    ),
  },
  { additionalProperties: false },
);
export type ExecRequestBody = Static<typeof ExecRequestSchema>;

/** POST /1.0/stacks (apply) and POST /1.0/stacks/diff: the stack file's text (YAML or JSON). */
export const ApplyStackRequestSchema = Type.Object(
  {
    file: Type.String({ minLength: 1, maxLength: 1_000_000, description: 'the stack file (YAML; JSON is YAML too)' }),
  },
  strict,
);
export type ApplyStackRequest = Static<typeof ApplyStackRequestSchema>;
