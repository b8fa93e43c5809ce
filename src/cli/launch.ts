import { readFileSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { VmkitError } from '../errors.js';
import { mutate, positiveInt } from './common.js';
import { parseForwardSpec, type ForwardSpec } from './forward.js';
import { parseNicSpec, type NicSpec } from './nic.js';

interface LaunchOptions {
  type?: string;
  cpus?: number;
  memory?: number;
  forward: ForwardSpec[];
  nic?: NicSpec[];
  allowPrivileged?: boolean;
  count?: number;
  target?: string;
  storage?: string;
  floating?: boolean;
  sshKey?: string[];
  cloudInit?: string;
  meta?: Record<string, string>;
  disk?: number;
  firmware?: 'bios' | 'uefi';
  wait: boolean;
}

/** The POST /1.0/instances body for launch/create; only flags the user gave are sent. */
export function createBody(image: string, name: string, opts: LaunchOptions, start: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { name, image, start };
  if (opts.type) body.type = opts.type;
  if (opts.cpus !== undefined) body.cpus = opts.cpus;
  if (opts.memory !== undefined) body.memoryMiB = opts.memory;
  if (opts.nic && opts.nic.length > 0) body.nics = opts.nic;
  if (opts.forward.length > 0) body.forwards = opts.floating ? opts.forward.map((f) => ({ ...f, floating: true })) : opts.forward;
  if (opts.allowPrivileged) body.allowPrivileged = true;
  if (opts.target) body.target = opts.target;
  if (opts.storage) body.storage = opts.storage;
  const keys = opts.sshKey ?? defaultSshKeys();
  if (keys.length > 0) body.sshKeys = keys;
  if (opts.cloudInit !== undefined) body.userData = readText(opts.cloudInit, '--cloud-init');
  if (opts.meta && Object.keys(opts.meta).length > 0) body.meta = opts.meta;
  if (opts.disk !== undefined) body.diskBytes = opts.disk;
  if (opts.firmware) body.firmware = opts.firmware;
  return body;
}

/** `--ssh-key FILE|KEY`: a public key line as is, else the file it names (one or more key lines). */
export function sshKeysFrom(value: string): string[] {
  const v = value.trim();
  if (/^(ssh-|ecdsa-|sk-)\S+ \S+/.test(v)) return [v];
  const text = readText(value, '--ssh-key');
  if (/PRIVATE KEY/.test(text)) {
    throw new VmkitError('VMKIT_INVALID_ARGUMENT', `${value} is a private key.`, { hint: `Give the public key: ${value}.pub` });
  }
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** Like Multipass: the caller's ~/.ssh/id_*.pub when no --ssh-key is given (none: no keys). */
export function defaultSshKeys(home = process.env.HOME || homedir()): string[] {
  const dir = join(home, '.ssh');
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => /^id_[a-z0-9_-]+\.pub$/.test(n));
  } catch {
    return []; // no ~/.ssh: no default key
  }
  return names.sort().flatMap((n) => {
    try {
      return sshKeysFrom(join(dir, n));
    } catch {
      return []; // an unreadable default key is skipped, not an error
    }
  });
}

function readText(file: string, flag: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new VmkitError('VMKIT_FILE_NOT_FOUND', `${flag} ${file}: ${(err as Error).message}`, { hint: 'Give a readable file on this machine.' });
  }
}

function parseMeta(value: string, prev: Record<string, string> | undefined): Record<string, string> {
  const i = value.indexOf('=');
  if (i <= 0) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `--meta ${value} is not KEY=VALUE.`, { hint: 'Example: --meta environment=staging' });
  return { ...(prev ?? {}), [value.slice(0, i)]: value.slice(i + 1) };
}

/** `--disk 20G`: a size with K/M/G/T (binary) or bytes. */
export function parseDiskSize(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(value);
  const n = m ? Math.round(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase())) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new VmkitError('VMKIT_INVALID_ARGUMENT', `"${value}" is not a size.`, { hint: 'Write it like 20G, 512M or 4294967296 (bytes).' });
  return n;
}

/** `--firmware bios|uefi` (`efi`, as OVF and VMware spell it, is uefi). */
export function parseFirmwareFlag(value: string): 'bios' | 'uefi' {
  const v = value.trim().toLowerCase();
  if (v === 'bios' || v === 'seabios') return 'bios';
  if (v === 'uefi' || v === 'efi' || v === 'ovmf') return 'uefi';
  throw new VmkitError('VMKIT_INVALID_ARGUMENT', `Unknown firmware "${value}".`, { hint: 'Use --firmware bios (SeaBIOS) or --firmware uefi (OVMF).' });
}

/** `--count N`: NAME-1 … NAME-N. */
export function replicaNames(name: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${name}-${i + 1}`);
}

function build(verb: 'launch' | 'create'): Command {
  const start = verb === 'launch';
  const cmd = new Command(verb)
    .description(start ? 'Create an instance from an image and start it' : 'Create an instance from an image without starting it')
    .argument('<image>', 'image name (see "vmkit image list")')
    .argument('<name>', 'instance name: a-z, 0-9 and "-"')
    .option('-t, --type <type>', 'instance type (see "vmkit types")')
    .option('-c, --cpus <n>', 'virtual CPUs (overrides the type)', positiveInt('--cpus'))
    .option('-m, --memory <MiB>', 'memory in MiB (overrides the type)', positiveInt('--memory'))
    .option(
      '-p, --forward <spec>',
      'forward [ADDRESS:]HOSTPORT:GUESTPORT[/udp]; repeatable',
      (value: string, prev: ForwardSpec[]) => [...prev, parseForwardSpec(value)],
      [] as ForwardSpec[],
    )
    .option('-n, --nic <spec>', 'NIC on a network: NETWORK[:MODEL][,ip=ADDRESS]; repeatable (default: one user-mode NIC)', (value: string, prev: NicSpec[] | undefined) => [
      ...(prev ?? []),
      parseNicSpec(value),
    ])
    .option(
      '--ssh-key <file|key>',
      "public key for the image's default user (cloud-init); repeatable (default: ~/.ssh/id_*.pub when present)",
      (value: string, prev: string[] | undefined) => [...(prev ?? []), ...sshKeysFrom(value)],
    )
    .option('--cloud-init <file>', 'cloud-init user-data: a #cloud-config file or a script (#!)')
    .option('--meta <key=value>', 'extra NoCloud meta-data; repeatable', parseMeta)
    .option('--disk <size>', "root disk size, e.g. 20G (grown from the image's; cloud-init grows the filesystem)", parseDiskSize)
    .option('--firmware <firmware>', "bios (SeaBIOS) or uefi (OVMF, with an NVRAM of the instance's own); default: the image's", parseFirmwareFlag)
    .option('--allow-privileged', 'allow forwarding host ports below 1024')
    .option('--count <n>', 'make N replicas NAME-1..NAME-N from the image (linked clones)', positiveInt('--count'))
    .option('--floating', 'cluster: forward addresses follow the instance to whichever host runs it (nat NICs)')
    .option('--target <host>', 'cluster: the host to create it on (default: the live host with the most free memory)')
    .option('--storage <where>', "local or shared (the daemon's --shared-dir; default shared when set)")
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (image: string, name: string, opts: LaunchOptions, self: Command) => {
      const names = opts.count ? replicaNames(name, opts.count) : [name];
      for (const n of names) {
        await mutate(self, 'POST', '/1.0/instances', createBody(image, n, opts, start), {
          wait: opts.wait,
          done: start ? `Instance ${n} created and started.` : `Instance ${n} created.`,
        });
      }
    });
  cmd.addHelpText(
    'after',
    start
      ? `
Examples:
  vmkit launch appliance web1
  vmkit launch appliance web1 --type small --forward 8080:80
  vmkit launch appliance dns1 --cpus 2 --memory 512 --forward 0.0.0.0:5353:53/udp
  vmkit launch appliance web2 --forward 80:80 --allow-privileged --no-wait
  vmkit launch appliance app --count 3          # app-1, app-2, app-3
  vmkit launch appliance web3 --target host-b   # in a cluster
  vmkit launch debian vm1 --ssh-key ~/.ssh/id_ed25519.pub --cloud-init user-data.yaml --disk 20G -p 2222:22`
      : `
Examples:
  vmkit create appliance web1 --forward 8080:80
  vmkit start web1`,
  );
  return cmd;
}

/** `vmkit launch IMAGE NAME`: create and start in one operation. */
export function launchCommand(): Command {
  return build('launch');
}

/** `vmkit create IMAGE NAME`: create only (same flags as launch). */
export function createCommand(): Command {
  return build('create');
}
