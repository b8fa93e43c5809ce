import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { VmkitError } from '../errors.js';

/**
 * The CLI's remotes (`vmkit remote add|list|remove`, `--remote NAME`): a JSON file in the
 * user's config folder (VMKIT_CONFIG_DIR, else $XDG_CONFIG_HOME/vmkit, else ~/.config/vmkit),
 * mode 0600 in a 0700 folder because it holds each remote's token, like ~/.kube/config.
 */
export interface RemoteEntry {
  url: string;
  /** SHA-256 of the HTTPS certificate pinned at `remote add` (absent for http:// on loopback). */
  fingerprint?: string;
  token?: string;
  addedAt: string;
}

interface RemotesFile {
  remotes: Record<string, RemoteEntry>;
}

export function configDir(): string {
  if (process.env.VMKIT_CONFIG_DIR) return process.env.VMKIT_CONFIG_DIR;
  const xdg = process.env.XDG_CONFIG_HOME || join(os.homedir(), '.config');
  return join(xdg, 'vmkit');
}

export function remotesFile(): string {
  return join(configDir(), 'remotes.json');
}

export function readRemotes(): Record<string, RemoteEntry> {
  let text: string;
  try {
    text = readFileSync(remotesFile(), 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return {};
    throw err;
  }
  try {
    return (JSON.parse(text) as RemotesFile).remotes ?? {};
  } catch {
    throw new VmkitError('VMKIT_INVALID_ARGUMENT', `${remotesFile()} is not valid JSON.`, { hint: 'Fix or remove it, then add the remotes again (vmkit remote add).' });
  }
}

export function writeRemotes(remotes: Record<string, RemoteEntry>): void {
  const file = remotesFile();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ remotes } satisfies RemotesFile, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

export function findRemote(name: string): RemoteEntry {
  const r = readRemotes()[name];
  if (!r) {
    throw new VmkitError('VMKIT_INVALID_ARGUMENT', `No remote named "${name}".`, {
      hint: 'Add it first: vmkit remote add NAME https://HOST:8443 --token-file FILE ("vmkit remote list" shows them), or give a URL.',
    });
  }
  return r;
}

/** Reads a token from a file (the client's --token-file / VMKIT_TOKEN_FILE). */
export function readTokenFile(file: string): string {
  try {
    const token = readFileSync(file, 'utf8').trim();
    if (!token) throw new Error('the file is empty');
    return token;
  } catch (err) {
    throw new VmkitError('VMKIT_INVALID_ARGUMENT', `Cannot read a token from ${file}: ${(err as Error).message}`, {
      hint: 'Give the file "vmkit token create" output was saved to (one line).',
    });
  }
}
