/** The server's stable error codes (doc/errors.md), said in words for people. */
const WORDS: Record<string, string> = {
  VMKIT_NAME_INVALID: 'That name is not allowed',
  VMKIT_INVALID_ARGUMENT: 'A value is out of range or malformed',
  VMKIT_BAD_REQUEST: 'The request was malformed',
  VMKIT_UNAUTHORIZED: 'Not signed in, or the token is wrong',
  VMKIT_FORBIDDEN: "Your token's role may not do that",
  VMKIT_TOO_MANY_REQUESTS: 'Too many wrong tokens from here: wait a while',
  VMKIT_NOT_FOUND: 'The daemon does not know this request',
  VMKIT_IMAGE_NOT_FOUND: 'There is no such image',
  VMKIT_INSTANCE_NOT_FOUND: 'There is no such instance',
  VMKIT_OPERATION_NOT_FOUND: 'There is no such operation',
  VMKIT_FORWARD_NOT_FOUND: 'The instance has no such port forward',
  VMKIT_SNAPSHOT_NOT_FOUND: 'The instance has no snapshot of that name',
  VMKIT_NETWORK_NOT_FOUND: 'There is no such network',
  VMKIT_NIC_NOT_FOUND: 'The instance has no such NIC',
  VMKIT_NETWORK_IN_USE: 'Instances still have NICs on that network',
  VMKIT_SUBNET_OVERLAP: 'The subnet overlaps another network or an address of the host',
  VMKIT_ADDRESS_IN_USE: 'That address is already taken',
  VMKIT_POOL_EXHAUSTED: 'The network has no free address left',
  VMKIT_UPLINK_HAS_ADDRESS: 'The uplink interface has an address',
  VMKIT_NETWORK_FAILED: 'Setting up the network on the host failed',
  VMKIT_TYPE_UNKNOWN: 'There is no such instance type',
  VMKIT_ALREADY_EXISTS: 'That name is already taken',
  VMKIT_INVALID_STATE: "That is not possible in the instance's current state",
  VMKIT_INSTANCE_RUNNING: 'The instance is running',
  VMKIT_PORT_IN_USE: 'Another program already uses that host port',
  VMKIT_PORT_PRIVILEGED: 'Host ports below 1024 need privileges',
  VMKIT_FORWARD_CONFLICT: 'That host port is already forwarded',
  VMKIT_RESOURCES_EXCEEDED: 'The host does not have that many vCPUs or that much memory',
  VMKIT_OPERATION_CANCELLED: 'The operation was cancelled',
  VMKIT_TIMEOUT: 'A step took too long',
  VMKIT_QEMU_MISSING: 'QEMU is not installed on the host',
  VMKIT_QEMU_FAILED: 'QEMU failed to start the instance',
  VMKIT_QMP_ERROR: 'QEMU refused a command',
  VMKIT_QMP_TIMEOUT: 'QEMU did not answer in time',
  VMKIT_QMP_CLOSED: 'QEMU ended during the command',
  VMKIT_STORAGE_FAILED: 'A disk operation failed',
  VMKIT_INTERNAL: 'Something unexpected went wrong in the daemon',
  VMKIT_NETWORK: 'The daemon cannot be reached',
};

export function codeInWords(code: string): string {
  return (
    WORDS[code] ??
    code
      .replace(/^VMKIT_/, '')
      .toLowerCase()
      .replace(/_/g, ' ')
  );
}

export interface ShownError {
  title: string;
  message: string;
  hint?: string;
  code: string;
}

export function describeError(err: unknown): ShownError {
  const e = err as { code?: string; message?: string; hint?: string };
  const code = e?.code ?? 'VMKIT_INTERNAL';
  return { code, title: codeInWords(code), message: e?.message ?? String(err), hint: e?.hint };
}
