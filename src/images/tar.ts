import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { vmkitError } from '../errors.js';

/**
 * ustar archives (what an OVA is), read and written here: 512-byte headers parsed by hand
 * so every member can be checked before a byte of it is written. Only regular files with
 * plain names are accepted — no paths, `..`, links or devices.
 */
export interface TarMember {
  name: string;
  size: number;
  /** Offset of the member's data in the archive. */
  offset: number;
}

const BLOCK = 512;

function unsafe(message: string): never {
  throw vmkitError('VMKIT_IMAGE_UNSAFE', `OVA archive: ${message}`, {
    hint: 'An OVA holds plain files side by side (descriptor, manifest, disks); re-create it with a standard tool.',
  });
}

function cstr(b: Buffer, from: number, len: number): string {
  const s = b.subarray(from, from + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? s.length : nul).toString('utf8');
}

function parseNumber(b: Buffer, from: number, len: number): number {
  const f = b.subarray(from, from + len);
  if (f[0]! & 0x80) {
    // base-256 (GNU) for sizes of 8 GiB and more
    let n = 0n;
    for (let k = 1; k < f.length; k++) n = (n << 8n) | BigInt(f[k]!);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) unsafe('a member size is out of range');
    return Number(n);
  }
  const s = f
    .toString('latin1')
    .replace(/[\0 ]+$/g, '')
    .replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) unsafe(`a header has a malformed number "${s}"`);
  return parseInt(s, 8);
}

/** A member name vmkit accepts: one plain file name, no directories, no `..`, no control characters. */
export function assertSafeMemberName(name: string): void {
  if (name === '' || name.length > 255) unsafe('a member has an empty or too long name');
  if (name.startsWith('/')) unsafe(`member "${name}" has an absolute path`);
  if (name.split('/').includes('..')) unsafe(`member "${name}" points outside the archive ("..")`);
  if (name.includes('/') || name.includes('\\')) unsafe(`member "${name}" is in a folder; OVA members are plain files`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name) || name === '.') unsafe(`member "${name}" has a forbidden name`);
}

/** Lists the members of a tar file, refusing anything that is not a plain regular file. */
export async function listTar(path: string): Promise<TarMember[]> {
  const fh = await open(path, 'r');
  try {
    const { size: total } = await fh.stat();
    const members: TarMember[] = [];
    const seen = new Set<string>();
    const header = Buffer.alloc(BLOCK);
    let pos = 0;
    let paxName: string | undefined;
    let paxSize: number | undefined;
    for (;;) {
      if (pos + BLOCK > total) unsafe('truncated archive (no end marker)');
      await readFully(fh, header, pos);
      if (header.every((x) => x === 0)) break;
      const stored = parseNumber(header, 148, 8);
      let sum = 0;
      for (let k = 0; k < BLOCK; k++) sum += k >= 148 && k < 156 ? 32 : header[k]!;
      if (sum !== stored) unsafe(`bad header checksum at offset ${pos}`);
      const magic = header.toString('latin1', 257, 262);
      if (magic !== 'ustar') unsafe('not a ustar archive');
      const type = String.fromCharCode(header[156]!);
      const prefix = cstr(header, 345, 155);
      let name = prefix ? `${prefix}/${cstr(header, 0, 100)}` : cstr(header, 0, 100);
      let size = parseNumber(header, 124, 12);
      const dataAt = pos + BLOCK;
      if (type === 'x') {
        const rec = Buffer.alloc(Math.min(size, 65536));
        await readFully(fh, rec, dataAt);
        for (const m of rec.toString('utf8').matchAll(/\d+ (path|size)=([^\n]*)\n/g)) {
          if (m[1] === 'path') paxName = m[2];
          else paxSize = Number(m[2]);
        }
        pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
        continue;
      }
      if (type === 'g') {
        pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
        continue;
      }
      if (paxName !== undefined) name = paxName;
      if (paxSize !== undefined) size = paxSize;
      paxName = paxSize = undefined;
      if (type === '1') unsafe(`member "${name}" is a hard link`);
      if (type === '2') unsafe(`member "${name}" is a symbolic link`);
      if (type === '3' || type === '4' || type === '6') unsafe(`member "${name}" is a device or FIFO`);
      if (type === '5') unsafe(`member "${name}" is a directory`);
      if (type !== '0' && type !== '\0' && type !== '7') unsafe(`member "${name}" has unsupported type "${type}"`);
      assertSafeMemberName(name);
      if (seen.has(name)) unsafe(`member "${name}" appears twice`);
      seen.add(name);
      if (!Number.isSafeInteger(size) || size < 0 || dataAt + size > total) unsafe(`member "${name}" runs past the end of the archive`);
      members.push({ name, size, offset: dataAt });
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
    }
    return members;
  } finally {
    await fh.close();
  }
}

async function readFully(fh: FileHandle, buf: Buffer, at: number): Promise<void> {
  const { bytesRead } = await fh.read(buf, 0, buf.length, at);
  if (bytesRead !== buf.length) unsafe('truncated archive');
}

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

/** A ustar header for a regular file (base-256 size for 8 GiB and more). */
export function tarHeader(name: string, size: number, mtime = Math.floor(Date.now() / 1000)): Buffer {
  assertSafeMemberName(name);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar member name too long: ${name}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(0o644, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  if (size < 8 ** 11) h.write(octal(size, 12), 124, 'latin1');
  else {
    h[124] = 0x80;
    let v = BigInt(size);
    for (let k = 135; k > 124; k--) {
      h[k] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  h.write(octal(mtime, 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h[156] = '0'.charCodeAt(0);
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  let sum = 0;
  for (const x of h) sum += x;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

/** A member to archive: a file (optionally hashed as it is copied) or bytes produced after every file member is written. */
export interface TarInput {
  name: string;
  size: number;
  path?: string;
  /** Updated with the file's bytes while they are copied (one pass: no separate hashing read). */
  hash?: { update(b: Buffer): unknown };
  /** Content made once all `path` members are written (e.g. a manifest of their hashes); must be `size` bytes. */
  later?: () => Buffer;
}

/**
 * Writes the members (in order) as a tar archive to `dest`, reporting bytes copied; `later`
 * members get their space reserved and are filled in at the end. The caller removes `dest`
 * on failure.
 */
export async function writeTar(dest: string, files: TarInput[], onBytes?: (n: number) => void, signal?: AbortSignal): Promise<void> {
  const out = await open(dest, 'wx', 0o644);
  try {
    let pos = 0;
    const write = async (b: Buffer) => {
      await out.write(b, 0, b.length, pos);
      pos += b.length;
    };
    const deferred: Array<{ at: number; f: TarInput }> = [];
    for (const f of files) {
      await write(tarHeader(f.name, f.size));
      const pad = (BLOCK - (f.size % BLOCK)) % BLOCK;
      if (f.later) {
        deferred.push({ at: pos, f });
        pos += f.size + pad;
        continue;
      }
      let n = 0;
      for await (const chunk of createReadStream(f.path!, { highWaterMark: 1024 * 1024, signal })) {
        const b = chunk as Buffer;
        f.hash?.update(b);
        await write(b);
        n += b.length;
        onBytes?.(b.length);
      }
      if (n !== f.size) {
        throw vmkitError('VMKIT_STORAGE_FAILED', `${f.path} changed while it was archived.`, {
          hint: 'Nothing may write to the image while it is exported; run the export again.',
        });
      }
      if (pad) await write(Buffer.alloc(pad));
    }
    await write(Buffer.alloc(BLOCK * 2));
    for (const { at, f } of deferred) {
      const b = f.later!();
      if (b.length !== f.size) {
        throw vmkitError('VMKIT_INTERNAL', `tar member ${f.name}: ${b.length} bytes instead of ${f.size}.`, {
          hint: 'This is a bug in the OVA writer; the partial file was not kept.',
        });
      }
      await out.write(b, 0, b.length, at);
    }
  } finally {
    await out.close();
  }
}

/** Copies one member's bytes out of the archive into a new file (never overwriting). */
export async function extractMember(archive: string, m: TarMember, dest: string, onBytes?: (n: number) => void, signal?: AbortSignal): Promise<void> {
  const out = await open(dest, 'wx', 0o600);
  try {
    let pos = 0;
    if (m.size === 0) return;
    for await (const chunk of createReadStream(archive, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1024 * 1024, signal })) {
      const b = chunk as Buffer;
      await out.write(b, 0, b.length, pos);
      pos += b.length;
      onBytes?.(b.length);
    }
    if (pos !== m.size) unsafe(`member "${m.name}" is truncated`);
  } finally {
    await out.close();
  }
}
