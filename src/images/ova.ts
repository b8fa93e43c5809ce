import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { FidelityEntry, Image, NicModel } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { convertVolume, type ForeignFormat } from '../storage/qemu-img.js';
import type { ImageStore } from './image-store.js';
import { convertInto, defaultImageName, type ImportRequest, type ImportResult } from './import.js';
import { buildOvf, nicModelFromSubtype, parseOvf } from './ovf.js';
import { inspectUntrusted, formatFromExtension } from './safety.js';
import { extractMember, listTar, writeTar } from './tar.js';

/**
 * OVA = a tar of an OVF descriptor, an optional manifest (.mf) and the files it references.
 * Direct-kernel boot files travel as extra files referenced from a vmkit-specific OVF
 * section (`vmkit:BootSection`, ovf:required="false"): vmkit restores them on import, other
 * tools ignore them (and boot the disk with BIOS). See doc/images.md.
 */

export async function hashFile(path: string, algo: 'sha1' | 'sha256', signal?: AbortSignal): Promise<string> {
  const h = createHash(algo);
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Parses a manifest: `SHA256(file)= hex` / `SHA1(file)= hex` lines. */
export function parseManifest(text: string): Array<{ algo: 'sha1' | 'sha256'; file: string; digest: string }> {
  const out: Array<{ algo: 'sha1' | 'sha256'; file: string; digest: string }> = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    const m = /^\s*(SHA1|SHA256)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$/.exec(line);
    if (!m) throw vmkitError('VMKIT_OVF_INVALID', `Manifest line not understood: ${line.slice(0, 120)}`, { hint: 'Manifest lines look like "SHA256(disk1.vmdk)= <hex>".' });
    out.push({ algo: m[1] === 'SHA1' ? 'sha1' : 'sha256', file: m[2]!, digest: m[3]!.toLowerCase() });
  }
  return out;
}

function diskFormatOf(uri: string, href: string): ForeignFormat | undefined {
  if (/vmdk/i.test(uri)) return 'vmdk';
  if (/qcow/i.test(uri)) return 'qcow2';
  if (/vhdx/i.test(uri)) return 'vhdx';
  if (/vdi|virtualbox/i.test(uri)) return 'vdi';
  return formatFromExtension(href);
}

export async function importOva(images: ImageStore, req: ImportRequest, ctx?: OperationContext): Promise<ImportResult> {
  const name = validateName(req.name ?? defaultImageName(req.source), 'image name');
  const release = await images.reserve(name);
  try {
    return await importOvaAs(images, name, req, ctx);
  } finally {
    release();
  }
}

async function importOvaAs(images: ImageStore, name: string, req: ImportRequest, ctx?: OperationContext): Promise<ImportResult> {
  ctx?.progress({ phase: 'reading the archive', percent: 0 });
  // A path that cannot be stat'ed is reported as "not a file" right below.
  const st = await stat(req.source).catch(() => undefined);
  if (!st?.isFile()) throw vmkitError('VMKIT_FILE_NOT_FOUND', `${req.source} is not a file on the daemon's host.`, { hint: 'Give the path of an .ova file.' });
  const members = await listTar(req.source);
  const ovfs = members.filter((m) => extname(m.name).toLowerCase() === '.ovf');
  if (ovfs.length !== 1) throw vmkitError('VMKIT_OVF_INVALID', `The OVA holds ${ovfs.length} .ovf descriptors (exactly one is needed).`, { hint: 'Is it really an OVA?' });
  if (ovfs[0]!.size > 4 * 1024 * 1024) throw vmkitError('VMKIT_OVF_INVALID', 'The OVF descriptor is larger than 4 MiB.', { hint: 'Is it really an OVA?' });
  const work = await images.tempDir(`ova-${name}`);
  const tmp = await images.tempDir(`import-${name}`);
  try {
    const total = members.reduce((s, m) => s + m.size, 0);
    let done = 0;
    for (const m of members) {
      ctx?.checkCancelled();
      await extractMember(
        req.source,
        m,
        join(work, m.name),
        (n) => {
          done += n;
          ctx?.progress({ phase: 'unpacking', percent: Math.round((done / Math.max(1, total)) * 30), bytesDone: done, bytesTotal: total });
        },
        ctx?.signal,
      );
    }
    const ovfText = await readFile(join(work, ovfs[0]!.name), 'utf8');
    const ovf = parseOvf(ovfText);
    const fidelity: FidelityEntry[] = [];
    const inArchive = new Set(members.map((m) => m.name));

    const mf = members.find((m) => extname(m.name).toLowerCase() === '.mf');
    if (mf) {
      ctx?.progress({ phase: 'verifying the manifest', percent: 30 });
      for (const entry of parseManifest(await readFile(join(work, mf.name), 'utf8'))) {
        if (!inArchive.has(entry.file))
          throw vmkitError('VMKIT_OVF_INVALID', `The manifest names "${entry.file}", which is not in the archive.`, { hint: 'The OVA is incomplete.' });
        const actual = await hashFile(join(work, entry.file), entry.algo, ctx?.signal);
        if (actual !== entry.digest) {
          throw vmkitError('VMKIT_CHECKSUM_MISMATCH', `${entry.file} does not match its ${entry.algo.toUpperCase()} in the manifest.`, {
            hint: 'The OVA is corrupt or was altered; download it again.',
          });
        }
      }
      fidelity.push({ item: 'manifest', value: mf.name, status: 'mapped', reason: 'every listed checksum verified' });
    } else {
      fidelity.push({ item: 'manifest', status: 'dropped', reason: 'the OVA has no .mf: file integrity not verified' });
    }
    if (members.some((m) => extname(m.name).toLowerCase() === '.cert')) fidelity.push({ item: 'certificate', status: 'dropped', reason: 'signatures are not verified by vmkit' });

    const fileOf = (ref: string, what: string): string => {
      const f = ovf.files.find((x) => x.id === ref);
      if (!f) throw vmkitError('VMKIT_OVF_INVALID', `${what} refers to file id "${ref}", which <References> does not list.`, { hint: 'The OVF descriptor is inconsistent.' });
      if (!inArchive.has(f.href))
        throw vmkitError('VMKIT_OVF_INVALID', `${what} refers to "${f.href}", which is not in the archive.`, {
          hint: 'The OVA is incomplete (or references files outside it, which vmkit refuses).',
        });
      return join(work, f.href);
    };

    if (ovf.disks.length === 0) throw vmkitError('VMKIT_OVF_INVALID', 'The OVF describes no disk.', { hint: 'vmkit imports virtual machines with at least one disk.' });
    const inspected = [];
    for (const [i, d] of ovf.disks.entries()) {
      const path = fileOf(d.fileRef, `Disk ${d.diskId}`);
      const fmt = diskFormatOf(d.format, path);
      if (!fmt) throw vmkitError('VMKIT_IMAGE_FORMAT', `Disk ${d.diskId} has an unknown format (${d.format}).`, { hint: 'vmkit reads vmdk, qcow2, vdi, vhdx and raw disks.' });
      inspected.push({ file: await inspectUntrusted(path, fmt), target: i === 0 ? 'root.qcow2' : `disk${i}.qcow2`, disk: d });
    }
    const bytesTotal = inspected.reduce((s, x) => s + x.file.info.virtualSize, 0);
    let converted = 0;
    const disks: Image['disks'] = [];
    for (const [i, x] of inspected.entries()) {
      await convertInto(x.file, join(tmp, x.target), ctx, { done: converted, total: bytesTotal, phase: `converting disk ${i + 1}/${inspected.length}` });
      converted += x.file.info.virtualSize;
      disks.push({ name: i === 0 ? 'root' : `disk${i}`, file: x.target, format: 'qcow2', virtualSize: x.file.info.virtualSize });
      fidelity.push({
        item: `disk ${x.disk.diskId}`,
        value: `${basename(x.file.path)} (${x.file.format}, ${x.file.info.virtualSize} bytes) → ${x.target}`,
        status: 'mapped',
        reason: i === 0 ? 'attached with virtio' : 'stored in the image; instances attach only the root disk',
      });
    }

    const cpus = ovf.cpus && ovf.cpus >= 1 && ovf.cpus <= 256 ? ovf.cpus : undefined;
    fidelity.push(
      cpus ? { item: 'vCPUs', value: String(cpus), status: 'mapped' } : { item: 'vCPUs', value: '1', status: 'defaulted', reason: 'the OVF gives no usable CPU count' },
    );
    const memoryMiB = ovf.memoryMiB && ovf.memoryMiB >= 32 ? ovf.memoryMiB : undefined;
    fidelity.push(
      memoryMiB
        ? { item: 'memory', value: `${memoryMiB} MiB`, status: 'mapped' }
        : { item: 'memory', value: '512 MiB', status: 'defaulted', reason: 'the OVF gives no usable memory size' },
    );
    const nicModels: NicModel[] = [];
    ovf.nics.forEach((n, i) => {
      const model = nicModelFromSubtype(n.subtype);
      if (model) {
        nicModels.push(model);
        fidelity.push({ item: `nic${i}`, value: `${n.subtype} → ${model}`, status: 'mapped', reason: `network "${n.network || 'none'}" becomes user-mode NAT` });
      } else {
        nicModels.push('e1000');
        fidelity.push({
          item: `nic${i}`,
          value: `${n.subtype || 'unspecified'} → e1000`,
          status: 'defaulted',
          reason: `QEMU has no ${n.subtype || 'such'} model; e1000 has a driver in nearly every guest`,
        });
      }
    });
    if (ovf.nics.length === 0) fidelity.push({ item: 'NICs', status: 'dropped', reason: 'the OVF has none; instances get one virtio-net NIC' });
    if (ovf.firmware === 'efi') fidelity.push({ item: 'firmware', value: 'EFI → uefi (OVMF; each instance gets its own NVRAM)', status: 'mapped' });

    let boot: Image['boot'];
    if (ovf.boot) {
      await rename(fileOf(ovf.boot.kernelRef, 'The vmkit boot section'), join(tmp, 'vmlinuz'));
      if (ovf.boot.initrdRef) await rename(fileOf(ovf.boot.initrdRef, 'The vmkit boot section'), join(tmp, 'initrd.img'));
      boot = { kernel: 'vmlinuz', initrd: ovf.boot.initrdRef ? 'initrd.img' : undefined, cmdline: ovf.boot.cmdline };
      fidelity.push({ item: 'firmware', value: 'direct kernel boot (kernel + initrd from the vmkit OVF section)', status: 'mapped' });
    } else if (ovf.firmware === 'bios') {
      fidelity.push({ item: 'firmware', value: 'BIOS (SeaBIOS), boots the disk', status: 'mapped' });
    }
    for (const other of ovf.otherItems) fidelity.push({ item: other, status: 'dropped', reason: 'vmkit does not model this device' });

    const image: Image = {
      name,
      version: new Date().toISOString().slice(0, 10).replace(/-/g, ''),
      description: req.description ?? ovf.description ?? `Imported from ${basename(req.source)}`,
      arch: 'x86_64',
      boot,
      defaults: { cpus: cpus ?? 1, memoryMiB: memoryMiB ?? 512 },
      nicModels,
      ...(ovf.firmware === 'efi' ? { firmware: 'uefi' as const } : {}),
      disks,
      source: 'import',
      origin: req.source,
      fidelity,
      createdAt: new Date().toISOString(),
    };
    ctx?.progress({ phase: 'registering', percent: 99, bytesDone: bytesTotal, bytesTotal });
    await images.commit(image, tmp);
    return { image, fidelity };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface ExportRequest {
  /** Absolute destination path on the daemon's host. */
  path: string;
  format?: string;
}

export interface ExportResult {
  path: string;
  format: string;
  size: number;
  fidelity: FidelityEntry[];
}

export const EXPORT_FORMATS = ['ova', 'qcow2', 'vmdk', 'vdi', 'vhdx', 'raw'] as const;

/** `vmkit image export NAME DEST`: an OVA (OVF 1.0 + stream-optimized VMDK) or one disk file. */
export async function exportImage(images: ImageStore, name: string, req: ExportRequest, ctx?: OperationContext): Promise<ExportResult> {
  const image = await images.get(name);
  const ext = extname(req.path).toLowerCase();
  const format = req.format ?? (ext === '.ova' ? 'ova' : formatFromExtension(req.path));
  if (!format || !(EXPORT_FORMATS as readonly string[]).includes(format)) {
    throw vmkitError('VMKIT_IMAGE_FORMAT', `Cannot tell which format to export ${req.path} as.`, {
      hint: `Name it .ova, .qcow2, .vmdk, .vdi, .vhdx or .raw, or pass --disk-format (${EXPORT_FORMATS.join(', ')}).`,
    });
  }
  if (
    await stat(req.path).then(
      () => true,
      () => false,
    )
  ) {
    throw vmkitError('VMKIT_ALREADY_EXISTS', `${req.path} already exists.`, { hint: 'Choose another destination or remove the file first.' });
  }
  const dir = dirname(req.path);
  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  ) {
    throw vmkitError('VMKIT_FILE_NOT_FOUND', `The folder ${dir} does not exist on the daemon's host.`, { hint: 'Create it first.' });
  }
  const tag = randomBytes(4).toString('hex');
  const partial = join(dir, `.${basename(req.path)}.partial-${tag}`);
  const work = join(dir, `.${basename(req.path)}.work-${tag}`);
  const root = image.disks[0]!;
  const fidelity: FidelityEntry[] = [];
  try {
    if (format !== 'ova') {
      ctx?.progress({ phase: `converting to ${format}`, percent: 0, bytesTotal: root.virtualSize });
      await convertVolume(images.file(image, root.file), root.format, partial, format as ForeignFormat, {
        signal: ctx?.signal,
        onProgress: (f) =>
          ctx?.progress({
            phase: `converting to ${format}`,
            percent: Math.min(99, Math.round(f * 100)),
            bytesDone: Math.round(f * (root.virtualSize ?? 0)),
            bytesTotal: root.virtualSize,
          }),
      });
      fidelity.push({ item: 'disk root', value: `qcow2 → ${format}`, status: 'mapped' });
      for (const d of image.disks.slice(1))
        fidelity.push({ item: `disk ${d.name}`, status: 'dropped', reason: 'a disk-file export holds the root disk only; use .ova for all disks' });
      fidelity.push({ item: 'vCPUs, memory, NICs, boot', status: 'dropped', reason: 'a bare disk file carries no VM settings; use .ova to keep them' });
    } else {
      await mkdir(work);
      // A built image's version (web:2) becomes part of the member names (web-2.ovf).
      const stem = validateName(image.name.replace(/:([0-9]+)$/, '-$1'), 'image name');
      const files: Array<{ name: string; path: string; size: number }> = [];
      const disks: Array<{ href: string; size: number; capacity: number }> = [];
      const totalVirtual = image.disks.reduce((s, d) => s + (d.virtualSize ?? 0), 0);
      let done = 0;
      for (const [i, d] of image.disks.entries()) {
        const href = `${stem}-disk${i + 1}.vmdk`;
        const out = join(work, href);
        await convertVolume(images.file(image, d.file), d.format, out, 'vmdk', {
          options: ['subformat=streamOptimized'],
          signal: ctx?.signal,
          onProgress: (f) => {
            const bytesDone = done + Math.round(f * (d.virtualSize ?? 0));
            ctx?.progress({
              phase: `writing disk ${i + 1} (stream-optimized VMDK)`,
              percent: Math.round((bytesDone / Math.max(1, totalVirtual)) * 70),
              bytesDone,
              bytesTotal: totalVirtual,
            });
          },
        });
        done += d.virtualSize ?? 0;
        const size = (await stat(out)).size;
        files.push({ name: href, path: out, size });
        disks.push({ href, size, capacity: d.virtualSize ?? 0 });
        fidelity.push({ item: `disk ${d.name}`, value: `qcow2 → ${href} (VMDK streamOptimized, IDE in the OVF; vmkit uses virtio)`, status: 'mapped' });
      }
      let boot: Parameters<typeof buildOvf>[0]['boot'];
      if (image.boot) {
        const k = images.file(image, image.boot.kernel);
        const kernel = { href: `${stem}-vmlinuz`, size: (await stat(k)).size };
        files.push({ name: kernel.href, path: k, size: kernel.size });
        let initrd: { href: string; size: number } | undefined;
        if (image.boot.initrd) {
          const p = images.file(image, image.boot.initrd);
          initrd = { href: `${stem}-initrd.img`, size: (await stat(p)).size };
          files.push({ name: initrd.href, path: p, size: initrd.size });
        }
        boot = { kernel, initrd, cmdline: image.boot.cmdline };
        fidelity.push({
          item: 'firmware',
          value: 'direct kernel boot: kernel + initrd stored in the OVA (vmkit:BootSection, ovf:required="false")',
          status: 'mapped',
          reason: 'VirtualBox/VMware ignore the section and boot the disk with BIOS, which needs a boot loader on the disk',
        });
      } else if (image.firmware !== 'uefi') {
        fidelity.push({ item: 'firmware', value: 'BIOS', status: 'mapped' });
      }
      if (image.firmware === 'uefi') {
        fidelity.push({
          item: 'firmware',
          value: 'UEFI → vmw:Config firmware=efi',
          status: 'mapped',
          reason: "the NVRAM stays with the instances (an image has none): an importer starts from an empty variable store and boots the disk's removable-media path",
        });
      }
      fidelity.push({ item: 'vCPUs', value: String(image.defaults.cpus), status: 'mapped' });
      fidelity.push({ item: 'memory', value: `${image.defaults.memoryMiB} MiB`, status: 'mapped' });
      const nics = image.nicModels.length > 0 ? image.nicModels : (['virtio-net'] as NicModel[]);
      nics.forEach((m, i) =>
        fidelity.push({
          item: `nic${i}`,
          value: `${m} → ResourceSubType ${m === 'e1000' ? 'E1000' : m === 'rtl8139' ? 'RTL8139' : 'virtio-net'} on network "NAT"`,
          status: 'mapped',
          reason: m === 'e1000' ? undefined : 'VirtualBox reads virtio-net; VMware substitutes its default adapter',
        }),
      );
      const ovfName = `${stem}.ovf`;
      const ovfPath = join(work, ovfName);
      await writeFile(
        ovfPath,
        buildOvf({
          name: image.name,
          description: image.description,
          cpus: image.defaults.cpus,
          memoryMiB: image.defaults.memoryMiB,
          disks,
          nics,
          boot,
          firmware: image.firmware === 'uefi' ? 'efi' : undefined,
        }),
      );
      const ovfFile = { name: ovfName, path: ovfPath, size: (await stat(ovfPath)).size };
      // One pass over each file: hashed while it is copied into the archive; the manifest
      // (fixed size: one SHA256 line per file) is written into its reserved slot at the end.
      const hashed = [ovfFile, ...files].map((f) => ({ ...f, hash: createHash('sha256') }));
      const mfLine = (name: string, hex: string) => `SHA256(${name})= ${hex}\n`;
      const mfSize = hashed.reduce((s, f) => s + Buffer.byteLength(mfLine(f.name, '0'.repeat(64))), 0);
      const manifest = () => Buffer.from(hashed.map((f) => mfLine(f.name, f.hash.digest('hex'))).join(''));
      const all = [hashed[0]!, { name: `${stem}.mf`, size: mfSize, later: manifest }, ...hashed.slice(1)];
      const tarTotal = all.reduce((s, f) => s + f.size, 0);
      let written = 0;
      await writeTar(
        partial,
        all,
        (n) => {
          written += n;
          ctx?.progress({ phase: 'writing the OVA', percent: 70 + Math.round((written / Math.max(1, tarTotal)) * 29), bytesDone: written, bytesTotal: tarTotal });
        },
        ctx?.signal,
      );
    }
    ctx?.checkCancelled();
    await rename(partial, req.path);
    return { path: req.path, format, size: (await stat(req.path)).size, fidelity };
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
