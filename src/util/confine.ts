import { lstatSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { vmkitError } from '../errors.js';

/**
 * The one check for a path that came from a request or a peer: it must name something inside
 * `root` (a data or shared folder). The path is resolved against `root` (an absolute one is
 * taken as it is), `..` segments are folded, and then the longest part that exists is
 * resolved through its symbolic links (realpath): a link inside the folder that points out of
 * it is refused too. `root` itself is refused unless `allowRoot` (deleting "the folder of X"
 * must never be the whole data folder). Returns the resolved path (links of the existing part
 * resolved), which is the one to use.
 */
export function confinePath(root: string, path: string, what = 'path', options: { allowRoot?: boolean } = {}): string {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) throw outside(root, String(path), what);
  const base = realOf(resolve(root)) ?? resolve(root);
  const lexical = resolve(base, path);
  if (!inside(base, lexical, options.allowRoot)) throw outside(root, path, what);
  const real = realOf(lexical);
  if (real === undefined || !inside(base, real, options.allowRoot)) throw outside(root, path, what);
  return real;
}

/** Whether `path` is confined to `root` (same rules as confinePath, no error). */
export function isConfined(root: string, path: string, options: { allowRoot?: boolean } = {}): boolean {
  try {
    confinePath(root, path, 'path', options);
    return true;
  } catch {
    return false;
  }
}

/** One path segment vmkit names files and folders with: no separator, no `.`/`..`, no NUL. */
export function isSafeSegment(s: unknown): s is string {
  return typeof s === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(s) && !s.includes('..');
}

function inside(root: string, p: string, allowRoot = false): boolean {
  const rel = relative(root, p);
  if (rel === '') return allowRoot;
  return !isAbsolute(rel) && rel !== '..' && !rel.startsWith(`..${sep}`);
}

/**
 * realpath of the longest existing prefix, with the rest appended as it is; undefined for a
 * dangling symbolic link (it exists, but where it leads cannot be checked: a write would follow it).
 */
function realOf(p: string): string | undefined {
  let head = p;
  const tail: string[] = [];
  for (;;) {
    try {
      const r = realpathSync(head);
      return tail.length ? resolve(r, ...tail.reverse()) : r;
    } catch {
      if (exists(head)) return undefined;
      const up = dirname(head);
      if (up === head) return p;
      tail.push(head.slice(up.length).replace(/^\/+/, ''));
      head = up;
    }
  }
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function outside(root: string, path: string, what: string) {
  return vmkitError('VMKIT_PATH_FORBIDDEN', `The ${what} ${JSON.stringify(path)} is outside ${root}; it is refused.`, {
    hint: 'Name files by their place inside the data (or shared) folder; absolute paths, ".." and links out of it are not accepted.',
  });
}
