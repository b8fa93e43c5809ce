import { vmkitError } from '../errors.js';
import type { NicModel } from '../domain/types.js';
import { attr, escapeXml, kid, kids, parseXml, textOf, type XmlElement } from './xml.js';

/**
 * OVF 1.0 descriptors: what vmkit writes into an OVA and what it reads back. The model is
 * the part of OVF vmkit can honour; everything else is reported as dropped.
 */
export interface OvfFile {
  id: string;
  href: string;
  size?: number;
}

export interface OvfDisk {
  diskId: string;
  fileRef: string;
  capacity: number;
  /** The ovf:format URI. */
  format: string;
}

export interface OvfNic {
  /** rasd:ResourceSubType as written (E1000, PCNet32, VmxNet3, virtio-net …). */
  subtype: string;
  network: string;
}

export interface OvfBoot {
  kernelRef: string;
  initrdRef?: string;
  cmdline: string;
}

export interface OvfDescriptor {
  name: string;
  description?: string;
  cpus?: number;
  memoryMiB?: number;
  files: OvfFile[];
  disks: OvfDisk[];
  nics: OvfNic[];
  firmware: 'bios' | 'efi';
  boot?: OvfBoot;
  /** Hardware items vmkit does not model (sound, USB, floppy, serial …). */
  otherItems: string[];
}

export const VMDK_STREAM_FORMAT = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';
export const VMKIT_NS = 'https://github.com/vmkit/vmkit/ovf/1';

/** NIC model ↔ OVF ResourceSubType (VMware and VirtualBox names). */
const SUBTYPE_OF: Record<NicModel, string> = { 'virtio-net': 'virtio-net', e1000: 'E1000', rtl8139: 'RTL8139' };

export function nicModelFromSubtype(subtype: string): NicModel | undefined {
  const s = subtype.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (s === 'virtionet' || s === 'virtio') return 'virtio-net';
  if (s === 'e1000' || s === 'e1000e') return 'e1000';
  if (s === 'rtl8139') return 'rtl8139';
  return undefined;
}

function num(s: string | undefined): number | undefined {
  if (s === undefined || !/^\s*\d+\s*$/.test(s)) return undefined;
  return Number(s);
}

/** rasd:AllocationUnits such as `byte * 2^20`, `MegaBytes`, `GigaBytes` → bytes per unit. */
export function allocationUnits(units: string | undefined, fallback: number): number {
  if (!units) return fallback;
  const u = units.replace(/\s+/g, '').toLowerCase();
  const m = /^byte\*2\^(\d+)$/.exec(u);
  if (m) return 2 ** Number(m[1]);
  if (u === 'byte' || u === 'bytes') return 1;
  if (u === 'kilobytes' || u === 'kb') return 1024;
  if (u === 'megabytes' || u === 'mb') return 1024 ** 2;
  if (u === 'gigabytes' || u === 'gb') return 1024 ** 3;
  return fallback;
}

function invalid(message: string): never {
  throw vmkitError('VMKIT_OVF_INVALID', message, { hint: 'The OVF descriptor does not describe a virtual machine vmkit can read.' });
}

export function parseOvf(xml: string): OvfDescriptor {
  const env = parseXml(xml);
  if (env.local !== 'Envelope') invalid('The OVF root element is not <Envelope>.');
  const files = kids(kid(env, 'References'), 'File').map((f) => ({ id: attr(f, 'id') ?? '', href: attr(f, 'href') ?? '', size: num(attr(f, 'size')) }));
  const diskSection = kid(env, 'DiskSection');
  const disks = kids(diskSection, 'Disk').map((d) => {
    const unit = allocationUnits(attr(d, 'capacityAllocationUnits'), 1);
    return { diskId: attr(d, 'diskId') ?? '', fileRef: attr(d, 'fileRef') ?? '', capacity: (num(attr(d, 'capacity')) ?? 0) * unit, format: attr(d, 'format') ?? '' };
  });
  const vs: XmlElement | undefined = kid(env, 'VirtualSystem') ?? kid(kid(env, 'VirtualSystemCollection'), 'VirtualSystem');
  if (!vs) invalid('The OVF has no <VirtualSystem>.');
  const hw = kid(vs, 'VirtualHardwareSection');
  const out: OvfDescriptor = {
    name: textOf(kid(vs, 'Name')) || attr(vs, 'id') || 'imported',
    description: textOf(kid(kid(vs, 'AnnotationSection'), 'Annotation')) || undefined,
    files,
    disks,
    nics: [],
    firmware: 'bios',
    otherItems: [],
  };
  for (const item of [...kids(hw, 'Item'), ...kids(hw, 'EthernetPortItem'), ...kids(hw, 'StorageItem')]) {
    const field = (n: string) => textOf(kid(item, n));
    const type = num(field('ResourceType'));
    const qty = num(field('VirtualQuantity'));
    switch (type) {
      case 3:
        out.cpus = qty;
        break;
      case 4:
        if (qty !== undefined) out.memoryMiB = Math.round((qty * allocationUnits(field('AllocationUnits'), 1024 ** 2)) / 1024 ** 2);
        break;
      case 10:
        out.nics.push({ subtype: field('ResourceSubType'), network: field('Connection') });
        break;
      case 5:
      case 6:
      case 20:
      case 17:
      case 15:
      case 16:
        break; // controllers and disks/CD-ROMs: vmkit attaches disks with virtio
      default:
        out.otherItems.push(field('ElementName') || `ResourceType ${type ?? '?'}`);
    }
  }
  // Firmware: VMware's vmw:Config firmware=efi, VirtualBox's <vbox:Machine> BIOS settings.
  for (const c of kids(hw, 'Config')) if (attr(c, 'key') === 'firmware' && /efi/i.test(attr(c, 'value') ?? '')) out.firmware = 'efi';
  if (/<Firmware[^>]*type="EFI/i.test(xml)) out.firmware = 'efi';
  const boot = kid(vs, 'BootSection');
  if (boot && boot.name.startsWith('vmkit:')) {
    const kernelRef = attr(kid(boot, 'Kernel'), 'fileRef');
    if (kernelRef) out.boot = { kernelRef, initrdRef: attr(kid(boot, 'Initrd'), 'fileRef'), cmdline: textOf(kid(boot, 'Cmdline')) };
  }
  return out;
}

export interface OvfBuild {
  name: string;
  description: string;
  cpus: number;
  memoryMiB: number;
  disks: Array<{ href: string; size: number; capacity: number }>;
  nics: NicModel[];
  boot?: { kernel: { href: string; size: number }; initrd?: { href: string; size: number }; cmdline: string };
  /** efi: VMware's `vmw:Config firmware=efi` (what parseOvf and VMware read); absent: BIOS. */
  firmware?: 'bios' | 'efi';
}

/** An OVF 1.0 envelope VirtualBox and VMware import: IDE-attached stream-optimized VMDKs, E1000/virtio NICs on "NAT". */
export function buildOvf(b: OvfBuild): string {
  const e = escapeXml;
  const refs: string[] = [];
  const diskEls: string[] = [];
  b.disks.forEach((d, i) => {
    refs.push(`    <File ovf:id="file${i + 1}" ovf:href="${e(d.href)}" ovf:size="${d.size}"/>`);
    diskEls.push(
      `    <Disk ovf:capacity="${d.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:format="${VMDK_STREAM_FORMAT}"/>`,
    );
  });
  if (b.boot) {
    refs.push(`    <File ovf:id="kernel" ovf:href="${e(b.boot.kernel.href)}" ovf:size="${b.boot.kernel.size}"/>`);
    if (b.boot.initrd) refs.push(`    <File ovf:id="initrd" ovf:href="${e(b.boot.initrd.href)}" ovf:size="${b.boot.initrd.size}"/>`);
  }
  let id = 1;
  const item = (fields: Record<string, string | number>) =>
    `      <Item>\n${Object.entries(fields)
      .sort(([a], [c]) => a.localeCompare(c))
      .map(([k, v]) => `        <rasd:${k}>${e(String(v))}</rasd:${k}>`)
      .join('\n')}\n      </Item>`;
  const items: string[] = [];
  items.push(
    item({
      AllocationUnits: 'hertz * 10^6',
      Description: 'Number of virtual CPUs',
      ElementName: `${b.cpus} virtual CPU(s)`,
      InstanceID: id++,
      ResourceType: 3,
      VirtualQuantity: b.cpus,
    }),
  );
  items.push(
    item({
      AllocationUnits: 'byte * 2^20',
      Description: 'Memory Size',
      ElementName: `${b.memoryMiB}MB of memory`,
      InstanceID: id++,
      ResourceType: 4,
      VirtualQuantity: b.memoryMiB,
    }),
  );
  const ide = id++;
  items.push(item({ Address: 0, Description: 'IDE Controller', ElementName: 'ideController0', InstanceID: ide, ResourceSubType: 'PIIX4', ResourceType: 5 }));
  b.disks.forEach((_d, i) => {
    items.push(item({ AddressOnParent: i, ElementName: `disk${i + 1}`, HostResource: `ovf:/disk/vmdisk${i + 1}`, InstanceID: id++, Parent: ide, ResourceType: 17 }));
  });
  b.nics.forEach((m, i) => {
    items.push(
      item({
        AddressOnParent: i + 2,
        AutomaticAllocation: 'true',
        Connection: 'NAT',
        ElementName: `Ethernet adapter ${i + 1}`,
        InstanceID: id++,
        ResourceSubType: SUBTYPE_OF[m],
        ResourceType: 10,
      }),
    );
  });
  const boot = b.boot
    ? `
    <vmkit:BootSection ovf:required="false">
      <Info>vmkit direct kernel boot (other tools ignore this section and boot the disk with BIOS)</Info>
      <vmkit:Kernel ovf:fileRef="kernel"/>${b.boot.initrd ? '\n      <vmkit:Initrd ovf:fileRef="initrd"/>' : ''}
      <vmkit:Cmdline>${e(b.boot.cmdline)}</vmkit:Cmdline>
    </vmkit:BootSection>`
    : '';
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vmkit="${VMKIT_NS}"${b.firmware === 'efi' ? ' xmlns:vmw="http://www.vmware.com/schema/ovf"' : ''}>
  <References>
${refs.join('\n')}
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
${diskEls.join('\n')}
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${e(b.name)}">
    <Info>A virtual machine</Info>
    <Name>${e(b.name)}</Name>
    <AnnotationSection>
      <Info>A human-readable annotation</Info>
      <Annotation>${e(b.description)}</Annotation>
    </AnnotationSection>
    <OperatingSystemSection ovf:id="101">
      <Info>The kind of installed guest operating system</Info>
      <Description>Linux 64-Bit</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${e(b.name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>
      </System>
${items.join('\n')}
${b.firmware === 'efi' ? '      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>\n' : ''}    </VirtualHardwareSection>${boot}
  </VirtualSystem>
</Envelope>
`;
}
