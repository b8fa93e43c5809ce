import type { Image } from '../domain/types.js';
import { validateName } from '../domain/names.js';
import { vmkitError } from '../errors.js';

/** A repository's wire format (index.json) and the checks every index from outside passes. */
export const INDEX_FORMAT = 'vmkit-repo-1';

export interface RepoFile {
  file: string;
  size: number;
  sha256: string;
}

export interface RepoImage extends Omit<Image, 'source' | 'fidelity' | 'origin' | 'checksum'> {
  files: RepoFile[];
}

export interface RepoIndex {
  format: string;
  images: RepoImage[];
}

export interface Remote {
  name: string;
  url: string;
  token?: string;
  /** Added with --allow-private: loopback, link-local and private addresses are accepted for it. */
  allowPrivate?: boolean;
}

export interface ServeStatus {
  serving: boolean;
  url?: string;
  writable?: boolean;
  /** Pulls (index and blobs) need the token too. */
  private?: boolean;
  /** The largest blob a push may upload (bytes). */
  maxBlobBytes?: number;
}

const SHA = /^[0-9a-f]{64}$/;
export const MAX_INDEX_BYTES = 16 * 1024 * 1024;

/** The cap on a remote repository's index (VMKIT_REPO_MAX_INDEX_MIB, default 16 MiB). */
export function maxIndexBytes(env: NodeJS.ProcessEnv = process.env): number {
  const mib = Number(env.VMKIT_REPO_MAX_INDEX_MIB ?? '');
  return Number.isFinite(mib) && mib > 0 ? Math.floor(mib * 1024 * 1024) : MAX_INDEX_BYTES;
}

export function repoError(message: string, hint = 'Check the repository URL ("vmkit repo list") and that it is a vmkit repository.'): never {
  throw vmkitError('VMKIT_REPO_FAILED', message, { hint });
}

/** Files of an image in the order a repository lists them (disks, then boot files). */
export function imageFiles(image: Image): string[] {
  const files = image.disks.map((d) => d.file);
  if (image.boot?.kernel) files.push(image.boot.kernel);
  if (image.boot?.initrd) files.push(image.boot.initrd);
  return files;
}

function plainFileName(f: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(f) && !f.includes('..');
}

/** Checks an index entry from a remote before anything is downloaded. */
export function validateRepoImage(x: RepoImage): void {
  validateName(x.name, 'image name');
  const files = new Set(x.files.map((f) => f.file));
  for (const f of x.files) {
    if (!plainFileName(f.file)) repoError(`The index names a file "${f.file}" vmkit does not accept.`);
    if (!SHA.test(f.sha256)) repoError(`The index gives no valid sha256 for ${f.file}.`);
    if (!Number.isSafeInteger(f.size) || f.size < 0) repoError(`The index gives no valid size for ${f.file}.`);
  }
  if (!Array.isArray(x.disks) || x.disks.length === 0) repoError(`Image ${x.name} has no disk in the index.`);
  for (const d of x.disks) if (d.format !== 'qcow2' || !files.has(d.file)) repoError(`Image ${x.name}: disk ${d.file} must be a listed qcow2 file.`);
  for (const f of [x.boot?.kernel, x.boot?.initrd]) if (f && !files.has(f)) repoError(`Image ${x.name}: boot file ${f} is not listed.`);
}
