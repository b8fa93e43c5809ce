import { INSTANCE_STATES } from '../wire/instance.js';

/**
 * Whether a stored row can be used at all, checked once at daemon start: a row that fails is
 * moved aside (quarantined, see src/store/sqlite.ts) so one damaged row cannot keep the daemon
 * from starting. Only what the code needs without a second look is checked (the fields it
 * reads unconditionally), so rows of older versions with fewer optional fields still pass.
 * Returns what is wrong, or undefined for a usable row.
 */
export function storedRowProblem(kind: string, key: string, value: unknown): string | undefined {
  if (!isObject(value)) return `not a JSON object (${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value})`;
  switch (kind) {
    case 'instances':
      return (
        same(value, 'name', key) ??
        str(value, 'id') ??
        str(value, 'image') ??
        (INSTANCE_STATES.includes(value.state as never) ? undefined : `"state" is ${JSON.stringify(value.state)}, not a state`) ??
        positive(value, 'cpus') ??
        positive(value, 'memoryMiB') ??
        list(value, 'disks', ['name', 'file', 'format']) ??
        (Array.isArray(value.disks) && value.disks.some((d) => isObject(d) && d.name === 'root') ? undefined : 'no "root" disk') ??
        list(value, 'nics', ['id', 'mac', 'network']) ??
        list(value, 'forwards', [])
      );
    case 'images':
      return same(value, 'name', key) ?? list(value, 'disks', ['file', 'format']);
    case 'networks':
      return same(value, 'name', key) ?? str(value, 'mode') ?? str(value, 'bridge');
    case 'snapshots':
      return str(value, 'instance') ?? str(value, 'name');
    case 'stacks':
      // What the stack controller reads at start-up (src/stacks/types.ts).
      return (
        same(value, 'name', key) ??
        (isObject(value.spec) && Array.isArray(value.spec.services) && Array.isArray(value.spec.networks) ? undefined : '"spec" is missing its services or networks') ??
        (isObject(value.services) && Object.values(value.services).every((st) => isObject(st) && Array.isArray(st.replicas))
          ? undefined
          : '"services" is missing or has no replica lists') ??
        (Array.isArray(value.ownedNetworks) ? undefined : '"ownedNetworks" is missing or not a list')
      );
    default:
      return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Record<string, unknown>, field: string): string | undefined {
  return typeof o[field] === 'string' && o[field] !== '' ? undefined : `"${field}" is missing or not a string`;
}

function same(o: Record<string, unknown>, field: string, key: string): string | undefined {
  return str(o, field) ?? (o[field] === key ? undefined : `"${field}" is ${JSON.stringify(o[field])}, not its key ${JSON.stringify(key)}`);
}

function positive(o: Record<string, unknown>, field: string): string | undefined {
  return typeof o[field] === 'number' && (o[field] as number) > 0 ? undefined : `"${field}" is missing or not a positive number`;
}

function list(o: Record<string, unknown>, field: string, required: string[]): string | undefined {
  const v = o[field];
  if (!Array.isArray(v)) return `"${field}" is missing or not a list`;
  for (const [i, item] of v.entries()) {
    if (!isObject(item)) return `"${field}[${i}]" is not an object`;
    for (const f of required) if (typeof item[f] !== 'string') return `"${field}[${i}].${f}" is missing or not a string`;
  }
  return undefined;
}

/**
 * The instance id a damaged instance row names, read from its raw text when it does not parse:
 * its folder (instances/<id>) must then not be taken for a leftover and removed.
 */
export function idInRawRow(raw: string): string | undefined {
  return /"id"\s*:\s*"([0-9a-zA-Z_-]+)"/.exec(raw)?.[1];
}
