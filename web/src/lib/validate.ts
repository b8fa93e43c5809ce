/**
 * Form checks that run before a request is sent. They mirror the server's rules
 * (src/domain/names.ts, src/network/forwards.ts) so the message comes at once; the server
 * still decides, and its error codes are shown in words (errors.ts).
 */
export const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export function nameProblem(name: string): string | null {
  if (name.length === 0) return 'Give the instance a name.';
  if (name.length > 63) return `At most 63 characters (this one has ${name.length}).`;
  if (/[A-Z]/.test(name)) return 'Use lowercase letters only.';
  if (/[^a-z0-9-]/.test(name)) return 'Only letters a-z, digits and "-" are allowed (no spaces, dots or slashes).';
  if (!NAME_PATTERN.test(name)) return 'Start and end with a letter or a digit.';
  return null;
}

export function portProblem(value: string, what: string, opts: { allowPrivileged?: boolean } = {}): string | null {
  if (value.trim() === '') return `Enter the ${what}.`;
  if (!/^\d+$/.test(value.trim())) return `The ${what} is a whole number.`;
  const n = Number(value);
  if (n < 1 || n > 65535) return `The ${what} is between 1 and 65535.`;
  if (what === 'host port' && n < 1024 && !opts.allowPrivileged) return 'Host ports below 1024 need privileges; choose 1024 or above.';
  return null;
}

export function cpusProblem(value: string): string | null {
  if (!/^\d+$/.test(value.trim())) return 'vCPUs is a whole number.';
  const n = Number(value);
  if (n < 1 || n > 64) return 'Between 1 and 64 vCPUs.';
  return null;
}

export function memoryProblem(value: string): string | null {
  if (!/^\d+$/.test(value.trim())) return 'Memory is a whole number of MiB.';
  const n = Number(value);
  if (n < 64) return 'At least 64 MiB.';
  if (n > 1024 * 1024) return 'At most 1 TiB.';
  return null;
}

export function addressProblem(value: string): string | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(value.trim());
  if (!m || m.slice(1).some((p) => Number(p) > 255)) return 'An IPv4 address such as 127.0.0.1.';
  return null;
}

export interface ForwardDraft {
  hostPort: string;
  guestPort: string;
  proto: 'tcp' | 'udp';
}

/** Problems of a list of forwards, by row; duplicates of the same host port and protocol too. */
export function forwardProblems(rows: readonly ForwardDraft[]): Array<string | null> {
  const seen = new Set<string>();
  return rows.map((r) => {
    const p = portProblem(r.hostPort, 'host port') ?? portProblem(r.guestPort, 'guest port');
    if (p) return p;
    const key = `${r.proto}:${Number(r.hostPort)}`;
    if (seen.has(key)) return `Host port ${r.hostPort}/${r.proto} is used twice.`;
    seen.add(key);
    return null;
  });
}
