import { accessSync } from 'node:fs';
import { access, constants, stat } from 'node:fs/promises';
import { detectCgroups } from './cgroups.js';
import { findQemuBinary, probeAccelerator } from '../qemu/accel.js';
import { run } from '../util/exec.js';

/** `vmkit doctor`: what this host has, and how to fix what it lacks. */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  /** A failed required check means VMs cannot run. */
  required: boolean;
  detail: string;
  hint?: string;
}

export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
  /** Store rows moved aside at start-up because they could not be used (see the `store` check). */
  quarantined?: QuarantineEntry[];
}

function findOnPath(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    if (!dir) continue;
    try {
      accessSync(`${dir}/${cmd}`, constants.X_OK);
      return `${dir}/${cmd}`;
    } catch {
      /* not here */
    }
  }
  return null;
}

const TOOLS: Array<{ cmd: string; pkg: string; required: boolean; why: string }> = [
  { cmd: 'qemu-img', pkg: 'qemu-utils', required: true, why: 'creates and inspects disk volumes' },
  { cmd: 'mkfs.vfat', pkg: 'dosfstools', required: true, why: 'makes config drives' },
  { cmd: 'mcopy', pkg: 'mtools', required: true, why: 'fills config drives' },
  { cmd: 'setpriv', pkg: 'util-linux', required: true, why: "drops each guest's QEMU to its own uid with no capabilities" },
  { cmd: 'ip', pkg: 'iproute2', required: false, why: 'bridges and taps for virtual networks' },
  { cmd: 'nft', pkg: 'nftables', required: false, why: 'NAT, isolation and kernel port forwards' },
  { cmd: 'dnsmasq', pkg: 'dnsmasq-base', required: false, why: 'DHCP and DNS on virtual networks' },
];

export async function runDoctor(dataDir: string): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const qemu = findQemuBinary();
  checks.push(
    qemu
      ? { name: 'qemu', ok: true, required: true, detail: qemu }
      : {
          name: 'qemu',
          ok: false,
          required: true,
          detail: 'qemu-system-x86_64 is not on PATH',
          hint: 'Install it: apt-get install qemu-system-x86 (or add its folder to PATH).',
        },
  );
  if (qemu) {
    try {
      const probe = await probeAccelerator({ qemuBinary: qemu });
      checks.push({
        name: 'accelerator',
        ok: true,
        required: true,
        detail: probe.accel === 'kvm' ? 'KVM is usable' : `TCG software emulation (KVM not usable: ${probe.kvm.reason ?? 'unknown'})`,
        hint: probe.accel === 'tcg' ? 'VMs run, but slower. For KVM: enable virtualization in the firmware or nested virtualization, and load kvm_intel/kvm_amd.' : undefined,
      });
    } catch (err) {
      checks.push({ name: 'accelerator', ok: false, required: true, detail: (err as Error).message });
    }
  }
  for (const t of TOOLS) {
    const path = findOnPath(t.cmd);
    checks.push({
      name: t.cmd,
      ok: !!path,
      required: t.required,
      detail: path ? `${path} (${t.why})` : `not found (${t.why})`,
      hint: path ? undefined : `Install it: apt-get install ${t.pkg}`,
    });
  }
  if (findOnPath('nft')) checks.push(await guardCheck());
  try {
    await access(dataDir, constants.W_OK);
    checks.push({ name: 'data folder', ok: true, required: true, detail: `${dataDir} is writable` });
  } catch {
    checks.push({ name: 'data folder', ok: false, required: true, detail: `${dataDir} is not writable`, hint: 'Run as root or choose another folder with VMKIT_DIR / --dir.' });
  }
  const cg = detectCgroups();
  checks.push(
    cg
      ? { name: 'cgroups', ok: true, required: true, detail: cg.version === 2 ? `v2 at ${cg.root} (memory, cpu)` : `v1: ${cg.memory}, ${cg.cpu}` }
      : {
          name: 'cgroups',
          ok: false,
          required: true,
          detail: 'no memory and cpu cgroup controllers found',
          hint: "Every guest's QEMU runs in a cgroup of its own: mount cgroup v2 at /sys/fs/cgroup (Debian 12's default) or the v1 memory and cpu hierarchies.",
        },
  );
  const tun = await stat('/dev/net/tun').catch(() => undefined);
  const tunOk = !!tun && (tun.mode & 0o006) === 0o006;
  checks.push({
    name: '/dev/net/tun',
    ok: tunOk,
    required: false,
    detail: tun ? `mode ${(tun.mode & 0o777).toString(8)} (guests' QEMUs open it to attach to their taps)` : 'missing (the tun module is not loaded)',
    hint: tunOk ? undefined : 'chmod 0666 /dev/net/tun (Debian\'s udev default), or "modprobe tun".',
  });
  return { ok: checks.every((c) => c.ok || !c.required), checks };
}

/** A store row moved aside at start-up (src/store/sqlite.ts), as the doctor reports it. */
export interface QuarantineEntry {
  id: number;
  kind: string;
  key: string;
  reason: string;
  quarantinedAt: string;
}

/**
 * The `store` check: rows the daemon could not use and moved to the quarantine table at a
 * start-up. Advice only (the daemon runs without them), listed one by one.
 */
export function quarantineCheck(rows: readonly QuarantineEntry[], dbFile: string): DoctorCheck {
  if (rows.length === 0) return { name: 'store', ok: true, required: false, detail: 'no quarantined rows' };
  const list = rows.map((r) => `#${r.id} ${r.kind}/${r.key} (${r.reason}, ${r.quarantinedAt})`).join('; ');
  return {
    name: 'store',
    ok: false,
    required: false,
    detail: `${rows.length} damaged row${rows.length > 1 ? 's' : ''} quarantined at start-up: ${list}`,
    hint:
      `The daemon runs without them; what they described is not listed. Read one with: sqlite3 ${dbFile} "SELECT value FROM quarantine WHERE id = N"; ` +
      `once dealt with (repaired and put back into objects, or the instance's files removed), drop it with "DELETE FROM quarantine WHERE id = N" while the daemon is stopped.`,
  };
}

/**
 * The guard on guest QEMU sockets (doc/network.md, "Guests and the host"): the daemon applies
 * it at start; without it a guest with a user-mode NIC reaches the host's services.
 */
async function guardCheck(): Promise<DoctorCheck> {
  const r = await run(['nft', 'list', 'table', 'inet', 'vmkit-guard'], { allowFailure: true, errorCode: 'VMKIT_NETWORK_FAILED', timeoutMs: 10_000 }).catch(() => undefined);
  const ok = r?.code === 0 && /meta skuid/.test(r.stdout);
  return {
    name: 'guest guard',
    ok,
    required: false,
    detail: ok ? 'nft table inet vmkit-guard: guests reach no host service but DNS and what is allowed' : 'nft table inet vmkit-guard is missing',
    hint: ok ? undefined : 'Restart the daemon as root (it applies the table at start); see doc/network.md.',
  };
}
