import type { Nic, NicModel, PortForward } from '../domain/types.js';
import { pflashArgs } from './firmware.js';

/**
 * The one place that knows QEMU's command line. Tuned like a careful toolstack (libvirt's
 * argv is the one to beat): nothing implicit (`-nodefaults -no-user-config`), every disk
 * format named with `-blockdev`, a seccomp sandbox, and every channel (QMP, serial, VNC) on a
 * unix socket in the instance's run folder so a restarted daemon can find it again.
 */
export interface QemuDisk {
  id: string;
  file: string;
  format: 'qcow2' | 'raw';
  readOnly?: boolean;
}

export interface QemuLaunchSpec {
  qemuBinary: string;
  name: string;
  instanceId: string;
  accel: 'kvm' | 'tcg';
  cpus: number;
  memoryMiB: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disks: readonly QemuDisk[];
  nics: readonly Nic[];
  forwards: readonly PortForward[];
  /** NIC id → tap interface (made by vmkit before QEMU starts) for NICs on vmkit networks. */
  taps?: Readonly<Record<string, string>>;
  runDir: string;
  /** Everything the guest prints on its serial port is appended here (survives restarts). */
  consoleLog: string;
  /** A VGA display for the graphical console (default true). */
  display?: boolean;
  /** Start with vCPUs stopped (`-S`): the daemon attaches QMP, then sends `cont`. */
  startPaused: boolean;
  /** A concrete machine type (default `pc`, QEMU's newest i440FX). */
  machine?: string;
  /**
   * TCG's translation cache in MiB (`-accel tcg,tb-size=`): QEMU 7.2 reserves 1 GiB by
   * default, which a guest's cgroup limit would have to allow for. Unset: QEMU's default.
   */
  tbSizeMiB?: number;
  /** UEFI (OVMF): the read-only firmware code and the instance's own variable store (raw files). */
  uefi?: { code: string; nvram: string };
  /** Appended as they are (e.g. `-incoming defer`). */
  extraArgs?: readonly string[];
}

/**
 * Under TCG every CPU feature is emulated: `max` (AVX-512 and all) makes the guest kernel
 * take slower paths and boots ~15% slower than `qemu64`. The x86-64-v2 baseline keeps that
 * speed and still runs distributions that require v2 (RHEL 9 and its kin), and a named,
 * fixed model is what live migration between hosts needs.
 */
export const TCG_CPU_MODEL = 'qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16';

/** The virtio-serial port name qemu-ga opens (/dev/virtio-ports/org.qemu.guest_agent.0). */
export const QGA_CHANNEL = 'org.qemu.guest_agent.0';

export const RUN_FILES = {
  qmp: 'qmp.sock',
  serial: 'serial.sock',
  /** The guest agent's channel (virtio-serial port org.qemu.guest_agent.0): src/qemu/qga.ts. */
  qga: 'qga.sock',
  vnc: 'vnc.sock',
  pid: 'qemu.pid',
  stderr: 'qemu.stderr',
} as const;

const NIC_DEVICE: Record<NicModel, string> = {
  'virtio-net': 'virtio-net-pci',
  e1000: 'e1000',
  rtl8139: 'rtl8139',
};

export function nicDevice(model: NicModel): string {
  return NIC_DEVICE[model];
}

/** `hostfwd=` value, also the argument of HMP `hostfwd_add`. */
export function hostfwdRule(f: PortForward): string {
  return `${f.proto}:${f.hostAddress}:${f.hostPort}-:${f.guestPort}`;
}

/** A tap made by vmkit (no helper scripts: QEMU only opens it). Also the QMP netdev_add form. */
export function tapNetdev(id: string, tap: string): string {
  return `tap,id=${id},ifname=${tap},script=no,downscript=no`;
}

function blockdevArgs(d: QemuDisk): string[] {
  const file = {
    driver: 'file',
    filename: d.file,
    'node-name': `${d.id}-file`,
    'read-only': d.readOnly ?? false,
    discard: 'unmap',
  };
  const fmt = {
    driver: d.format,
    file: `${d.id}-file`,
    'node-name': d.id,
    'read-only': d.readOnly ?? false,
    discard: 'unmap',
  };
  return ['-blockdev', JSON.stringify(file), '-blockdev', JSON.stringify(fmt)];
}

export function buildQemuArgv(spec: QemuLaunchSpec): string[] {
  const run = (f: keyof typeof RUN_FILES) => `${spec.runDir}/${RUN_FILES[f]}`;
  const pflash = spec.uefi ? pflashArgs(spec.uefi.code, spec.uefi.nvram) : undefined;
  const machine = `${spec.machine ?? 'pc'}${pflash?.machine ?? ''}`;
  const argv: string[] = [
    spec.qemuBinary,
    '-name',
    `guest=${spec.name},debug-threads=on`,
    '-nodefaults',
    '-no-user-config',
    // `-accel` and `-machine accel=` cannot be mixed: a bounded TCG cache takes `-accel`.
    ...(spec.accel === 'tcg' && spec.tbSizeMiB
      ? ['-machine', `${machine},usb=off,dump-guest-core=off`, '-accel', `tcg,tb-size=${spec.tbSizeMiB}`]
      : ['-machine', `${machine},accel=${spec.accel},usb=off,dump-guest-core=off`]),
    '-cpu',
    spec.accel === 'kvm' ? 'host' : TCG_CPU_MODEL,
    '-smp',
    String(spec.cpus),
    '-m',
    `${spec.memoryMiB}M`,
    '-sandbox',
    'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-display',
    'none',
    '-vga',
    'none',
    // A plain VGA adapter gives the graphical console (VNC, web console) a screen. Images
    // that only speak on the serial port (the appliance) go without: SeaBIOS's VGA option ROM
    // alone costs ~0.2 s of a TCG boot. VNC still answers (a blank screen).
    ...(spec.display === false ? [] : ['-device', 'VGA,id=video0']),
    '-vnc',
    `unix:${run('vnc')}`,
    '-chardev',
    `socket,id=qmp,path=${run('qmp')},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    '-chardev',
    `socket,id=serial0,path=${run('serial')},server=on,wait=off,logfile=${spec.consoleLog},logappend=on`,
    '-serial',
    'chardev:serial0',
    // The QEMU guest agent's channel: a virtio-serial port by the name qemu-ga looks for.
    // Every instance has it; whether an agent answers is the guest's affair (doc/guest-agent.md).
    '-chardev',
    `socket,id=qga0,path=${run('qga')},server=on,wait=off`,
    '-device',
    'virtio-serial-pci,id=vser0',
    '-device',
    `virtserialport,bus=vser0.0,chardev=qga0,name=${QGA_CHANNEL}`,
    '-pidfile',
    run('pid'),
    '-msg',
    'timestamp=on',
    // The instance id on the command line lets recovery tell our QEMU from a reused pid.
    '-uuid',
    instanceUuid(spec.instanceId),
  ];
  if (pflash) argv.push(...pflash.args);
  if (spec.kernel) argv.push('-kernel', spec.kernel);
  if (spec.initrd) argv.push('-initrd', spec.initrd);
  if (spec.kernel && spec.cmdline) argv.push('-append', spec.cmdline);
  spec.disks.forEach((d, i) => {
    argv.push(...blockdevArgs(d));
    // An I/O error (a full data folder above all) pauses the guest (QEMU's `io-error` run
    // state) instead of handing the error to it: nothing is lost, `resume` retries the request.
    argv.push('-device', `virtio-blk-pci,drive=${d.id},id=${d.id}-dev${i === 0 ? ',bootindex=1' : ''},werror=stop,rerror=stop`);
  });
  for (const nic of spec.nics) {
    if (nic.network === 'user') {
      const fwds = spec.forwards.filter((f) => f.nic === nic.id).map((f) => `,hostfwd=${hostfwdRule(f)}`);
      // No IPv6 on guest links (doc/network.md): slirp would give the guest a v6 path to the host.
      argv.push('-netdev', `user,id=${nic.id},ipv6=off${fwds.join('')}`);
    } else {
      const tap = spec.taps?.[nic.id];
      if (!tap) continue;
      argv.push('-netdev', tapNetdev(nic.id, tap));
    }
    argv.push('-device', `${nicDevice(nic.model)},netdev=${nic.id},mac=${nic.mac},id=${nic.id}-dev`);
  }
  // No -daemonize: the seccomp sandbox (spawn=deny) forbids its fork. The daemon starts
  // QEMU in its own session instead, so it outlives the daemon all the same.
  if (spec.startPaused) argv.push('-S');
  if (spec.extraArgs) argv.push(...spec.extraArgs);
  return argv;
}

/** A deterministic RFC 4122-shaped UUID derived from the instance id (hex). */
export function instanceUuid(id: string): string {
  const hex = (id + '0'.repeat(32)).slice(0, 32);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
