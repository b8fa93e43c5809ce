import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from './enum.js';
import { NIC_MODELS, diskRefFields } from './instance.js';

export const ImageBootSchema = Type.Object({
  kernel: Type.String(),
  initrd: Type.Optional(Type.String()),
  cmdline: Type.String(),
});
export type ImageBoot = Static<typeof ImageBootSchema>;

/** One line of an import/export fidelity report. */
export const FidelityEntrySchema = Type.Object({
  item: Type.String(),
  value: Type.Optional(Type.String()),
  status: StringEnum(['mapped', 'defaulted', 'dropped']),
  reason: Type.Optional(Type.String()),
});
export type FidelityEntry = Static<typeof FidelityEntrySchema>;

function ImageBuildSchema() {
  return Type.Object({
    base: Type.String(),
    recipe: Type.String({ description: 'file in the image folder holding the recipe' }),
    log: Type.String({ description: 'file in the image folder holding the build log' }),
    seconds: Type.Number(),
    steps: Type.Array(Type.Object({ index: Type.Integer(), step: Type.String(), key: Type.String(), cached: Type.Boolean(), seconds: Type.Number() })),
  });
}

const imageFields = {
  name: Type.String(),
  version: Type.String(),
  description: Type.String(),
  arch: StringEnum(['x86_64']),
  // Direct kernel boot files (relative to the image folder); absent = firmware boots the disk.
  boot: Type.Optional(ImageBootSchema),
  defaults: Type.Object({ cpus: Type.Integer(), memoryMiB: Type.Integer() }),
  // `none`: the guest only uses its serial console, so no display device is given.
  display: Type.Optional(StringEnum(['vga', 'none'])),
  nicModels: Type.Array(StringEnum(NIC_MODELS)),
  // Instances get a root disk of at least this many bytes (grown at creation).
  minDiskBytes: Type.Optional(Type.Integer()),
  // bios (SeaBIOS, the default) or uefi (OVMF): what instances made from it boot with.
  firmware: Type.Optional(StringEnum(['bios', 'uefi'])),
  disks: Type.Array(Type.Object({ ...diskRefFields, virtualSize: Type.Optional(Type.Integer()), actualSize: Type.Optional(Type.Integer()) })),
  source: StringEnum(['builtin', 'import', 'publish', 'pull', 'build']),
  createdAt: Type.String(),
  // `sha256:<hex>` of the first disk's file as stored (computed once, then kept).
  checksum: Type.Optional(Type.String()),
  // Where the image came from: an imported file, a published instance, a repository.
  origin: Type.Optional(Type.String()),
  // What an import mapped and dropped (see doc/images.md).
  fidelity: Type.Optional(Type.Array(FidelityEntrySchema)),
  // An image built from a recipe (vmkit image build): its base, the recipe and the build log
  // (files in the image folder) and each step with its timing.
  build: Type.Optional(ImageBuildSchema()),
};

/** An image as stored; the API answers with ImageView. */
export const ImageSchema = Type.Object(imageFields);
export type Image = Static<typeof ImageSchema>;

/** An image and what depends on it (instances created from it): GET /1.0/images[/{name}]. */
export const ImageViewSchema = Type.Object({ ...imageFields, users: Type.Object({ instances: Type.Array(Type.String()) }) });
export type ImageView = Static<typeof ImageViewSchema>;
