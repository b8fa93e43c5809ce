import type { Image } from '../../domain/types.js';

/**
 * Versioned images: a build publishes `NAME:N` (N = 1, 2, …), an ordinary image row whose
 * name carries its version. `NAME` alone means the newest `NAME:N` (when no image is named
 * exactly `NAME`); instances record the exact `NAME:N` they were made from.
 */
export function versionedName(name: string, version: number): string {
  return `${name}:${version}`;
}

/** `web:3` → { name: 'web', version: 3 }; anything else → undefined. */
export function splitVersion(ref: string): { name: string; version: number } | undefined {
  const m = /^(.+):([1-9][0-9]{0,8})$/.exec(ref);
  return m ? { name: m[1]!, version: Number(m[2]) } : undefined;
}

/** The versions of `name` among image names, newest first. */
export function versionsOf(names: readonly string[], name: string): number[] {
  return names
    .map((n) => splitVersion(n))
    .filter((v): v is { name: string; version: number } => v !== undefined && v.name === name)
    .map((v) => v.version)
    .sort((a, b) => b - a);
}

/** The version a new build of `name` gets: one more than the newest (1 for the first). */
export function nextVersion(images: readonly Image[], name: string): number {
  return (
    (versionsOf(
      images.map((i) => i.name),
      name,
    )[0] ?? 0) + 1
  );
}
