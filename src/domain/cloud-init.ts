import { vmkitError } from '../errors.js';
import type { CloudInitConfig } from './types.js';

/** Limits of what goes on the NoCloud drive. */
export const MAX_USER_DATA_BYTES = 512 * 1024;
export const MAX_SSH_KEYS = 64;
const MAX_KEY_BYTES = 16 * 1024;
const META_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
const RESERVED_META = ['instance-id', 'local-hostname', 'public-keys'];
// An OpenSSH public key line: optional options are not allowed here, just TYPE BASE64 [COMMENT].
const KEY_LINE = /^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?$/;

export interface CloudInitRequest {
  sshKeys?: unknown;
  userData?: unknown;
  meta?: unknown;
}

/** Checks the cloud-init parts of a create request; undefined when none was given. */
export function validateCloudInit(req: CloudInitRequest): CloudInitConfig | undefined {
  const out: CloudInitConfig = {};
  if (req.sshKeys !== undefined) {
    if (!Array.isArray(req.sshKeys) || req.sshKeys.length > MAX_SSH_KEYS) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `sshKeys must be a list of at most ${MAX_SSH_KEYS} public keys.`, { hint: 'Pass public keys, one per --ssh-key.' });
    }
    const keys = req.sshKeys.map((k) => (typeof k === 'string' ? k.trim() : ''));
    keys.forEach((k, i) => {
      if (k.length > MAX_KEY_BYTES || !KEY_LINE.test(k)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `SSH key ${i + 1} is not an OpenSSH public key line ("ssh-ed25519 AAAA… comment").`, {
          hint: 'Give the .pub file (or its content), never the private key.',
        });
      }
    });
    if (keys.length > 0) out.sshKeys = [...new Set(keys)];
  }
  if (req.userData !== undefined) {
    if (typeof req.userData !== 'string' || req.userData.length === 0) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'userData must be a non-empty string.', { hint: 'Give a #cloud-config document or a script (#!…).' });
    }
    if (Buffer.byteLength(req.userData) > MAX_USER_DATA_BYTES) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `userData is larger than ${MAX_USER_DATA_BYTES / 1024} KiB.`, {
        hint: 'Keep user-data small; fetch big files from inside the guest.',
      });
    }
    if (req.userData.includes('\0')) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'userData contains a NUL byte: it must be text.', { hint: 'Give a #cloud-config document or a script (#!…).' });
    }
    const first = req.userData.split('\n', 1)[0]!.trim();
    if (!/^(#cloud-config|#!|#include|#cloud-boothook|#part-handler|#cloud-config-archive|#cloud-config-jsonp|Content-Type:|MIME-Version:)/i.test(first)) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', `userData starts with ${JSON.stringify(first.slice(0, 40))}, which cloud-init ignores.`, {
        hint: 'Start it with "#cloud-config" (YAML) or "#!" (a script run once per instance).',
      });
    }
    out.userData = req.userData;
  }
  if (req.meta !== undefined) {
    if (typeof req.meta !== 'object' || req.meta === null || Array.isArray(req.meta)) {
      throw vmkitError('VMKIT_INVALID_ARGUMENT', 'meta must be an object of string values.', { hint: 'Use --meta KEY=VALUE.' });
    }
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.meta as Record<string, unknown>)) {
      if (!META_KEY.test(k) || RESERVED_META.includes(k)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `"${k}" cannot be a meta-data key.`, {
          hint: `Use lower-case letters, digits, "-" and "_"; ${RESERVED_META.join(', ')} are set by vmkit.`,
        });
      }
      if (typeof v !== 'string' || v.length > 4096 || /[\0\n\r]/.test(v)) {
        throw vmkitError('VMKIT_INVALID_ARGUMENT', `meta-data "${k}" must be one line of text (at most 4096 characters).`, { hint: 'Use --meta KEY=VALUE.' });
      }
      meta[k] = v;
    }
    if (Object.keys(meta).length > 0) out.meta = meta;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Parses a size: bytes, or a number with K/M/G/T (binary, optional "iB"/"B"). */
export function parseSize(text: string | number, what: string): number {
  if (typeof text === 'number' && Number.isSafeInteger(text) && text > 0) return text;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$/i.exec(String(text));
  const n = m ? Math.round(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase())) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `${what} "${text}" is not a size.`, { hint: 'Write it like 20G, 512M or 4294967296 (bytes).' });
  }
  return n;
}
