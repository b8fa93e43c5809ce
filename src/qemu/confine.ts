/**
 * How a QEMU process is confined, as a prefix to its argv (the argv itself stays
 * qemu/argv.ts's): a tiny shell that writes its own pid into the instance's cgroup(s), so
 * the process is accounted and limited before QEMU allocates a byte, then execs util-linux
 * `setpriv`, which drops to the guest's uid/gid with no supplementary groups (or only the
 * `kvm` group for /dev/kvm), no capabilities in any set and no_new_privs, and execs QEMU.
 * Every step is an exec, so the pid the daemon spawned is QEMU's own pid (the pid file and
 * /proc/PID/cmdline still show QEMU and its -uuid), like libvirt's fork-setuid-exec.
 */
export interface Confinement {
  uid: number;
  gid: number;
  /** Supplementary groups QEMU keeps: the `kvm` group when it opens /dev/kvm, else none. */
  groups: readonly number[];
  /** cgroup.procs files the process enters, in order (empty: no cgroup). */
  cgroupProcs: readonly string[];
}

/** The shell's program: enter each cgroup named by the first $1 arguments, then exec the rest. */
export const ENTER_CGROUPS_SCRIPT = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"';

export function confinementPrefix(c: Confinement): string[] {
  if (!Number.isInteger(c.uid) || c.uid <= 0 || !Number.isInteger(c.gid) || c.gid <= 0) throw new Error(`refusing to confine QEMU to uid ${c.uid} gid ${c.gid}`);
  return [
    '/bin/sh',
    '-c',
    ENTER_CGROUPS_SCRIPT,
    'vmkit-enter-cgroup',
    String(c.cgroupProcs.length),
    ...c.cgroupProcs,
    'setpriv',
    `--reuid=${c.uid}`,
    `--regid=${c.gid}`,
    ...(c.groups.length > 0 ? [`--groups=${c.groups.join(',')}`] : ['--clear-groups']),
    '--inh-caps=-all',
    '--ambient-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
  ];
}
