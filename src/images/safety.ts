import { open, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { vmkitError } from '../errors.js';
import { FOREIGN_FORMATS, untrustedInfo, type ForeignFormat, type ForeignInfo } from '../storage/qemu-img.js';

/**
 * Untrusted image files. The format is decided from what the user declared (--format, or
 * the file extension) and must agree with the file's magic bytes; QEMU never probes. Before
 * qemu-img even opens a file its header is read here to refuse anything that names another
 * file (qcow2 backing/data files, VMDK descriptors with extents, VMDK deltas); qemu-img info
 * then runs under resource limits and its answer is checked again.
 */

export const DEFAULT_MAX_IMAGE_GIB = 1024;

export function maxImageBytes(env: NodeJS.ProcessEnv = process.env): number {
  const gib = Number(env.VMKIT_MAX_IMAGE_GIB ?? DEFAULT_MAX_IMAGE_GIB);
  return (Number.isFinite(gib) && gib > 0 ? gib : DEFAULT_MAX_IMAGE_GIB) * 1024 ** 3;
}

const EXTENSIONS: Record<string, ForeignFormat> = {
  '.qcow2': 'qcow2',
  '.qcow': 'qcow2',
  '.raw': 'raw',
  '.img': 'raw',
  '.vmdk': 'vmdk',
  '.vdi': 'vdi',
  '.vhdx': 'vhdx',
};

export function formatFromExtension(path: string): ForeignFormat | undefined {
  return EXTENSIONS[extname(path).toLowerCase()];
}

export type Magic = ForeignFormat | 'vmdk-descriptor' | 'qed' | 'vpc' | 'unknown';

/** What the first bytes of a file say it is (`unknown` = no known header, i.e. raw data). */
export function detectMagic(head: Buffer): Magic {
  const ascii = (from: number, to: number) => head.subarray(from, to).toString('latin1');
  if (head.length >= 4 && head.readUInt32BE(0) === 0x514649fb) return 'qcow2';
  if (ascii(0, 4) === 'KDMV') return 'vmdk';
  if (ascii(0, 4) === 'COWD') return 'vmdk';
  if (/^#\s*Disk DescriptorFile/.test(ascii(0, 64))) return 'vmdk-descriptor';
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return 'vdi';
  if (ascii(0, 8) === 'vhdxfile') return 'vhdx';
  if (ascii(0, 4) === 'QED\0') return 'qed';
  if (ascii(0, 8) === 'conectix') return 'vpc';
  return 'unknown';
}

function unsafe(message: string, hint = 'Only self-contained images are accepted; convert it to a standalone qcow2 or raw file first.'): never {
  throw vmkitError('VMKIT_IMAGE_UNSAFE', message, { hint });
}

/**
 * The format to read a file as. `declared` is what the user said (--format); otherwise the
 * extension decides. Either way the magic bytes must agree — except that a file the user
 * explicitly declared raw is read as raw bytes whatever they look like (that is safe: QEMU
 * is told "raw" and never interprets a header in it).
 */
export function decideFormat(path: string, head: Buffer, declared?: string): ForeignFormat {
  if (declared !== undefined && !FOREIGN_FORMATS.includes(declared as ForeignFormat)) {
    throw vmkitError('VMKIT_IMAGE_FORMAT', `Unknown image format "${declared}".`, { hint: `Use one of ${FOREIGN_FORMATS.join(', ')}.` });
  }
  const fmt = (declared as ForeignFormat | undefined) ?? formatFromExtension(path);
  if (!fmt) {
    throw vmkitError('VMKIT_IMAGE_FORMAT', `Cannot tell the format of ${path} from its name.`, {
      hint: `Name it .qcow2, .raw/.img, .vmdk, .vdi, .vhdx or .ova, or pass --format (${FOREIGN_FORMATS.join(', ')}).`,
    });
  }
  const magic = detectMagic(head);
  if (magic === 'vmdk-descriptor') {
    unsafe(
      `${path} is a VMDK descriptor: its extents are other files, which vmkit does not open.`,
      'Convert it to a monolithicSparse or streamOptimized VMDK (or qcow2) on the machine it comes from.',
    );
  }
  if (fmt === 'raw') {
    if (magic !== 'unknown' && declared !== 'raw') {
      throw vmkitError('VMKIT_IMAGE_FORMAT', `${path} is named as a raw image but starts with a ${magic} header.`, {
        hint: `If it really is ${magic}, rename it or pass --format ${magic}; pass --format raw to import its bytes as they are.`,
      });
    }
    return 'raw';
  }
  if (magic !== fmt) {
    throw vmkitError('VMKIT_IMAGE_FORMAT', `${path} should be ${fmt} but ${magic === 'unknown' ? 'has no known image header' : `starts with a ${magic} header`}.`, {
      hint: 'Pass the right --format, or check that the file is complete.',
    });
  }
  return fmt;
}

/** Header checks done without qemu-img (cheap, and before QEMU opens anything). */
export function checkHeader(fmt: ForeignFormat, head: Buffer, readAt: (offset: number, length: number) => Promise<Buffer>): Promise<void> {
  switch (fmt) {
    case 'qcow2':
      return checkQcow2(head);
    case 'vmdk':
      return checkVmdk(head, readAt);
    case 'vdi':
      return checkVdi(head);
    default:
      return Promise.resolve();
  }
}

async function checkQcow2(head: Buffer): Promise<void> {
  if (head.length < 72) unsafe('The qcow2 header is truncated.');
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw vmkitError('VMKIT_IMAGE_FORMAT', `qcow2 version ${version} is not supported.`, { hint: 'Use qcow2 version 2 or 3.' });
  if (head.readBigUInt64BE(8) !== 0n || head.readUInt32BE(16) !== 0) {
    unsafe('The qcow2 image has a backing file: it would read another file.', 'Flatten it first: qemu-img convert -O qcow2 in.qcow2 out.qcow2 (on a machine you trust).');
  }
  if (version === 3 && head.length >= 80) {
    const incompatible = head.readBigUInt64BE(72);
    if (incompatible & 4n) unsafe('The qcow2 image has an external data file: it would read another file.');
  }
}

/** Parses a VMDK text descriptor: createType, parent, and extent lines. */
export function parseVmdkDescriptor(text: string): { createType?: string; parentCID?: string; parentHint?: string; extents: Array<{ kind: string; file: string }> } {
  const out: { createType?: string; parentCID?: string; parentHint?: string; extents: Array<{ kind: string; file: string }> } = { extents: [] };
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\0.*$/, '').trim();
    let m = /^createType\s*=\s*"([^"]*)"/.exec(line);
    if (m) out.createType = m[1];
    m = /^parentCID\s*=\s*(\S+)/.exec(line);
    if (m) out.parentCID = m[1]!.toLowerCase();
    m = /^parentFileNameHint\s*=\s*"([^"]*)"/.exec(line);
    if (m) out.parentHint = m[1];
    m = /^(RW|RDONLY|NOACCESS)\s+\d+\s+(\S+)(?:\s+"([^"]*)")?/.exec(line);
    if (m) out.extents.push({ kind: m[2]!, file: m[3] ?? '' });
  }
  return out;
}

async function checkVmdk(head: Buffer, readAt: (offset: number, length: number) => Promise<Buffer>): Promise<void> {
  if (head.toString('latin1', 0, 4) === 'COWD') unsafe('ESX COWD (delta) VMDKs refer to a parent disk and are not accepted.');
  if (head.length < 44) unsafe('The VMDK header is truncated.');
  const descOffset = Number(head.readBigUInt64LE(28)) * 512;
  const descSize = Number(head.readBigUInt64LE(36)) * 512;
  if (descOffset === 0 || descSize === 0 || descSize > 1024 * 1024) unsafe('The VMDK has no embedded descriptor (only monolithicSparse and streamOptimized VMDKs are accepted).');
  const d = parseVmdkDescriptor((await readAt(descOffset, descSize)).toString('latin1'));
  if (d.createType !== 'monolithicSparse' && d.createType !== 'streamOptimized') {
    unsafe(`VMDK subtype "${d.createType ?? 'none'}" is not accepted (only monolithicSparse and streamOptimized).`);
  }
  if ((d.parentCID && d.parentCID !== 'ffffffff') || d.parentHint) unsafe('The VMDK is a delta disk of a parent file.');
  if (d.extents.length !== 1 || d.extents[0]!.kind !== 'SPARSE')
    unsafe(`The VMDK descriptor lists ${d.extents.length} extent(s) (${d.extents.map((e) => `${e.kind} "${e.file}"`).join(', ')}); only one embedded sparse extent is accepted.`);
}

async function checkVdi(head: Buffer): Promise<void> {
  if (head.length < 0x50) unsafe('The VDI header is truncated.');
  const type = head.readUInt32LE(0x4c);
  // 1 = dynamic, 2 = static; 3 = undo, 4 = differencing (refer to a parent).
  if (type !== 1 && type !== 2) unsafe(`VDI image type ${type} (undo/differencing) refers to a parent image.`);
}

/** The checks done on qemu-img's own answer (under limits), against the same rules. */
export function checkInfo(file: string, fmt: ForeignFormat, info: ForeignInfo, maxBytes = maxImageBytes()): void {
  if (info.format !== fmt) unsafe(`qemu-img reads ${file} as ${info.format}, not ${fmt}.`);
  if (info.backingFile) unsafe(`The image has a backing file (${info.backingFile}).`);
  if (info.dataFile) unsafe(`The image has an external data file (${info.dataFile}).`);
  if (fmt === 'vmdk') {
    if (info.vmdkCreateType && info.vmdkCreateType !== 'monolithicSparse' && info.vmdkCreateType !== 'streamOptimized') {
      unsafe(`VMDK subtype "${info.vmdkCreateType}" is not accepted.`);
    }
    const others = info.extents.filter((e) => e !== file);
    if (others.length > 0) unsafe(`The VMDK has extents in other files: ${others.join(', ')}.`);
  }
  if (!Number.isSafeInteger(info.virtualSize) || info.virtualSize <= 0) throw vmkitError('VMKIT_IMAGE_FORMAT', `The image reports an invalid virtual size (${info.virtualSize}).`);
  if (info.virtualSize > maxBytes) {
    throw vmkitError('VMKIT_IMAGE_TOO_LARGE', `The image claims ${(info.virtualSize / 1024 ** 3).toFixed(1)} GiB, above the ${maxBytes / 1024 ** 3} GiB quota.`, {
      hint: 'Raise VMKIT_MAX_IMAGE_GIB for the daemon if this size is genuine.',
    });
  }
}

export interface InspectedFile {
  path: string;
  format: ForeignFormat;
  info: ForeignInfo;
  size: number;
}

/** Everything vmkit checks before it converts an untrusted file: format, header, qemu-img info. */
export async function inspectUntrusted(path: string, declared?: string): Promise<InspectedFile> {
  // A path that cannot be stat'ed is reported as missing right below.
  const st = await stat(path).catch(() => undefined);
  if (!st)
    throw vmkitError('VMKIT_FILE_NOT_FOUND', `${path} does not exist on the daemon's host.`, {
      hint: 'Give a path on the machine the daemon runs on (the CLI sends absolute paths).',
    });
  if (!st.isFile()) throw vmkitError('VMKIT_FILE_NOT_FOUND', `${path} is not a regular file.`, { hint: 'Import a disk image or OVA file.' });
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const h = head.subarray(0, bytesRead);
    const fmt = decideFormat(path, h, declared);
    await checkHeader(fmt, h, async (offset, length) => {
      const b = Buffer.alloc(length);
      const r = await fh.read(b, 0, length, offset);
      return b.subarray(0, r.bytesRead);
    });
    const info = await untrustedInfo(path, fmt);
    checkInfo(path, fmt, info);
    return { path, format: fmt, info, size: st.size };
  } finally {
    await fh.close();
  }
}
