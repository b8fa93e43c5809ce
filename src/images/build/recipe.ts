import { parseDocument } from 'yaml';
import { vmkitError, type VmkitError } from '../../errors.js';
import { validateName } from '../../domain/names.js';

/**
 * A build recipe (`vmkit image build -f recipe.yaml`): a base image, then steps run in a
 * temporary build VM; the result is published as the next version of `name` (`web:3`).
 *
 *   name: web
 *   base: appliance            # an image (name or name:version), or { debian: bookworm }
 *   description: …             # optional
 *   size: { cpus: 1, memoryMiB: 256 }   # optional: defaults of the built image
 *   disk: 2G                   # optional: minimum root disk of its instances
 *   steps:
 *     - copy: { src: ./site, dest: /srv/www, mode: "0644" }
 *     - run: echo hello > /etc/motd
 *     - cloud-init: |
 *         #cloud-config
 *         …
 *
 * Every error is VMKIT_RECIPE_INVALID with `details.path` naming the bad field
 * (`steps[1].copy.dest`).
 */
export interface Recipe {
  name: string;
  base: RecipeBase;
  description?: string;
  size?: { cpus?: number; memoryMiB?: number };
  diskBytes?: number;
  steps: RecipeStep[];
}

export type RecipeBase = { image: string } | { debian: string };

export type RecipeStep =
  | { kind: 'copy'; src: string; dest: string; mode?: number }
  | { kind: 'run'; command: string; timeoutSeconds?: number }
  | { kind: 'cloud-init'; userData: string; timeoutSeconds?: number };

export const DEBIAN_RELEASES = ['bookworm', 'trixie'];
const MAX_STEPS = 100;
const MAX_TEXT = 256 * 1024;
/** An image reference: a name, or name:version (a positive integer). */
export const IMAGE_REF = /^([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?::([1-9][0-9]{0,8}))?$/;

function bad(path: string, message: string, hint: string): VmkitError {
  return vmkitError('VMKIT_RECIPE_INVALID', `Recipe field ${path}: ${message}`, { hint, details: { path } });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyKeys(v: Record<string, unknown>, allowed: string[], path: string): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) throw bad(path === '' ? k : `${path}.${k}`, 'unknown field.', `Allowed here: ${allowed.join(', ')}.`);
  }
}

function text(v: unknown, path: string, what: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw bad(path, `must be a non-empty string (${what}).`, 'See doc/images.md, "Building images".');
  if (v.length > MAX_TEXT) throw bad(path, `is longer than ${MAX_TEXT} characters.`, 'Put long scripts in a file and copy it, then run it.');
  return v;
}

function timeout(v: unknown, path: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 24 * 3600) throw bad(path, 'must be a whole number of seconds from 1 to 86400.', 'For example: timeout: 600');
  return v;
}

/** Parses "2G", "512M", "1073741824" into bytes. */
function diskSize(v: unknown, path: string): number {
  const s = typeof v === 'number' ? String(v) : v;
  const m = typeof s === 'string' ? /^([0-9]+)([KMGT]?)(i?B)?$/i.exec(s.trim()) : null;
  if (!m) throw bad(path, `${JSON.stringify(v)} is not a size.`, 'Use a size such as 2G or 512M.');
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const bytes = Number(m[1]) * mult;
  if (bytes < 1 || bytes > 64 * 1024 ** 4) throw bad(path, 'is out of range.', 'Use a size from 1M to 64T.');
  return bytes;
}

/** A guest path for copy's dest: absolute, no NUL/newline, no `..` segments. */
function guestPath(v: unknown, path: string): string {
  const s = text(v, path, 'an absolute path in the guest');
  if (!s.startsWith('/') || /[\0\n\r]/.test(s) || s.split('/').includes('..') || s.length > 1024) {
    throw bad(path, `${JSON.stringify(s)} is not an absolute guest path.`, 'Use an absolute path such as /srv/www/index.html (no "..", no newlines).');
  }
  return s;
}

/** A host path for copy's src: relative to the recipe's folder, and staying inside it. */
function contextPath(v: unknown, path: string): string {
  const s = text(v, path, "a path relative to the recipe's folder");
  const parts = s.split('/').filter((p) => p !== '' && p !== '.');
  if (s.startsWith('/') || parts.includes('..') || /[\0\n\r]/.test(s) || parts.length === 0) {
    throw bad(
      path,
      `${JSON.stringify(s)} must be a path inside the recipe's folder.`,
      'Give a relative path such as ./site or files/app.conf (no absolute paths, no ".."): a recipe reads only its own folder.',
    );
  }
  return parts.join('/');
}

function fileMode(v: unknown, path: string): number | undefined {
  if (v === undefined) return undefined;
  const s = typeof v === 'number' ? v.toString(8) : v;
  if (typeof s !== 'string' || !/^0?[0-7]{3,4}$/.test(s)) throw bad(path, `${JSON.stringify(v)} is not a file mode.`, 'Write it as an octal string, e.g. mode: "0755".');
  return parseInt(s, 8);
}

function parseStep(v: unknown, i: number): RecipeStep {
  const path = `steps[${i}]`;
  if (!isObject(v)) throw bad(path, 'must be a mapping with one of copy, run, cloud-init.', 'For example: - run: echo hello > /etc/motd');
  const kinds = Object.keys(v).filter((k) => ['copy', 'run', 'cloud-init'].includes(k));
  if (kinds.length !== 1)
    throw bad(path, `must have exactly one of copy, run, cloud-init (found ${kinds.length === 0 ? 'none' : kinds.join(', ')}).`, 'Write one action per step.');
  const kind = kinds[0]!;
  if (kind === 'run') {
    onlyKeys(v, ['run', 'timeout'], path);
    return { kind, command: text(v.run, `${path}.run`, 'a shell command'), timeoutSeconds: timeout(v.timeout, `${path}.timeout`) };
  }
  if (kind === 'cloud-init') {
    onlyKeys(v, ['cloud-init', 'timeout'], path);
    const userData = text(v['cloud-init'], `${path}.cloud-init`, 'user-data');
    if (!/^(#cloud-config|#!)/.test(userData.trimStart())) {
      throw bad(`${path}.cloud-init`, 'user-data must start with "#cloud-config" or "#!".', 'Write it as a block: cloud-init: |\n  #cloud-config\n  …');
    }
    return { kind, userData, timeoutSeconds: timeout(v.timeout, `${path}.timeout`) };
  }
  onlyKeys(v, ['copy'], path);
  const c = v.copy;
  if (!isObject(c)) throw bad(`${path}.copy`, 'must be a mapping { src, dest, mode }.', 'For example: - copy: { src: ./index.html, dest: /srv/www/index.html, mode: "0644" }');
  onlyKeys(c, ['src', 'dest', 'mode'], `${path}.copy`);
  const mode = fileMode(c.mode, `${path}.copy.mode`);
  return { kind: 'copy', src: contextPath(c.src, `${path}.copy.src`), dest: guestPath(c.dest, `${path}.copy.dest`), ...(mode !== undefined ? { mode } : {}) };
}

/** Parses and validates a recipe's YAML text. Pure: files named by copy steps are checked later. */
export function parseRecipe(source: string): Recipe {
  if (source.length > 4 * MAX_TEXT) throw bad('(recipe)', 'is too long.', 'Keep recipes under 1 MiB; copy large files instead of inlining them.');
  const doc = parseDocument(source, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const where = e.linePos?.[0] ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '';
    throw vmkitError('VMKIT_RECIPE_INVALID', `The recipe is not valid YAML${where}: ${e.message.split('\n')[0]}`, {
      hint: 'Fix the YAML syntax (indentation, quoting) and try again.',
      details: { path: '(yaml)' },
    });
  }
  const v: unknown = doc.toJS({ maxAliasCount: 50 });
  if (!isObject(v)) throw bad('(recipe)', 'must be a mapping with name, base and steps.', 'See doc/images.md, "Building images", for an example.');
  onlyKeys(v, ['name', 'base', 'description', 'size', 'disk', 'steps'], '');
  if (v.name === undefined) throw bad('name', 'is missing.', 'Name the image to build: name: web');
  let name: string;
  try {
    name = validateName(v.name, 'image name');
  } catch (err) {
    throw bad('name', (err as Error).message, 'Use lowercase letters, digits and "-" (no version: the build picks the next one).');
  }
  let base: RecipeBase;
  if (v.base === undefined) throw bad('base', 'is missing.', 'Name a base image (base: appliance) or a Debian release (base: { debian: bookworm }).');
  if (typeof v.base === 'string') {
    if (!IMAGE_REF.test(v.base)) throw bad('base', `${JSON.stringify(v.base)} is not an image name or name:version.`, 'For example: base: appliance, or base: web:2');
    base = { image: v.base };
  } else if (isObject(v.base)) {
    onlyKeys(v.base, ['debian'], 'base');
    const rel = v.base.debian;
    if (typeof rel !== 'string' || !DEBIAN_RELEASES.includes(rel))
      throw bad('base.debian', `must be one of ${DEBIAN_RELEASES.join(', ')}.`, 'For example: base: { debian: bookworm }');
    base = { debian: rel };
  } else {
    throw bad('base', 'must be an image name or { debian: RELEASE }.', 'For example: base: appliance');
  }
  const recipe: Recipe = { name, base, steps: [] };
  if (v.description !== undefined) recipe.description = text(v.description, 'description', 'a description');
  if (v.size !== undefined) {
    if (!isObject(v.size)) throw bad('size', 'must be a mapping { cpus, memoryMiB }.', 'For example: size: { cpus: 1, memoryMiB: 256 }');
    onlyKeys(v.size, ['cpus', 'memoryMiB'], 'size');
    const { cpus, memoryMiB } = v.size;
    if (cpus !== undefined && (typeof cpus !== 'number' || !Number.isInteger(cpus) || cpus < 1 || cpus > 64))
      throw bad('size.cpus', 'must be a whole number from 1 to 64.', 'For example: cpus: 2');
    if (memoryMiB !== undefined && (typeof memoryMiB !== 'number' || !Number.isInteger(memoryMiB) || memoryMiB < 64 || memoryMiB > 1024 * 1024))
      throw bad('size.memoryMiB', 'must be a whole number of MiB from 64.', 'For example: memoryMiB: 512');
    recipe.size = { ...(cpus !== undefined ? { cpus: cpus as number } : {}), ...(memoryMiB !== undefined ? { memoryMiB: memoryMiB as number } : {}) };
  }
  if (v.disk !== undefined) recipe.diskBytes = diskSize(v.disk, 'disk');
  if (v.steps === undefined) v.steps = [];
  if (!Array.isArray(v.steps)) throw bad('steps', 'must be a list.', 'For example:\nsteps:\n  - run: echo hello');
  if (v.steps.length > MAX_STEPS) throw bad('steps', `has ${v.steps.length} steps; at most ${MAX_STEPS} are allowed.`, 'Join commands into fewer run steps.');
  recipe.steps = v.steps.map((s, i) => parseStep(s, i));
  return recipe;
}

/** The text a step shows in progress and logs ("run: echo hi", "copy ./a → /b"). */
export function describeStep(s: RecipeStep): string {
  const oneLine = (t: string) => {
    const first = t.trim().split('\n')[0]!;
    return first.length > 60 ? `${first.slice(0, 57)}…` : first + (t.trim().includes('\n') ? ' …' : '');
  };
  if (s.kind === 'copy') return `copy ${s.src} → ${s.dest}`;
  if (s.kind === 'run') return `run: ${oneLine(s.command)}`;
  return `cloud-init: ${oneLine(s.userData)}`;
}
