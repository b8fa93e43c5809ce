/**
 * Every failure vmkit reports has a stable code, an HTTP status and a hint that says what
 * to do. Codes are listed in one place (here) and documented in doc/errors.md; the CLI
 * prints `CODE: message` and exits non-zero, the API answers `{type:"error", error:{…}}`.
 */
export const ERROR_CODES = {
  VMKIT_NAME_INVALID: 400,
  VMKIT_INVALID_ARGUMENT: 400,
  VMKIT_BAD_REQUEST: 400,
  VMKIT_UNAUTHORIZED: 401,
  VMKIT_FORBIDDEN: 403,
  VMKIT_PATH_FORBIDDEN: 400,
  VMKIT_TOO_MANY_REQUESTS: 429,
  VMKIT_CERTIFICATE_CHANGED: 400,
  VMKIT_NOT_FOUND: 404,
  VMKIT_IMAGE_NOT_FOUND: 404,
  VMKIT_INSTANCE_NOT_FOUND: 404,
  VMKIT_OPERATION_NOT_FOUND: 404,
  VMKIT_FORWARD_NOT_FOUND: 404,
  VMKIT_SNAPSHOT_NOT_FOUND: 404,
  VMKIT_NETWORK_NOT_FOUND: 404,
  VMKIT_NIC_NOT_FOUND: 404,
  VMKIT_NIC_IN_USE: 409,
  VMKIT_TYPE_UNKNOWN: 400,
  VMKIT_ALREADY_EXISTS: 409,
  VMKIT_INVALID_STATE: 409,
  VMKIT_INSTANCE_RUNNING: 409,
  VMKIT_PORT_IN_USE: 409,
  VMKIT_PORT_PRIVILEGED: 400,
  VMKIT_FORWARD_CONFLICT: 409,
  VMKIT_NETWORK_IN_USE: 409,
  VMKIT_SUBNET_OVERLAP: 409,
  VMKIT_ADDRESS_IN_USE: 409,
  VMKIT_POOL_EXHAUSTED: 409,
  VMKIT_UPLINK_HAS_ADDRESS: 409,
  VMKIT_RESOURCES_EXCEEDED: 400,
  VMKIT_OPERATION_CANCELLED: 409,
  VMKIT_TIMEOUT: 504,
  VMKIT_QEMU_MISSING: 500,
  VMKIT_FIRMWARE_MISSING: 500,
  VMKIT_QEMU_FAILED: 500,
  VMKIT_QMP_ERROR: 500,
  VMKIT_QMP_TIMEOUT: 504,
  VMKIT_QMP_CLOSED: 500,
  VMKIT_AGENT_UNAVAILABLE: 503,
  VMKIT_AGENT_ERROR: 502,
  VMKIT_AGENT_TIMEOUT: 504,
  VMKIT_STORAGE_FAILED: 500,
  VMKIT_NETWORK_FAILED: 500,
  VMKIT_DAEMON_UNREACHABLE: 503,
  VMKIT_CLUSTER_UNAVAILABLE: 503,
  VMKIT_IMAGE_FORMAT: 400,
  VMKIT_IMAGE_UNSAFE: 400,
  VMKIT_IMAGE_TOO_LARGE: 400,
  VMKIT_IMAGE_IN_USE: 409,
  VMKIT_INSTANCE_IN_USE: 409,
  VMKIT_OVF_INVALID: 400,
  VMKIT_RECIPE_INVALID: 400,
  VMKIT_BUILD_FAILED: 422,
  VMKIT_CHECKSUM_MISMATCH: 400,
  VMKIT_FILE_NOT_FOUND: 404,
  VMKIT_REPO_NOT_FOUND: 404,
  VMKIT_REPO_FAILED: 502,
  VMKIT_REPO_TOO_LARGE: 413,
  VMKIT_REPO_ADDRESS_FORBIDDEN: 403,
  VMKIT_CLUSTER_NOT_JOINED: 409,
  VMKIT_HOST_NOT_FOUND: 404,
  VMKIT_HOST_UNREACHABLE: 503,
  VMKIT_MIGRATION_BLOCKED: 409,
  VMKIT_MIGRATION_FAILED: 500,
  VMKIT_STACK_INVALID: 400,
  VMKIT_STACK_NOT_FOUND: 404,
  VMKIT_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface VmkitErrorOptions {
  hint?: string;
  cause?: unknown;
  status?: number;
  details?: Record<string, unknown>;
}

export class VmkitError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly hint?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: VmkitErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VmkitError';
    this.code = code;
    this.status = options.status ?? ERROR_CODES[code];
    this.hint = options.hint;
    this.details = options.details;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> } {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

export function vmkitError(code: ErrorCode, message: string, options: VmkitErrorOptions = {}): VmkitError {
  return new VmkitError(code, message, options);
}

/** Wraps anything thrown into a VmkitError so the API and CLI always have a code to show. */
export function asVmkitError(err: unknown): VmkitError {
  if (err instanceof VmkitError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  if (e && typeof e.code === 'string' && e.code in ERROR_CODES) {
    return new VmkitError(e.code as ErrorCode, String(e.message ?? e.code), { cause: err });
  }
  return new VmkitError('VMKIT_INTERNAL', err instanceof Error ? err.message : String(err), {
    cause: err,
    hint: 'This is a bug in vmkit or an unexpected host condition; the daemon log has details.',
  });
}
