import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { vmkitError } from '../errors.js';
import { validateName } from '../domain/names.js';
import type { Image, NicModel } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { run } from '../util/exec.js';
import type { ImageStore } from './image-store.js';
import { inspectUntrusted } from './safety.js';

/** The build recipe (bash: mmdebstrap, mkfs.ext4 -d, extlinux, qemu-img). */
export const DEBIAN_BUILD_SCRIPT = fileURLToPath(new URL('../../guest/debian/build.sh', import.meta.url));
export const DEBIAN_RELEASES = ['bookworm', 'trixie'] as const;

export interface BuildDebianRequest {
  name: string;
  release?: string;
}

/**
 * `vmkit image build-debian NAME`: a cloud-ready Debian image from the Debian mirror the
 * host's apt uses (no internet needed). The build goes to `<cacheDir>/debian-<release>` and
 * is kept there: the script skips the build when its inputs did not change, so a second
 * image (or a test) costs a copy, not 3–5 minutes.
 */
export async function buildDebianImage(images: ImageStore, req: BuildDebianRequest, cacheDir: string, ctx?: OperationContext): Promise<Image> {
  const name = validateName(req.name, 'image name');
  const release = req.release ?? 'bookworm';
  if (!(DEBIAN_RELEASES as readonly string[]).includes(release)) {
    throw vmkitError('VMKIT_INVALID_ARGUMENT', `Unknown Debian release "${release}".`, { hint: `Use one of ${DEBIAN_RELEASES.join(', ')}.` });
  }
  if (process.getuid?.() !== 0) {
    throw vmkitError('VMKIT_INVALID_STATE', 'Building a Debian image needs a daemon running as root (mmdebstrap, a loop mount for extlinux).', {
      hint: 'Run the build where the daemon is root, or import a cloud image: vmkit image import https://…qcow2 --sha256 …',
    });
  }
  const release_ = await images.reserve(name);
  try {
    const out = join(cacheDir, `debian-${release}`);
    ctx?.progress({ phase: `building Debian ${release} (mmdebstrap; 3–5 min unless cached)`, percent: 5 });
    await run(['bash', DEBIAN_BUILD_SCRIPT, out, release], {
      errorCode: 'VMKIT_STORAGE_FAILED',
      timeoutMs: 60 * 60_000,
      signal: ctx?.signal,
      hint: 'The build needs mmdebstrap, extlinux and a reachable Debian mirror (the one in /etc/apt/sources.list*); see the error above.',
    });
    ctx?.checkCancelled();
    ctx?.progress({ phase: 'inspecting', percent: 90 });
    const meta = JSON.parse(await readFile(join(out, 'image.json'), 'utf8')) as {
      version: string;
      description: string;
      defaults: { cpus: number; memoryMiB: number };
      nicModels: NicModel[];
      kernelPackage?: string;
    };
    const tmp = await images.tempDir(`build-${name}`);
    await copyFile(join(out, 'root.qcow2'), join(tmp, 'root.qcow2'));
    const inspected = await inspectUntrusted(join(tmp, 'root.qcow2'), 'qcow2');
    const image: Image = {
      name,
      version: meta.version,
      description: meta.description,
      arch: 'x86_64',
      defaults: meta.defaults,
      nicModels: meta.nicModels,
      display: 'none',
      firmware: 'bios',
      disks: [{ name: 'root', file: 'root.qcow2', format: 'qcow2', virtualSize: inspected.info.virtualSize }],
      source: 'builtin',
      origin: `debian ${release} (guest/debian/build.sh)`,
      createdAt: new Date().toISOString(),
    };
    return await images.commit(image, tmp);
  } finally {
    release_();
  }
}
